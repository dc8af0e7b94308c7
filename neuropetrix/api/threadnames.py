"""The API's threads named in the OS too (Linux; Python names them there itself only from 3.14), so that
`top -H`, py-spy and benchmarks/api.py tell the event loop ("api") from its database workers ("api-db"),
its default executor ("api-io") and the SCP's threads. A thread starts with its creator's name, so each
pool names its own workers."""
from __future__ import annotations

import contextlib
import ctypes
from concurrent.futures import ThreadPoolExecutor

PR_SET_NAME = 15


def name_os_thread(name: str) -> None:
    """Name the calling thread `name` (at most 15 bytes) in the OS; a no-op where that is not Linux."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def named_pool(workers: int | None, name: str) -> ThreadPoolExecutor:
    """A thread pool whose workers carry `name` in Python and in the OS."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=name_os_thread, initargs=(name,))
