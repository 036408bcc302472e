"""Where a block that takes too long waits: the engine threads' innermost frames, for a
message the user can act on (a stalled server, a lock) and a CI log can be read from.

Reads are bounded by GDAL's HTTP time-outs and retries, so a block that has not finished
after minutes is either a very slow store or a bug; either way a plain wait would say
nothing. The report is made once per block; waiting goes on (cancel still works).
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import Callable, Dict, List, Optional, Tuple

STALL_REPORT_S = 120.0  # a block running this long gets one report of where it waits
FRAMES = 3  # innermost frames shown per thread
MAX_THREADS = 12  # threads shown per process
REMOTE_WAIT_S = 10.0  # for the workers' answer; a wedged worker does not answer at all
MAX_WORKERS = 8  # workers shown in a Dask report (those with engine threads first)
MAX_CHARS = 4000  # of the whole report
_ENGINE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def engine_stacks() -> List[str]:
    """One line per thread of this process that is inside the engine: its name and its
    innermost frames (innermost first). Runs on Dask workers too (`client.run`)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    me = threading.get_ident()
    found: List[Tuple[bool, str]] = []
    for ident, frame in sorted(sys._current_frames().items()):
        if ident == me:
            continue
        stack = traceback.extract_stack(frame)
        ours = [f for f in stack if f.filename.startswith(_ENGINE)]
        if not ours:
            continue
        inner = " <- ".join(_frame(f) for f in reversed(stack[-FRAMES:]))
        if ours[-1] not in stack[-FRAMES:]:  # the engine line waiting on the frames shown
            inner += f" <- ... {_frame(ours[-1])}"
        reading = any("rasterio" in f.filename for f in stack)
        found.append((not reading, f"{names.get(ident, ident)}: {inner}"))
    lines = [line for _, line in sorted(found, key=lambda item: item[0])]  # reads first
    if len(lines) > MAX_THREADS:
        lines = lines[:MAX_THREADS] + [f"... and {len(lines) - MAX_THREADS} more threads"]
    return lines


def _frame(f: traceback.FrameSummary) -> str:
    return f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"


def local_report() -> str:
    return "; ".join(engine_stacks()) or "no engine thread is running"


def dask_report(client) -> Callable[[], str]:
    """A report of every worker's engine threads, waited for at most REMOTE_WAIT_S."""

    def report() -> str:
        answer: Dict[str, object] = {}

        def ask() -> None:
            try:
                answer.update(client.run(engine_stacks, on_error="return"))
            except Exception as exc:  # the scheduler is gone: say so, do not fail the run
                answer["scheduler"] = f"no answer ({type(exc).__name__}: {exc})"

        asking = threading.Thread(target=ask, name="clearsky-stall-report", daemon=True)
        asking.start()
        asking.join(REMOTE_WAIT_S)
        if asking.is_alive():
            return f"the workers did not say within {REMOTE_WAIT_S:.0f} s"
        busy = sorted(answer.items(), key=lambda kv: (not kv[1], kv[0]))
        parts = []
        for worker, lines in busy[:MAX_WORKERS]:
            text = "; ".join(lines) if isinstance(lines, list) else str(lines)
            parts.append(f"{worker}: {text or 'no engine thread is running'}")
        if len(busy) > MAX_WORKERS:
            parts.append(f"... and {len(busy) - MAX_WORKERS} more workers")
        return " | ".join(parts) or "no worker answered"

    return report


def stall_message(block: str, seconds: float, where: Optional[Callable[[], str]]) -> str:
    text = where() if where is not None else local_report()
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + " ..."
    return (f"Block {block} has not finished after {seconds:.0f} s of waiting for it (reads "
            f"wait at most GDAL_HTTP_TIMEOUT per try); still waiting. Where it waits: {text}")
