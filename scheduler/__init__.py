"""LoLa-DEFT scheduler: which device trains which LoRA block, and with how much uplink bandwidth.

Pure numpy/scipy; the gRPC service (``scheduler.service``) and CLI (``scheduler.cli``) wrap it.
Names are loaded lazily so that importing a light submodule (errors, policy names, the CLI
parser) does not pull in scipy: agent-only installs have none.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "POLICIES": "lola_deft.scheduler.policies",
    "solve": "lola_deft.scheduler.policies",
    "Allocation": "lola_deft.scheduler.allocation",
    "Instance": "lola_deft.scheduler.instance",
    "parse_instance": "lola_deft.scheduler.instance",
    "InfeasibleError": "lola_deft.scheduler.errors",
    "InstanceError": "lola_deft.scheduler.errors",
    "SchedulerError": "lola_deft.scheduler.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
