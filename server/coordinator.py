"""What the agents' calls do, on the coordinator's own types: the one surface the gRPC
servicer talks to. It checks who is calling (the enrolment gate: certificate identity, enrolled,
not revoked) and their session before anything else, validates, and hands over to the registry
and the round engine; every refusal is a CoordinatorError and changes nothing. A caller that
fails the gate learns nothing of the model or of other devices."""

from __future__ import annotations

import numpy as np

from lola_deft.protos import capabilities
from lola_deft.protos.identity import PLAINTEXT_PEER, Peer
from lola_deft.server.config import CoordinatorConfig
from lola_deft.server.engine import RoundEngine
from lola_deft.server.enrolment import Enrolment
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
from lola_deft.server.pipeline import PipelineJob
from lola_deft.server.registry import AgentRegistry
from lola_deft.server.validation import (
    MAX_JOB,
    check_text,
    validate_header,
    validate_registration,
)

STATES_WAIT_S = 30.0  # a states download waits this long for its micro-batch, then "ask again"


class Coordinator:
    def __init__(
        self,
        config: CoordinatorConfig,
        engine: RoundEngine,
        registry: AgentRegistry,
        fingerprint: str,
        num_labels: int,
        enrolment: Enrolment | None = None,
    ) -> None:
        self.enrolment = enrolment or Enrolment(require_identity=False)
        self.config = config
        self.engine = engine
        self.registry = registry
        self.fingerprint = fingerprint
        self.num_labels = num_labels

    def register(self, registration: Registration, peer: Peer = PLAINTEXT_PEER) -> Welcome:
        self.enrolment.admit(peer, registration.device_id)
        validate_registration(registration)
        if registration.model_fingerprint != self.fingerprint:
            raise Incompatible(
                f"model_fingerprint: the agent loaded {quote(registration.model_fingerprint)}, "
                "another base model than the coordinator trains; load the same model directory"
            )
        if self.config.method == "pac" and capabilities.PAC not in registration.capabilities:
            raise Incompatible(
                "capabilities: this run trains PAC+'s parallel adapters (--method pac) and the "
                f"agent does not offer {capabilities.PAC!r}; upgrade it"
            )
        identity = peer.certificate_sha256 if self.enrolment.require_identity else None
        record = self.registry.register(registration, identity)
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
            upload_dtype=config.upload_dtype,
            method=config.method,
        )

    def authenticate(self, session: str, peer: Peer = PLAINTEXT_PEER) -> str:
        """The device id of a live session the caller may use (UnknownSession, Forbidden or
        Unauthenticated otherwise); marks the device as seen only after the checks."""
        caller = self.enrolment.identify(peer)  # first: an unidentified caller learns nothing
        self.enrolment.check(caller, self.registry.device_of(session))
        identity = peer.certificate_sha256 if self.enrolment.require_identity else None
        return self.registry.touch(session, identity).device_id

    def heartbeat(self, session: str, peer: Peer = PLAINTEXT_PEER) -> int:
        self.authenticate(session, peer)
        return self.engine.completed

    async def report(self, report: ResourceReport) -> Instruction:
        return await self.engine.submit_report(report)

    def weights(
        self, session: str, round_number: int, peer: Peer = PLAINTEXT_PEER
    ) -> tuple[dict[str, np.ndarray], float]:
        """The round's adapters and the time.monotonic() value by which this device's
        transfers must be done."""
        device_id = self.authenticate(session, peer)
        return self.engine.weights_for(device_id, round_number), self.engine.round_deadline(
            device_id, round_number
        )

    def open_upload(self, header: UploadHeader, peer: Peer = PLAINTEXT_PEER) -> UploadPlan:
        """Checks the header of a gradient stream before any of it is read."""
        device_id = self.authenticate(header.session, peer)
        validate_header(header)
        return self.engine.plan_upload(device_id, header)

    # -- PAC+ cache-filling pipelines (server/pipeline.py) -------------------------------------
    def pipeline_stage(
        self, session: str, job: str, peer: Peer = PLAINTEXT_PEER
    ) -> tuple[str, PipelineJob]:
        """The caller's device and the pipeline `job` it has a stage in (who it is first)."""
        device_id = self.authenticate(session, peer)
        check_text(job, "job", MAX_JOB, required=True)
        pipeline = self.engine.pipeline(job)
        pipeline.stage_of(device_id)
        return device_id, pipeline

    def open_states_upload(
        self, session: str, job: str, micro_batch: int, peer: Peer = PLAINTEXT_PEER
    ) -> tuple[str, PipelineJob, dict[str, tuple[int, ...]]]:
        """Checks a states upload's header; returns the tensors its stream must carry."""
        device_id, pipeline = self.pipeline_stage(session, job, peer)
        return device_id, pipeline, pipeline.upload_shapes(device_id, micro_batch)

    async def download_states(
        self, session: str, job: str, micro_batch: int, peer: Peer = PLAINTEXT_PEER
    ) -> tuple[dict[str, np.ndarray], float]:
        """The states this device's stage needs for `micro_batch`, and the time.monotonic()
        value by which the transfer must be done."""
        device_id, pipeline = self.pipeline_stage(session, job, peer)
        states = await pipeline.download(device_id, micro_batch, STATES_WAIT_S)
        return states, pipeline.deadline

    def abandon_upload(
        self, plan: UploadPlan, header: UploadHeader, kind: str, reason: str
    ) -> None:
        self.engine.abandon_upload(plan.device_id, header.round, kind, reason)

    def finish_upload(
        self,
        plan: UploadPlan,
        header: UploadHeader,
        tensors: dict[str, np.ndarray],
        upload_s: float,
        wire_bytes: int | None = None,
    ) -> UploadAck:
        """`wire_bytes`: what the stream carried (half the float32 size for float16 uploads)."""
        upload = Upload(
            device_id=plan.device_id,
            block=plan.block,
            tensors=tensors,
            compute_s=header.compute_s,
            upload_s=upload_s,
            num_bytes=wire_bytes
            if wire_bytes is not None
            else sum(t.nbytes for t in tensors.values()),
            train_loss=header.train_loss,
        )
        return self.engine.accept_upload(header.round, upload)
