"""`make demo`: a true-colour mosaic of south-east Berlin from the offline archive.

Builds (or reuses) the offline Sentinel-2 archive, serves it on 127.0.0.1 with the real
STAC API and range servers, runs `qgis_process run clearsky:buildmosaic` headless (the
same algorithm as the Processing toolbox), and writes the COG, its scene report and a
PNG quicklook into demo-output/.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from shapely import affinity
from shapely.geometry import mapping

from world import World
from world.cache import cached_archive
from world.qgis_process_env import qgis_process_env, run_qgis_process
from world.servers import ServedArchive

REPO = Path(__file__).resolve().parents[1]


def quicklook(cog: Path, png: Path, max_size: int = 1024) -> None:
    """A small PNG of the first three bands, read from the COG's overviews."""
    with rasterio.open(cog) as src:
        factor = max(1, int(np.ceil(max(src.width, src.height) / max_size)))
        shape = (3, src.height // factor, src.width // factor)
        rgb = src.read([1, 2, 3], out_shape=shape)
    with warnings.catch_warnings():  # a PNG has no georeference, by design
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        write_png(png, rgb)


def write_png(png: Path, rgb: np.ndarray) -> None:
    shape = rgb.shape
    with rasterio.open(
        png, "w", driver="PNG", width=shape[2], height=shape[1], count=3, dtype="uint8"
    ) as dst:
        dst.write(rgb)


def write_aoi(world: World, path: Path) -> None:
    """The AOI as a GeoJSON polygon layer, as a QGIS user would have it."""
    polygon = affinity.scale(world.region, 0.8, 0.8)
    feature = {"type": "Feature", "properties": {"name": "south-east Berlin"},
               "geometry": mapping(polygon)}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))


def pct(value: str) -> str:
    return f"{float(value):.1f}%" if value else "-"


def print_report(csv_path: Path) -> None:
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [r for r in rows if r["kept"] == "True"]
    print(f"\n{len(rows)} scenes found, {len(kept)} kept")
    print(f"{'scene':34} {'scene cloud':>11} {'AOI cloud':>9} {'pixels':>9}  verdict")
    for r in rows:
        verdict = "kept" if r["kept"] == "True" else r["reason"]
        print(f"{r['id']:34} {pct(r['scene_cloud']):>11} {pct(r['aoi_cloud']):>9} "
              f"{int(r['pixels_contributed']):9d}  {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "demo-output")
    parser.add_argument("--extent-km", type=float, default=12.0)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    world = World(extent_km=args.extent_km)
    started = time.perf_counter()
    root = cached_archive(world)
    print(f"offline archive: {root} ({time.perf_counter() - started:.1f} s)")
    aoi_file = out / "aoi.geojson"
    write_aoi(world, aoi_file)
    output, report = out / "berlin_truecolour.tif", out / "berlin_truecolour.report.csv"
    with ServedArchive(root) as served, tempfile.TemporaryDirectory() as profile:
        print(f"STAC API {served.stac_url}, assets {served.assets.url}")
        params = {
            "AOI": aoi_file, "START_DATE": "2024-06-01", "END_DATE": "2024-06-30",
            "CATALOG": served.stac_url, "COLLECTION": "sentinel-2-c1-l2a",
            "METHOD": 0, "OUTPUT_TYPE": 1, "COUNT_BAND": "false",
            "TARGET_CRS": "EPSG:25833", "RESOLUTION": 10, "CLIP_TO_AOI": "true",
            "OUTPUT": output, "REPORT": report,
        }
        command = ["--json", "run", "clearsky:buildmosaic", "--",
                   *(f"{k}={v}" for k, v in params.items())]
        print("qgis_process.bin " + " ".join(command))
        for stale in (output, report, report.with_suffix(".json")):
            stale.unlink(missing_ok=True)  # the demo's own files from an earlier run
        started = time.perf_counter()
        done = run_qgis_process(command, qgis_process_env(Path(profile)), timeout=900)
        elapsed = time.perf_counter() - started
        read, requests = served.assets.bytes_served(), len(served.assets.requests())
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        print("qgis_process failed", file=sys.stderr)
        return 1
    answer = json.loads(done.stdout[done.stdout.index("{"):])
    print(f"qgis_process finished in {elapsed:.1f} s; {read / 1e6:.1f} MB read in "
          f"{requests} range requests")
    print_report(report)
    png = out / "berlin_truecolour.png"
    quicklook(output, png)
    with rasterio.open(output) as src:
        print(f"\nmosaic: {answer['results']['OUTPUT']} ({src.width} x {src.height}, "
              f"{src.crs.to_string()}, {src.res[0]:g} m, {src.count} bands {src.descriptions})")
    print(f"report: {report} and {report.with_suffix('.json')}")
    print(f"quicklook: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
