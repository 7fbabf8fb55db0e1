"""Random rounds in the paper's evaluation setting (Section VI-A), for the demo, tests and bench.

Defaults follow the paper: K=20 devices, L=12 RoBERTa-base blocks with LoRA r=8 on query and value
(S = 24576 parameters * 32 bits), compute factors f_k ~ U(0.5, 1), available memory ~ U[1, 6] GB,
block memory growing linearly from 1 to 4 GB, i.i.d. Rayleigh fading with path loss 1e-3, transmit
SNR 10 dB, B = 100 MHz. The paper gives no absolute compute times; we take 0.5 s per local
iteration for the shallowest block on the reference device, the deepest twice that (Fig. 4a), and
M = 10 local iterations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

GB = 1e9


@dataclass(frozen=True)
class PaperSetting:
    num_devices: int = 20
    num_blocks: int = 12
    local_iterations: int = 10
    payload_bits: float = 24576 * 32
    bandwidth_hz: float = 100e6
    transmit_snr_db: float = 10.0
    path_loss: float = 1e-3
    memory_range_gb: tuple[float, float] = (1.0, 6.0)
    block_memory_range_gb: tuple[float, float] = (1.0, 4.0)
    compute_factor_range: tuple[float, float] = (0.5, 1.0)
    shallowest_block_seconds: float = 0.5
    deepest_to_shallowest: float = 2.0

    def with_(self, **changes: Any) -> PaperSetting:
        return replace(self, **changes)


def spectral_efficiency(setting: PaperSetting, rng: np.random.Generator, size: int) -> np.ndarray:
    """r_k = log2(1 + SNR_tx * path_loss * |h_k|^2) with Rayleigh fading (|h|^2 ~ Exp(1))."""
    snr = 10 ** (setting.transmit_snr_db / 10) * setting.path_loss * rng.exponential(1.0, size)
    return np.log2(1.0 + snr)


def paper_round(setting: PaperSetting, rng: np.random.Generator) -> dict[str, Any]:
    """One round as a `deft schedule` instance document."""
    num_blocks = setting.num_blocks
    low, high = setting.block_memory_range_gb
    block_memory = np.linspace(low, high, num_blocks) * GB
    shallow = setting.shallowest_block_seconds
    block_seconds = np.linspace(shallow, shallow * setting.deepest_to_shallowest, num_blocks)
    size = setting.num_devices
    memory = rng.uniform(*setting.memory_range_gb, size) * GB
    factors = rng.uniform(*setting.compute_factor_range, size)
    efficiency = spectral_efficiency(setting, rng, size)
    return {
        "blocks": num_blocks,
        "block_memory_bytes": block_memory.tolist(),
        "block_seconds": block_seconds.tolist(),
        "local_iterations": setting.local_iterations,
        "payload_bits": setting.payload_bits,
        "bandwidth_hz": setting.bandwidth_hz,
        "devices": [
            {
                "id": f"device-{k:0{len(str(size - 1))}d}",
                "memory_bytes": float(memory[k]),
                "compute_factor": float(factors[k]),
                "spectral_efficiency": float(efficiency[k]),
            }
            for k in range(size)
        ],
    }
