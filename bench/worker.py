"""One benchmark job in its own process: `python bench/worker.py SPEC.json`.

The job times itself from its first network call to its output on disk and reports its
own peak RSS; the parent adds CPU time (wait4) and the server's log.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(spec: dict) -> dict:
    sys.path.insert(0, str(HERE))  # the runners sit beside this file; bench/ is no package
    runner = importlib.import_module("odc_runner" if spec["tool"] == "odc" else "clearsky_runner")
    job = runner.cloudcheck if spec["case"] == "cloudcheck" else runner.mosaic
    if not spec.get("profile"):
        return job(spec)
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.005)
    profiler.start()
    try:
        return job(spec)
    finally:
        profiler.stop()
        Path(spec["profile"]).write_text(
            profiler.output_text(unicode=False, color=False, show_all=False))


def peak_rss_kb() -> int:
    """This process's own high-water RSS (VmHWM). Not ru_maxrss: Linux carries the parent's
    RSS at fork over exec into it, so every job would look at least as big as the harness."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    result = run(spec)
    result["peak_rss_kb"] = peak_rss_kb()
    Path(spec["result"]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
