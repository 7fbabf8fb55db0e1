"""TLS for every gRPC link: one place that turns certificate files into gRPC credentials.

Secure by default: every role needs --tls-cert, --tls-key and --tls-ca (mutual TLS: the server
requires a client certificate signed by the CA, the client verifies the server against it, and
each side's certificate carries its identity, see lola_deft.protos.identity). `deft certs`
makes the files. Plaintext takes an explicit --insecure and is logged as a warning: it gives up
every identity, so anyone who reaches a port can register, train and read the adapters.
"""

from __future__ import annotations

import argparse
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("deft.security")


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

    def server_ssl_context(self) -> ssl.SSLContext | None:
        """The same mutual TLS as server_credentials, for the data port's plain sockets."""
        if self.cert is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(context)
        if self.ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_ssl_context(self) -> ssl.SSLContext | None:
        """The same checks as channel_credentials: the server's certificate must chain to the
        CA and name the host dialled; ours goes along."""
        if not self.enabled:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(context)
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        try:
            if self.cert is not None:
                context.load_cert_chain(self.cert, self.key)
            if self.ca is not None:
                context.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as error:
            raise TlsConfigError(f"cannot load the TLS files: {error}") from error


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
    parser: argparse.ArgumentParser, flag: str = "--tls", *, server: bool, insecure: bool = True
) -> None:
    """--tls-cert/--tls-key/--tls-ca (or another flag prefix, e.g. --scheduler-tls), and
    --insecure unless `insecure` is False."""
    dest = flag.lstrip("-").replace("-", "_")
    own = "this server's" if server else "this client's"
    parser.add_argument(
        f"{flag}-cert",
        dest=f"{dest}_cert",
        type=Path,
        default=None,
        help=f"PEM certificate chain, {own} (made by `deft certs`)",
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
            "accept only client certificates it signed"
            if server
            else "verify the server against it"
        ),
    )
    if insecure:
        parser.add_argument(
            "--insecure",
            action="store_true",
            help="plaintext gRPC without identities: anyone who reaches the port can take part "
            "(a trusted, isolated network only)",
        )


def tls_from_args(args: argparse.Namespace, flag: str = "--tls", *, role: str) -> TlsFiles:
    """Mutual-TLS files from the flags, all three required unless --insecure was given."""
    dest = flag.lstrip("-").replace("-", "_")
    files = TlsFiles(
        getattr(args, f"{dest}_cert"), getattr(args, f"{dest}_key"), getattr(args, f"{dest}_ca")
    )
    if getattr(args, "insecure", False):
        if files.cert is not None or files.ca is not None:
            raise TlsConfigError(f"--insecure and {flag}-* exclude each other")
        log.warning(
            "%s: --insecure: plaintext gRPC without identities; anyone who reaches the port can "
            "take part. Use it on a trusted, isolated network only.",
            role,
        )
        return PLAINTEXT
    return require_mutual(files, flag, role)


def require_mutual(files: TlsFiles, flag: str, role: str) -> TlsFiles:
    missing = [
        f"{flag}-{name}"
        for name, value in (("cert", files.cert), ("key", files.key), ("ca", files.ca))
        if value is None
    ]
    if missing:
        raise TlsConfigError(
            f"{role} needs {', '.join(missing)} for mutual TLS (make them with `deft certs "
            "init`), or --insecure for plaintext on a trusted, isolated network"
        )
    return files
