"""Keep freed CPU memory in the process: glibc malloc settings for training loops.

Every step of an episodic loop allocates and frees the same few-megabyte activations.
With glibc's defaults, blocks above its (adaptive) mmap threshold come from fresh
``mmap`` pages and the top of the heap goes back to the system past the trim threshold,
so each step faults its pages in again: 27.9 million minor faults and 74 s of system
time in one 9.5-minute MAML run on the 2-core CPU. Raising the mmap threshold to glibc's
maximum (32 MiB), the trim threshold to 1 GiB and the top pad to 64 MiB keeps those pages
mapped: a Conv-2d step takes 2-8x fewer faults and a MAML task about 1.3x less time
(docs/performance.md). The price is that the process keeps its peak heap until it exits.

Applied once per process by :func:`keep_freed_memory` (``fewnorm train`` and
``fewnorm evaluate`` call it); ``FEWNORM_MALLOC_TUNING=0`` leaves malloc as it is. The
settings change speed only, never a result. Other C libraries (musl, macOS, Windows)
are left alone.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys

log = logging.getLogger(__name__)

#: The environment variable that turns the tuning off (``0``).
OPT_OUT = "FEWNORM_MALLOC_TUNING"
# mallopt(3) parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: (parameter, bytes): the mmap threshold first, since setting it fixes the trim threshold's
#: adaptive rule too.
SETTINGS = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed pages (once per process); True when it took the settings."""
    if os.environ.get(OPT_OUT, "1").strip() == "0":
        log.debug("%s=0: malloc left at its defaults", OPT_OUT)
        return False
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # not glibc: its mallopt parameters would mean something else
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    taken = [mallopt(parameter, value) == 1 for parameter, value in SETTINGS]
    if not all(taken):
        refused = taken.count(False)
        log.warning("glibc refused %d of the malloc settings; steps may fault pages in again", refused)
    return all(taken)
