"""`deft schedule`, `deft compare`: output format and exit statuses, as real processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lola_deft.scheduler import POLICIES
from tests.helpers import run_deft, start_scheduler_process

EXAMPLE_PATH = Path(__file__).parents[2] / "scheduler" / "examples" / "paper_round.json"
EXAMPLE = json.loads(EXAMPLE_PATH.read_text())


def test_schedule_prints_the_allocation_with_jbba_by_default() -> None:
    result = run_deft("schedule", str(EXAMPLE_PATH))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["policy"] == "jbba"
    assert [entry["block"] for entry in output["assignment"]] == list(range(1, 13))
    assert set(output["assignment"][0]) == {
        "block",
        "device",
        "bandwidth_hz",
        "latency_s",
        "compute_s",
        "upload_s",
    }
    assert output["latency_s"] == pytest.approx(max(e["latency_s"] for e in output["assignment"]))
    assert sum(e["bandwidth_hz"] for e in output["assignment"]) <= EXAMPLE["bandwidth_hz"] * (
        1 + 1e-9
    )


def test_schedule_reads_standard_input_and_takes_a_policy() -> None:
    result = run_deft("schedule", "--policy", "ba", "-", stdin=json.dumps(EXAMPLE))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["policy"] == "ba"
    assert {e["bandwidth_hz"] for e in output["assignment"]} == {EXAMPLE["bandwidth_hz"] / 12}


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("{not json", "instance: invalid JSON at line 1 column 2"),
        ('{"blocks": 2}', "block_memory_bytes: is required"),
        (json.dumps({**EXAMPLE, "payload_bits": -1}), "payload_bits: must be >= 1"),
        ("[]", "instance: must be a JSON object"),
    ],
)
def test_malformed_input_exits_2_naming_the_field(stdin: str, message: str) -> None:
    result = run_deft("schedule", "-", stdin=stdin)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_missing_file_exits_2() -> None:
    result = run_deft("schedule", "/nonexistent/round.json")
    assert result.returncode == 2
    assert "cannot read /nonexistent/round.json" in result.stderr


def test_unknown_policy_exits_2() -> None:
    result = run_deft("schedule", "--policy", "fastest", str(EXAMPLE_PATH))
    assert result.returncode == 2
    assert "invalid choice: 'fastest'" in result.stderr


def test_infeasible_input_exits_3_saying_why() -> None:
    doc = {**EXAMPLE, "devices": [{**d, "memory_bytes": 1.5e9} for d in EXAMPLE["devices"]]}
    result = run_deft("schedule", "-", stdin=json.dumps(doc))
    assert result.returncode == 3
    assert (
        "infeasible: blocks 3..12 fit on no device: block 3 alone needs 1.44 GiB" in result.stderr
    )


def test_compare_runs_every_policy_on_the_embedded_round() -> None:
    result = run_deft("compare")
    assert result.returncode == 0, result.stderr
    assert "20 devices, 12 blocks (embedded paper_round.json)" in result.stdout
    for policy in POLICIES:
        assert any(line.startswith(policy + " ") for line in result.stdout.splitlines())


@pytest.fixture(scope="module")
def remote() -> Iterator[str]:
    process, address = start_scheduler_process()
    yield address
    process.kill()
    process.wait()


def test_remote_schedule_matches_local(remote: str) -> None:
    local = json.loads(run_deft("schedule", str(EXAMPLE_PATH)).stdout)
    result = run_deft("schedule", "--insecure", "--remote", remote, str(EXAMPLE_PATH))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["latency_s"] == pytest.approx(local["latency_s"], rel=1e-12)
    assert answer["assignment"] == local["assignment"]


def test_remote_errors_keep_the_exit_statuses(remote: str) -> None:
    bad = run_deft(
        "schedule",
        "--insecure",
        "--remote",
        remote,
        "-",
        stdin=json.dumps({**EXAMPLE, "blocks": 3}),
    )
    assert bad.returncode == 2
    assert "block_memory_bytes: must have 3 entries" in bad.stderr
    few = {**EXAMPLE, "devices": EXAMPLE["devices"][:3]}
    infeasible = run_deft("schedule", "--insecure", "--remote", remote, "-", stdin=json.dumps(few))
    assert infeasible.returncode == 3
    assert "only 3 reported" in infeasible.stderr


def test_byte_order_marks_are_read_and_bad_bytes_refused(tmp_path: Path) -> None:
    with_bom = tmp_path / "bom.json"
    with_bom.write_bytes(b"\xef\xbb\xbf" + EXAMPLE_PATH.read_bytes())
    result = run_deft("schedule", str(with_bom))
    assert result.returncode == 0, result.stderr
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"blocks": "\xff\xfe"}')
    result = run_deft("schedule", str(binary))
    assert result.returncode == 2
    assert result.stderr.startswith("deft schedule: error: instance: not UTF-8 text")
    assert "Traceback" not in result.stderr


def test_an_unreachable_remote_scheduler_is_named_with_the_reason_at_once() -> None:
    """Not a 30 s wait ending in DEADLINE_EXCEEDED: port 1 on loopback refuses at once."""
    result = run_deft("schedule", "--insecure", "--remote", "127.0.0.1:1", str(EXAMPLE_PATH))
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if "error" in line]
    assert (
        line
        == "deft schedule: error: cannot reach the scheduler at 127.0.0.1:1: Connection refused"
    )


PAC_EXAMPLES = Path(__file__).parents[2] / "scheduler" / "examples"


@pytest.mark.parametrize("plan", ["pipeline", "shares"])
def test_pac_plans_are_the_same_here_and_on_the_remote_scheduler(remote: str, plan: str) -> None:
    path = str(PAC_EXAMPLES / f"pac_{plan}.json")
    local = run_deft("schedule", path)
    assert local.returncode == 0, local.stderr
    answer = json.loads(local.stdout)
    far = run_deft("schedule", "--insecure", "--remote", remote, path)
    assert far.returncode == 0, far.stderr
    remote_answer = json.loads(far.stdout)
    answer.pop("solve_seconds"), remote_answer.pop("solve_seconds")
    assert answer == remote_answer
    doc = json.loads(Path(path).read_text())
    if plan == "pipeline":
        stages = answer["stages"]
        assert stages[0]["first_unit"] == 0 and stages[-1]["last_unit"] == 12
        assert answer["bottleneck_s"] == pytest.approx(max(s["seconds"] for s in stages))
    else:
        shares = {entry["device"]: int(entry["samples"]) for entry in answer["shares"]}
        assert sum(shares.values()) == doc["total_samples"]
        assert shares["phone-2"] <= 60  # its cap: it holds 60 samples
        assert shares["jetson-03"] > shares["phone-1"]  # faster, more


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"plan": "ring"}, 2, "plan: 'ring' is not 'pipeline' or 'shares'"),
        ({"total_samples": -1}, 2, "total_samples"),
        ({"total_samples": 10**5}, 3, "the devices hold 4360 samples, the round needs 100000"),
        ({"devices": []}, 2, "devices: must be a non-empty list"),
    ],
)
def test_pac_plan_errors_keep_the_exit_statuses(
    remote: str, change: dict[str, object], status: int, message: str
) -> None:
    doc = {**json.loads((PAC_EXAMPLES / "pac_shares.json").read_text()), **change}
    for where in ((), ("--insecure", "--remote", remote)):
        result = run_deft("schedule", *where, "-", stdin=json.dumps(doc))
        assert result.returncode == status, result.stderr
        assert message in result.stderr and result.stdout == ""


def test_a_pipeline_no_fleet_can_hold_is_infeasible() -> None:
    doc = json.loads((PAC_EXAMPLES / "pac_pipeline.json").read_text())
    for device in doc["devices"]:
        device["memory_bytes"] = 1e6
    result = run_deft("schedule", "-", stdin=json.dumps(doc))
    assert result.returncode == 3 and "cannot hold the backbone" in result.stderr
