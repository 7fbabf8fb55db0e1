"""LoLa-DEFT scheduler: which device trains which LoRA block, and with how much uplink bandwidth.

Pure numpy/scipy; the gRPC service (``scheduler.service``) and CLI (``scheduler.cli``) wrap it.
Names are loaded lazily so that importing a light submodule (errors, policy names, the CLI
parser) does not pull in scipy: agent-only installs have none.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "POLICIES": "scheduler.policies",
    "solve": "scheduler.policies",
    "Allocation": "scheduler.allocation",
    "Instance": "scheduler.instance",
    "parse_instance": "scheduler.instance",
    "InfeasibleError": "scheduler.errors",
    "InstanceError": "scheduler.errors",
    "SchedulerError": "scheduler.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
