"""A local relay that speaks TLS to a plugin through OpenSSL instead of gRPC's TLS.

go-plugin's AutoMTLS certificate uses an ECDSA P-521 key, whose signatures the
TLS library built into grpcio (BoringSSL) refuses, so gRPC's own TLS cannot
reach a Go plugin. The relay listens on a private unix socket, and for each
connection gRPC makes to it opens a mutual-TLS connection (Python's ssl
module, ALPN h2) to the plugin and copies bytes both ways. Certificates that
gRPC can handle (our own SDK's P-256) do not go through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .mtls import CertPair, der_to_pem

__all__ = ["TlsRelay", "needs_relay"]

_CHUNK = 64 * 1024


def needs_relay(server_cert_der: bytes) -> bool:
    """True when gRPC's TLS cannot verify this certificate's key (P-521)."""
    key = x509.load_der_x509_certificate(server_cert_der).public_key()
    return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size > 384


def _client_context(server_cert_der: bytes, client: CertPair, scratch: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=der_to_pem(server_cert_der).decode())
    ctx.set_alpn_protocols(["h2"])
    # load_cert_chain reads files only: write them privately, load, delete at once.
    fd, name = tempfile.mkstemp(dir=scratch, prefix=".client-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(client.cert_pem + client.key_pem)
        ctx.load_cert_chain(name)
    finally:
        os.unlink(name)
    return ctx


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class TlsRelay:
    """Plain unix socket in front, mutual TLS to the plugin behind."""

    def __init__(
        self, network: str, address: str, server_cert_der: bytes, client: CertPair, scratch: Path
    ) -> None:
        self._network = network
        self._address = address
        self._ctx = _client_context(server_cert_der, client, scratch)
        self._dir = Path(tempfile.mkdtemp(prefix="relay-", dir=scratch))
        self.path = self._dir / "sock"
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._network == "unix":
            return await asyncio.open_unix_connection(
                self._address, ssl=self._ctx, server_hostname="localhost"
            )
        host, _, port = self._address.rpartition(":")
        return await asyncio.open_connection(
            host, int(port), ssl=self._ctx, server_hostname="localhost"
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._open_upstream()
        except (OSError, ssl.SSLError):
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    async def start(self) -> str:
        """Start listening; returns the gRPC target to dial."""
        self._server = await asyncio.start_unix_server(self._track, path=str(self.path))
        os.chmod(self.path, 0o600)
        return f"unix:{self.path}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        with contextlib.suppress(OSError):
            self.path.unlink()
            self._dir.rmdir()
