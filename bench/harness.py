"""Benchmark harness: one served archive, each tool in its own process, same work for both.

Runs in the QGIS venv (it needs the test world, GDAL's Python bindings for the floor and
the engine to plan the work); the jobs themselves run `bench/worker.py` under the python
given (`.venv-bench` for odc-stac and Clearsky's Python API), or `qgis_process.bin run
clearsky:buildmosaic` (Clearsky as a QGIS user runs it headless).

Every job gets the range server's request log to itself: requests, bytes, HEADs and the
number of requests in flight over time (the check that both tools ran at the concurrency
they were given).
"""

from __future__ import annotations

import json
import os
import re
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
from shapely.geometry import box, mapping, shape

from clearsky.core.api import Aoi, MosaicParams, SearchParams, search_scenes
from clearsky.core.grid import output_grid

try:  # the design's name for the GDAL module (core/gdalio/); today it is core/io.py
    from clearsky.core.gdalio import gdal_options
except ImportError:
    from clearsky.core.io import gdal_options
from clearsky.core.plan import plan_passes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "worker.py"
LAUNCH = HERE / "launch.py"
QGIS_PYTHON = REPO / ".venv" / "bin" / "python"
CRS = "EPSG:32633"  # the aligned workload: the source lattice of the 33U tiles
WARPED_CRS = "EPSG:3035"  # the non-aligned one: no source tile is on this grid
WORKLOADS = {"aligned": CRS, "warped": WARPED_CRS}
COLLECTION = "sentinel-2-c1-l2a"
START, END = "2024-06-01", "2024-06-30"
BANDS = ("red", "green", "blue", "nir")
INVALID = (0, 1, 3, 8, 9, 10)
TOLERANCE = 0.01  # reflectance


def aoi_bounds(side_km: float, centre: Tuple[float, float] = (13.52, 52.34),
               crs: str = CRS) -> tuple:
    """A square AOI of `side_km` in `crs` around the world's centre, on a 20 m grid.

    The centre lies 2 km west of the 32UQD tile's east edge: an AOI of a few km already
    meets tiles of both UTM zones (32632 and 32633) of the archive."""
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(*centre)
    half = side_km * 500.0
    snap = lambda v: round(v / 20.0) * 20.0  # noqa: E731
    return (snap(x - half), snap(y - half), snap(x + half), snap(y + half))


@dataclass
class Workload:
    """What both tools are asked to do: AOI, grid, items, Clearsky's pass order."""

    stac_url: str
    bounds: tuple
    threads: int  # simultaneous HTTP requests each tool is given
    crs: str = CRS  # the AOI's and the output grid's CRS
    name: str = "aligned"
    side_km: float = 0.0
    start: str = START
    end: str = END
    grid: dict = field(default_factory=dict)
    item_ids: List[str] = field(default_factory=list)
    pass_order: List[str] = field(default_factory=list)

    def spec(self, tool: str, case: str, out: str, **extra) -> dict:
        s = {
            "tool": tool, "case": case, "stac_url": self.stac_url, "collection": COLLECTION,
            "start": self.start, "end": self.end,
            "aoi": {"bounds": list(self.bounds), "crs": self.crs},
            "bands": list(BANDS), "resolution": 10.0, "threads": self.threads,
            "invalid": list(INVALID), "dilation": 0, "grid": self.grid,
            "item_ids": self.item_ids, "pass_order": self.pass_order, "out": out,
            "gdal": {k: str(v) for k, v in gdal_options(self.threads).items()},
        }
        s.update(extra)
        return s


