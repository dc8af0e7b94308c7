"""Serving the API inside the node: the aiohttp app on its own event loop in one thread, beside the
threaded DICOM SCP, started and stopped with the rest of the node."""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from concurrent.futures import Future

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.api.app import create_app
from neuropetrix.api.context import Readiness
from neuropetrix.config.settings import Settings

log = logging.getLogger("neuropetrix.api")


class ApiServer:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], readiness: Readiness,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = settings.node.api_host, settings.node.api_port
        self.ssl_context = ssl_context     # HTTPS (api.https)
        self.app = create_app(settings, sessions, readiness)
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
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5)
        try:
            await runner.setup()
            await web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context).start()
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
