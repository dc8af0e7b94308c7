"""How a process that analyses studies uses memory: freed memory kept for the next array, and the
garbage collector's full passes between studies rather than during them.

The engine's analysis process (engine/analysis_runner.py) and `neuropetrix analyze` both set these up
before their studies. Imports nothing heavy: `analyze` loads neither the database nor the network.
"""
from __future__ import annotations

import ctypes
import gc

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4            # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Let freed memory be reused by the next array instead of going back to the kernel: glibc maps
    every block above 128 KiB-32 MiB afresh and unmaps it when freed, so each whole-body array (a
    16 MB mask, a 64 MB volume) arrived as new pages the kernel zeroed and faulted in: about a quarter
    of a warm study's CPU time. With no mmap and no trimming, the process's heap grows to one study's
    peak (about 0.9 GiB for a whole-body PET/CT) and stays there for the next. Returns whether glibc
    took both settings (elsewhere nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False                          # not glibc: its allocator's own policy


# Young collections as usual (every 700 allocations, the middle generation every 10 of them); a full
# one only after this many middle ones, i.e. practically never during a study (`collect_between_studies`).
_FULL_COLLECTION_AFTER = 1_000_000


def collect_between_studies() -> None:
    """Full garbage collections between studies, not during them (set once the imports are done,
    after the engine's warm-up; analysis_runner's `_child` collects after each study). What is alive
    then (modules, classes, the libraries' tables: most of the process's objects, none of them ever
    garbage) is frozen out of the collector's reach, and full collections wait for the end of the
    study, when its objects are freed: during a whole-body study Python's own rule started two or
    three, each walking every object of the process (about 1 s a study in all). Cyclic garbage of a
    study still goes in the young collections (hl7apy's message trees, most of it); what outlives
    them waits for the end of the study."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _FULL_COLLECTION_AFTER)
