"""The orchestrator: search -> select -> plan -> block tasks through an Executor -> COG.

Blocks are independent `BlockTask`s run through a `concurrent.futures.Executor` (threads
by default; a process pool or a Dask client works the same); this process is the only
writer of the output. Memory is bounded by the blocks in flight, never by the AOI size.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from pathlib import Path
from typing import (
    Callable,
    Deque,
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

import numpy as np
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from . import budget, io, output, seams, stacitem, stalls
from .blocks import (
    BlockResult,
    BlockTask,
    CompositeSpec,
    block_id,
    read_part,
    run_block,
    shared_pools,
    slim,
)
from .clouds import MaskRule
from .errors import NoScenesError, ReadError
from .estimate import Estimate, LimitError, output_estimate, run_estimate
from .executors import Running, open_executor
from .grid import Block, Grid, geometry_mask, output_grid, pixel_size_m, transformer
from .ledger import Ledger
from .options import Method
from .params import MosaicParams
from .periods import Period, period_path, split_periods
from .plan import Pass, plan_passes
from .progress import NullProgress, Progress, SubProgress, check_cancelled
from .readplan import ReadPlan
from .report import check_report_paths, report_paths, write_scene_report
from .results import MosaicResult, PeriodOutput, SceneReport
from .search import run_search, search_scenes, why_nothing_left

__all__ = ["build_mosaic", "search_scenes", "why_nothing_left"]

# Blocks in flight at once. Reads inside a block already run concurrently, so two blocks
# keep the connections busy while memory stays that of two blocks' stacks.
BLOCKS_IN_FLIGHT = 2


def build_mosaic(
    params: MosaicParams, progress: Optional[Progress] = None, executor: Optional[Executor] = None
) -> MosaicResult:
    """Build the cloud-free composite and write it as a COG with its scene report.

    `executor` (any concurrent.futures.Executor) overrides `params.executor`."""
    params.validate()
    with io.gdal_env(params.max_workers,
                     **io.proxy_options(params.proxy, params.no_proxy)), \
            io.run_tiles(params.memory_mb, params.max_workers):
        return _build(params, progress or NullProgress(), executor)


def _build(params: MosaicParams, progress: Progress, executor: Optional[Executor]
           ) -> MosaicResult:
    assert params.output is not None  # validate() saw to it
    targets = _targets(params)
    csv_path, json_path = report_paths(params.output, params.report_csv)
    if params.write_report:
        csv_path, json_path = check_report_paths(params.output, params.report_csv,
                                                 params.overwrite)
    # The output size is known from the grid: a run over the limit is refused before the
    # search reads a byte (the AOI cloud check's reads grow with the AOI too).
    grid = output_grid(params.aoi, params.target_crs, params.resolution)
    tiles = io.current_tiles()
    if tiles is not None:  # rows of source tiles are read ahead within the output's area
        tiles.extent = (grid.crs, grid.bounds)
    figures = output_estimate(params, grid, len(targets))
    refusal = figures.refusal(params)
    if refusal is not None:
        progress.info(figures.text())
        raise LimitError(refusal)

    search = run_search(params, SubProgress(progress, 0, 20))
    kept = [r for r in search.reports if r.kept and _wanted(r, params)]
    if not kept:
        raise NoScenesError(why_nothing_left(final_reports(search.reports, params, {}), params))
    estimate_run(figures, params, grid, kept, [p for p, _ in targets], progress)
    totals = _compose_all(params, grid, kept, targets, executor, progress)
    reports = final_reports(search.reports, params, totals.contributed, totals.broken)
    if params.write_report:
        write_scene_report(reports, csv_path, json_path, totals.header(params, figures))
    progress.set_progress(100)
    return MosaicResult(
        output=totals.written[0].output,
        report_json=json_path if params.write_report else None,
        report_csv=csv_path if params.write_report else None, reports=reports,
        band_names=tuple(output.band_names(params)), crs=grid.crs,
        resolution=params.resolution, bounds=grid.bounds, shape=grid.shape,
        filled_fraction=totals.filled / totals.aoi_pixels if totals.aoi_pixels else 0.0,
        transform=grid.transform, failed_blocks=tuple(totals.failed),
        resumed_blocks=totals.resumed, outputs=tuple(totals.written), estimate=figures,
    )


def _targets(params: MosaicParams) -> List[Tuple[Optional[Period], Path]]:
    """(period, file) of every output, each checked against the consent rule up front."""
    assert params.output is not None
    periods = split_periods(params.periods, params.start, params.end)
    targets: List[Tuple[Optional[Period], Path]] = (
        [(p, period_path(params.output, p)) for p in periods] if periods
        else [(None, params.output)])
    for _period, path in targets:
        io.check_output_path(path, params.overwrite)
        stacitem.check_item_path(path, params.overwrite)
    return targets


class _Totals:
    """What every period's composite gave, for the report and the result."""

    def __init__(self) -> None:
        self.contributed: Dict[str, int] = {}
        self.broken: Dict[str, str] = {}
        self.written: List[PeriodOutput] = []
        self.failed: List[str] = []
        self.filled = self.aoi_pixels = self.resumed = 0
        self.seams: List[dict] = []  # per period: the seam metric and the normalisation

    def add(self, outcome: _Outcome, chosen: Sequence[SceneReport], label: str,
            resumed: int) -> None:
        if outcome.seam_spec is not None:
            self.seams.append({"period": label, **seams.report(
                outcome.seam_spec, outcome.seam_stats, outcome.bands)})
        for sid, pixels in outcome.contributed_by_id(chosen).items():
            self.contributed[sid] = self.contributed.get(sid, 0) + pixels
        for sid, why in outcome.broken_by_id(chosen).items():
            self.broken.setdefault(sid, why)
        self.filled += outcome.filled
        self.aoi_pixels += outcome.aoi_pixels
        self.failed.extend(f"{label} {f}".strip() for f in outcome.failed)
        self.resumed += resumed

    def header(self, params: MosaicParams, figures: Estimate) -> dict:
        return {"output": str(params.output), "parameters": output.params_summary(params),
                "failed_blocks": self.failed, "estimate": figures.summary(),
                "seams": self.seams,
                "periods": [{"name": w.name, "start": str(w.start), "end": str(w.end),
                             "output": str(w.output), "stac_item": str(w.stac_item),
                             "filled_fraction": round(w.filled_fraction, 6),
                             "scenes": list(w.scenes)} for w in self.written]}


