"""A step the engine repeats on a daemon thread: the study-completion sweep, the order tracker.

A step that raises is logged and tried again at the next tick, so one bad row or a lost database
connection does not end the loop; `stop` ends it between steps.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class PeriodicThread:
    def __init__(self, name: str, interval: float, step: Callable[[], object], failure: str,
                 log: logging.Logger) -> None:
        """`step` every `interval` seconds on a thread called `name`; `failure` is the log line when it raises."""
        self.name, self.interval, self.step, self.failure, self.log = name, interval, step, failure, log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception:
                self.log.exception(self.failure)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """End the loop and wait up to `timeout` seconds for the step in hand."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
