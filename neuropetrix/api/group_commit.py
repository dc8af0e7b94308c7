"""Group commit: concurrent callers' rows written together, each caller answered once its row is in.

Every audited request writes a row before its answer leaves (api/audit_middleware.py). One transaction
per request is one fsync per request (SQLite, `node.fsync`): with 50 dashboards asking at once that
was the REST latency. Here the rows that arrive while a write is under way wait for the next write,
which takes them all: N callers at once cost two commits, and none answers before its row is durable.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """`await commit(item, write)`: returns once `write` has stored a batch holding `item` (or raises
    what it raised). One write runs at a time; the items that came during it form the next batch."""

    def __init__(self) -> None:
        self._pending: list[T] = []
        self._batch_done: asyncio.Future[None] | None = None     # of the batch now filling
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, item: T, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._pending.append(item)
        if self._batch_done is None:
            self._batch_done = asyncio.get_running_loop().create_future()
        done = self._batch_done
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_all(write))
        await asyncio.shield(done)      # a caller that is cancelled leaves its row to be written

    async def _write_all(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                done, self._batch_done = self._batch_done, None
                try:
                    await write(batch)
                except asyncio.CancelledError:      # the node is stopping: no one waits for ever
                    for waiting in (done, self._batch_done):
                        if waiting is not None:
                            waiting.cancel()
                    raise
                except Exception as exc:
                    done.set_exception(exc)
                else:
                    done.set_result(None)
        finally:
            self._writer = None
