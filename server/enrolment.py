"""Who may train: the coordinator's one gate, consulted on every call.

With mutual TLS (the default) a caller is the device its certificate names; it may register
only under that id, use only that device's session, and only while enrolled: listed in the
allowed-devices file when one is given (otherwise any device certificate from the CA counts) and
its certificate not listed as revoked. Both files are re-read when they change, so enrolling,
revoking or rotating a device needs no restart. With --insecure there is no identity at all:
ids are whatever callers claim, and the gate can only refuse a second claim on a live id.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lola_deft.protos.identity import Peer
from lola_deft.server.errors import Forbidden, Unauthenticated, quote

RELOAD_EVERY_S = 1.0


def read_list(path: Path) -> list[str]:
    """One entry per line; '#' starts a comment; blank lines are ignored."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return []
    entries = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [entry for entry in entries if entry]


@dataclass
class WatchedList:
    """A list file, re-read when its modification time or size changes (checked at most once a
    second, so a heartbeat costs no disk access)."""

    path: Path
    clock: Callable[[], float] = time.monotonic
    entries: frozenset[str] = frozenset()
    _stamp: tuple[int, int] | None = field(default=None, repr=False)
    _checked: float = field(default=-float("inf"), repr=False)

    def current(self) -> frozenset[str]:
        now = self.clock()
        if now - self._checked >= RELOAD_EVERY_S:
            self._checked = now
            try:
                stat = os.stat(self.path)
                stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp:
                self._stamp = stamp
                self.entries = frozenset(read_list(self.path))
        return self.entries


class Enrolment:
    def __init__(
        self,
        require_identity: bool,
        allowed_devices: Path | None = None,
        revoked_certificates: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.require_identity = require_identity
        self.allowed = WatchedList(allowed_devices, clock) if allowed_devices else None
        self.revoked = WatchedList(revoked_certificates, clock) if revoked_certificates else None
        if self.allowed is not None:
            self.allowed.current()  # a missing file is an empty list: nobody is enrolled yet

    def identify(self, peer: Peer) -> str | None:
        """The device id the caller's certificate proves (None on an --insecure coordinator)."""
        if not self.require_identity:
            return None
        device_id = peer.device_id
        if not peer.secure or device_id is None:
            raise Unauthenticated(
                "a device certificate is required (one naming urn:lola-deft:device:<id>)"
            )
        revoked = self.revoked.current() if self.revoked is not None else frozenset()
        if revoked and peer.certificate_sha256 in revoked:
            raise Forbidden("this certificate has been revoked")
        if self.allowed is not None and device_id not in self.allowed.current():
            raise Forbidden("this device is not enrolled")
        return device_id

    def admit(self, peer: Peer, claimed_id: str) -> None:
        """May this caller register as `claimed_id`?"""
        device_id = self.identify(peer)
        if device_id is not None and claimed_id != device_id:
            raise Forbidden(
                f"this certificate is for device {quote(device_id)}, not {quote(claimed_id)}; "
                f"start the agent with --id {device_id}"
            )

    @staticmethod
    def check(caller: str | None, session_device: str) -> None:
        """May the identified caller use a session of `session_device`?"""
        if caller is not None and caller != session_device:
            # Says nothing of whose session it is: a stolen token must not tell its owner.
            raise Forbidden("this session belongs to another device")
