"""Benchmark harness: one served archive, each tool in its own process, same work for both.

Runs in the QGIS venv (it needs the test world, GDAL's Python bindings for the floor and
the engine to plan the work); the jobs themselves run `bench/worker.py` under the python
given (`.venv-bench` for odc-stac and Clearsky, `.venv` for the Clearsky reference).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from floor import floor_bytes
from pyproj import Transformer
from shapely.geometry import box, shape

from clearsky.core.api import Aoi, MosaicParams, SearchParams, search_scenes
from clearsky.core.grid import output_grid
from clearsky.core.io import gdal_options
from clearsky.core.plan import plan_passes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "worker.py"
QGIS_PYTHON = REPO / ".venv" / "bin" / "python"
CRS = "EPSG:32633"
COLLECTION = "sentinel-2-c1-l2a"
START, END = "2024-06-01", "2024-06-30"
BANDS = ("red", "green", "blue", "nir")
INVALID = (0, 1, 3, 8, 9, 10)
TOLERANCE = 0.01  # reflectance


def aoi_bounds(side_km: float, centre: Tuple[float, float] = (13.52, 52.34)) -> tuple:
    """A square AOI of `side_km` in EPSG:32633 around the world's centre, on the 20 m grid."""
    x, y = Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(*centre)
    half = side_km * 500.0
    snap = lambda v: round(v / 20.0) * 20.0  # noqa: E731
    return (snap(x - half), snap(y - half), snap(x + half), snap(y + half))


@dataclass
class Workload:
    """What both tools are asked to do: AOI, grid, items, Clearsky's pass order."""

    stac_url: str
    bounds: tuple
    threads: int
    grid: dict = field(default_factory=dict)
    item_ids: List[str] = field(default_factory=list)
    pass_order: List[str] = field(default_factory=list)

    def spec(self, tool: str, case: str, out: str, **extra) -> dict:
        s = {
            "tool": tool, "case": case, "stac_url": self.stac_url, "collection": COLLECTION,
            "start": START, "end": END, "aoi": {"bounds": list(self.bounds), "crs": CRS},
            "bands": list(BANDS), "resolution": 10.0, "threads": self.threads,
            "invalid": list(INVALID), "dilation": 0, "grid": self.grid,
            "item_ids": self.item_ids, "pass_order": self.pass_order, "out": out,
            "gdal": {k: str(v) for k, v in gdal_options(self.threads).items()},
        }
        s.update(extra)
        return s


def plan(stac_url: str, side_km: float, threads: int) -> Workload:
    """Clearsky's grid, kept scenes and pass order for the AOI (before any timed run)."""
    bounds = aoi_bounds(side_km)
    aoi = Aoi(box(*bounds), CRS)
    params = MosaicParams(
        aoi=aoi, start=date.fromisoformat(START), end=date.fromisoformat(END),
        catalog_url=stac_url, collection=COLLECTION, max_scene_cloud=100.0,
        max_aoi_cloud=100.0, invalid_scl=frozenset(INVALID), dilation=0,
        max_workers=threads, bands=BANDS, target_crs=CRS, output=Path("unused.tif"))
    search = search_scenes(SearchParams(**{k: getattr(params, k) for k in (
        "aoi", "start", "end", "catalog_url", "collection", "max_scene_cloud", "max_aoi_cloud",
        "invalid_scl", "dilation", "max_workers")}))
    kept = [r for r in search.reports if r.kept]
    passes = plan_passes(kept, params.start, params.end, params.target_date)
    grid = output_grid(aoi, CRS, 10.0)
    return Workload(
        stac_url, bounds, threads,
        grid={"crs": grid.crs, "transform": list(grid.transform)[:6], "width": grid.width,
              "height": grid.height},
        item_ids=[r.scene.id for r in kept],
        pass_order=[p.scenes[0][1].datetime.strftime("%Y-%m-%d") for p in passes],
    )


def scenes_over(root: Path, bounds: tuple, n: int) -> List[Tuple[str, str]]:
    """The first `n` items (both collections, by collection and id) whose footprint meets
    the AOI, from the archive's own STAC files."""
    to_wgs = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    lon0, lat0, lon1, lat1 = to_wgs.transform_bounds(*bounds)
    aoi = box(lon0, lat0, lon1, lat1)
    found = []
    for path in sorted((Path(root) / "stac" / "items").glob("*.json")):
        for f in json.loads(path.read_text())["features"]:
            if shape(f["geometry"]).intersects(aoi):
                found.append((f["collection"], f["id"]))
    return sorted(found)[:n]