def _compose_all(params: MosaicParams, grid: Grid, kept: Sequence[SceneReport],
                 targets: Sequence[Tuple[Optional[Period], Path]],
                 executor: Optional[Executor], progress: Progress) -> _Totals:
    """One composite per period (one for the whole dates without periods), each with its
    STAC item, on one executor and one set of read threads."""
    names = output.band_names(params)
    options = io.current_options()
    totals = _Totals()
    with contextlib.ExitStack() as stack:
        running = (Running(executor, BLOCKS_IN_FLIGHT) if executor is not None else
                   stack.enter_context(open_executor(params.executor, gui=params.gui)))
        run_id = uuid.uuid4().hex
        stack.enter_context(shared_pools(run_id, params.max_workers, options))
        for n, (period, path) in enumerate(targets):
            start, end = (params.start, params.end) if period is None else (period.start,
                                                                            period.end)
            chosen = [r for r in kept if period is None or period.contains(r.scene.date)]
            label = period.name if period is not None else ""
            if not chosen:
                progress.info(f"Period {label}: no kept scene between {start} and {end}; "
                              "no file written")
                continue
            part = SubProgress(progress, 20 + 72 * n / len(targets),
                               20 + 72 * (n + 1) / len(targets))
            if period is not None:
                progress.info(f"Period {label} ({start} to {end}): {len(chosen)} scene(s)")
            outcome, ledger = _compose(params, grid, chosen, start, end, path, names, running,
                                       options, part, period, run_id)
            totals.add(outcome, chosen, label, ledger.skipped if ledger is not None else 0)
            totals.written.append(_describe(params, grid, path, names, chosen, outcome,
                                            start, end, period))
    if not totals.written:
        raise NoScenesError(
            f"No period of {params.periods!r} has a kept scene: widen the dates or the "
            "cloud limits, or choose other periods.")
    return totals


