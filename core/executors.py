"""Where block tasks run: local threads (default), an existing Dask scheduler, a LocalCluster.

`EXECUTOR` is "" (threads in this process), "tcp://host:port" (a running `dask scheduler`
with workers that have the engine installed) or "local:N" (a LocalCluster of N worker
processes, headless runs only). Dask is optional: imported only when asked for, with a
message saying how to install it. Before anything is submitted, the workers' engine and
library versions are compared with this process's, so a stale worker cannot write pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import multiprocessing
import re
import sys
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

from . import stalls
from .errors import ClearskyError, InvalidParameterError

DASK_PINS = "dask==2026.8.0 distributed==2026.8.0"
INSTALL_HINT = (
    "EXECUTOR needs Dask, which is not installed in the Python that runs QGIS. Install it "
    f"with `python3 -m pip install {DASK_PINS}` (Debian/Ubuntu: "
    "`sudo apt install python3-distributed`; conda: `conda install dask distributed`), or "
    "leave EXECUTOR empty to run on this machine's threads."
)
GUI_REFUSAL = (
    "EXECUTOR=local:N starts worker processes, which inside the QGIS desktop would start "
    "QGIS itself again. Start a cluster outside QGIS instead: run `dask scheduler` and, on "
    "each machine, `dask worker tcp://SCHEDULER:8786` with Clearsky's engine installed, then "
    "set EXECUTOR to tcp://SCHEDULER:8786. Or leave EXECUTOR empty."
)
_ADDRESS = re.compile(r"^tcp://[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_LOCAL = re.compile(r"^local:(\d{1,3})$")
CONNECT_TIMEOUT = 20  # seconds to reach a scheduler
MAX_LOCAL_WORKERS = 64


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str  # "threads", "scheduler" or "local"
    address: str = ""
    workers: int = 0


def parse_executor(text: Optional[str]) -> ExecutorSpec:
    """'' -> threads, 'tcp://host:port' -> a scheduler, 'local:N' -> a LocalCluster."""
    value = (text or "").strip()
    if not value:
        return ExecutorSpec("threads")
    if _ADDRESS.match(value):
        return ExecutorSpec("scheduler", address=value)
    m = _LOCAL.match(value)
    if m and 1 <= int(m.group(1)) <= MAX_LOCAL_WORKERS:
        return ExecutorSpec("local", workers=int(m.group(1)))
    raise InvalidParameterError(
        f"EXECUTOR must be empty (this machine's threads), tcp://host:port (a Dask scheduler) "
        f"or local:N with N from 1 to {MAX_LOCAL_WORKERS} (worker processes); not {value!r}."
    )


def engine_fingerprint() -> Dict[str, str]:
    """What must match between this process and every worker: the engine's own code and
    the libraries that decide pixels."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    versions = {"clearsky-engine": digest.hexdigest()[:16],
                "python": ".".join(map(str, sys.version_info[:2]))}
    for name in ("numpy", "rasterio", "shapely", "pyproj"):
        with contextlib.suppress(Exception):
            versions[name] = importlib.import_module(name).__version__
    with contextlib.suppress(Exception):
        import rasterio

        versions["gdal"] = rasterio.__gdal_version__
    return versions


@dataclass
class Running:
    """An executor for the blocks (None: the orchestrator's own threads) and its limits."""

    executor: Optional[Executor]
    in_flight: int  # blocks submitted at once
    memory_limit: Optional[int] = None  # bytes per worker, when the cluster says
    where: Optional[Callable[[], str]] = None  # where a stalled block waits (None: here)


@contextlib.contextmanager
def open_executor(text: Optional[str], *, gui: bool = False) -> Iterator[Running]:
    """The executor EXECUTOR names, with its cluster closed afterwards."""
    spec = parse_executor(text)
    if spec.kind == "threads":
        yield Running(None, 0)
        return
    if spec.kind == "local" and gui:
        raise InvalidParameterError(GUI_REFUSAL)
    try:
        distributed = importlib.import_module("distributed")
    except ImportError:
        raise ClearskyError(INSTALL_HINT) from None
    with contextlib.ExitStack() as stack:
        if spec.kind == "local":
            multiprocessing.set_executable(python_executable())
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=spec.workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=None, silence_logs=40))
            client = stack.enter_context(distributed.Client(cluster, timeout=CONNECT_TIMEOUT))
        else:
            try:
                client = stack.enter_context(
                    distributed.Client(spec.address, timeout=CONNECT_TIMEOUT))
            except (OSError, TimeoutError) as exc:
                raise ClearskyError(
                    f"No Dask scheduler answered at {spec.address} within {CONNECT_TIMEOUT} s "
                    f"({exc}): start `dask scheduler` there, or check the address.") from exc
        check_versions(client)
        workers = client.scheduler_info().get("workers", {})
        threads = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
        limits = [int(w["memory_limit"]) for w in workers.values() if w.get("memory_limit")]
        yield Running(client.get_executor(pure=False), in_flight=2 * threads,
                      memory_limit=min(limits) if limits else None,
                      where=stalls.dask_report(client))


def python_executable() -> str:
    """The Python interpreter for worker processes. Inside an application that embeds Python
    (qgis_process), sys.executable is the application itself, which must not be started
    again: use the interpreter of the same installation instead."""
    exe = Path(sys.executable or "")
    prefixes = {Path(sys.prefix).resolve(), Path(sys.base_exec_prefix).resolve()}
    if (exe.is_absolute() and exe.is_file() and exe.name.lower().startswith("python")
            and any(p in exe.parents for p in prefixes)):
        return str(exe)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    base = Path(sys.base_exec_prefix)
    for candidate in (base / "bin" / f"python{version}", base / "bin" / "python3",
                      base / "python.exe", base / "python3.exe"):
        if candidate.is_file():
            return str(candidate)
    raise ClearskyError(
        f"No Python {version} interpreter was found under {base} to start worker processes: "
        "start `dask scheduler` and `dask worker` yourself and set EXECUTOR to its address.")


def check_versions(client) -> None:
    """Refuse a cluster whose workers run other engine code or other pixel libraries."""
    try:
        client.get_versions(check=True)
    except Exception as exc:  # dask's own mismatch report (python, dask, msgpack, ...)
        raise ClearskyError(f"The Dask cluster's versions do not match this machine's: {exc}"
                            ) from exc
    mine = engine_fingerprint()
    theirs = client.run(engine_fingerprint)
    if not theirs:
        raise ClearskyError("The Dask scheduler has no workers: start `dask worker` first.")
    for worker, versions in theirs.items():
        diff = {k: (mine.get(k), versions.get(k)) for k in set(mine) | set(versions)
                if mine.get(k) != versions.get(k)}
        if diff:
            shown = ", ".join(f"{k}: here {a}, worker {b}" for k, (a, b) in sorted(diff.items()))
            raise ClearskyError(
                f"Worker {worker} runs other code than this machine ({shown}): install the "
                "same Clearsky engine and libraries on every worker.")
