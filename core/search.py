"""The search stage: catalog search, then the AOI cloud check of every candidate."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

from shapely.ops import unary_union

from . import catalog, clouds, io
from .aoi import WGS84, Aoi
from .grid import reproject_geometry, utm_crs_for
from .params import SearchParams
from .progress import NullProgress, Progress, SubProgress, check_cancelled
from .results import SceneReport, SearchResult


def search_scenes(params: SearchParams, progress: Optional[Progress] = None) -> SearchResult:
    """Every scene the catalog returns, with AOI coverage, AOI cloud % and a verdict."""
    params.validate()
    with io.gdal_env(params.max_workers,
                     **io.proxy_options(params.proxy, params.no_proxy)), \
            io.run_tiles(params.memory_mb, params.max_workers):
        return run_search(params, progress or NullProgress())


def run_search(params: SearchParams, progress: Progress) -> SearchResult:
    """`search_scenes` inside the caller's GDAL environment, parameters already valid."""
    candidates, rejected, notes = catalog.search(params, SubProgress(progress, 0, 30))
    check_cancelled(progress)
    progress.info(f"{len(candidates)} scene(s) to check over the AOI")
    checked = clouds.check_aoi_clouds(candidates, params.aoi, params,
                                      SubProgress(progress, 30, 100))
    reports = checked + [SceneReport(scene=s, kept=False, reason=r) for s, r in rejected]
    reports.sort(key=lambda r: (r.scene.datetime, r.scene.tile, r.scene.id))
    progress.set_progress(100)
    return SearchResult(reports=reports, notes=notes)


def kept_coverage(reports: Sequence[SceneReport], aoi: Aoi) -> float:
    """% of the AOI's area that at least one kept scene covers (footprints, in the AOI's
    UTM zone so areas are in square metres)."""
    kept = [r.scene.footprint for r in reports if r.kept]
    if not kept:
        return 0.0
    utm = utm_crs_for(aoi)
    area = aoi.to_crs(utm)
    covered = reproject_geometry(unary_union(kept), WGS84, utm).intersection(area)
    return 100.0 * covered.area / area.area if area.area else 0.0


def why_nothing_left(reports: Sequence[SceneReport], params: SearchParams) -> str:
    """A message saying which filters removed the scenes."""
    if not reports:
        return (
            f"The catalog has no {params.collection} scene over the AOI between {params.start} "
            f"and {params.end}: widen the dates or check the AOI and the collection."
        )
    reasons: Dict[str, int] = {}
    for r in reports:
        key = r.reason.split(" (")[0]
        key = "scene cloud over the limit" if key.startswith("scene cloud") else key
        key = "AOI cloud over the limit" if key.startswith("AOI cloud") else key
        reasons[key] = reasons.get(key, 0) + 1
    detail = "; ".join(f"{n} x {k}" for k, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return (
        f"None of the {len(reports)} scene(s) found is usable ({detail}). Raise the maximum "
        f"scene cloud ({params.max_scene_cloud:g} %) or AOI cloud ({params.max_aoi_cloud:g} %), "
        "or widen the dates."
    )