def plan(stac_url: str, side_km: float, threads: int, crs: str = CRS,
         name: str = "aligned", centre: Tuple[float, float] = (13.52, 52.34),
         start: str = START, end: str = END) -> Workload:
    """Clearsky's grid, kept scenes and pass order for the AOI (before any timed run)."""
    bounds = aoi_bounds(side_km, centre=centre, crs=crs)
    aoi = Aoi(box(*bounds), crs)
    params = MosaicParams(
        aoi=aoi, start=date.fromisoformat(start), end=date.fromisoformat(end),
        catalog_url=stac_url, collection=COLLECTION, max_scene_cloud=100.0,
        max_aoi_cloud=100.0, invalid_scl=frozenset(INVALID), dilation=0,
        max_workers=threads, bands=BANDS, target_crs=crs, output=Path("unused.tif"))
    search = search_scenes(SearchParams(**{k: getattr(params, k) for k in (
        "aoi", "start", "end", "catalog_url", "collection", "max_scene_cloud", "max_aoi_cloud",
        "invalid_scl", "dilation", "max_workers")}))
    kept = [r for r in search.reports if r.kept]
    passes = plan_passes(kept, params.start, params.end, params.target_date)
    grid = output_grid(aoi, crs, 10.0)
    return Workload(
        stac_url, bounds, threads, crs, name, side_km, start, end,
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
    env: str  # "bench" (.venv-bench, Python API), "qgis_process" (the Processing algorithm)
    aoi_km: float
    seconds: float  # the job's own timer: first request to output written (qgis_process:
    #                 the whole process, QGIS start-up included: what its user waits)
    process_seconds: float  # wall time of the whole process (start-up and imports included)
    peak_rss_mb: float
    cpu_seconds: float  # user + system CPU of the job's process (2 shared cores here)
    requests: int
    bytes_served: int
    unique_bytes: int = 0  # distinct file bytes among those served (re-reads count once)
    scl_bytes: int = 0  # served for SCL files (the AOI cloud check and the masks)
    heads: int = 0  # HEAD requests
    max_heads_per_file: int = 0
    files: int = 0  # distinct files requested
    peak_in_flight_one_file: int = 0
    peak_in_flight: int = 0  # most requests the range server was answering at one time
    mean_in_flight: float = 0.0  # time-weighted, over the span from first to last request
    workload: str = "aligned"
    round: int = 0
    concurrency: int = 0  # what the tool was given (see README: how it maps)
    chunk: int = 0  # odc-stac's dask chunk side (pixels)
    floor_bytes: int = 0
    agreement: Optional[float] = None
    note: str = ""
    load: float = 0.0  # 1-minute load average when the job ended (2 shared cores)
    result: dict = field(default_factory=dict, repr=False)

    def row(self) -> dict:
        d = asdict(self)
        d.pop("result")
        return d


def in_flight(entries: Sequence[dict]) -> Tuple[int, float]:
    """(peak, time-weighted mean) of the requests being answered at once, from the server
    log: each entry is [arrival, arrival + duration] (the per-request delay included)."""
    events = []
    for e in entries:
        t0 = float(e["time"])
        events.append((t0, 1))
        events.append((t0 + float(e.get("duration_ms") or 0.0) / 1000.0, -1))
    if not events:
        return 0, 0.0
    events.sort(key=lambda ev: (ev[0], ev[1]))  # an end before a start at the same instant
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    span = events[-1][0] - events[0][0]
    busy = sum(float(e.get("duration_ms") or 0.0) / 1000.0 for e in entries)
    return peak, (busy / span if span > 0 else float(peak))


def unique_bytes(entries: Sequence[dict]) -> int:
    """Distinct bytes of the files that the answered ranges cover (a range read twice, or
    two overlapping ranges, count once; a 200 answer counts its whole body)."""
    spans: Dict[str, list] = {}
    for e in entries:
        if e["method"] != "GET" or not e["bytes"]:
            continue
        rng = (e.get("range") or "").replace("bytes=", "")
        first = rng.split(",")[0].split("-")
        try:
            a = int(first[0])
        except ValueError:
            a = 0  # no range or a suffix range: count the body from 0
        spans.setdefault(e["path"], []).append((a, a + int(e["bytes"])))
    total = 0
    for pieces in spans.values():
        pieces.sort()
        end = -1
        for a, b in pieces:
            if b > end:
                total += b - max(a, end)
                end = b
    return total


def log_figures(entries: Sequence[dict]) -> dict:
    peak, mean = in_flight(entries)
    by_file: Dict[str, list] = {}
    for e in entries:
        by_file.setdefault(e["path"], []).append(e)
    heads = [sum(1 for e in es if e["method"] == "HEAD") for es in by_file.values()]
    return {"requests": len(entries), "bytes_served": sum(e["bytes"] for e in entries),
            "unique_bytes": unique_bytes(entries),
            "scl_bytes": sum(e["bytes"] for e in entries if e["path"].endswith("/scl.tif")),
            "heads": sum(heads), "max_heads_per_file": max(heads, default=0),
            "files": len(by_file), "peak_in_flight": peak, "mean_in_flight": round(mean, 2),
            # several requests to one file at once: GDAL fetching the tiles of one read
            # in parallel (or several threads on one file)
            "peak_in_flight_one_file": max((in_flight(es)[0] for es in by_file.values()),
                                           default=0)}


def _wait(proc: subprocess.Popen, timeout: float, what: str):
    deadline = time.perf_counter() + timeout
    while True:  # wait4: this child's own CPU time (RUSAGE_CHILDREN mixes all children)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.perf_counter() > deadline:
            proc.kill()
            raise TimeoutError(f"{what} ran over {timeout} s")
        time.sleep(0.02)


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
        usage = _wait(proc, timeout, f"{spec['tool']} {spec['case']}")
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
               load=os.getloadavg()[0], result=result, concurrency=int(spec["threads"]),
               chunk=int(spec.get("chunk") or 0), **log_figures(entries))


