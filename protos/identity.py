"""Who is calling: identities carried in certificates, the same on every gRPC link.

`deft certs` puts one URI in each certificate's subjectAltName, and that URI is the identity:
`urn:lola-deft:device:<id>` for a device (the device id is the certificate's, never the one a
request claims), `urn:lola-deft:coordinator` for the coordinator (the only client the scheduler
serves), `urn:lola-deft:scheduler` for the scheduler. A certificate without such a URI (a web
server's, say, even from the same CA) identifies no one here.

This module reads what gRPC's TLS handshake verified (the auth context); it needs no grpc or
cryptography import, so every role and the layering-tested core can use it.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

DEVICE_URI_PREFIX = "urn:lola-deft:device:"
COORDINATOR_URI = "urn:lola-deft:coordinator"
SCHEDULER_URI = "urn:lola-deft:scheduler"


def device_uri(device_id: str) -> str:
    return DEVICE_URI_PREFIX + device_id


@dataclass(frozen=True)
class Peer:
    """The caller as TLS proved it: nothing when the link is plaintext."""

    secure: bool = False
    uris: tuple[str, ...] = ()
    certificate_pem: bytes = b""

    @cached_property
    def certificate_sha256(self) -> str | None:
        """Computed only when asked (registration, a non-empty revocation list), not on every
        heartbeat."""
        return certificate_fingerprint(self.certificate_pem) if self.certificate_pem else None

    @property
    def device_id(self) -> str | None:
        """The device this certificate names, if exactly one (two would be ambiguous)."""
        ids = [
            uri[len(DEVICE_URI_PREFIX) :] for uri in self.uris if uri.startswith(DEVICE_URI_PREFIX)
        ]
        return ids[0] if len(ids) == 1 and ids[0] else None

    @property
    def is_coordinator(self) -> bool:
        return COORDINATOR_URI in self.uris


PLAINTEXT_PEER = Peer()


def peer_of(auth_context: Mapping[str, Any]) -> Peer:
    """The verified identity of a call, from grpc's `context.auth_context()` (a mapping of
    property names to lists of bytes)."""
    if b"ssl" not in list(auth_context.get("transport_security_type", ())):
        return PLAINTEXT_PEER
    uris = tuple(value.decode("utf-8", "replace") for value in auth_context.get("peer_uri", ()))
    return Peer(True, uris, b"".join(auth_context.get("x509_pem_cert", ())))


def peer_of_socket(sock: ssl.SSLSocket | Any) -> Peer:
    """The verified identity behind a data-port socket (nobody, on a plain one): the same URIs
    and certificate as peer_of reads from gRPC."""
    if not isinstance(sock, ssl.SSLSocket):
        return PLAINTEXT_PEER
    der = sock.getpeercert(binary_form=True)
    if der is None:
        return Peer(True)
    names: Any = (sock.getpeercert() or {}).get("subjectAltName", ())
    uris = tuple(str(value) for kind, value in names if kind == "URI")
    return Peer(True, uris, ssl.DER_cert_to_PEM_cert(der).encode("ascii"))


def certificate_fingerprint(pem: bytes) -> str:
    """SHA-256 of the certificate's DER form, the value `deft certs revoke` lists."""
    der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii", "replace"))
    return hashlib.sha256(der).hexdigest()
