"""The one validator of what agents send: each check raises InvalidRequest naming the field,
and quotes client text only in short, truncated form."""

from __future__ import annotations

import math

from lola_deft.scheduler.bounds import (
    MEMORY_BYTES,
    SECONDS_PER_ITERATION,
    SPECTRAL_EFFICIENCY,
    UPLINK_BPS,
    Range,
)
from lola_deft.server.errors import InvalidRequest, quote
from lola_deft.server.messages import Registration, ResourceReport, UploadHeader

MAX_DEVICE_ID = 128
MAX_HARDWARE = 256
MAX_VERSION = 64
MAX_CAPABILITIES = 16
MAX_CAPABILITY = 32
MAX_FINGERPRINT = 512
MAX_JOB = 64  # a pipeline's id
MAX_SAMPLES = 10_000_000  # a PAC+ device's local samples (a pipeline's size follows from it)


def check_text(value: str, field: str, limit: int, *, required: bool = False) -> None:
    if required and not value:
        raise InvalidRequest(field, "must not be empty")
    if len(value) > limit:
        raise InvalidRequest(field, f"at most {limit} characters, got {len(value)}")
    if not value.isprintable():
        raise InvalidRequest(field, f"must be printable text, got {quote(value)}")


def validate_registration(registration: Registration) -> None:
    check_text(registration.device_id, "device_id", MAX_DEVICE_ID, required=True)
    check_text(registration.hardware, "hardware", MAX_HARDWARE)
    check_text(registration.agent_version, "agent_version", MAX_VERSION)
    check_text(registration.model_fingerprint, "model_fingerprint", MAX_FINGERPRINT)
    if len(registration.capabilities) > MAX_CAPABILITIES:
        raise InvalidRequest(
            "capabilities", f"at most {MAX_CAPABILITIES}, got {len(registration.capabilities)}"
        )
    for i, capability in enumerate(registration.capabilities):
        check_text(capability, f"capabilities[{i}]", MAX_CAPABILITY, required=True)


def _non_negative(value: float, field: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(field, f"must be a finite number >= 0, got {value}")


def _within(value: float, field: str, legal: Range, *, unknown_zero: bool = False) -> None:
    """The scheduler's own legal range (one table for both): a report that passes here can
    never make an instance the scheduler refuses. `unknown_zero`: 0 means "not measured"."""
    if unknown_zero and value == 0:
        return
    problem = legal.problem(value)
    if problem is not None:
        raise InvalidRequest(field, problem)


def validate_report(report: ResourceReport, blocks: int) -> None:
    """Refuse a report the scheduler could not plan with; only its sender sits the round out."""
    _within(report.available_memory_bytes, "available_memory_bytes", MEMORY_BYTES)
    _non_negative(report.channel_gain, "channel.channel_gain")
    _within(
        report.spectral_efficiency,
        "channel.spectral_efficiency",
        SPECTRAL_EFFICIENCY,
        unknown_zero=True,
    )
    _within(
        report.measured_uplink_bps, "channel.measured_uplink_bps", UPLINK_BPS, unknown_zero=True
    )
    if not math.isfinite(report.snr_db):
        raise InvalidRequest("channel.snr_db", "must be finite")
    if report.pac is not None:
        _within(
            report.pac.step_seconds, "pac.step_seconds", SECONDS_PER_ITERATION, unknown_zero=True
        )
        if report.pac.samples > MAX_SAMPLES:
            raise InvalidRequest("pac.samples", f"at most {MAX_SAMPLES:,}")
        if report.pac.cached_samples > report.pac.samples:
            raise InvalidRequest("pac.cached_samples", "more than pac.samples")
    if len(report.block_seconds) != blocks:
        raise InvalidRequest("block_costs", f"need one entry for each block 1..{blocks}")
    for block, seconds in enumerate(report.block_seconds, start=1):
        _within(seconds, f"block_costs[{block}].seconds_per_iteration", SECONDS_PER_ITERATION)
    for block, memory in enumerate(report.block_memory_bytes, start=1):
        _within(memory, f"block_costs[{block}].peak_memory_bytes", MEMORY_BYTES)


def validate_header(header: UploadHeader) -> None:
    _non_negative(header.compute_s, "header.compute_s")
    if not math.isfinite(header.train_loss):
        raise InvalidRequest("header.train_loss", f"must be finite, got {header.train_loss}")
