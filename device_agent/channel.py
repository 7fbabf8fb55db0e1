"""The uplink channel an agent reports: emulated Rayleigh fading, or a measured upload rate."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChannelReading:
    channel_gain: float = 0.0
    snr_db: float = 0.0
    spectral_efficiency: float = 0.0  # r_k = log2(1 + SNR), bit/s/Hz; 0 when unknown
    measured_uplink_bps: float = 0.0


def device_stream(device_id: str) -> int:
    """A stable 64-bit number per device id (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:8], "little")


@dataclass
class EmulatedChannel:
    """i.i.d. Rayleigh block fading per round (the paper's Section VI model), seeded.

    Received SNR = transmit SNR * path loss * |h|^2 with |h|^2 ~ Exp(1). The fading is drawn
    from (seed, device id, round): two devices with the same flags fade independently, as two
    radios do, and the same device, seed and round always give the same channel.
    """

    transmit_snr_db: float = 10.0
    path_loss: float = 1e-3
    seed: int = 0
    device_id: str = ""

    def reading(self, round_number: int) -> ChannelReading:
        key = [self.seed, device_stream(self.device_id), round_number]
        fading = np.random.default_rng(key).exponential(1.0)
        gain = self.path_loss * fading
        snr = 10 ** (self.transmit_snr_db / 10) * gain
        return ChannelReading(
            channel_gain=gain,
            snr_db=10 * math.log10(max(snr, 1e-30)),
            spectral_efficiency=math.log2(1 + snr),
        )


@dataclass
class MeasuredChannel:
    """Reports the throughput of the agent's last gradient upload.

    Before the first upload it reports 0 (unknown), and the coordinator gives the device its
    prior (engine.spectral_efficiency): the other devices' median, else `--prior-uplink`."""

    last_bps: float = 0.0

    def record_upload(self, num_bytes: int, seconds: float) -> None:
        if seconds > 0 and num_bytes > 0:
            self.last_bps = 8 * num_bytes / seconds

    def reading(self, round_number: int) -> ChannelReading:
        return ChannelReading(measured_uplink_bps=self.last_bps)
