"""TLS for every gRPC link: one place that turns certificate files into gRPC credentials.

Without files everything stays plaintext (an isolated lab LAN). A server given --tls-cert and
--tls-key serves TLS; with --tls-ca as well it requires client certificates signed by that CA
(mutual TLS). A client given --tls-ca verifies the server against it, and presents
--tls-cert/--tls-key when the server asks for them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc


class TlsConfigError(ValueError):
    """Certificate options that do not fit together, or files that cannot be read."""


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TlsConfigError(f"cannot read the {what} {path}: {error.strerror}") from error


@dataclass(frozen=True)
class TlsFiles:
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TlsConfigError("--tls-cert and --tls-key go together")

    @property
    def enabled(self) -> bool:
        return self.cert is not None or self.ca is not None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if self.cert is None:
            if self.ca is not None:
                raise TlsConfigError("a server needs --tls-cert and --tls-key to use --tls-ca")
            return None
        key, chain = _read(self.key, "TLS key"), _read(self.cert, "TLS certificate")
        assert key is not None and chain is not None
        ca = _read(self.ca, "TLS CA bundle")
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if not self.enabled:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "TLS CA bundle"),
            private_key=_read(self.key, "TLS key"),
            certificate_chain=_read(self.cert, "TLS certificate"),
        )


PLAINTEXT = TlsFiles()


def add_port(server: grpc.Server | grpc.aio.Server, address: str, tls: TlsFiles = PLAINTEXT) -> int:
    """Bind `address` (with TLS when configured); returns the port, 0 when it cannot bind."""
    credentials = tls.server_credentials()
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


def open_channel(
    address: str, tls: TlsFiles = PLAINTEXT, options: Sequence[tuple[str, int]] = ()
) -> grpc.Channel:
    credentials = tls.channel_credentials()
    if credentials is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, credentials, options=list(options))


def add_tls_arguments(
    parser: argparse.ArgumentParser, flag: str = "--tls", *, server: bool
) -> None:
    """--tls-cert/--tls-key/--tls-ca (or another flag prefix, e.g. --scheduler-tls)."""
    dest = flag.lstrip("-").replace("-", "_")
    own = "this server's" if server else "this client's (for mutual TLS)"
    parser.add_argument(
        f"{flag}-cert",
        dest=f"{dest}_cert",
        type=Path,
        default=None,
        help=f"PEM certificate chain, {own}",
    )
    parser.add_argument(
        f"{flag}-key", dest=f"{dest}_key", type=Path, default=None, help=f"PEM private key, {own}"
    )
    parser.add_argument(
        f"{flag}-ca",
        dest=f"{dest}_ca",
        type=Path,
        default=None,
        help="PEM CA bundle: "
        + (
            "require client certificates it signed (mutual TLS)"
            if server
            else "verify the server against it (enables TLS)"
        ),
    )


def tls_from_args(args: argparse.Namespace, flag: str = "--tls") -> TlsFiles:
    dest = flag.lstrip("-").replace("-", "_")
    return TlsFiles(
        getattr(args, f"{dest}_cert"), getattr(args, f"{dest}_key"), getattr(args, f"{dest}_ca")
    )
