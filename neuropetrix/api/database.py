"""The database as the API's handlers use it: blocking SQLAlchemy work run off the event loop."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.api.threadnames import named_pool

T = TypeVar("T")


class Database:
    """Runs blocking SQLAlchemy work off the event loop, one transaction per call, so a slow query or
    a locked SQLite file never stalls the WebSocket streams."""

    def __init__(self, sessions: sessionmaker[Session], workers: int = 8) -> None:
        self.sessions = sessions
        self._pool = named_pool(workers, "api-db")

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(session, *args)` in one transaction, in a worker thread."""
        def work() -> T:
            with self.sessions.begin() as s:
                return fn(s, *args)
        return await self.run(work)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking call that manages its own transaction, in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


DATABASE = web.AppKey("database", Database)
