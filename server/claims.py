"""What a device claims about its compute, held to its own history and to its hardware class.

A report's block costs steer the scheduler: a device that claims to be much faster than it is
attracts blocks and then holds the round. Physical bounds are checked at the door
(validation); here a claim that is physically possible but far from what the same device said
in its recent rounds, or from what devices of the same hardware class say (the same hardware
description and capabilities), is raised to a tenth of that evidence, logged and counted. A
claim slower than the evidence is taken as it is: it costs only the claimant, and a device that
got slower must be believed at once. An honest speed-up (another job ending) is followed within
a few rounds, since the history moves with the claims; a single wild report moves nothing.
Only the claimant's own costs are touched: a device's claim never changes what the scheduler
believes of another device.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections import deque
from collections.abc import Callable

from lola_deft.server.messages import ClaimClamp, ResourceReport

log = logging.getLogger("deft.coordinator")

FACTOR = 10.0  # a claim within FACTOR x of the evidence is taken as it is
HISTORY = 5  # reports remembered per device
CLASS_PEERS = 3  # devices of one hardware class needed before the class is evidence


def _band(claim: float, evidence: float, factor: float) -> float:
    """A claim no faster than evidence / factor (a slower claim costs only the claimant)."""
    return max(claim, evidence / factor)


class ClaimChecker:
    """Per-device memory of recent block-cost claims (bounded: HISTORY floats per device, and
    devices the registry forgets are dropped with `retain`)."""

    def __init__(
        self,
        hardware_of: Callable[[str], str],
        factor: float = FACTOR,
    ) -> None:
        """`hardware_of`: a device's hardware class (devices of one class are comparable)."""
        self.hardware_of = hardware_of
        self.factor = factor
        self._history: dict[str, deque[tuple[float, ...]]] = {}

    def retain(self, known: Callable[[str], bool]) -> None:
        """Drop the history of devices the registry has forgotten (bounded memory)."""
        for device_id in [d for d in self._history if not known(d)]:
            del self._history[device_id]

    def _own_evidence(self, device_id: str) -> list[float] | None:
        """Per block, the median of this device's recent claims (None: no history yet)."""
        history = self._history.get(device_id)
        if not history:
            return None
        return [statistics.median(column) for column in zip(*history, strict=True)]

    def _class_evidence(self, reports: list[ResourceReport]) -> dict[str, list[float]]:
        """Per hardware class with enough members this round, the median claim per block."""
        by_class: dict[str, list[tuple[float, ...]]] = {}
        for report in reports:
            by_class.setdefault(self.hardware_of(report.device_id), []).append(report.block_seconds)
        return {
            hardware: [statistics.median(column) for column in zip(*claims, strict=True)]
            for hardware, claims in by_class.items()
            if len(claims) >= CLASS_PEERS and hardware
        }

    def plausible(
        self, reports: list[ResourceReport]
    ) -> tuple[list[ResourceReport], list[ClaimClamp]]:
        """The reports with no block cost far faster than its device's own history or its
        hardware class says; the raw claims enter the history."""
        classes = self._class_evidence(reports)
        checked, clamps = [], []
        for report in reports:
            seconds = list(report.block_seconds)
            for evidence, field in (
                (self._own_evidence(report.device_id), "block_seconds (its own recent reports)"),
                (classes.get(self.hardware_of(report.device_id)), "block_seconds (its class)"),
            ):
                if evidence is None or len(evidence) != len(seconds):
                    continue
                banded = [_band(s, e, self.factor) for s, e in zip(seconds, evidence, strict=True)]
                if banded != seconds:
                    clamps.append(self._clamped(report.device_id, field, seconds, banded))
                    seconds = banded
            self._history.setdefault(report.device_id, deque(maxlen=HISTORY)).append(
                report.block_seconds
            )
            checked.append(
                report
                if tuple(seconds) == report.block_seconds
                else dataclasses.replace(report, block_seconds=tuple(seconds))
            )
        return checked, clamps

    @staticmethod
    def _clamped(device_id: str, field: str, claimed: list[float], used: list[float]) -> ClaimClamp:
        worst = max(range(len(claimed)), key=lambda i: used[i] / claimed[i])
        clamp = ClaimClamp(device_id, field, worst + 1, claimed[worst], used[worst])
        log.warning(
            "%s: %s: claimed %.3g s for block %d, far from the evidence; scheduling it at %.3g s",
            device_id,
            field,
            clamp.claimed,
            clamp.block,
            clamp.used,
        )
        return clamp
