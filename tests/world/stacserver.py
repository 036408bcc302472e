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
import shutil
import signal
import subprocess
import sys
import tempfile
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