def _describe(params: MosaicParams, grid: Grid, path: Path, names: Sequence[str],
              chosen: Sequence[SceneReport], outcome: _Outcome, start, end,
              period: Optional[Period]) -> PeriodOutput:
    """The STAC item beside one written COG, and the result's record of that file."""
    contributed = outcome.contributed_by_id(chosen)
    used = [r.scene for r in chosen if contributed.get(r.scene.id)]
    item = stacitem.item_path(path)
    stacitem.write_item(item, stacitem.make_item(
        path, grid, params.aoi.wgs84 if params.clip_to_aoi else None, start, end,
        names, output.band_tags(params, names), output.dtype_of(params.output_type),
        params.resolution, used, params.catalog_url, output.params_summary(params),
        period.name if period is not None else None))
    return PeriodOutput(
        name=period.name if period is not None else "", start=start, end=end, output=path,
        stac_item=item,
        filled_fraction=outcome.filled / outcome.aoi_pixels if outcome.aoi_pixels else 0.0,
        scenes=tuple(s.id for s in used))


def estimate_run(figures: Estimate, params: MosaicParams, grid: Grid,
                 kept: Sequence[SceneReport], periods: Sequence[Optional[Period]],
                 progress: Progress) -> Estimate:
    """The read figures after the search, logged; LimitError (before any reflectance is
    read: only the band files' headers) when over a limit."""
    progress.info(f"Estimating the reads of {len(kept)} scene(s)")
    run_estimate(figures, params, grid, kept, periods, params.max_workers, progress)
    refusal = figures.refusal(params)
    progress.info(figures.text())
    if refusal is not None:
        raise LimitError(refusal)
    return figures


def _compose(params: MosaicParams, grid: Grid, chosen: Sequence[SceneReport], start, end,
             path: Path, names: Sequence[str], running: Running, options: Dict[str, object],
             progress: Progress, period: Optional[Period], run_id: str = ""):
    """One composite of `chosen` into the COG `path`: blocks through the executor."""
    passes = plan_passes(chosen, start, end, params.target_date)
    outcome = _Outcome()
    outcome.seam_spec = seams.plan_seams(params, grid, passes, options, progress)
    outcome.bands = tuple(params.bands)
    sized = budget.evened(budget.blocks_for(
        params.memory_mb, len(passes), len(params.bands),
        bool(params.statistics) or params.method is not Method.BEST, params.block_size,
        running.memory_limit, feathered=params.feather_m > 0,
        grid_side=max(grid.width, grid.height)), grid.width, grid.height)
    _check_margin(params, grid, passes, sized.side)
    blocks = grid.blocks(sized.side)
    light = [Pass(p.pass_id, tuple((i, slim(s, params.bands)) for i, s in p.scenes),
                  p.score, p.distance) for p in passes]
    meeting = [_meeting(light, block.grid) for block in blocks]
    tiles = io.current_tiles()
    plan = None
    if tiles is not None:  # the run's tiles stay while a block still to compute reads them
        margin = _plan_margin(params, grid, passes) + seams.halo_px(outcome.seam_spec, grid)
        plan = ReadPlan(grid, sized.side, margin, meeting, _scene_paths(light))
    progress.info(
        f"Compositing {len(chosen)} scene(s) from {len(passes)} pass(es) into a "
        f"{grid.width} x {grid.height} grid ({grid.crs}, {params.resolution:g} m pixels), "
        f"{len(blocks)} block(s)"
    )
    ledger = Ledger(path) if params.resume else None
    with io.CogWriter(path, grid, len(names), output.dtype_of(params.output_type), 0,
                      params.overwrite) as out, _planned(tiles, plan):
        tasks = _tasks(params, grid, blocks, light, meeting, options, outcome, run_id,
                       outcome.seam_spec, _task_memory_mb(params.memory_mb, running))
        total = grid.width * grid.height
        done_px = 0
        quartered: Dict[int, int] = {}  # block -> its quarters done (after an OOM retry)
        for task, result, cached in _run(running, tasks, options, progress, ledger,
                                         sized.in_flight):
            data = read_part(result.part) if result.data.size == 0 and result.part else \
                result.data
            out.write(result.block.row_off, result.block.col_off, data)
            if plan is not None and tiles is not None:
                index = plan.index(task.block.row_off, task.block.col_off)
                if _same_block(blocks[index], task.block):
                    tiles.block_done(index)
                else:  # a quarter of a block that stopped its worker: done with the last
                    quartered[index] = quartered.get(index, 0) + 1
                    if quartered[index] == len(quarters(blocks[index])):
                        tiles.block_done(index)
            outcome.add(result)
            if ledger is not None and not cached and result.sha256:
                ledger.record(task, result)
            done_px += result.block.grid.width * result.block.grid.height
            progress.set_progress(100.0 * done_px / total)
        if outcome.filled == 0 and outcome.broken:
            why = "; ".join(sorted(set(outcome.broken.values()))[:3])
            raise ReadError(f"No pixel of the mosaic could be read ({why}); nothing was written.")
        used = [chosen[i].scene.id for i in sorted(outcome.contributed)
                if outcome.contributed[i]]
        if ledger is not None and ledger.skipped:
            progress.info(f"Resumed: {ledger.skipped} of {len(blocks)} block(s) were already "
                          "done")
        progress.info(seams.describe(outcome.seam_stats))
        progress.info("Writing the Cloud-Optimized GeoTIFF")
        tags = output.tags(params, used, chosen)
        if period is not None:
            tags["CLEARSKY_PERIOD"] = f"{period.name}: {period.start}/{period.end}"
        out.commit(descriptions=list(names), tags=tags,
                   band_tags=output.band_tags(params, names))
    if ledger is not None:
        ledger.remove()
    return outcome, ledger


