"""`make demo`: a true-colour mosaic of south-east Berlin from the offline archive.

Builds (or reuses) the offline Sentinel-2 archive, serves it on 127.0.0.1 with the real
STAC API and range servers, runs the Clearsky engine, and writes the COG, its scene
report and a PNG quicklook into demo-output/.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
from shapely import affinity

from clearsky.core.api import Aoi, CallbackProgress, MosaicParams, build_mosaic
from clearsky.core.params import Method, OutputType
from world import World
from world.servers import ServedArchive, cached_archive

REPO = Path(__file__).resolve().parents[1]


def quicklook(cog: Path, png: Path, max_size: int = 1024) -> None:
    """A small PNG of the first three bands, read from the COG's overviews."""
    with rasterio.open(cog) as src:
        factor = max(1, int(np.ceil(max(src.width, src.height) / max_size)))
        shape = (3, src.height // factor, src.width // factor)
        rgb = src.read([1, 2, 3], out_shape=shape)
    with rasterio.open(
        png, "w", driver="PNG", width=shape[2], height=shape[1], count=3, dtype="uint8"
    ) as dst:
        dst.write(rgb)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "demo-output")
    parser.add_argument("--extent-km", type=float, default=12.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    world = World(extent_km=args.extent_km)
    started = time.perf_counter()
    root = cached_archive(world)
    print(f"offline archive: {root} ({time.perf_counter() - started:.1f} s)")
    aoi = Aoi(affinity.scale(world.region, 0.8, 0.8), "EPSG:4326")
    output = args.out / "berlin_truecolour.tif"
    with ServedArchive(root) as served:
        print(f"STAC API {served.stac_url}, assets {served.assets.url}")
        params = MosaicParams(
            aoi=aoi,
            start=date(2024, 6, 1),
            end=date(2024, 6, 30),
            catalog_url=served.stac_url,
            output=output,
            output_type=OutputType.VISUAL,
            method=Method.BEST,
            target_crs="EPSG:25833",
            count_band=True,
            overwrite=True,
        )
        last = [-10.0]

        def show(percent: float) -> None:
            if percent - last[0] >= 10 or percent >= 100:
                last[0] = percent
                print(f"  {percent:5.1f} %")

        started = time.perf_counter()
        result = build_mosaic(params, CallbackProgress(on_progress=show, on_info=print))
        elapsed = time.perf_counter() - started
        read = served.assets.bytes_served()
        requests = len(served.assets.requests())
    png = args.out / "berlin_truecolour.png"
    quicklook(result.output, png)
    kept = [r for r in result.reports if r.kept]
    print(f"\n{len(result.reports)} scenes found, {len(kept)} kept; filled "
          f"{100 * result.filled_fraction:.1f} % of the AOI in {elapsed:.1f} s, "
          f"{read / 1e6:.1f} MB in {requests} range requests")
    print(f"{'scene':34} {'scene cloud':>11} {'AOI cloud':>9} {'pixels':>9}  verdict")
    for r in result.reports:
        row = r.row()
        verdict = "kept" if r.kept else r.reason
        print(f"{row['id']:34} {row['scene_cloud'] or 0:10.1f}% {row['aoi_cloud'] or 0:8.1f}% "
              f"{r.pixels_contributed:9d}  {verdict}")
    print(f"\nmosaic (COG, {result.crs}, {result.resolution:g} m): {result.output}")
    print(f"report: {result.report_csv} and {result.report_json}")
    print(f"quicklook: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
