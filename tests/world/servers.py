"""Python handles on the two loopback servers that serve the offline archive.

`RangeServer` runs `rangeserver.py` (the COG store) and `StacServer` runs `rustac serve`
(the STAC API), each as a real child process, so the engine talks HTTP exactly as it does
to Earth Search. `ServedArchive` starts both over one archive root. Every process started
here is stopped by `stop()`, by the context managers, at interpreter exit (atexit) and,
on Linux, by the kernel if the test process dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Union

from .stacserver import prepare_stac, rustac_command

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
LOCK_TIMEOUT_S = 600.0
RANGESERVER = Path(__file__).with_name("rangeserver.py")

_live: set = set()
_live_lock = threading.Lock()


def _load_prctl():
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return None


_PRCTL = _load_prctl() if sys.platform.startswith("linux") else None  # resolved before fork


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent thread dies (Linux only).

    Start servers from the main thread: the signal follows the thread that forked.
    """
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(cmd: list[str], log: Path, cwd: Optional[Path] = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            preexec_fn=_die_with_parent if _PRCTL is not None else None,
        )


def _terminate(proc: Optional[subprocess.Popen]) -> None:
    """Terminate, wait a bounded time, then kill: the process is gone when this returns."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)


def _register(server) -> None:
    with _live_lock:
        _live.add(server)


def _unregister(server) -> None:
    with _live_lock:
        _live.discard(server)


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def free_port() -> int:
    """A port that was free a moment ago on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _http(url: str, data: Optional[bytes] = None, timeout: float = 10.0) -> bytes:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"} if data else {})
    with _OPENER.open(req, timeout=timeout) as resp:
        return resp.read()


