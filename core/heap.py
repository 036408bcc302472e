"""Few malloc arenas, so freed arrays are reused instead of held per thread.

glibc gives each new thread an arena of its own (up to 8 per core), and an arena keeps
the pages its thread freed for its own later use. A run's 16 read threads, their pass and
band readers and the block workers each free decoded tiles and windows in their own arena:
after the blocks, 560 MB of the benchmark's 20 km median (MEMORY_MB 384) sat free in
thread arenas while Python held 3 MB. With at most
`ARENAS` arenas, threads share them and reuse each other's freed pages (see the README's
Reads section for the figures).

Only glibc has `mallopt`: elsewhere (Windows, macOS, musl) this does nothing. It is set
once per process and only lowers the number of arenas created from then on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 4

_lock = threading.Lock()
_done = False


def share_arenas() -> bool:
    """At most `ARENAS` malloc arenas from now on (once per process); True when set."""
    global _done
    with _lock:
        if _done:
            return True
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _done = bool(libc.mallopt(M_ARENA_MAX, ARENAS))
        except (OSError, AttributeError):
            return False
        return _done
