"""A loopback HTTP/1.1 file server with byte ranges, a request log, delays and faults.

It stands in for the object store that holds Sentinel-2 COGs: the engine and GDAL's
/vsicurl/ read it with range requests, tests count the bytes it served and make it fail
the way real stores do (5xx bursts, stalled connections, truncated bodies).

    python -m world.rangeserver --root DIR --port 0 --port-file F --log LOG.jsonl [--delay-ms N]

Control endpoints (never logged as data requests):
    POST /__control/config  {"delay_ms": int,
                             "faults": [{"path": glob, "kind": k, "count": n|null}]}
                            k: 500, 503, timeout or truncate; "hold_s" optional for timeout
                            hostile kinds (issue 10):
                              trickle       headers, then one byte every "interval_s" (0.5)
                                            until "hold_s" passes (a read time-out never fires)
                              redirect      302 to "location" (any scheme, any host)
                              ignore_range  200 with the whole file, whatever Range says
                              body          serve "body" (text) instead of the file, with
                                            ranges (e.g. a VRT behind a .tif name)
    POST /__control/reset   clear log, faults and delay
    POST /__control/clear   clear the log only
    GET  /__control/log     the log entries as a JSON list
"""

from __future__ import annotations

import argparse
import email.utils
import fnmatch
import io
import ipaddress
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

FAULT_KINDS = ("500", "503", "timeout", "truncate", "trickle", "redirect", "ignore_range",
               "body")
MAX_HOLD_S = 30.0  # a stalled request never holds its connection longer than this
DRAIN_WAIT_S = 3.0  # how long /__control/log waits for requests still being answered
CHUNK = 64 * 1024


class RangeError(ValueError):
    """The Range header is syntactically valid but no range is satisfiable (416)."""