class _Process:
    """Shared start/stop bookkeeping for a child server process."""

    proc: Optional[subprocess.Popen] = None
    url: str = ""
    workdir: Optional[Path] = None
    _own_workdir = False

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _server_log(self) -> str:
        path = self.workdir / "server.log" if self.workdir else None
        return path.read_text(errors="replace")[-2000:] if path and path.exists() else ""

    def stop(self) -> None:
        _terminate(self.proc)
        _unregister(self)
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir, self._own_workdir = None, False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class RangeServer(_Process):
    """The COG store: `world/rangeserver.py` in a child process on 127.0.0.1."""

    def __init__(self, root: Optional[Union[str, Path]] = None, delay_ms: int = 0,
                 workdir: Optional[Path] = None):
        self.root: Optional[Path] = None
        self.log_path: Optional[Path] = None
        if workdir is not None:
            self.workdir = Path(workdir)
        if root is not None:
            self.start(root, delay_ms)

    def start(self, root: Union[str, Path], delay_ms: int = 0) -> RangeServer:
        if self.running:
            raise RuntimeError("RangeServer already running")
        self.root = Path(root).resolve()
        if self.workdir is None:
            self.workdir, self._own_workdir = Path(tempfile.mkdtemp(prefix="clearsky-range-")), True
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file, self.log_path = self.workdir / "port", self.workdir / "requests.jsonl"
        port_file.unlink(missing_ok=True)
        cmd = [sys.executable, str(RANGESERVER), "--root", str(self.root), "--host", LOOPBACK,
               "--port", "0", "--port-file", str(port_file), "--log", str(self.log_path),
               "--delay-ms", str(int(delay_ms))]
        self.proc = _spawn(cmd, self.workdir / "server.log")
        _register(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self._server_log()
                self.stop()
                raise RuntimeError(f"rangeserver did not start: {log}")
            time.sleep(0.02)
        self.url = f"http://{LOOPBACK}:{int(port_file.read_text())}"
        return self

    # -- control ----------------------------------------------------------------------
    def _control(self, name: str, payload: Optional[dict] = None) -> bytes:
        if not self.running:
            raise RuntimeError("RangeServer is not running")
        data = None if payload is None and name == "log" else json.dumps(payload or {}).encode()
        return _http(f"{self.url}/__control/{name}", data)

    def requests(self) -> list[dict]:
        """The data requests served so far (control requests excluded), oldest first."""
        return json.loads(self._control("log"))

    def bytes_served(self, path_prefix: str = "") -> int:
        """Body bytes sent for data requests whose path starts with `path_prefix`."""
        return sum(e["bytes"] for e in self.requests() if e["path"].startswith(path_prefix))

    def clear_log(self) -> None:
        self._control("clear", {})

    def configure(self, delay_ms: int = 0, faults: Optional[list[dict]] = None) -> None:
        """Replace the delay and the fault rules ({"path": glob, "kind": k, "count": n|None})."""
        self._control("config", {"delay_ms": int(delay_ms), "faults": list(faults or [])})

    def reset(self) -> None:
        self._control("reset", {})


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Poll `url` until it answers 200, the process dies or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            _http(url, timeout=2.0)
            return True
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    return False


class StacServer(_Process):
    """A STAC API (`rustac serve`, in-memory backend) over the archive's STAC files.

    The memory backend implements core, features, collections and item search (bbox,
    intersects, datetime, ids, collections, limit + next links). It advertises no Filter
    or Query conformance; a search carrying `filter` or `query` returns no items, so
    clients must check /conformance before sending them. Search with POST: GET mixing
    `limit` with `bbox` or `collections` fails with 500 (see stacserver.py).
    """

    def __init__(self, stac_dir: Optional[Union[str, Path]] = None, asset_base: str = "",
                 workdir: Optional[Path] = None):
        if workdir is not None:
            self.workdir = Path(workdir)
        if stac_dir is not None:
            self.start(stac_dir, asset_base)

    def start(self, stac_dir: Union[str, Path], asset_base: str) -> StacServer:
        if self.running:
            raise RuntimeError("StacServer already running")
        if self.workdir is None:
            self.workdir, self._own_workdir = Path(tempfile.mkdtemp(prefix="clearsky-stac-")), True
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            files = prepare_stac(stac_dir, asset_base, self.workdir)
        except BaseException:
            self.stop()
            raise
        last_log = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = free_port()
            self.url = f"http://{LOOPBACK}:{port}"
            cmd = rustac_command(LOOPBACK, port, files)
            self.proc = _spawn(cmd, self.workdir / "server.log", cwd=self.workdir)
            _register(self)
            if _wait_http(f"{self.url}/conformance", self.proc, START_TIMEOUT_S):
                return self
            last_log = self._server_log()
            timed_out = self.proc.poll() is None
            _terminate(self.proc)
            if timed_out:  # a slow start is not a port clash: do not wait another 20 s
                break
        self.stop()
        raise RuntimeError(f"rustac serve did not start: {last_log}")


class ServedArchive:
    """Both servers over one archive root: COGs from `assets`, STAC from `stac_url`."""

    def __init__(self, root: Union[str, Path], delay_ms: int = 0):
        self.root = Path(root).resolve()
        self.delay_ms = delay_ms
        self.assets = RangeServer()
        self.stac = StacServer()
        self.stac_url = ""

    def start(self) -> ServedArchive:
        try:
            self.assets.start(self.root, self.delay_ms)
            self.stac.start(self.root / "stac", self.assets.url)
        except BaseException:
            self.stop()
            raise
        self.stac_url = self.stac.url
        return self

    def stop(self) -> None:
        self.stac.stop()
        self.assets.stop()

    def __enter__(self) -> ServedArchive:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def archive_complete(path: Path) -> bool:
    """True if `path` holds an archive whose manifest lists at least one item."""
    manifest = Path(path) / "manifest.json"
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return int(json.loads(manifest.read_text()).get("items", 0)) > 0
    return False


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float = LOCK_TIMEOUT_S):
    """An exclusive flock, waited for at most timeout_s (another run may be building)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"lock {path} held for over {timeout_s:.0f} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_once(final: Path, build: Callable[[Path], object]) -> Path:
    """Return `final`, running `build(tmp)` first unless a complete archive is there.

    The build goes to a temp folder beside `final` and is renamed into place only when
    its manifest is complete, so an interrupted build is never reused; a lock keeps two
    concurrent test runs from building the same archive twice.
    """
    final = Path(final)
    if archive_complete(final):
        return final
    with file_lock(final.with_name(final.name + ".lock")):
        if archive_complete(final):
            return final
        tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build(tmp)
            if not archive_complete(tmp):
                raise RuntimeError(f"the archive build left no usable manifest in {tmp}")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def prune_archives(build_dir: Path, keep: int = 3) -> list[Path]:
    """Delete all but the `keep` newest cached archives (and dead builds' temp folders).

    Each generator change makes a new key; without pruning, .build/world grows by one
    archive per edit. Archives a running session may still use are the newest ones.
    """
    build_dir, removed = Path(build_dir), []
    if not build_dir.is_dir():
        return removed
    archives = sorted((p for p in build_dir.iterdir() if p.is_dir() and archive_complete(p)
                       and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime,
                      reverse=True)
    for old in archives[keep:]:
        shutil.rmtree(old, ignore_errors=True)
        old.with_name(old.name + ".lock").unlink(missing_ok=True)
        removed.append(old)
    for tmp in build_dir.glob(".tmp-*-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def children_of(pid: int) -> list[int]:
    """Live child pids of `pid` (from /proc; empty where /proc is missing)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return [int(p) for p in path.read_text().split()]
    return []


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    return True
