"""GroupCommit (the audit rows' group commit): concurrent callers share writes, none returns before
its own item is written, and a failed write fails only its own batch's callers."""
from __future__ import annotations

import asyncio

import pytest

from neuropetrix.api.group_commit import GroupCommit

pytestmark = pytest.mark.asyncio


async def test_fifty_callers_at_once_share_two_writes_and_each_returns_after_its_own():
    commit: GroupCommit[int] = GroupCommit()
    batches: list[list[int]] = []
    written: set[int] = set()

    async def write(batch: list[int]) -> None:
        batches.append(batch)
        await asyncio.sleep(0)           # the database thread: others arrive meanwhile
        written.update(batch)

    async def caller(i: int) -> bool:
        await commit(i, write)
        return i in written               # written before the caller goes on

    assert all(await asyncio.gather(*(caller(i) for i in range(50))))
    assert sorted(i for b in batches for i in b) == list(range(50))
    assert len(batches) <= 2
    await commit(50, write)               # later on: a write of its own
    assert batches[-1] == [50]


async def test_a_failed_write_fails_its_own_batch_only():
    commit: GroupCommit[int] = GroupCommit()
    first_started = asyncio.Event()

    async def write(batch: list[int]) -> None:
        if 0 in batch:
            first_started.set()
            await asyncio.sleep(0)
            raise OSError("disk full")

    first = asyncio.ensure_future(commit(0, write))
    await first_started.wait()
    second = asyncio.ensure_future(commit(1, write))     # arrives during the failing write: the next batch
    with pytest.raises(OSError):
        await first
    await second
