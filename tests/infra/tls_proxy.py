"""TLS in front of a plaintext TCP endpoint on 127.0.0.1: what a Kafka cluster's TLS listener
does, for tests of the clients' TLS settings against the real broker behind it.

The embedded broker (Tansu 0.6.0) cannot terminate TLS itself: its ``--cert`` and ``--key``
options share one argument group, which allows only one of the two, and it needs both. A real
TLS handshake (certificate verification, client certificates) happens here instead; the bytes
inside it reach the broker unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from types import TracebackType

from infra.broker import free_port

__all__ = ["TlsProxy"]


class TlsProxy:
    """Accept TLS connections on 127.0.0.1:``port`` with ``context`` and relay each to
    127.0.0.1:``upstream_port``, on a thread of its own, until the ``with`` block ends."""

    def __init__(self, upstream_port: int, context: ssl.SSLContext, port: int | None = None):
        self.upstream_port = upstream_port
        self.context = context
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._failed: OSError | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        # A refused handshake (an untrusted or missing certificate) is the client's failure to
        # see, not this thread's to report.
        self._loop.set_exception_handler(lambda loop, ctx: None)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=self.context)
            )
        except OSError as exc:  # the port was taken meanwhile: said by __enter__
            self._failed = exc
            self._loop.close()
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the TLS proxy did not start")
        if self._failed is not None:
            raise self._failed
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._failed is None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("the TLS proxy's thread did not stop")
