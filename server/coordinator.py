"""What the agents' calls do, on the coordinator's own types: the one surface the gRPC
servicer talks to. It authenticates sessions, validates, and hands over to the registry and the
round engine; every refusal is a CoordinatorError and changes nothing."""

from __future__ import annotations

import numpy as np

from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.engine import RoundEngine
from lola_deft.server.errors import Incompatible, quote
from lola_deft.server.messages import (
    Instruction,
    Registration,
    ResourceReport,
    Upload,
    UploadAck,
    UploadHeader,
    UploadPlan,
    Welcome,
)
from lola_deft.server.registry import AgentRegistry
from lola_deft.server.validation import validate_header, validate_registration


class Coordinator:
    def __init__(
        self,
        config: CoordinatorConfig,
        engine: RoundEngine,
        registry: AgentRegistry,
        fingerprint: str,
        num_labels: int,
    ) -> None:
        self.config = config
        self.engine = engine
        self.registry = registry
        self.fingerprint = fingerprint
        self.num_labels = num_labels

    def register(self, registration: Registration) -> Welcome:
        validate_registration(registration)
        if registration.model_fingerprint != self.fingerprint:
            raise Incompatible(
                f"model_fingerprint: the agent loaded {quote(registration.model_fingerprint)}, "
                "another base model than the coordinator trains; load the same model directory"
            )
        record = self.registry.register(registration)
        config = self.config
        return Welcome(
            session=record.session,
            heartbeat_interval_s=config.heartbeat_interval_s,
            model_name=self.fingerprint,
            lora_rank=config.lora.rank,
            lora_alpha=config.lora.alpha,
            lora_target_modules=tuple(config.lora.targets),
            blocks=self.engine.blocks,
            task=config.task,
            num_labels=self.num_labels,
            batch_size=config.batch_size,
            max_seq_length=config.max_seq_length,
            round=self.engine.next_round,
            agent_index=record.index,
        )

    def authenticate(self, session: str) -> str:
        """The device id of a live session (UnknownSession otherwise)."""
        return self.registry.touch(session).device_id

    def heartbeat(self, session: str) -> int:
        self.authenticate(session)
        return self.engine.completed

    async def report(self, report: ResourceReport) -> Instruction:
        return await self.engine.submit_report(report)

    def weights(self, session: str, round_number: int) -> dict[str, np.ndarray]:
        return self.engine.weights_for(self.authenticate(session), round_number)

    def round_deadline(self, round_number: int) -> float:
        """time.monotonic() value by which the round's transfers must be done."""
        return self.engine.round_deadline(round_number)

    def open_upload(self, header: UploadHeader) -> UploadPlan:
        """Checks the header of a gradient stream before any of it is read."""
        device_id = self.authenticate(header.session)
        validate_header(header)
        return self.engine.plan_upload(device_id, header)

    def abandon_upload(self, plan: UploadPlan, header: UploadHeader) -> None:
        self.engine.abandon_upload(plan.device_id, header.round)

    def finish_upload(
        self,
        plan: UploadPlan,
        header: UploadHeader,
        tensors: dict[str, np.ndarray],
        upload_s: float,
    ) -> UploadAck:
        upload = Upload(
            device_id=plan.device_id,
            block=plan.block,
            tensors=tensors,
            compute_s=header.compute_s,
            upload_s=upload_s,
            num_bytes=sum(t.nbytes for t in tensors.values()),
            train_loss=header.train_loss,
        )
        return self.engine.accept_upload(header.round, upload)
