"""Serving the API inside the node: the aiohttp app on its own event loop in one thread, beside the
threaded DICOM SCP, started and stopped with the rest of the node.

Connections are bounded so that no client can hold the process's file descriptors (which the SCP needs
too): aiohttp's keep-alive deadline runs from the connection's start and from each response, and
trickled bytes do not move it, so `api.idle_timeout_seconds` bounds both the wait for a request's
headers (slowloris) and idleness between requests; beyond `api.max_connections` open connections a
new one is answered 503 and closed at once.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.api.app import create_app
from neuropetrix.api.database import Database
from neuropetrix.api.ops import Readiness
from neuropetrix.api.threadnames import name_os_thread, named_pool
from neuropetrix.api.tokens import TokenSigner, load_signing_key
from neuropetrix.config.settings import Settings

log = logging.getLogger("neuropetrix.api")
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Retry-After: 5\r\nContent-Length: 60\r\n\r\n"
        b'{"status": 503, "message": "too many open connections"}    ')


class _Busy(asyncio.Protocol):
    """The answer to a connection over the cap: 503, closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(BUSY)        # type: ignore[attr-defined]
        transport.close()


class CappedSite(web.BaseSite):
    """A TCP site that serves at most `max_connections` connections at a time (counted as aiohttp
    registers them: a burst of connects may pass the cap by those still being set up)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, max_connections: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port, self._max = host, port, max_connections
        self._refused_logged = 0.0

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) < self._max:
            return server()
        now = time.monotonic()
        if now - self._refused_logged > 60:     # one line a minute, not one per connection
            self._refused_logged = now
            log.warning("API: %d connections open (api.max_connections); refusing new ones", self._max)
        return _Busy()

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self._host, self._port, ssl=self._ssl_context, reuse_address=True)


def build_app(settings: Settings, sessions: sessionmaker[Session], readiness: Readiness,
              clock: Callable[[], float] = time.time) -> web.Application:
    """What the app needs, built: the signing key (created on first use) and the database pool; then
    the app wired over them."""
    signer = TokenSigner(load_signing_key(settings.api.signing_key, settings.node.data_dir),
                         settings.api.access_token_seconds)
    return create_app(settings, Database(sessions), readiness, signer, clock)


class ApiServer:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], readiness: Readiness,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = settings.node.api_host, settings.node.api_port
        self.ssl_context = ssl_context     # HTTPS (api.https)
        self.limits = settings.api
        self.app = build_app(settings, sessions, readiness)
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen on api_host:api_port; raises OSError (port taken) here, in the caller's thread."""
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(started),),
                                        name="api", daemon=True)
        self._thread.start()
        try:
            started.result()
        except OSError as exc:
            raise OSError(exc.errno, f"API port {self.port}: {exc.strerror}") from None
        log.info("API and dashboard on %s://%s:%d/", "https" if self.ssl_context else "http", self.host, self.port)

    async def _serve(self, started: Future[None]) -> None:
        name_os_thread("api")
        self._loop.set_default_executor(named_pool(None, "api-io"))
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5,
                               keepalive_timeout=self.limits.idle_timeout_seconds)
        try:
            await runner.setup()
            await CappedSite(runner, self.host, self.port, self.limits.max_connections,
                             self.ssl_context).start()
        except BaseException as exc:
            await runner.cleanup()
            started.set_exception(exc)
            return
        started.set_result(None)
        await self._stopping.wait()
        await runner.cleanup()

    def stop(self) -> None:
        """Close the WebSockets (clients reconnect elsewhere or later), stop listening, end the tasks."""
        if self._thread is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=15)
        if self._thread.is_alive():
            log.warning("API did not stop within 15 s; leaving it to the process exit")
            return
        self._loop.close()
