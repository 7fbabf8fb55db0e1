"""A multi-host testbed on one Linux machine: one network namespace per agent, linked by veth
pairs to a bridge in the root namespace, where the scheduler and coordinator run.

    root namespace:  bridge <prefix>br  10.77.0.1/24  (coordinator listens here)
    <prefix>-a0:     eth0 10.77.0.10/24  <-veth->  <prefix>h0 (on the bridge)
    <prefix>-a1:     eth0 10.77.0.11/24  <-veth->  <prefix>h1
    ...

Each agent's uplink is its namespace's eth0 egress, shaped with a tc token bucket (tbf) to the
rate the scheduler allotted (B_k r_k), re-shaped every round. Needs root and iproute2.
Everything created is named with the prefix, so `down` removes exactly what `up` made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

SUBNET = "10.77.0"
HOST_ADDRESS = f"{SUBNET}.1"
FIRST_AGENT_HOST = 10
MAX_AGENTS = 200
# tc token bucket: a burst of two full frames, and a queue deep enough for a whole gradient so
# TCP is paced by the bucket rather than by drops.
BURST_BYTES = 3200
QUEUE_LATENCY = "10s"


class TestbedUnavailable(RuntimeError):
    """This machine cannot host the testbed (not root, no iproute2, namespaces forbidden)."""

    __test__ = False


@dataclass(frozen=True)
class Testbed:
    __test__ = False  # not a pytest test class, despite the name
    prefix: str
    agents: int

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def namespace(self, index: int) -> str:
        return f"{self.prefix}-a{index}"

    def host_veth(self, index: int) -> str:
        return f"{self.prefix}h{index}"

    def agent_address(self, index: int) -> str:
        return f"{SUBNET}.{FIRST_AGENT_HOST + index}"

    def device_id(self, index: int) -> str:
        return f"a{index}"

    def index_of(self, device_id: str) -> int:
        if not device_id.startswith("a") or not device_id[1:].isdigit():
            raise KeyError(f"{device_id!r} is not a testbed agent (a0, a1, ...)")
        return int(device_id[1:])


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def check_available() -> None:
    """Raise TestbedUnavailable saying why this machine cannot build the testbed."""
    if os.geteuid() != 0:
        raise TestbedUnavailable("the testbed needs root (network namespaces and tc)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise TestbedUnavailable(f"`{tool}` not found: install iproute2")
    probe = f"deftprobe{os.getpid()}"
    result = run("ip", "netns", "add", probe, check=False)
    if result.returncode != 0:
        raise TestbedUnavailable(f"cannot create network namespaces: {result.stderr.strip()}")
    run("ip", "netns", "del", probe, check=False)


def up(testbed: Testbed) -> None:
    """Create the bridge, namespaces and links. On any failure, remove what was made."""
    if not 1 <= testbed.agents <= MAX_AGENTS:
        raise ValueError(f"agents must be 1..{MAX_AGENTS}, got {testbed.agents}")
    check_available()
    down(testbed)  # leftovers of an earlier crashed run with the same prefix
    try:
        run("ip", "link", "add", testbed.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", testbed.bridge)
        run("ip", "link", "set", testbed.bridge, "up")
        for index in range(testbed.agents):
            namespace, host = testbed.namespace(index), testbed.host_veth(index)
            run("ip", "netns", "add", namespace)
            run("ip", "link", "add", host, "type", "veth", "peer", "name", f"{host}p")
            run("ip", "link", "set", f"{host}p", "netns", namespace)
            run("ip", "link", "set", host, "master", testbed.bridge)
            run("ip", "link", "set", host, "up")
            inside = ("ip", "netns", "exec", namespace)
            run(*inside, "ip", "link", "set", f"{host}p", "name", "eth0")
            run(*inside, "ip", "addr", "add", f"{testbed.agent_address(index)}/24", "dev", "eth0")
            run(*inside, "ip", "link", "set", "eth0", "up")
            run(*inside, "ip", "link", "set", "lo", "up")
    except Exception:
        down(testbed)
        raise


def down(testbed: Testbed) -> list[str]:
    """Remove every namespace and link with the testbed's prefix; returns what was removed."""
    removed = []
    namespaces = run("ip", "netns", "list", check=False).stdout.split("\n")
    for line in namespaces:
        name = line.split(" ")[0]
        if name.startswith(f"{testbed.prefix}-a"):
            run("ip", "netns", "del", name, check=False)
            removed.append(name)
    links = run("ip", "-o", "link", "show", check=False).stdout.splitlines()
    for line in links:
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name == testbed.bridge or (
            name.startswith(f"{testbed.prefix}h")
            and name[len(testbed.prefix) + 1 :].rstrip("p").isdigit()
        ):
            run("ip", "link", "del", name, check=False)
            removed.append(name)
    return removed


def leftovers(testbed: Testbed) -> list[str]:
    """Names with the testbed's prefix still present (empty after a clean `down`)."""
    names = [
        line.split(" ")[0] for line in run("ip", "netns", "list", check=False).stdout.splitlines()
    ]
    links = [
        line.split(":")[1].strip().split("@")[0]
        for line in run("ip", "-o", "link", "show", check=False).stdout.splitlines()
        if ":" in line
    ]
    return [n for n in names + links if n.startswith(testbed.prefix)]


def shape(testbed: Testbed, index: int, rate_bits_per_s: float) -> None:
    """Set agent `index`'s uplink to `rate_bits_per_s` (token bucket on its eth0 egress)."""
    rate = max(int(rate_bits_per_s), 8000)  # tc's floor; far below any useful uplink
    run(
        "ip",
        "netns",
        "exec",
        testbed.namespace(index),
        "tc",
        "qdisc",
        "replace",
        "dev",
        "eth0",
        "root",
        "tbf",
        "rate",
        f"{rate}bit",
        "burst",
        str(BURST_BYTES),
        "latency",
        QUEUE_LATENCY,
    )


def shaped_rate(testbed: Testbed, index: int) -> str:
    """The tbf line tc reports for agent `index` (for logs and tests)."""
    return run(
        "ip", "netns", "exec", testbed.namespace(index), "tc", "qdisc", "show", "dev", "eth0"
    ).stdout.strip()