def parse_range(header: str, size: int) -> Optional[list[tuple[int, int]]]:
    """Return inclusive (start, end) pairs for a `bytes=` header, None if it must be ignored.

    Unsatisfiable ranges are dropped; if none is left, RangeError (-> 416). A malformed
    header is ignored (RFC 9110: the server then sends the whole file with 200).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    ranges = []
    for part in spec.split(","):
        first, sep, last = part.strip().partition("-")
        if not sep:
            return None
        try:
            if first == "":  # suffix: the last n bytes
                n = int(last)
                if n < 0:
                    return None
                if n > 0 and size > 0:
                    ranges.append((max(0, size - n), size - 1))
                continue
            start = int(first)
            end = int(last) if last != "" else max(start, size - 1)
        except ValueError:
            return None
        if start < 0 or end < start:  # "5-2" is malformed, not unsatisfiable
            return None
        if start < size:
            ranges.append((start, min(end, size - 1)))
    if not ranges:
        raise RangeError(header)
    return ranges


class Fault:
    """One fault rule: the first `count` matching requests fail (all if count is None)."""

    def __init__(self, path: str, kind: str, count: Optional[int], hold_s: float,
                 interval_s: float = 0.5, location: str = "", body: str = ""):
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {FAULT_KINDS}")
        self.path, self.kind, self.remaining = path, kind, count
        self.hold_s = min(float(hold_s), MAX_HOLD_S)
        self.interval_s = min(max(float(interval_s), 0.01), MAX_HOLD_S)
        self.location, self.body = str(location), str(body).encode("utf-8")

    def take(self, path: str, method: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.kind == "truncate" and method != "GET":
            return False  # a HEAD has no body to cut short
        if not fnmatch.fnmatchcase(path, self.path):
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True


class State:
    """Configuration and log shared by the handler threads."""

    def __init__(self, log_path: Optional[Path], delay_ms: int):
        self.lock = threading.Condition()
        self.log_path = log_path
        self.entries: list[dict] = []
        self.default_delay_ms = delay_ms
        self.delay_ms = delay_ms
        self.faults: list[Fault] = []
        self.in_flight = 0
        self.stopping = threading.Event()
        if log_path:
            log_path.write_text("")

    def configure(self, cfg: dict) -> None:
        faults = [
            Fault(str(f["path"]), str(f["kind"]), f.get("count"), f.get("hold_s", MAX_HOLD_S),
                  f.get("interval_s", 0.5), f.get("location", ""), f.get("body", ""))
            for f in cfg.get("faults") or []
        ]
        with self.lock:
            self.delay_ms = int(cfg.get("delay_ms", 0))
            self.faults = faults

    def reset(self) -> None:
        with self.lock:
            self.delay_ms, self.faults = 0, []
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.entries = []
            if self.log_path:
                self.log_path.write_text("")

    def take_fault(self, path: str, method: str) -> Optional[Fault]:
        with self.lock:
            return next((f for f in self.faults if f.take(path, method)), None)

    def record(self, entry: dict) -> None:
        line = json.dumps(entry, sort_keys=True)
        with self.lock:
            self.entries.append(entry)
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
                    fh.flush()

    def snapshot(self) -> list[dict]:
        """The log once requests being answered right now have been recorded (bounded wait)."""
        deadline = time.monotonic() + DRAIN_WAIT_S
        with self.lock:
            while self.in_flight and time.monotonic() < deadline:
                self.lock.wait(timeout=0.05)
            # oldest first by arrival: a held request is recorded only when it ends, after
            # a quick one that came later (the order once flipped under load)
            return sorted(self.entries, key=lambda e: e["time"])

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.lock.notify_all()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server_version = "ClearskyRange/1"
    server: RangeHTTPServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # the JSON log replaces the stderr access log

    # -- dispatch ---------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        if self._path().startswith("/__control/"):
            self._control("POST")
        else:
            self._plain(405, b"method not allowed\n", extra={"Allow": "GET, HEAD"})

    def _path(self) -> str:
        return urllib.parse.urlsplit(self.path).path

    def _dispatch(self, method: str) -> None:
        if self._path().startswith("/__control/"):
            self._control(method)
            return
        state = self.server.state
        state.enter()
        t0 = time.monotonic()
        entry = {
            "time": time.time(),
            "method": method,
            "path": self._path(),
            "range": self.headers.get("Range"),
            "status": None,
            "bytes": 0,
            "fault": None,
            "duration_ms": 0.0,
        }
        try:
            self._serve_data(method, entry)
        except (BrokenPipeError, ConnectionResetError):
            entry["error"] = "client closed the connection"
            self.close_connection = True
        finally:
            entry["duration_ms"] = round((time.monotonic() - t0) * 1000.0, 3)
            state.record(entry)
            state.leave()

    # -- data requests ----------------------------------------------------------------
    def _serve_data(self, method: str, entry: dict) -> None:
        state = self.server.state
        with state.lock:
            delay_ms = state.delay_ms
        if delay_ms > 0 and state.stopping.wait(delay_ms / 1000.0):
            return
        fault = state.take_fault(entry["path"], method)
        if fault is not None:
            entry["fault"] = fault.kind
            if fault.kind in ("500", "503"):
                entry["status"] = int(fault.kind)
                body = f"injected fault {fault.kind}\n".encode()
                entry["bytes"] = self._plain(int(fault.kind), body, method=method)
                return
            if fault.kind == "timeout":
                self._hold(fault.hold_s)
                return
            if fault.kind == "trickle":
                self._trickle(method, entry, fault)
                return
            if fault.kind == "redirect":
                entry["status"] = 302
                entry["bytes"] = self._plain(302, b"moved\n", method=method,
                                             extra={"Location": fault.location})
                return
            if fault.kind == "body":
                self._send_file(method, None, entry, truncate=False, data=fault.body)
                return
        target = self._resolve(entry["path"])
        if isinstance(target, int):
            entry["status"] = target
            body = b"not found\n" if target == 404 else b"forbidden\n"
            entry["bytes"] = self._plain(target, body, method=method)
            return
        kind = fault.kind if fault is not None else None
        self._send_file(method, target, entry, truncate=kind == "truncate",
                        ignore_range=kind == "ignore_range")

    def _resolve(self, url_path: str):
        """Map a URL path onto a file under the root; 403 for an escape, 404 if missing."""
        root = self.server.root
        rel = urllib.parse.unquote(url_path).lstrip("/")
        if "\x00" in rel:
            return 403
        candidate = (root / rel).resolve()
        if candidate != root and root not in candidate.parents:
            return 403
        if not candidate.is_file():
            return 404
        return candidate

    def _send_file(self, method: str, path: Optional[Path], entry: dict, truncate: bool,
                   ignore_range: bool = False, data: Optional[bytes] = None) -> None:
        """Send `path` (or the bytes `data`) honouring Range, unless ignore_range."""
        if data is not None:
            size, mtime, mtime_ns = len(data), time.time(), 0
        else:
            st = path.stat()
            size, mtime, mtime_ns = st.st_size, st.st_mtime, st.st_mtime_ns
        headers = {
            "Accept-Ranges": "bytes",
            "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
            "ETag": f'"{size:x}-{mtime_ns:x}"',
        }
        if ignore_range:
            headers.pop("Accept-Ranges")
        try:
            wanted = entry["range"] and not ignore_range
            ranges = parse_range(entry["range"], size) if wanted else None
        except RangeError:
            entry["status"] = 416
            entry["bytes"] = self._plain(416, b"range not satisfiable\n", method=method,
                                         extra={**headers, "Content-Range": f"bytes */{size}"})
            return
        if ranges is None:
            status, parts, ctype = 200, [(None, 0, size - 1)], "application/octet-stream"
        elif len(ranges) == 1:
            (a, b), = ranges
            headers["Content-Range"] = f"bytes {a}-{b}/{size}"
            status, parts, ctype = 206, [(None, a, b)], "application/octet-stream"
        else:
            boundary = f"clearsky-{os.urandom(8).hex()}"
            parts = [
                (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                 f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n".encode(), a, b)
                for a, b in ranges
            ]
            status, ctype = 206, f"multipart/byteranges; boundary={boundary}"
            closing = f"\r\n--{boundary}--\r\n".encode()
        length = sum(len(h or b"") + (b - a + 1) for h, a, b in parts)
        if len(parts) > 1:
            length += len(closing) + 2 * (len(parts) - 1)  # CRLF before each later boundary
        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if method == "HEAD":
            return
        budget = length // 2 if truncate else length
        sent = 0
        with (io.BytesIO(data) if data is not None else open(path, "rb")) as fh:
            for i, (head, a, b) in enumerate(parts):
                pieces = [b"\r\n"] if i > 0 else []
                pieces += [head] if head else []
                for piece in pieces:
                    sent += self._write(piece, budget - sent)
                fh.seek(a)
                remaining = b - a + 1
                while remaining > 0 and sent < budget:
                    chunk = fh.read(min(CHUNK, remaining))
                    remaining -= len(chunk)
                    sent += self._write(chunk, budget - sent)
            if len(parts) > 1:
                sent += self._write(closing, budget - sent)
        entry["bytes"] = sent
        if truncate:
            self.wfile.flush()
            self.close_connection = True

    def _write(self, data: bytes, allowed: int) -> int:
        data = data[: max(0, allowed)]
        if data:
            self.wfile.write(data)
        return len(data)

    def _hold(self, hold_s: float) -> None:
        """Answer nothing until hold_s passes, the client gives up or the server stops."""
        deadline = time.monotonic() + hold_s
        sock = self.connection
        while not self.server.state.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select([sock], [], [], min(0.1, left))
            if readable:
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        break  # the client closed its end
                except OSError:
                    break
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        self.close_connection = True

    def _trickle(self, method: str, entry: dict, fault: Fault) -> None:
        """Promise a body of 1 MiB, then send one byte per interval_s until hold_s passes,
        the client goes away or the server stops: a per-read time-out never fires."""
        entry["status"] = 200 if not entry["range"] else 206
        self.send_response(entry["status"])
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(1 << 20))
        if entry["range"]:
            self.send_header("Content-Range", f"bytes 0-{(1 << 20) - 1}/{1 << 20}")
        self.end_headers()
        self.wfile.flush()
        deadline = time.monotonic() + fault.hold_s
        stopping = self.server.state.stopping
        while method == "GET" and time.monotonic() < deadline:
            if stopping.wait(min(fault.interval_s, max(0.0, deadline - time.monotonic()))):
                break
            try:
                self.wfile.write(b"\0")
                self.wfile.flush()
            except OSError:
                break
            entry["bytes"] += 1
        self.close_connection = True

    def _plain(self, status: int, body: bytes, method: str = "GET",
               extra: Optional[dict] = None) -> int:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)
            return len(body)
        return 0

    # -- control ----------------------------------------------------------------------
    def _control(self, method: str) -> None:
        state, name = self.server.state, self._path()[len("/__control/"):]
        try:
            if method == "GET" and name == "log":
                body = json.dumps(state.snapshot()).encode()
            elif method == "POST" and name in ("config", "reset", "clear"):
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}") if length else {}
                {"config": lambda: state.configure(payload), "reset": state.reset,
                 "clear": state.clear}[name]()
                body = b'{"ok": true}'
            else:
                self._plain(404, b"unknown control endpoint\n", method=method)
                return
        except (ValueError, KeyError, TypeError) as exc:
            self._plain(400, f"bad control request: {exc}\n".encode(), method=method)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)


class RangeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, root: Path, state: State):
        self.root, self.state = root, state
        super().__init__((host, port), Handler)


def require_loopback(host: str) -> str:
    """Refuse to bind anything but a loopback address: test data never leaves the host."""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"rangeserver: refusing to bind non-loopback host {host!r}")
    return host


def _watch_parent(parent: int, server: RangeHTTPServer) -> None:
    """Exit when the process that started us is gone, so no server outlives a test run."""
    while not server.state.stopping.wait(1.0):
        if os.getppid() != parent:
            _stop(server)
            return


def _stop(server: RangeHTTPServer) -> None:
    if not server.state.stopping.is_set():
        server.state.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", type=Path)
    ap.add_argument("--log", type=Path)
    ap.add_argument("--delay-ms", type=int, default=0)
    args = ap.parse_args(argv)
    host = require_loopback(args.host)
    root = args.root.resolve()
    if not root.is_dir():
        raise SystemExit(f"rangeserver: root {root} is not a directory")
    server = RangeHTTPServer(host, args.port, root, State(args.log, args.delay_ms))
    signal.signal(signal.SIGTERM, lambda *_: _stop(server))
    signal.signal(signal.SIGINT, lambda *_: _stop(server))
    threading.Thread(target=_watch_parent, args=(os.getppid(), server), daemon=True).start()
    port = server.server_address[1]
    if args.port_file:  # written atomically: a reader never sees a partial number
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(str(port))
        os.replace(tmp, args.port_file)
    print(f"rangeserver: serving {root} at http://{host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.state.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
