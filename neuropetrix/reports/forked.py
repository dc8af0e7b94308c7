"""One call run in a forked helper process while the caller goes on with other work.

The report objects are independent of each other once the analysis is done: the SEG and SR (most of
the writing time, in highdicom and pydicom) can be built while the PDF, the pictures and the messages
are. A fork shares the analysis's arrays copy-on-write, so nothing but the call's return value (bytes)
crosses back, pickled over a pipe. An exception in the helper comes back as itself (its message, not
its traceback) and is raised by `result`; a helper that dies without answering is a ReportError.

Only for a process that forks safely (no other threads holding locks): the engine's analysis process
is one; a test process or a server with threads is not, so `Pending(call, fork=False)` runs the call
when its result is asked for, in the caller's process.
"""
from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Callable
from typing import Generic, TypeVar

from neuropetrix.reports.errors import ReportError

T = TypeVar("T")


class Pending(Generic[T]):
    """A call's result, computed in a forked helper (or, without a fork, when it is asked for)."""

    def __init__(self, call: Callable[[], T], fork: bool) -> None:
        self._call: Callable[[], T] | None = call
        self._pid = 0
        self._read = -1
        if fork:
            self._fork(call)

    def _fork(self, call: Callable[[], T]) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:                                   # the helper: answer once, then leave without cleanup
            os.close(read)
            try:
                try:
                    payload = pickle.dumps((True, call()))
                except BaseException as exc:           # noqa: BLE001 — every failure goes back to the caller
                    try:
                        payload = pickle.dumps((False, exc))
                    except Exception:                  # noqa: BLE001 — an exception that does not pickle
                        payload = pickle.dumps((False, ReportError(f"{type(exc).__name__}: {exc}")))
                with os.fdopen(write, "wb") as out:
                    out.write(payload)
            finally:
                os._exit(0)
        os.close(write)
        self._pid, self._read, self._call = pid, read, None

    def result(self) -> T:
        """The call's return value, or its exception raised here."""
        if self._call is not None:
            call, self._call = self._call, None
            return call()
        with os.fdopen(self._read, "rb") as answer:
            self._read = -1
            data = answer.read()
        _, status = os.waitpid(self._pid, 0)
        self._pid = 0
        try:
            ok, value = pickle.loads(data)
        except Exception:                              # noqa: BLE001 — nothing (or half) came back
            raise ReportError(f"the report helper process ended without an answer (wait status {status})") from None
        if ok:
            return value
        raise value

    def cancel(self) -> None:
        """Stop the helper if it is still running (the caller failed and will not ask for the result)."""
        self._call = None
        if self._read >= 0:
            os.close(self._read)
            self._read = -1
        if self._pid:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self._pid, 0)
            self._pid = 0