# --- Clearsky through qgis_process ---------------------------------------------------------

METHOD_INDEX = {"best": 0, "median": 1}  # core.options.Method, in order (Processing enum)


def qgis_workers_parameter() -> Optional[str]:
    """The buildmosaic parameter that sets the engine's read concurrency, if it has one
    (today it has none: qgis_process then runs at MosaicParams' default max_workers)."""
    from world.qgis_process_env import qgis_process_env, run_qgis_process

    with tempfile.TemporaryDirectory(prefix="clearsky-bench-help-") as root:
        done = run_qgis_process(["--json", "help", "clearsky:buildmosaic"],
                                qgis_process_env(Path(root)), timeout=120)
    if done.returncode != 0:
        raise RuntimeError("qgis_process help clearsky:buildmosaic failed:\n"
                           + (done.stdout + done.stderr)[-3000:])
    info = json.loads(done.stdout[done.stdout.index("{"):])
    for name in info.get("parameters", {}):
        if "WORKER" in name.upper() or "CONCURREN" in name.upper():
            return name
    return None


def default_max_workers() -> int:
    import dataclasses

    return next(f.default for f in dataclasses.fields(MosaicParams) if f.name == "max_workers")


def measure_qgis_process(spec: dict, assets, workdir: Path, aoi_km: float,
                         workers_param: Optional[str], timeout: float = 1800) -> Run:
    """`qgis_process.bin run clearsky:buildmosaic` with the same work as the API job, in a
    throw-away QGIS profile; timed as a whole process (QGIS start-up included)."""
    from world.qgis_process_env import QGIS_PROCESS, qgis_process_env

    name = Path(spec["out"]).name
    workdir.mkdir(parents=True, exist_ok=True)
    aoi_file = workdir / f"{name}.aoi.geojson"
    epsg = spec["aoi"]["crs"].split(":")[1]
    aoi_file.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}},
        "features": [{"type": "Feature", "properties": {},
                      "geometry": mapping(box(*spec["aoi"]["bounds"]))}]}))
    out = Path(spec["out"] + ".tif")
    report = Path(spec["out"] + ".report.csv")
    params = {
        "AOI": aoi_file, "START_DATE": spec["start"], "END_DATE": spec["end"],
        "CATALOG": spec["stac_url"], "COLLECTION": spec["collection"],
        "MAX_SCENE_CLOUD": 100, "MAX_AOI_CLOUD": 100,
        "INVALID_SCL": ",".join(str(c) for c in spec["invalid"]),
        "DILATION": spec["dilation"], "METHOD": METHOD_INDEX[spec["case"]],
        "BANDS": ",".join(spec["bands"]), "OUTPUT_TYPE": 0,
        "TARGET_CRS": spec["aoi"]["crs"], "RESOLUTION": spec["resolution"],
        "OUTPUT": out, "REPORT": report,
        "NORMALISE": "false", "FEATHER_M": 0,  # the same work as odc-stac (no seam blending)
    }
    if workers_param:
        params[workers_param] = spec["threads"]
    cmd = [QGIS_PROCESS, "--json", "run", "clearsky:buildmosaic", "--",
           *(f"{k}={v}" for k, v in params.items())]
    profile = workdir / f"{name}.profile"
    env = qgis_process_env(profile)
    stats = workdir / f"{name}.launch.json"
    assets.clear_log()
    log_path = workdir / f"{name}.log"
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["/usr/bin/python3", "-S", str(LAUNCH), str(stats), *cmd],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=str(workdir))
        _wait(proc, timeout, f"qgis_process {spec['case']}")
    wall = time.perf_counter() - t0
    launched = json.loads(stats.read_text()) if stats.exists() else {"returncode": -1}
    if proc.returncode != 0 or launched["returncode"] != 0:
        raise RuntimeError(f"qgis_process {spec['case']} failed:\n"
                           + log_path.read_text(errors="replace")[-3000:])
    entries = assets.requests()
    import csv

    with open(report, newline="") as fh:
        rows = list(csv.DictReader(fh))
    used = {r["id"]: int(r["pixels_contributed"]) for r in rows
            if int(r["pixels_contributed"] or 0)}
    result = {"seconds": launched["wall_seconds"], "output": str(out), "contributed": used,
              "kept": [r["id"] for r in rows if r["kept"] == "True"]}
    note = "" if workers_param else (
        f"no concurrency parameter in Processing: engine default max_workers="
        f"{default_max_workers()}")
    return Run(spec["case"], "clearsky", "qgis_process", aoi_km, launched["wall_seconds"],
               wall, launched["maxrss_kb"] / 1024.0, launched["cpu_seconds"],
               load=os.getloadavg()[0], result=result,
               concurrency=int(spec["threads"]) if workers_param else default_max_workers(),
               note=note, **log_figures(entries))


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


