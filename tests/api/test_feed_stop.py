"""The event feed stops when the app's cleanup cancels it, even when the cancellation comes in the same
few loop steps as a wake-up from a commit: Python 3.11's `asyncio.wait_for` returned the wake-up and
dropped the cancellation there, the feed polled on, and `serve` (or a test's app) never finished stopping."""
from __future__ import annotations

import asyncio

import pytest

from neuropetrix.api import event_feed

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("steps", range(5))
async def test_a_cancelled_feed_stops_even_just_after_a_wake_up(monkeypatch, steps: int) -> None:
    wakes = []
    watch_init = event_feed._CommitWatch.__init__

    def init(self, wake) -> None:
        wakes.append(wake)
        watch_init(self, wake)
    monkeypatch.setattr(event_feed._CommitWatch, "__init__", init)

    async def db(fn, *args):
        return 0 if fn is event_feed.last_event_id else []
    feed = event_feed.EventFeed(db, poll_seconds=30.0)
    task = asyncio.create_task(feed.run())
    for _ in range(5):                                 # the feed reads the log and waits
        await asyncio.sleep(0)
    wakes[0]()                                         # a commit of this process wakes it
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done and task.cancelled(), "the feed went on after it was cancelled"
