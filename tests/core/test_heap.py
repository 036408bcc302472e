"""A run's threads share malloc arenas, so memory one frees serves the next (glibc)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import pytest

TURNS = textwrap.dedent("""
    import json, sys, threading
    import numpy as np
    from clearsky.core import io

    def rss_mb():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
    if sys.argv[1] == "run":
        with io.run_tiles(256, 2):  # what every search, estimate and mosaic starts with
            pass
    n, turn, kept = 12, threading.Condition(), []
    state = {"next": 0}
    def worker(k):
        # the 12 threads of a pool, alive at once, take turns: each decodes 30 MB of
        # 100 KB tiles, keeps the last one (so its arena cannot shrink) and frees the rest
        with turn:
            turn.wait_for(lambda: state["next"] == k)
        tiles = [np.ones(100 * 1024, "uint8") for _ in range(300)]
        kept.append(tiles[-1])
        del tiles
        with turn:
            state["next"] += 1
            turn.notify_all()
    base = rss_mb()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"kept_mb": rss_mb() - base}))
""")


def _kept(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", TURNS, mode], capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout)["kept_mb"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_memory_one_thread_of_a_run_frees_serves_the_next():
    """12 threads take turns at 30 MB each: in a run they share 4 arenas, so at most 4
    turns' worth stays mapped; without it each thread keeps its own 30 MB (as many
    arenas as glibc allows: 8 per core)."""
    with_run, without = _kept("run"), _kept("plain")
    assert with_run < 4 * 30 + 30, with_run
    assert without > 2 * with_run, (without, with_run)  # the same threads outside a run
