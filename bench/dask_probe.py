"""Clearsky on threads against the same mosaic on a LocalCluster, over the served archive.

    .venv/bin/python bench/dask_probe.py                    # 20 km median, bench archive
    .venv/bin/python bench/dask_probe.py --archive test --method best --workers 1

For each round (threads and Dask alternate), it prints wall time, requests, MB served, and
each worker's peak RSS so far (ru_maxrss: the cluster lives for the whole probe). There is
no request delay, as in the in-process probes quoted in README's "Known limits".
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]


def _peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archive", choices=("bench", "test"), default="bench",
                    help="bench: 28 km archive, 20 km AOI; test: the tests' 6 km archive, "
                         "0.4 of its region, 64 px blocks")
    ap.add_argument("--method", default="median")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    import distributed
    from harness import CRS, aoi_bounds
    from osgeo import gdal
    from shapely import affinity
    from shapely.geometry import box

    from clearsky.core.api import Aoi, MosaicParams, build_mosaic
    from world import World
    from world.cache import cached_archive
    from world.servers import ServedArchive

    if args.archive == "bench":
        world = World(extent_km=28.0, seed=2024)
        aoi, extra = Aoi(box(*aoi_bounds(20.0)), CRS), {"target_crs": CRS}
    else:
        world = World(extent_km=6.0, seed=2024)
        aoi = Aoi(affinity.scale(world.region, 0.4, 0.4), "EPSG:4326")
        extra = {"block_size": 64, "count_band": True, "normalise": False, "feather_m": 0.0}
    root = cached_archive(world, 512)
    out = Path(tempfile.mkdtemp(prefix="clearsky-dask-probe-"))
    with ServedArchive(root) as served, distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0", silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        for rnd in range(args.rounds):
            for where in (("dask", "threads") if rnd % 2 == 0 else ("threads", "dask")):
                served.assets.reset()
                gdal.VSICurlClearCache()
                client.run(lambda: __import__("osgeo.gdal").gdal.VSICurlClearCache())
                params = MosaicParams(
                    aoi=aoi, start=date(2024, 6, 1), end=date(2024, 6, 30),
                    catalog_url=served.stac_url, output=out / f"{where}{rnd}.tif",
                    bands=("red", "green", "blue", "nir"), max_scene_cloud=100.0,
                    max_aoi_cloud=100.0, resolution=10.0, method=args.method,
                    overwrite=True,
                    executor=cluster.scheduler_address if where == "dask" else "", **extra)
                t0 = time.monotonic()
                build_mosaic(params)
                seconds = time.monotonic() - t0
                log = served.assets.requests()
                served_mb = sum(int(e.get("bytes") or 0) for e in log) / 1e6
                peaks = sorted(client.run(_peak_mb).values())
                print(f"round {rnd} {where:8s} {seconds:6.2f} s {len(log):5d} requests "
                      f"{served_mb:7.1f} MB  worker peak MB {peaks}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
