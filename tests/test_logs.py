"""The repeat filter: a flood of one error becomes one line and a count; different lines pass."""
from __future__ import annotations

import logging

from neuropetrix.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeats_are_held_back_and_counted(caplog):
    clock = Clock()
    log = logging.getLogger("test.repeat")
    caplog.handler.addFilter(RepeatFilter(interval=10.0, clock=clock))
    try:
        caplog.set_level(logging.INFO)
        for _ in range(5000):
            log.error("cannot accept: %s", "Too many open files")
            clock.now += 0.001
        log.error("rejected %s", "1.2.3")          # another line is not merged
        log.error("rejected %s", "1.2.4")
        log.info("association accepted")           # below WARNING: never held back
        log.info("association accepted")
        clock.now += 10
        log.error("cannot accept: %s", "Too many open files")
    finally:
        caplog.handler.filters.clear()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["cannot accept: Too many open files", "rejected 1.2.3", "rejected 1.2.4",
                     "association accepted", "association accepted",
                     "cannot accept: Too many open files [4999 more like it in the last 15 s]"]
