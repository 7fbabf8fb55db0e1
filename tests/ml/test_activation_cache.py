"""The activation cache: budgets, storage precision, keys that invalidate, and restarts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lola_deft.ml.activation_cache import (
    ActivationCache,
    CacheError,
    CacheKey,
    decode_states,
    encode_states,
    pad_batch,
)

KEY = CacheKey("bert-L3-H64-abc", "sst2", "1/4", 64, "float16")


def sample(seed: int, tokens: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(4, tokens, 16)).astype(np.float32)


@pytest.mark.parametrize(
    ("storage", "tolerance", "ratio"),
    [
        ("float32", 0.0, 1.0),
        ("float16", 2e-3, 0.5),
        ("int8", 2e-2, 0.25 + 2 / 16 / 4),
    ],
)
def test_storage_trades_bytes_for_precision(storage: str, tolerance: float, ratio: float) -> None:
    states = sample(0)
    stored = encode_states(states, storage)
    assert sum(v.nbytes for v in stored.values()) == pytest.approx(states.nbytes * ratio)
    error = np.abs(decode_states(stored) - states).max() / np.abs(states).max()
    assert error <= tolerance


def test_an_all_zero_token_survives_int8() -> None:
    states = np.zeros((2, 3, 8), np.float32)
    assert np.array_equal(decode_states(encode_states(states, "int8")), states)


def test_memory_first_then_disk_then_misses(tmp_path: Path) -> None:
    size = encode_states(sample(0), "float16")["states"].nbytes
    cache = ActivationCache(KEY, tmp_path, memory_budget_bytes=size, disk_budget_bytes=size + 500)
    assert cache.put(0, sample(0)) and cache.put(1, sample(1))
    assert not cache.put(2, sample(2))  # no room anywhere: a miss every epoch
    assert cache.stats.memory_samples == 1 and cache.stats.disk_samples == 1
    np.testing.assert_allclose(cache.get(1), sample(1), atol=2e-3)
    assert cache.get(2) is None
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


def test_the_disk_copy_survives_a_restart_and_a_changed_key_reads_none(tmp_path: Path) -> None:
    first = ActivationCache(KEY, tmp_path, memory_budget_bytes=0, disk_budget_bytes=1 << 20)
    for index in range(3):
        first.put(index, sample(index))
    (first.folder / "s00000009.tmp").write_bytes(b"half a file")  # type: ignore[operator]
    again = ActivationCache(KEY, tmp_path, memory_budget_bytes=0, disk_budget_bytes=1 << 20)
    assert all(index in again for index in range(3)) and 9 not in again
    assert not list(again.folder.glob("*.tmp"))  # type: ignore[union-attr]
    np.testing.assert_allclose(again.get(2), sample(2), atol=2e-3)
    for changed in (
        CacheKey("bert-L3-H64-xyz", "sst2", "1/4", 64),
        CacheKey(KEY.model_fingerprint, "sst2", "2/4", 64),
        CacheKey(KEY.model_fingerprint, "sst2", "1/4", 128),
        CacheKey(KEY.model_fingerprint, "sst2", "1/4", 64, "int8"),
    ):
        other = ActivationCache(changed, tmp_path, memory_budget_bytes=0, disk_budget_bytes=1 << 20)
        assert 0 not in other


def test_a_damaged_file_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    cache = ActivationCache(KEY, tmp_path, memory_budget_bytes=0, disk_budget_bytes=1 << 20)
    cache.put(0, sample(0))
    (cache.folder / "s00000000.safetensors").write_bytes(b"\0" * 10)  # type: ignore[operator]
    assert cache.get(0) is None and 0 not in cache


def test_an_unknown_storage_is_refused() -> None:
    with pytest.raises(CacheError, match="use one of float32, float16, int8"):
        CacheKey("m", "sst2", "0/1", 64, "float8")


def test_batches_are_padded_and_masked() -> None:
    states, mask = pad_batch([sample(0, tokens=2), sample(1, tokens=5)])
    assert states.shape == (2, 4, 5, 16) and mask.sum(dim=1).tolist() == [2, 5]
    assert float(states[0, :, 2:].abs().sum()) == 0.0


def test_a_disk_that_fails_turns_writes_into_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.numpy

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    cache = ActivationCache(KEY, tmp_path, memory_budget_bytes=0, disk_budget_bytes=1 << 20)
    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    assert not cache.put(0, sample(0)) and not cache.put(1, sample(1))
    assert cache.get(0) is None and not list(cache.folder.glob("*.tmp"))  # type: ignore[union-attr]
