"""One load at a time per key: concurrent callers asking for the same thing share one answer.

The study-list page and the access-token check are cached for a second; when such an entry runs out,
every dashboard asking in that moment missed it together and each ran its own database read, all
queued on the same few worker threads: the slowest of them was the REST tail. With `SingleFlight`
the first caller's read is the one everybody waits for.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """`await flight(key, load)`: `load()`'s result, shared by every caller of `key` while it runs
    (its exception too). A caller that is cancelled does not cancel the load for the others."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[T]] = {}

    async def __call__(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        future = self._running.get(key)
        if future is None:
            future = asyncio.ensure_future(load())
            self._running[key] = future
            future.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(future)

    def _forget(self, key: Hashable, done: asyncio.Future[T]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()          # retrieved: no "exception was never retrieved" when all waiters left
