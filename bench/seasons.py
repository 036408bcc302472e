"""Four seasons x p25/p50/p75 in one run against the twelve single runs it replaces.

    .venv/bin/python bench/seasons.py [--rounds 3] [--delay-ms 0] [--json out.json]

On the year-long offline archive (World(calendar="year"), tests/world/year.py), served
on 127.0.0.1 by the range server: the AOI is the middle 70 % of the 5 km region (4 tiles,
2 UTM zones), 10 m, red/green/blue/nir, no count band. "together" is one run with
PERCENTILES=25,50,75 and PERIODS=season over 2023-12-01..2024-11-30 (4 COGs of 12 bands);
"separate" is the 12 runs a user without those options makes: METHOD=percentile with
PERCENTILE 25, 50 or 75, one season's dates each. Rounds are interleaved (together first in
odd rounds, last in even ones); before every run GDAL's /vsicurl/ cache is emptied and the
range server's log cleared, so bytes and requests are what that run fetched. Times are
wall-clock in this process (search and AOI cloud check included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from osgeo import gdal
from shapely import affinity

from clearsky.core import io
from clearsky.core.api import Aoi, MosaicParams, build_mosaic
from clearsky.core.params import Method
from world.rangelog import ranges, served_bytes, span_bytes
from world.servers import ServedArchive
from world.year import SEASON_DATES, YEAR_END, YEAR_START, year_archive, year_world

BANDS = ("red", "green", "blue", "nir")
PERCENTILES = (25, 50, 75)


def _params(world, served, out: Path, **kw) -> MosaicParams:
    values = dict(aoi=Aoi(affinity.scale(world.region, 0.7, 0.7), "EPSG:4326"),
                  catalog_url=served.stac_url, output=out, bands=BANDS, max_scene_cloud=100.0,
                  max_aoi_cloud=100.0, count_band=False, resolution=10.0)
    values.update(kw)
    return MosaicParams(**values)


def _run(served, params: MosaicParams) -> dict:
    served.assets.reset()
    gdal.VSICurlClearCache()
    io.close_datasets()
    t0 = time.perf_counter()
    result = build_mosaic(params)
    seconds = time.perf_counter() - t0
    log = served.assets.requests()
    return {"seconds": seconds, "bytes": served_bytes(log), "requests": len(log),
            "log": log, "files": len(result.outputs) or 1}


def together(world, served, folder: Path) -> dict:
    params = _params(world, served, folder / "year.tif", start=YEAR_START, end=YEAR_END,
                     statistics="25,50,75", periods="season")
    out = _run(served, params)
    out["distinct"] = span_bytes(ranges(out.pop("log")))
    return out


def separate(world, served, folder: Path) -> dict:
    runs, logs = [], []
    for season, (first, last) in SEASON_DATES.items():
        for q in PERCENTILES:
            params = _params(world, served, folder / f"{season}_p{q}.tif", start=first,
                             end=last, method=Method.PERCENTILE, percentile=float(q))
            one = _run(served, params)
            logs.extend(one.pop("log"))
            runs.append(one)
    return {"seconds": sum(r["seconds"] for r in runs), "bytes": sum(r["bytes"] for r in runs),
            "requests": sum(r["requests"] for r in runs), "files": len(runs),
            "distinct": span_bytes(ranges(logs))}


def _summary(values, fmt: str = "{:.2f}") -> str:
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values),
                                              max(values)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--delay-ms", type=int, default=0, help="added to every range request")
    ap.add_argument("--json", type=Path, default=None, help="write every run's figures here")
    a = ap.parse_args(argv)
    world = year_world()
    t0 = time.perf_counter()
    root = year_archive(world)
    print(f"archive {Path(root).name} ready in {time.perf_counter() - t0:.1f} s "
          f"(load {os.getloadavg()[0]:.1f})")
    rows = {"together": [], "separate": []}
    with ServedArchive(root, delay_ms=a.delay_ms) as served, \
            tempfile.TemporaryDirectory(prefix="clearsky-seasons-") as tmp:
        for r in range(a.rounds):
            order = ("together", "separate") if r % 2 == 0 else ("separate", "together")
            for kind in order:
                folder = Path(tmp) / f"{kind}{r}"
                folder.mkdir()
                fig = (together if kind == "together" else separate)(world, served, folder)
                fig["round"] = r + 1
                rows[kind].append(fig)
                print(f"round {r + 1} {kind:9s}: {fig['seconds']:6.2f} s, "
                      f"{fig['bytes'] / 1e6:6.2f} MB served ({fig['distinct'] / 1e6:.2f} MB "
                      f"distinct) in {fig['requests']} requests, {fig['files']} files, "
                      f"load {os.getloadavg()[0]:.1f}")
    print(f"\n{a.rounds} rounds, min / median / max:")
    for kind, figs in rows.items():
        print(f"  {kind:9s}: {_summary([f['seconds'] for f in figs])} s; "
              f"{_summary([f['bytes'] / 1e6 for f in figs])} MB served; "
              f"{_summary([f['requests'] for f in figs], '{:.0f}')} requests")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
