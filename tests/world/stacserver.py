"""The STAC API side of the offline archive: `rustac serve` over the archive's JSON.

The archive writes asset hrefs as `__ASSET_BASE__/data/...`; before serving, the files are
copied with the placeholder replaced by the range server's URL, so items point at the
loopback COG store. rustac's in-memory backend answers core, features, collections and
item search (bbox, intersects, datetime, ids, collections, limit + next links).

What rustac 0.9.18 does NOT do (checked; see tests/archive/test_servers_stac.py):
- no Filter (CQL2) or Query conformance: a search with `filter` (GET or POST) or with
  `query` (POST) answers 200 with zero items, even for a predicate every item satisfies
  (GET ignores `query`). Clients must read /conformance and filter on their side.
- GET /search mixing `limit` with `bbox` or `collections` fails (500 "unsupported
  value"); POST /search (what pystac-client uses) pages correctly with next links.
- the DuckDB backend (`rustac serve items.parquet`) needs DuckDB's spatial extension,
  which it downloads on first use: offline its requests hang and fail after 30 s, so it
  is not usable here.

    python -m world.stacserver --stac DIR --asset-base http://127.0.0.1:PORT [--port N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Union

PLACEHOLDER = "__ASSET_BASE__"


def prepare_stac(stac_dir: Union[str, Path], asset_base: str, out: Path) -> list[Path]:
    """Copy collections, then item collections, into `out` with the placeholder replaced.

    Collections come first so rustac has them before it loads their items.
    """
    stac_dir, files = Path(stac_dir), []
    for sub in ("collections", "items"):
        for src in sorted((stac_dir / sub).glob("*.json")):
            dst = out / f"{sub}-{src.name}"
            text = src.read_text(encoding="utf-8").replace(PLACEHOLDER, asset_base.rstrip("/"))
            dst.write_text(text, encoding="utf-8")
            files.append(dst)
    if not files:
        raise FileNotFoundError(f"no collections or items under {stac_dir}")
    return files


def rustac_executable() -> str:
    """`rustac` next to the running interpreter (the venv), else on PATH."""
    local = Path(sys.executable).with_name("rustac")
    found = str(local) if local.exists() else shutil.which("rustac")
    if not found:
        raise FileNotFoundError("rustac not found; run scripts/setup.sh (rustac is pinned)")
    return found


def rustac_command(host: str, port: int, files: list[Path]) -> list[str]:
    """The `rustac serve` command line for the in-memory backend on host:port."""
    return [rustac_executable(), "serve", "--addr", f"{host}:{port}", *[str(f) for f in files]]


MAX_HOLD_S = 30.0  # a stalled or trickling answer never lasts longer than this


class ScriptedStac:
    """A small STAC API on 127.0.0.1 (threads of this process) that serves exactly the items
    it is given, malformed ones included (rustac refuses to load those), and can misbehave.

    Endpoints: /, /conformance, /collections, /collections/<id>, /search (GET and POST,
    pages of `page_size` with POST next links). `behave(path, kind)` makes requests whose
    path starts with `path` "stall" (accept, read the request, answer nothing), "trickle"
    (headers, then one byte per `interval_s`) or "ok"; every misbehaviour ends after
    MAX_HOLD_S or when the server stops. `requests` lists the paths asked for.

        with ScriptedStac(collection, items) as stac:
            search(params(stac.url), progress)
    """

    CONFORMS = ["https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/collections"]

    def __init__(self, collection: dict, items: list, page_size: int = 100):
        self.collection, self.items, self.page_size = collection, list(items), page_size
        self.behaviour: dict = {}
        self.requests: list = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.server: Optional[ThreadingHTTPServer] = None
        self.url = ""

    def behave(self, path: str, kind: str, interval_s: float = 0.5) -> None:
        if kind not in ("ok", "stall", "trickle"):
            raise ValueError(kind)
        with self.lock:
            self.behaviour[path] = (kind, interval_s)

    def start(self) -> ScriptedStac:
        stac = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - http.server API
                stac._answer(self, None)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                stac._answer(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> ScriptedStac:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- answers ----------------------------------------------------------------------
    def _answer(self, h: BaseHTTPRequestHandler, body: Optional[dict]) -> None:
        path = h.path.split("?", 1)[0].rstrip("/") or "/"
        with self.lock:
            self.requests.append(path)
            rule = next((v for k, v in self.behaviour.items() if path.startswith(k)), None)
        if rule and rule[0] == "stall":
            self.stopping.wait(MAX_HOLD_S)
            h.close_connection = True
            return
        doc = self._document(path, body or {})
        status = 200 if doc is not None else 404
        data = json.dumps(doc if doc is not None else {"code": "NotFound"}).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if rule and rule[0] == "trickle":
            deadline = time.monotonic() + MAX_HOLD_S
            for i in range(len(data)):
                if self.stopping.wait(rule[1]) or time.monotonic() > deadline:
                    break
                try:
                    h.wfile.write(data[i:i + 1])
                    h.wfile.flush()
                except OSError:
                    break
            h.close_connection = True
            return
        h.wfile.write(data)

    def _document(self, path: str, body: dict):
        cid = self.collection["id"]
        if path == "/":
            return {"type": "Catalog", "id": "scripted", "stac_version": "1.0.0",
                    "description": "scripted STAC API", "conformsTo": self.CONFORMS,
                    "links": [{"rel": "self", "href": self.url + "/"},
                              {"rel": "root", "href": self.url + "/"},
                              {"rel": "search", "href": self.url + "/search",
                               "method": "POST", "type": "application/geo+json"},
                              {"rel": "data", "href": self.url + "/collections"}]}
        if path == "/conformance":
            return {"conformsTo": self.CONFORMS}
        if path == "/collections":
            return {"collections": [self.collection], "links": []}
        if path == f"/collections/{cid}":
            return self.collection
        if path == "/search":
            start = int(body.get("token") or 0)
            limit = min(int(body.get("limit") or self.page_size), self.page_size)
            page = self.items[start:start + limit]
            links = []
            if start + limit < len(self.items):
                links.append({"rel": "next", "href": self.url + "/search", "method": "POST",
                              "merge": True, "body": {"token": str(start + limit)}})
            return {"type": "FeatureCollection", "features": page, "links": links,
                    "numberMatched": len(self.items)}
        return None


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Serve an archive's STAC files with rustac.")
    ap.add_argument("--stac", required=True, type=Path, help="the archive's stac/ folder")
    ap.add_argument("--asset-base", required=True, help="URL of the range server")
    ap.add_argument("--port", type=int, default=7822)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="clearsky-stac-"))
    try:
        files = prepare_stac(args.stac, args.asset_base, work)
        proc = subprocess.Popen(rustac_command("127.0.0.1", args.port, files), cwd=work)
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            return proc.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