def _check_margin(params: MosaicParams, grid: Grid, passes: Sequence[Pass], side: int) -> None:
    """Refuse, before reading, a dilation or shadow reach whose mask windows the budget
    cannot hold (the margin read around every block)."""
    rule = MaskRule.from_params(params)
    margin, reach = _mask_margin(rule, passes, pixel_size_m(grid))
    what = "The cloud mask dilation" + (" with the projected shadows" if reach else "")
    budget.check_margin(margin, side, params.memory_mb, params.max_workers, what)


def _mask_margin(rule: MaskRule, passes: Sequence[Pass], pixel_m: float) -> Tuple[int, int]:
    """(output pixels the mask reads around a block, of which the shadows' reach)."""
    reach = max((rule.reach_px(s, pixel_m) for p in passes for _, s in p.scenes), default=0)
    return rule.radius_px(pixel_m) + 1 + reach, reach


def _plan_margin(params: MosaicParams, grid: Grid, passes: Sequence[Pass]) -> int:
    """The mask reads' margin in output pixels, at the grid's smallest pixel (on a
    geographic grid a northern block's pixels are fewer metres: more of them)."""
    h, w = grid.height - 1, grid.width - 1
    pixel_m = min(pixel_size_m(grid.subgrid(r, c, 1, 1))
                  for r, c in ((0, 0), (0, w), (h, 0), (h, w), (h // 2, w // 2)))
    return _mask_margin(MaskRule.from_params(params), passes, pixel_m)[0]


@contextlib.contextmanager
def _planned(tiles, plan: Optional[ReadPlan]) -> Iterator[None]:
    """The composite's read plan on the run's tiles for the body (none after it)."""
    if tiles is None or plan is None:
        yield
        return
    tiles.use_plan(plan)
    try:
        yield
    finally:
        tiles.drop_plan()


def _same_block(a: Block, b: Block) -> bool:
    return (a.row_off, a.col_off, a.shape) == (b.row_off, b.col_off, b.shape)


def _scene_paths(passes: Sequence[Pass]) -> Dict[int, frozenset]:
    """Per scene index, the GDAL paths of every asset a block may read of it."""
    out: Dict[int, frozenset] = {}
    for p in passes:
        for index, scene in p.scenes:
            paths = set()
            for href in scene.assets.values():
                with contextlib.suppress(Exception):  # a path the reads refuse anyway
                    paths.add(io.gdal_path(href, allow_local=True))
            out[index] = frozenset(paths)
    return out


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
        self.failed: List[str] = []  # blocks no worker could compute, with why
        self.filled = self.aoi_pixels = 0
        self.seam_spec: Optional[seams.SeamSpec] = None
        self.seam_stats = seams.SeamStats()
        self.bands: Tuple[str, ...] = ()

    def add(self, result: BlockResult) -> None:
        self.seam_stats = self.seam_stats + result.seams
        for index, n in result.contributed.items():
            self.contributed[index] = self.contributed.get(index, 0) + n
        for index, why in result.broken.items():
            self.broken.setdefault(index, why)
        self.filled += result.filled
        self.aoi_pixels += result.aoi_pixels
        if result.failed:
            self.failed.append(f"{block_id(result.block)}: {result.failed}")

    def contributed_by_id(self, kept: Sequence[SceneReport]) -> Dict[str, int]:
        return {kept[i].scene.id: n for i, n in self.contributed.items()}

    def broken_by_id(self, kept: Sequence[SceneReport]) -> Dict[str, str]:
        return {kept[i].scene.id: why for i, why in self.broken.items()}


def _tasks(params: MosaicParams, grid: Grid, blocks: Sequence[Block], light: Sequence[Pass],
           meeting: Sequence[FrozenSet[int]], options: Dict[str, object], outcome: _Outcome,
           run_id: str = "", seam_spec: Optional[seams.SeamSpec] = None,
           memory_mb: Optional[int] = None) -> Iterator[BlockTask]:
    """One task per block (`meeting`: the scenes whose footprint meets it), made when
    submitted (so it skips scenes found broken so far)."""
    spec = CompositeSpec(params.method, params.percentile, tuple(params.bands),
                         params.output_type, params.count_band, params.source_band,
                         tuple(params.statistics))
    rule = MaskRule.from_params(params)
    aoi = params.aoi.to_crs(grid.crs) if params.clip_to_aoi else None
    for block, scenes in zip(blocks, meeting):
        yield BlockTask(
            block=block, passes=_only(light, scenes), aoi=_near(aoi, block.grid),
            composite=spec, mask=rule, gdal=options, read_workers=params.max_workers,
            skip=frozenset(outcome.broken), run_id=run_id, seams=seam_spec,
            memory_mb=memory_mb or params.memory_mb,
        )


def _task_memory_mb(memory_mb: int, running: Running) -> int:
    """The budget a block task gets where it runs: MEMORY_MB, or a Dask worker's memory
    limit when that is lower (a worker keeps its share of it, the decoded tiles, between
    the run's tasks; see core.blocks)."""
    if not running.memory_limit:
        return memory_mb
    return max(1, min(memory_mb, running.memory_limit // (1024 * 1024)))


def _meeting(passes: Sequence[Pass], grid: Grid) -> FrozenSet[int]:
    """The scenes (indices) whose footprint meets the block."""
    footprint = _polygon_wgs84(grid)
    return frozenset(i for p in passes for i, s in p.scenes
                     if s.footprint.intersects(footprint))


def _only(passes: Sequence[Pass], scenes: FrozenSet[int]) -> tuple:
    """The passes with only the given scenes (those without any left out)."""
    out = []
    for p in passes:
        kept = tuple((i, s) for i, s in p.scenes if i in scenes)
        if kept:
            out.append(replace(p, scenes=kept))
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
    tr = transformer(grid.crs, "EPSG:4326")
    xs = np.linspace(minx, maxx, 5)
    ys = np.linspace(miny, maxy, 5)
    ring = (
        [(x, miny) for x in xs] + [(maxx, y) for y in ys[1:]]
        + [(x, maxy) for x in xs[::-1][1:]] + [(minx, y) for y in ys[::-1][1:]]
    )
    lon, lat = tr.transform([p[0] for p in ring], [p[1] for p in ring])
    return Polygon(zip(lon, lat))


def _run(running: Running, tasks: Iterable[BlockTask], options: Dict[str, object],
         progress: Progress, ledger: Optional[Ledger], in_flight: int = BLOCKS_IN_FLIGHT
         ) -> Iterator[Tuple[BlockTask, BlockResult, bool]]:
    """(task, result, from the ledger) per block, in block order, at most `in_flight` tasks
    submitted at once (bounded memory). A block that kills its worker (out of memory) is
    computed again as four quarters, once; then it is reported and left empty. On cancel or
    error what is pending is cancelled, and nothing waits for a stalled read."""
    own = running.executor is None
    pool = running.executor or ThreadPoolExecutor(
        max_workers=in_flight, thread_name_prefix="clearsky-block",
        initializer=io.init_worker, initargs=(options, io.current_tiles()),
    )
    window = running.in_flight if running.executor is not None else in_flight
    pending: Deque[Tuple[BlockTask, Optional[Future], int, Optional[BlockResult]]] = deque()
    queue = iter(tasks)
    finished = False

    def submit(task: BlockTask, depth: int) -> Tuple[BlockTask, Future, int, None]:
        if ledger is not None:
            task = replace(task, part=ledger.part_path(task))
        return task, pool.submit(run_block, task), depth, None

    try:
        while True:
            check_cancelled(progress)
            while len(pending) < window:
                task = next(queue, None)
                if task is None:
                    break
                cached = ledger.finished(task) if ledger is not None else None
                pending.append((task, None, 0, cached) if cached else submit(task, 0))
            if not pending:
                finished = True
                return
            task, future, depth, cached = pending.popleft()
            if cached is not None:
                yield task, cached, True
                continue
            assert future is not None
            try:
                result = _wait(future, progress, block_id(task.block), running.where)
            except Exception as exc:
                if not _out_of_memory(exc):
                    raise
                if depth == 0 and min(task.block.shape) >= 32:
                    progress.info(f"Block {block_id(task.block)} stopped its worker "
                                  f"({type(exc).__name__}); computing it in four parts")
                    for part in reversed(quarters(task.block)):
                        pending.appendleft(submit(replace(task, block=part), 1))
                    continue
                progress.info(f"Block {block_id(task.block)} could not be computed: {exc}")
                yield task, _empty(task, f"{type(exc).__name__}: {exc}"), False
                continue
            check_cancelled(progress)
            yield task, result, False
    finally:
        for _task, future, _depth, _cached in pending:
            if future is not None:
                future.cancel()
        if own:  # after a cancel or an error, stalled reads are not waited for
            pool.shutdown(wait=finished, cancel_futures=True)


def _wait(future: Future, progress: Progress, block: str,
          where: Optional[Callable[[], str]] = None) -> BlockResult:
    """The future's result, checking for cancel twice a second meanwhile; once the block
    has been waited for `stalls.STALL_REPORT_S`, says where its reads wait."""
    started = time.monotonic()
    reported = False
    while True:
        try:
            return future.result(timeout=0.5)
        except FutureTimeout:
            check_cancelled(progress)
            waited = time.monotonic() - started
            if not reported and waited >= stalls.STALL_REPORT_S:
                reported = True
                try:  # a report of a slow block must never end the run
                    progress.info(stalls.stall_message(block, waited, where))
                except Exception as exc:
                    progress.info(f"Block {block}: waited {waited:.0f} s for it; could not "
                                  f"say where it waits ({type(exc).__name__}: {exc})")


def _out_of_memory(exc: BaseException) -> bool:
    """A worker died of the block (Dask's KilledWorker) or the block did not fit."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "KilledWorker"


def quarters(block: Block) -> List[Block]:
    """The block cut in half both ways."""
    h, w = block.shape
    rows = [(0, h // 2), (h // 2, h - h // 2)]
    cols = [(0, w // 2), (w // 2, w - w // 2)]
    return [Block(block.row_off + r, block.col_off + c, block.grid.subgrid(r, c, rh, cw))
            for r, rh in rows for c, cw in cols if rh and cw]


def _empty(task: BlockTask, why: str) -> BlockResult:
    """The result of a block no worker could compute: nodata, counted as AOI pixels."""
    grid = task.block.grid
    spec = task.composite
    bands = spec.value_bands + int(spec.count_band) + int(spec.source_band)
    target = geometry_mask(grid, task.aoi) if task.aoi is not None else np.ones(grid.shape, bool)
    data = np.zeros((bands, *grid.shape), output.dtype_of(spec.output_type))
    return BlockResult(task.block, data, aoi_pixels=int(target.sum()), filled=0, failed=why)
