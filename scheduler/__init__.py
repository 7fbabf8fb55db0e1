"""LoLa-DEFT scheduler: which device trains which LoRA block, and with how much uplink bandwidth.

Pure numpy/scipy; the gRPC service (``scheduler.service``) and CLI (``scheduler.cli``) wrap it.
"""

from scheduler.allocation import Allocation
from scheduler.errors import InfeasibleError, InstanceError, SchedulerError
from scheduler.instance import Instance, parse_instance
from scheduler.policies import POLICIES, solve

__all__ = [
    "POLICIES",
    "Allocation",
    "InfeasibleError",
    "Instance",
    "InstanceError",
    "SchedulerError",
    "parse_instance",
    "solve",
]
