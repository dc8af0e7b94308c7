"""What every handler reaches through `request.app[CTX]`: settings, the database, tokens, the feed."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.config.settings import Settings

if TYPE_CHECKING:
    from neuropetrix.api.auth import Auth
    from neuropetrix.api.events import EventFeed

T = TypeVar("T")


class Database:
    """Runs blocking SQLAlchemy work off the event loop, one transaction per call, so a slow query or
    a locked SQLite file never stalls the WebSocket streams."""

    def __init__(self, sessions: sessionmaker[Session], workers: int = 8) -> None:
        self.sessions = sessions
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="api-db")

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


@dataclass
class Readiness:
    """What /readyz checks besides the database: supplied by the node that serves the API."""

    storage_dir: Path
    dicom_listening: Callable[[], bool] = lambda: False
    dicom_associations: Callable[[], int] = lambda: 0


@dataclass
class ApiContext:
    settings: Settings
    db: Database
    auth: Auth
    feed: EventFeed
    readiness: Readiness
    websockets: set[web.WebSocketResponse] = field(default_factory=set)
    # study-list pages by (limit, offset, filter): (event id, time, JSON body); see routes_studies
    study_pages: dict[tuple, tuple[int, float, bytes]] = field(default_factory=dict)

    @property
    def results_dir(self) -> Path:
        return self.settings.node.data_dir / "results"


CTX = web.AppKey("ctx", ApiContext)
