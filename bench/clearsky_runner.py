"""The Clearsky side of a benchmark job (runs in .venv-bench or in the QGIS venv)."""

from __future__ import annotations

import time
from concurrent.futures import Executor, Future
from datetime import date
from pathlib import Path

from shapely.geometry import box

from clearsky.core import catalog, clouds
from clearsky.core.api import Aoi, MosaicParams, NullProgress, SearchParams, build_mosaic

try:  # the design's name for the GDAL module (core/gdalio/); today it is core/io.py
    from clearsky.core.gdalio import gdal_env
except ImportError:
    from clearsky.core.io import gdal_env


def _aoi(spec: dict) -> Aoi:
    return Aoi(box(*spec["aoi"]["bounds"]), spec["aoi"]["crs"])


def _search_params(spec: dict, collection: str) -> dict:
    return dict(
        aoi=_aoi(spec), start=date.fromisoformat(spec["start"]),
        end=date.fromisoformat(spec["end"]), catalog_url=spec["stac_url"],
        collection=collection, max_scene_cloud=100.0, max_aoi_cloud=100.0,
        invalid_scl=frozenset(spec["invalid"]), dilation=int(spec["dilation"]),
        max_workers=int(spec["threads"]),
    )


class InlineExecutor(Executor):
    """Runs each block in the calling thread: lets a sampling profiler see the block work."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, like a pool
            future.set_exception(exc)
        return future


def mosaic(spec: dict) -> dict:
    """build_mosaic end to end: search, AOI check, read, mask, reduce, write the COG."""
    out = Path(spec["out"] + ".tif")
    params = MosaicParams(
        **_search_params(spec, spec["collection"]), output=out, bands=tuple(spec["bands"]),
        method=spec["case"], target_crs=spec["aoi"]["crs"], resolution=spec["resolution"],
        overwrite=True, block_size=int(spec.get("block_size", 512)),
        # the same work as odc-stac: no radiometric normalisation, no feathering (seams)
        normalise=False, feather_m=0.0,
    )
    workers = int(spec.get("dask_workers") or 0)
    worker_rss: dict = {}
    t0 = time.perf_counter()
    if workers:  # the same block tasks on a LocalCluster of worker processes
        import distributed

        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                      processes=True, host="127.0.0.1", dashboard_address=None,
                                      silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            t0 = time.perf_counter()  # the cluster's start-up is not the mosaic's time
            result = build_mosaic(params, executor=client.get_executor(pure=False))
            seconds = time.perf_counter() - t0
            worker_rss = client.run(_peak_rss_kb)
    else:
        result = build_mosaic(params, executor=InlineExecutor() if spec.get("inline") else None)
        seconds = time.perf_counter() - t0
    used = {r.scene.id: r.pixels_contributed for r in result.reports if r.pixels_contributed}
    return {
        "seconds": seconds, "output": str(out), "shape": list(result.shape),
        "crs": result.crs, "bounds": list(result.bounds), "contributed": used,
        "kept": [r.scene.id for r in result.reports if r.kept],
        "worker_peak_rss_kb": sorted(worker_rss.values()),
    }


def _peak_rss_kb() -> int:
    """A worker process's own high-water RSS (VmHWM), as bench/worker.py measures jobs."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cloudcheck(spec: dict) -> dict:
    """check_aoi_clouds for the given scenes (found by the engine's own search, not timed)."""
    wanted = {tuple(x) for x in spec["scenes"]}  # (collection, id)
    scenes = {}
    t0 = time.perf_counter()
    for collection in sorted({c for c, _ in wanted}):
        params = SearchParams(**_search_params(spec, collection))
        with gdal_env(params.max_workers):
            found, rejected, _ = catalog.search(params, NullProgress())
        for s in list(found) + [s for s, _ in rejected]:
            if (collection, s.id) in wanted:
                scenes[(collection, s.id)] = s
    search_s = time.perf_counter() - t0
    ordered = [scenes[tuple(k)] for k in spec["scenes"] if tuple(k) in scenes]
    params = SearchParams(**_search_params(spec, spec["collection"]))
    t0 = time.perf_counter()
    with gdal_env(params.max_workers):
        reports = clouds.check_aoi_clouds(ordered, params.aoi, params, NullProgress())
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds, "search_seconds": search_s, "scenes": len(ordered),
        "cloud": {f"{r.scene.collection}/{r.scene.id}": r.aoi_cloud for r in reports},
        "coverage": {f"{r.scene.collection}/{r.scene.id}": r.aoi_coverage for r in reports},
    }