def mosaic_floor(root: Path, bounds: tuple, scenes: Sequence[str], crs: str = CRS) -> int:
    """Floor for a mosaic: band and SCL tiles under the AOI of the scenes that contributed
    (full resolution: the output is 10 m, the bands' own level; SCL at its 20 m)."""
    return floor_bytes(root, [(COLLECTION, s) for s in scenes], list(BANDS) + ["scl"], bounds,
                       crs)


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


# --- many passes: the archive's passes repeated under new dates ---------------------------

PASSES_CENTRE = (13.70, 52.40)  # inside the world, on tile 33UVU alone (no tile overlap)
_DATES = re.compile(r"(?<![0-9])(20[0-9]{2})-?([01][0-9])-?([0-3][0-9])(?=T)")
_SHIFT_DAYS = 30  # the archive's passes all lie in June 2024: copies never overlap


def _shift_dates(text: str, days: int) -> str:
    """Every date stamp written before a time ('2024-06-03T..', '20240603T..') moved."""
    from datetime import timedelta

    def move(m):
        d = date(int(m.group(1)), int(m.group(2)), int(m.group(3))) + timedelta(days=days)
        sep = "-" if "-" in m.group(0) else ""
        return f"{d.year:04d}{sep}{d.month:02d}{sep}{d.day:02d}"

    return _DATES.sub(move, text)


def repeated_archive(root: Path, bounds: tuple, copies: int,
                     assets: Sequence[str] = BANDS + ("scl",)) -> Tuple[Path, int, str]:
    """An archive root whose catalog holds the items of `root` that meet `bounds` (EPSG:
    32633, sentinel-2-c1-l2a) `copies` times, copy k with every date k * 30 days later
    (ids, datetimes, datastrip ids, hrefs), so each copy is a new set of passes.

    Each copy's COGs are hard links to the originals under the new item's path: every
    pass is read from distinct URLs, so no client cache serves a repeat, and the bytes are
    real COG bytes; the pixels of copy k are those of copy 0 (the same weather again).
    Returns (root, items, last date). Reused when already built."""
    to_wgs = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    aoi = box(*to_wgs.transform_bounds(*bounds))
    src = json.loads((Path(root) / "stac" / "items" / f"{COLLECTION}.json").read_text())
    chosen = [f for f in src["features"] if shape(f["geometry"]).intersects(aoi)]
    out = REPO / ".build" / "bench-passes" / f"{Path(root).name}-{copies}x{len(chosen)}"
    manifest = out / "manifest.json"
    last = max(f["properties"]["datetime"][:10] for f in chosen)
    last = _shift_dates(last + "T", (copies - 1) * _SHIFT_DAYS)[:10]
    if manifest.exists():
        return out, json.loads(manifest.read_text())["items"], last
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "stac" / "items").mkdir(parents=True)
    shutil.copytree(Path(root) / "stac" / "collections", tmp / "stac" / "collections")
    features = []
    for k in range(copies):
        for f in chosen:
            keep = {a: v for a, v in f["assets"].items() if a in assets}
            g = json.loads(_shift_dates(json.dumps(dict(f, assets=keep)), k * _SHIFT_DAYS))
            for a in keep:
                rel = f["assets"][a]["href"].split("/data/", 1)[1]
                new = g["assets"][a]["href"].split("/data/", 1)[1]
                dst = tmp / "data" / new
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(Path(root) / "data" / rel, dst)
            features.append(g)
    (tmp / "stac" / "items" / f"{COLLECTION}.json").write_text(json.dumps(
        {"type": "FeatureCollection", "features": features}))
    (tmp / "manifest.json").write_text(json.dumps({"items": len(features), "copies": copies}))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out, len(features), last
