"""The time the engine goes by, passed in so tests move it instead of sleeping.

`now()` is naive UTC, the form every timestamp in the database takes; `monotonic()` measures spans
(deadlines) that must not jump with the wall clock.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol

from neuropetrix.store.db import utcnow


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return utcnow()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM = SystemClock()
