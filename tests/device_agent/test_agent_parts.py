"""Device selection, memory reports, channels, profiling cache and CLI value parsers."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from lola_deft.cli.common import byte_size, shard
from lola_deft.device_agent.agent import available_memory, resolve_device
from lola_deft.device_agent.channel import EmulatedChannel, MeasuredChannel
from lola_deft.device_agent.profiler import load_or_measure
from lola_deft.ml.batching import BatchSampler, encode
from lola_deft.ml.glue import EMBEDDED_TASK_DIR, read_split, task_spec
from lola_deft.ml.model import load_model


def test_cuda_is_refused_clearly_when_absent() -> None:
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_memory_limit_caps_the_report() -> None:
    cpu = torch.device("cpu")
    assert available_memory(cpu, 123.0) == 123.0
    assert available_memory(cpu, None) > 123.0


def test_emulated_channel_is_seeded_rayleigh() -> None:
    channel = EmulatedChannel(transmit_snr_db=10.0, path_loss=1e-3, seed=4)
    assert channel.reading(7) == channel.reading(7)
    readings = [channel.reading(r) for r in range(4000)]
    gains = np.array([r.channel_gain for r in readings])
    assert gains.mean() == pytest.approx(1e-3, rel=0.06)  # E|h|^2 = 1 times the path loss
    first = readings[0]
    assert first.spectral_efficiency == pytest.approx(np.log2(1 + 10 * first.channel_gain))
    assert EmulatedChannel(seed=5).reading(7) != channel.reading(7)


def test_devices_fade_independently_under_one_seed() -> None:
    rounds = range(400)
    channels = {device: EmulatedChannel(device_id=device) for device in ("agent-1", "agent-2")}
    gains = {
        device: np.array([channel.reading(r).channel_gain for r in rounds])
        for device, channel in channels.items()
    }
    assert not np.array_equal(gains["agent-1"], gains["agent-2"])
    assert abs(np.corrcoef(gains["agent-1"], gains["agent-2"])[0, 1]) < 0.2
    again = EmulatedChannel(device_id="agent-1")  # and each device's channel is reproducible
    assert [again.reading(r).channel_gain for r in rounds] == gains["agent-1"].tolist()


def test_measured_channel_reports_the_last_upload_rate() -> None:
    channel = MeasuredChannel()
    assert channel.reading(1).measured_uplink_bps == 0.0
    channel.record_upload(1_000_000, 2.0)
    assert channel.reading(2).measured_uplink_bps == 4e6


def test_profiles_come_from_the_cache_the_second_time(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(tiny_model_dir, 2)
    data = encode(loaded.tokenizer, read_split(EMBEDDED_TASK_DIR, task_spec("sst2"), "dev"), 16)
    batch = BatchSampler(data, 4).next_batch()
    identity = {"model": "tiny", "batch": 4}
    first, cached = load_or_measure(
        loaded, batch, torch.device("cpu"), identity, cache_dir=tmp_path
    )
    assert not cached and len(first.seconds_per_iteration) == loaded.num_blocks
    assert all(
        a < b for a, b in zip(first.peak_memory_bytes, first.peak_memory_bytes[1:], strict=False)
    )
    second, cached = load_or_measure(
        loaded, batch, torch.device("cpu"), identity, cache_dir=tmp_path, slowdown=3.0
    )
    assert cached
    assert second.seconds_per_iteration == pytest.approx(
        [3 * s for s in first.seconds_per_iteration]
    )
    assert second.peak_memory_bytes == first.peak_memory_bytes
    _, cached = load_or_measure(
        loaded, batch, torch.device("cpu"), {**identity, "batch": 8}, cache_dir=tmp_path
    )
    assert not cached  # another batch shape is another profile


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2G", 2e9), ("512Mi", 512 * 2**20), ("1500", 1500.0), ("1.5GiB", 1.5 * 2**30)],
)
def test_byte_sizes(text: str, expected: float) -> None:
    assert byte_size(text) == expected


def test_bad_cli_values_are_explained() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        byte_size("lots")
    assert shard("2/6") == (2, 6)
    assert shard("auto/6") == (-1, 6)
    for bad in ("6/6", "auto/0", "x/2"):
        with pytest.raises(argparse.ArgumentTypeError, match="0 <= I < N"):
            shard(bad)
