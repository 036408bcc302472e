"""The orchestrator: search -> select -> plan -> block tasks through an Executor -> COG.

Blocks are independent `BlockTask`s run through a `concurrent.futures.Executor` (threads
by default; a process pool or a Dask client works the same); this process is the only
writer of the output. Memory is bounded by the blocks in flight, never by the AOI size.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
from pyproj import Transformer
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from . import io, output
from .blocks import BlockResult, BlockTask, CompositeSpec, run_block, shared_pools, slim
from .clouds import MaskRule
from .errors import NoScenesError, ReadError
from .grid import Block, Grid, output_grid
from .params import MosaicParams
from .plan import Pass, plan_passes
from .progress import NullProgress, Progress, SubProgress, check_cancelled
from .report import report_paths, write_scene_report
from .results import MosaicResult, SceneReport
from .search import run_search, search_scenes, why_nothing_left

__all__ = ["build_mosaic", "search_scenes", "why_nothing_left"]

# Blocks in flight at once. Reads inside a block already run concurrently, so two blocks
# keep the connections busy while memory stays that of two blocks' stacks.
BLOCKS_IN_FLIGHT = 2


def build_mosaic(
    params: MosaicParams, progress: Optional[Progress] = None, executor: Optional[Executor] = None
) -> MosaicResult:
    """Build the cloud-free composite and write it as a COG with its scene report."""
    params.validate()
    with io.gdal_env(params.max_workers):
        return _build(params, progress or NullProgress(), executor)


def _build(params: MosaicParams, progress: Progress, executor: Optional[Executor]
           ) -> MosaicResult:
    assert params.output is not None  # validate() saw to it
    io.check_output_path(params.output, params.overwrite)
    csv_path, json_path = report_paths(params.output, params.report_csv)

    search = run_search(params, SubProgress(progress, 0, 20))
    kept = [r for r in search.reports if r.kept and _wanted(r, params)]
    if not kept:
        raise NoScenesError(why_nothing_left(final_reports(search.reports, params, {}), params))

    grid = output_grid(params.aoi, params.target_crs, params.resolution)
    passes = plan_passes(kept, params.start, params.end, params.target_date)
    progress.info(
        f"Compositing {len(kept)} scene(s) from {len(passes)} pass(es) into a "
        f"{grid.width} x {grid.height} grid ({grid.crs}, {params.resolution:g} m pixels)"
    )
    names = output.band_names(params)
    blocks = grid.blocks(params.block_size)
    outcome = _Outcome()
    options = io.current_options()
    with shared_pools(params.max_workers, options), io.CogWriter(
        params.output, grid, len(names), output.dtype_of(params.output_type), 0,
        params.overwrite,
    ) as out:
        tasks = _tasks(params, grid, blocks, passes, options, outcome)
        blocks_progress = SubProgress(progress, 20, 92)
        for done, result in enumerate(_run(executor, tasks, options, progress)):
            out.write(result.block.row_off, result.block.col_off, result.data)
            outcome.add(result)
            blocks_progress.set_progress(100.0 * (done + 1) / len(blocks))
        if outcome.filled == 0 and outcome.broken:
            why = "; ".join(sorted(set(outcome.broken.values()))[:3])
            raise ReadError(f"No pixel of the mosaic could be read ({why}); nothing was written.")
        reports = final_reports(search.reports, params, outcome.contributed_by_id(kept),
                                outcome.broken_by_id(kept))
        used = [r.scene.id for r in reports if r.pixels_contributed]
        progress.info("Writing the Cloud-Optimized GeoTIFF")
        out.commit(descriptions=names, tags=output.tags(params, used, kept),
                   band_tags=output.band_tags(params, names))

    if params.write_report:
        header = {"output": str(params.output), "parameters": output.params_summary(params)}
        write_scene_report(reports, csv_path, json_path, header)
    progress.set_progress(100)
    return MosaicResult(
        output=params.output, report_json=json_path if params.write_report else None,
        report_csv=csv_path if params.write_report else None, reports=reports,
        band_names=tuple(names), crs=grid.crs, resolution=params.resolution,
        bounds=grid.bounds, shape=grid.shape,
        filled_fraction=outcome.filled / outcome.aoi_pixels if outcome.aoi_pixels else 0.0,
        transform=grid.transform,
    )


def _wanted(report: SceneReport, params: MosaicParams) -> bool:
    return params.scene_ids is None or report.scene.id in params.scene_ids


def final_reports(search: Sequence[SceneReport], params: MosaicParams,
                  contributed: Dict[str, int], broken: Optional[Dict[str, str]] = None
                  ) -> List[SceneReport]:
    """The scene report rows, built once from the search verdicts, the user's choice of
    scenes and what the blocks read."""
    broken = broken or {}
    out = []
    for r in search:
        sid = r.scene.id
        if r.kept and not _wanted(r, params):
            r = replace(r, kept=False, reason="left out by the user")
        elif r.kept:
            pixels = contributed.get(sid, 0)
            if sid in broken:
                r = replace(r, kept=bool(pixels), pixels_contributed=pixels,
                            reason=f"skipped, could not be read: {broken[sid]}")
            else:
                r = replace(r, pixels_contributed=pixels)
        out.append(r)
    return out


class _Outcome:
    """What the blocks returned, summed in the parent."""

    def __init__(self) -> None:
        self.contributed: Dict[int, int] = {}
        self.broken: Dict[int, str] = {}
        self.filled = self.aoi_pixels = 0

    def add(self, result: BlockResult) -> None:
        for index, n in result.contributed.items():
            self.contributed[index] = self.contributed.get(index, 0) + n
        for index, why in result.broken.items():
            self.broken.setdefault(index, why)
        self.filled += result.filled
        self.aoi_pixels += result.aoi_pixels

    def contributed_by_id(self, kept: Sequence[SceneReport]) -> Dict[str, int]:
        return {kept[i].scene.id: n for i, n in self.contributed.items()}

    def broken_by_id(self, kept: Sequence[SceneReport]) -> Dict[str, str]:
        return {kept[i].scene.id: why for i, why in self.broken.items()}


def _tasks(params: MosaicParams, grid: Grid, blocks: Sequence[Block], passes: Sequence[Pass],
           options: Dict[str, object], outcome: _Outcome) -> Iterator[BlockTask]:
    """One task per block, made when submitted (so it skips scenes found broken so far)."""
    spec = CompositeSpec(params.method, params.percentile, tuple(params.bands),
                         params.output_type, params.count_band, params.source_band)
    rule = MaskRule(frozenset(params.invalid_scl), int(params.dilation))
    light = [Pass(p.pass_id, tuple((i, slim(s, params.bands)) for i, s in p.scenes),
                  p.score, p.distance) for p in passes]
    aoi = params.aoi.to_crs(grid.crs) if params.clip_to_aoi else None
    for block in blocks:
        yield BlockTask(
            block=block, passes=_relevant(light, block.grid), aoi=_near(aoi, block.grid),
            composite=spec, mask=rule, gdal=options, read_workers=params.max_workers,
            skip=frozenset(outcome.broken),
        )


def _relevant(passes: Sequence[Pass], grid: Grid) -> tuple:
    """The passes with only the scenes whose footprint meets the block."""
    footprint = _polygon_wgs84(grid)
    out = []
    for p in passes:
        scenes = tuple((i, s) for i, s in p.scenes if s.footprint.intersects(footprint))
        if scenes:
            out.append(replace(p, scenes=scenes))
    return tuple(out)


def _near(aoi: Optional[BaseGeometry], grid: Grid) -> Optional[BaseGeometry]:
    """The part of the AOI around a block (a pixel of margin): smaller tasks, same mask."""
    if aoi is None:
        return None
    minx, miny, maxx, maxy = grid.bounds
    xres, yres = grid.res
    return aoi.intersection(box(minx - xres, miny - yres, maxx + xres, maxy + yres))


def _polygon_wgs84(grid: Grid) -> Polygon:
    minx, miny, maxx, maxy = grid.bounds
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    xs = np.linspace(minx, maxx, 5)
    ys = np.linspace(miny, maxy, 5)
    ring = (
        [(x, miny) for x in xs] + [(maxx, y) for y in ys[1:]]
        + [(x, maxy) for x in xs[::-1][1:]] + [(minx, y) for y in ys[::-1][1:]]
    )
    lon, lat = tr.transform([p[0] for p in ring], [p[1] for p in ring])
    return Polygon(zip(lon, lat))


def _run(executor: Optional[Executor], tasks: Iterable[BlockTask], options: Dict[str, object],
         progress: Progress) -> Iterator[BlockResult]:
    """Submit at most BLOCKS_IN_FLIGHT tasks at a time (bounded memory); yield in block
    order; on cancel or error, cancel what is still pending."""
    own = executor is None
    pool = executor or ThreadPoolExecutor(
        max_workers=BLOCKS_IN_FLIGHT, thread_name_prefix="clearsky-block",
        initializer=io.init_worker, initargs=(options,),
    )
    pending: List[Future] = []
    queue = iter(tasks)
    try:
        while True:
            check_cancelled(progress)
            while len(pending) < BLOCKS_IN_FLIGHT:
                task = next(queue, None)
                if task is None:
                    break
                pending.append(pool.submit(run_block, task))
            if not pending:
                return
            result = pending.pop(0).result()
            check_cancelled(progress)
            yield result
    finally:
        for future in pending:
            future.cancel()
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
