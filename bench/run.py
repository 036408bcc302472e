"""`make bench`: Clearsky against odc-stac on the same served archive, in the same run.

    .venv/bin/python bench/run.py [--extent-km 28] [--aoi-km 20] [--threads 8]
                                  [--delay-ms 50] [--cases abcd] [--profile]

Cases: (a) median, (b) best available pixel, (c) AOI cloud check of 50 scenes,
(d) Clearsky scaling with AOI area x1, x4, x16, (e) Clearsky's median on threads against a
Dask LocalCluster of 2 worker processes (QGIS venv, 3 interleaved rounds).
Writes bench/results/results.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import List

import benchvenv
import harness
import numpy as np
from harness import BANDS, COLLECTION, CRS, QGIS_PYTHON, Run, Workload

RESULTS = Path(__file__).resolve().parent / "results"
CASE_ORDER = ["median", "best", "cloudcheck", "scaling", "executor"]


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    return {"nproc": os.cpu_count(), "ram_gb": round(mem_kb / 1024 / 1024, 1), "cpu": cpu,
            "python": platform.python_version(), "load_before": os.getloadavg()[0]}


def mosaic_case(ctx, case: str, work: Workload, side_km: float, tools=("clearsky", "odc"),
                reference: bool = True) -> List[Run]:
    """Both tools (and Clearsky in the QGIS venv) on one mosaic; floor and agreement."""
    runs, outputs = [], {}
    jobs = [(t, ctx.bench_python, "bench", None) for t in tools]
    if reference:
        jobs.append(("clearsky", QGIS_PYTHON, "qgis", None))
    if "clearsky" in tools:  # the engine with proposed core/ diffs applied
        jobs += [("clearsky", ctx.bench_python, env, path) for env, path in ctx.variants]
    for tool, python, env, pythonpath in jobs:
        name = f"{case}_{tool}_{env}_{side_km:g}km"
        spec = work.spec(tool, case, str(ctx.workdir / name), pythonpath=pythonpath,
                         profile=str(ctx.out / f"profile_{name}.txt") if ctx.profile else None)
        run = harness.measure(python, env, spec, ctx.served.assets, ctx.workdir, side_km)
        runs.append(run)
        outputs[(tool, env)] = run
    # Floor: the tiles under the AOI of the scenes that contributed to that run's output;
    # odc-stac is held to the floor of the baseline engine's scenes (same items, same work).
    cs = outputs.get(("clearsky", "bench")) or outputs.get(("clearsky", "qgis"))
    floors = {}
    odc = outputs.get(("odc", "bench"))
    for run in runs:
        used = tuple(sorted((run if run.tool == "clearsky" else cs).result["contributed"]))
        if used not in floors:
            floors[used] = harness.mosaic_floor(ctx.root, work.bounds, used)
        run.floor_bytes = floors[used]
        if odc is not None and run.tool == "clearsky":
            agree = harness.agreement(harness.read_clearsky(run.result["output"]),
                                      np.load(odc.result["output"]))
            run.agreement = agree["within_tol"]
            run.note = (f"only Clearsky {agree['only_clearsky']:.2%}, "
                        f"only odc {agree['only_odc']:.2%} of {agree['pixels']} px")
    return runs


def cloud_case(ctx, work: Workload, side_km: float, n: int = 50) -> List[Run]:
    scenes = harness.scenes_over(ctx.root, work.bounds, n)
    runs = {}
    for tool in ("clearsky", "odc"):
        name = f"cloudcheck_{tool}_{side_km:g}km"
        spec = work.spec(tool, "cloudcheck", str(ctx.workdir / name), scenes=scenes,
                         profile=str(ctx.out / f"profile_{name}.txt") if ctx.profile else None)
        run = harness.measure(ctx.bench_python, "bench", spec, ctx.served.assets, ctx.workdir,
                              side_km)
        runs[tool] = run
    from floor import floor_bytes

    floor = floor_bytes(ctx.root, scenes, ["scl"], work.bounds, CRS)
    agree = harness.cloud_agreement(runs["clearsky"].result["cloud"], runs["odc"].result["cloud"])
    for run in runs.values():
        run.floor_bytes = floor
        run.note = f"{run.result['scenes']} scenes"
    runs["clearsky"].agreement = agree["within_1pct"]
    runs["clearsky"].note += (f"; AOI cloud % within 1 point of odc for {agree['within_1pct']:.0%}"
                              f" of {agree['scenes_compared']}, max diff "
                              f"{agree['max_abs_diff_pct']:.2f}")
    return list(runs.values())


def executor_case(ctx, work: Workload, side_km: float, rounds: int = 3) -> List[Run]:
    """The same block tasks on threads and on a LocalCluster(2 processes), interleaved."""
    runs: List[Run] = []
    for r in range(rounds):
        for label, workers in (("threads", 0), ("LocalCluster(2)", 2)):
            name = f"executor_{label}_{r}"
            spec = work.spec("clearsky", "median", str(ctx.workdir / name),
                             dask_workers=workers)
            run = harness.measure(QGIS_PYTHON, "qgis", spec, ctx.served.assets, ctx.workdir,
                                  side_km)
            run.case = f"executor {label}"
            rss = [kb / 1024 for kb in run.result.get("worker_peak_rss_kb", [])]
            run.note = f"round {r + 1}" + (
                f"; worker peak RSS MB {', '.join(f'{m:.0f}' for m in rss)}" if rss else "")
            runs.append(run)
    return runs


class Context:
    """What every case needs: the archive, its servers, where to write, which engines."""

    def __init__(self, root, served, workdir, bench_python, profile=False, out=RESULTS,
                 variants=()):
        self.root, self.served, self.workdir = root, served, workdir
        self.bench_python, self.profile, self.out = bench_python, profile, Path(out)
        self.variants = list(variants)  # (env name, import root of a patched engine)


def _engine(patch: Path, workdir: Path) -> Path:
    """A patched engine; PATCH may join several diffs in one folder with '+'."""
    parts = [Path(patch).with_name(p + ".diff") if not p.endswith(".diff") else
             Path(patch).with_name(p) for p in Path(patch).name.split("+")]
    joined = workdir / Path(patch).name
    if len(parts) > 1 or not joined.exists():
        joined.write_text("".join(p.read_text() for p in parts))
    return harness.patched_engine(joined, workdir)


def table(runs: List[Run]) -> str:
    head = ("| case | tool | venv | AOI km | time s | process s | CPU s | peak RSS MB | "
            "requests | MB served | floor MB | served/floor | agree ≤0.01 | load | note |")
    lines = [head, "|" + "---|" * 15]
    for r in runs:
        ratio = r.bytes_served / r.floor_bytes if r.floor_bytes else float("nan")
        agree = "" if r.agreement is None else f"{r.agreement:.2%}"
        lines.append(
            f"| {r.case} | {r.tool} | {r.env} | {r.aoi_km:g} | {r.seconds:.2f} | "
            f"{r.process_seconds:.2f} | {r.cpu_seconds:.1f} | {r.peak_rss_mb:.0f} | {r.requests} | "
            f"{r.bytes_served / 1e6:.1f} | {r.floor_bytes / 1e6:.1f} | {ratio:.2f} | {agree} | "
            f"{r.load:.1f} | {r.note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extent-km", type=float, default=28.0)
    ap.add_argument("--aoi-km", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--delay-ms", type=int, default=50)
    ap.add_argument("--cases", default="abcde")
    ap.add_argument("--profile", action="store_true", help="pyinstrument text per job")
    ap.add_argument("--keep", action="store_true", help="keep the jobs' outputs (temp dir)")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the rows re-run in an existing results.json")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--core-patch", type=Path, action="append", default=[],
                    help="also time Clearsky with this core/ diff applied (repeatable; "
                         "a name joining files with '+' applies them together)")
    ap.add_argument("--scaling-sides", default="",
                    help="AOI sides in km for case d (default: aoi/4, aoi/2, aoi)")
    args = ap.parse_args(argv)

    from world import World
    from world.cache import cached_archive
    from world.generate import archive_size
    from world.servers import ServedArchive

    bench_python = benchvenv.ensure()
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    t0 = time.perf_counter()
    root = cached_archive(World(extent_km=args.extent_km, seed=2024), 512)
    info["archive"] = {"extent_km": args.extent_km,
                       "path": os.path.relpath(root, Path(__file__).resolve().parents[1]),
                       "ready_seconds": round(time.perf_counter() - t0, 1),
                       "bytes": archive_size(root)}
    info.update(threads=args.threads, delay_ms=args.delay_ms, collection=COLLECTION,
                bands=list(BANDS), crs=CRS, resolution=10, dilation=0)
    runs: List[Run] = []
    workdir = harness.default_workdir()
    with ServedArchive(root, delay_ms=args.delay_ms) as served:
        variants = []
        for patch in args.core_patch:
            variants.append((f"bench+{patch.stem}", str(_engine(patch, workdir))))
        ctx = Context(root, served, workdir, bench_python, args.profile, args.out, variants)
        work = harness.plan(served.stac_url, args.aoi_km, args.threads)
        info["items"] = len(work.item_ids)
        info["passes"] = len(work.pass_order)
        if "a" in args.cases:
            runs += mosaic_case(ctx, "median", work, args.aoi_km)
        if "b" in args.cases:
            runs += mosaic_case(ctx, "best", work, args.aoi_km)
        if "c" in args.cases:
            runs += cloud_case(ctx, work, args.aoi_km)
        if "d" in args.cases:
            sides = [float(v) for v in args.scaling_sides.split(",") if v] or [
                args.aoi_km / 4, args.aoi_km / 2, args.aoi_km]
            for side in sides:
                w = harness.plan(served.stac_url, side, args.threads)
                scaled = mosaic_case(ctx, "median", w, side, tools=("clearsky",),
                                     reference=False)
                for run in scaled:
                    run.case = f"scaling x{(side / sides[0]) ** 2:g}"
                runs += scaled
        if "e" in args.cases:
            runs += executor_case(ctx, work, args.aoi_km)
    if not args.keep:  # outputs of every job: about 1 GB for the default cases
        shutil.rmtree(workdir, ignore_errors=True)
    info["load_after"] = os.getloadavg()[0]
    rows = [r.row() for r in runs]
    if args.merge and (args.out / "results.json").exists():  # re-ran some cases: keep the rest
        key = lambda r: (r["case"], r["tool"], r["env"], r["aoi_km"])  # noqa: E731
        fresh = {key(r) for r in rows}
        old = json.loads((args.out / "results.json").read_text())
        kept = [r for r in old["runs"] if key(r) not in fresh]
        rows = kept + rows
        info["merged_from"] = old["machine"]
    rows.sort(key=lambda r: (CASE_ORDER.index(r["case"].split()[0]), r["aoi_km"]))  # stable
    runs = [Run(**r) for r in rows]
    md = table(runs)
    print(md)
    (args.out / "results.json").write_text(json.dumps(
        {"machine": info, "runs": rows},
        indent=1))
    (args.out / "results.md").write_text(
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['ram_gb']} GB RAM; archive "
        f"World(extent_km={args.extent_km:g}) {info['archive']['bytes'] / 1e6:.0f} MB; "
        f"{args.delay_ms} ms per request; {args.threads} threads; {info['items']} items in "
        f"{info['passes']} passes; {', '.join(BANDS)} at 10 m in {CRS}; SCL invalid "
        f"{{0,1,3,8,9,10}}, dilation 0.\n\n{md}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
