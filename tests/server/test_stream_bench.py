"""Part 3 of `make bench`, at a small size: every path carries the payload and is reported."""

from __future__ import annotations

from lola_deft.server.stream_bench import bench_streaming, streaming_targets

PATHS = ("raw", "data_up", "data_down", "grpc_up", "grpc_down")


def test_every_path_carries_the_payload_and_gets_a_target_line() -> None:
    result = bench_streaming(2**20, repeats=1)
    for path in PATHS:
        assert result[f"{path}_MiB_per_s"] > 0
        assert result[f"tls_{path}_MiB_per_s"] > 0
    assert (
        result["ratio"]
        == min(result["data_up_MiB_per_s"], result["data_down_MiB_per_s"])
        / (result["raw_MiB_per_s"])
    )
    lines = streaming_targets(result)
    assert len(lines) == 2 and all(line.startswith(("PASS", "FAIL")) for line in lines)