@dataclass
class Run:
    """One job's measurements."""

    case: str
    tool: str
    env: str
    aoi_km: float
    seconds: float  # the job's own timer: first request to output written
    process_seconds: float  # wall time of the whole process (start-up and imports included)
    peak_rss_mb: float
    cpu_seconds: float  # user + system CPU of the job's process (2 shared cores here)
    requests: int
    bytes_served: int
    floor_bytes: int = 0
    agreement: Optional[float] = None
    note: str = ""
    load: float = 0.0  # 1-minute load average when the job ended (2 shared cores)
    result: dict = field(default_factory=dict, repr=False)

    def row(self) -> dict:
        d = asdict(self)
        d.pop("result")
        return d


def run_job(python: Path, spec: dict, assets, workdir: Path, timeout: float = 1800) -> Tuple[
        dict, float, float, float, list]:
    """Run one worker; return (result, process seconds, peak RSS MB, CPU seconds, server
    log entries)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"{Path(spec['out']).name}.spec.json"
    spec["result"] = str(workdir / f"{Path(spec['out']).name}.result.json")
    spec_path.write_text(json.dumps(spec))
    assets.clear_log()
    log_path = workdir / f"{Path(spec['out']).name}.log"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    if spec.get("pythonpath"):  # a patched copy of the engine (see patched_engine)
        env["PYTHONPATH"] = spec["pythonpath"]
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(python), str(WORKER), str(spec_path)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
        deadline = t0 + timeout
        while True:  # wait4: this child's own CPU time (RUSAGE_CHILDREN mixes all children)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                raise TimeoutError(f"{spec['tool']} {spec['case']} ran over {timeout} s")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['tool']} {spec['case']} failed:\n"
                           + log_path.read_text(errors="replace")[-3000:])
    entries = assets.requests()
    cpu = usage.ru_utime + usage.ru_stime
    result = json.loads(Path(spec["result"]).read_text())
    return result, wall, result["peak_rss_kb"] / 1024.0, cpu, entries


def measure(python: Path, env_name: str, spec: dict, assets, workdir: Path,
            aoi_km: float) -> Run:
    result, wall, rss, cpu, entries = run_job(python, spec, assets, workdir)
    return Run(spec["case"], spec["tool"], env_name, aoi_km, result["seconds"], wall, rss, cpu,
               len(entries), sum(e["bytes"] for e in entries), load=os.getloadavg()[0],
               result=result)


# --- agreement ---------------------------------------------------------------------------

def read_clearsky(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        dn = src.read(list(range(1, len(BANDS) + 1))).astype("float32")
    return np.where(dn > 0, dn * 1e-4, np.nan).astype("float32")


def agreement(a: np.ndarray, b: np.ndarray, tol: float = TOLERANCE) -> Dict[str, float]:
    """Share of pixels (with a value in either output) where both have one and every band
    is within `tol` reflectance; plus the shares with a value in only one of them."""
    fa, fb = np.isfinite(a).all(0), np.isfinite(b).all(0)
    either = fa | fb
    n = max(int(either.sum()), 1)
    close = fa & fb & (np.abs(a - b) <= tol + 1e-6).all(0)
    return {"within_tol": float(close.sum()) / n, "only_clearsky": float((fa & ~fb).sum()) / n,
            "only_odc": float((fb & ~fa).sum()) / n, "pixels": int(either.sum())}


def cloud_agreement(a: dict, b: dict) -> Dict[str, float]:
    keys = [k for k in a if a[k] is not None and b.get(k) is not None]
    diffs = [abs(a[k] - b[k]) for k in keys]
    return {"scenes_compared": len(keys), "max_abs_diff_pct": max(diffs) if diffs else 0.0,
            "within_1pct": sum(d <= 1.0 for d in diffs) / max(len(keys), 1)}


def mosaic_floor(root: Path, bounds: tuple, scenes: Sequence[str]) -> int:
    """Floor for a mosaic: band and SCL tiles under the AOI of the scenes that contributed."""
    return floor_bytes(root, [(COLLECTION, s) for s in scenes], list(BANDS) + ["scl"], bounds,
                       CRS)


def patched_engine(patch: Path, workdir: Path) -> Path:
    """An import root whose `clearsky` is this repo's engine with `patch` (-p1) applied:
    measures a proposed core/ change without touching the working tree."""
    root = workdir / f"engine-{Path(patch).stem}"
    pkg = root / "clearsky"
    if pkg.exists():
        shutil.rmtree(pkg)
    shutil.copytree(REPO / "core", pkg / "core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "__init__.py", pkg / "__init__.py")
    subprocess.run(["patch", "-p1", "-s", "-d", str(pkg), "-i", str(Path(patch).resolve())],
                   check=True)
    return root


def default_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="clearsky-bench-"))
