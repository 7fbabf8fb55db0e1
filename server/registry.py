"""Registered agents, their sessions and liveness."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field


@dataclass
class AgentRecord:
    device_id: str
    session: str
    hardware: str
    agent_version: str
    capabilities: list[str]
    index: int = 0
    registered_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)


class UnknownSession(LookupError):
    pass


class AgentRegistry:
    """Thread-safe map of sessions to agents. A device that registers again gets a new session;
    its old one stops working (so a restarted agent cannot upload twice under two names)."""

    def __init__(self, liveness_timeout_s: float) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self._lock = threading.Lock()
        self._by_session: dict[str, AgentRecord] = {}
        self._session_of: dict[str, str] = {}
        self._first_seen: dict[str, int] = {}  # device id -> registration order

    def register(
        self, device_id: str, hardware: str, version: str, capabilities: list[str]
    ) -> AgentRecord:
        with self._lock:
            old = self._session_of.pop(device_id, None)
            if old:
                self._by_session.pop(old, None)
            self._first_seen.setdefault(device_id, len(self._first_seen))
            record = AgentRecord(
                device_id,
                secrets.token_hex(16),
                hardware,
                version,
                capabilities,
                index=self._first_seen[device_id],
            )
            self._by_session[record.session] = record
            self._session_of[device_id] = record.session
            return record

    def touch(self, session: str) -> AgentRecord:
        with self._lock:
            record = self._by_session.get(session)
            if record is None:
                raise UnknownSession("unknown session; register again")
            record.last_seen = time.monotonic()
            return record

    def live(self) -> list[AgentRecord]:
        now = time.monotonic()
        with self._lock:
            return [
                r for r in self._by_session.values() if now - r.last_seen <= self.liveness_timeout_s
            ]
