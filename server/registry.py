"""Registered agents, their sessions and liveness, bounded in size and in time.

A device that registers again gets a new session and its old one stops working (so a restarted
agent cannot upload twice under two names), but only when it proves the same identity as the
live registration (mutual TLS: the same certificate); any other claim on a live id (another
certificate for the id, or no identity at all) is refused, never an eviction, and succeeds once
the old registration has gone silent. Devices not heard from for
`forget_after_s` are dropped entirely, and the registry refuses new devices beyond
`max_devices`, so neither a long run with churn nor a flood of made-up ids grows the
coordinator's memory without bound.

Every agent keeps a small `index` (the lowest one free when it first registered, kept while it
is remembered): `--shard auto/N` agents take shard index % N, and a device that replaces one
that left takes over its shard.
"""

from __future__ import annotations

import heapq
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lola_deft.server.errors import AlreadyRegistered, Forbidden, TooLarge, UnknownSession
from lola_deft.server.messages import Registration


@dataclass
class AgentRecord:
    device_id: str
    session: str
    hardware: str
    agent_version: str
    capabilities: tuple[str, ...]
    index: int = 0
    identity: str | None = None  # the certificate's fingerprint, under mutual TLS
    registered_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)


class AgentRegistry:
    """Used from the coordinator's event loop only (no locking needed)."""

    def __init__(
        self,
        liveness_timeout_s: float,
        forget_after_s: float = 600.0,
        max_devices: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self.forget_after_s = max(forget_after_s, liveness_timeout_s)
        self.max_devices = max_devices
        self.clock = clock
        self._by_device: dict[str, AgentRecord] = {}
        self._device_of_session: dict[str, str] = {}
        self._free_indices: list[int] = []  # heap of indices released by forgotten devices
        self._next_index = 0
        # Sweeping is O(devices): done at most this often (a tenth of forget_after_s, <= 5 s).
        self._sweep_every_s = min(5.0, self.forget_after_s / 10)
        self._last_sweep = -float("inf")

    def __len__(self) -> int:
        return len(self._by_device)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._by_device

    def register(self, registration: Registration, identity: str | None = None) -> AgentRecord:
        """`identity`: what the caller proved (its certificate's fingerprint); a live
        registration of the same id and identity is this device restarting and is replaced."""
        self.forget_departed()
        device_id = registration.device_id
        live = self._by_device.get(device_id)
        if self.is_live(device_id) and (
            identity is None or live is None or live.identity != identity
        ):
            raise AlreadyRegistered(
                "this device id is live under another registration; retry after "
                f"{self.liveness_timeout_s:.0f} s of its silence"
            )
        previous = self._by_device.pop(device_id, None)
        if previous is not None:
            self._device_of_session.pop(previous.session, None)
        elif len(self._by_device) >= self.max_devices:
            raise TooLarge(
                f"registry full: {self.max_devices} devices are registered; try again later"
            )
        now = self.clock()
        record = AgentRecord(
            device_id,
            secrets.token_hex(16),
            registration.hardware,
            registration.agent_version,
            registration.capabilities,
            index=previous.index if previous else self._take_index(),
            identity=identity,
            registered_at=now,
            last_seen=now,
        )
        self._by_device[device_id] = record
        self._device_of_session[record.session] = device_id
        return record

    def _take_index(self) -> int:
        """The lowest index no remembered device holds, in O(log n)."""
        if self._free_indices:
            return heapq.heappop(self._free_indices)
        self._next_index += 1
        return self._next_index - 1

    def device_of(self, session: str) -> str:
        """The session's device id (not marking it seen); UnknownSession if it has none."""
        device_id = self._device_of_session.get(session)
        if device_id is None:
            raise UnknownSession("unknown session; register again")
        return device_id

    def touch(self, session: str, identity: str | None = None) -> AgentRecord:
        """The session's agent, marked as seen now; UnknownSession if it has none. A session
        opened under a certificate is that certificate's alone (`identity`: the caller's
        fingerprint): another certificate of the same device cannot use it."""
        record = self._by_device[self.device_of(session)]
        if record.identity is not None and identity != record.identity:
            raise Forbidden("this session was opened with another certificate; register again")
        record.last_seen = self.clock()
        return record

    def hardware_class(self, device_id: str) -> str:
        """What makes two devices' compute comparable: the hardware they describe and the
        capabilities they offer (a CUDA board and a CPU-only one of the same name differ)."""
        record = self._by_device.get(device_id)
        if record is None:
            return ""
        return f"{record.hardware}|{','.join(sorted(record.capabilities))}"

    def is_live(self, device_id: str) -> bool:
        record = self._by_device.get(device_id)
        return record is not None and self.clock() - record.last_seen <= self.liveness_timeout_s

    def live_count(self) -> int:
        """Safe to call from another thread (the metrics endpoint): it reads a copy."""
        now = self.clock()
        records = list(self._by_device.values())  # one C-level copy, atomic under the GIL
        return sum(1 for r in records if now - r.last_seen <= self.liveness_timeout_s)

    def live(self) -> list[AgentRecord]:
        now = self.clock()
        return [r for r in self._by_device.values() if now - r.last_seen <= self.liveness_timeout_s]

    def forget_departed(self) -> list[str]:
        """Drop devices silent for longer than forget_after_s; returns their ids."""
        now = self.clock()
        if now - self._last_sweep < self._sweep_every_s:
            return []
        self._last_sweep = now
        gone = [
            device_id
            for device_id, record in self._by_device.items()
            if now - record.last_seen > self.forget_after_s
        ]
        for device_id in gone:
            record = self._by_device.pop(device_id)
            self._device_of_session.pop(record.session, None)
            heapq.heappush(self._free_indices, record.index)
        return gone
