"""Run a command and report its own peak RSS and CPU: `python3 -S launch.py OUT.json CMD...`.

The parent of a benchmark job is big (the harness holds GDAL, numpy and the engine); a
child forked straight from it inherits that RSS as its high-water mark, which `exec` keeps
(Linux carries `maxrss` across exec). This launcher is a small fresh interpreter: the job
forked from it starts from a few MB, so `wait4`'s `ru_maxrss` is the job's own peak.
Used for `qgis_process.bin`, which cannot report its own VmHWM as `worker.py` does.
"""

import json
import os
import sys
import time


def main(argv):
    out, cmd = argv[1], argv[2:]
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the job: stdout/stderr are inherited (the harness's log file)
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    with open(out, "w") as fh:
        json.dump({"returncode": os.waitstatus_to_exitcode(status), "wall_seconds": wall,
                   "maxrss_kb": usage.ru_maxrss,
                   "cpu_seconds": usage.ru_utime + usage.ru_stime}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
