"""The pipeline: search -> AOI cloud check -> grid -> per block read/mask/reduce -> COG.

Blocks are independent jobs run through a `concurrent.futures.Executor`, so a Dask
client (which offers the same interface) can take them without touching the reducers.
Memory is bounded by block size x scenes in flight, never by the AOI size.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, time, timezone
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from shapely.geometry import Polygon

from . import catalog, clouds, composite, io
from .errors import NoScenesError, ReadError
from .grid import Block, Grid, geometry_mask, output_grid, pixel_size_m
from .params import Method, MosaicParams, OutputType, SearchParams
from .progress import NullProgress, Progress, SubProgress, check_cancelled
from .report import report_paths, write_scene_report
from .results import MosaicResult, SceneReport, SearchResult
from .scene import BAND_RESOLUTION, SCL, Scene

SCL_RESOLUTION = 20.0
# Blocks in flight at once. Reads inside a block already run concurrently (ReadPools), so
# two blocks keep the connections busy while memory stays that of two blocks' stacks,
# whatever the AOI size.
BLOCKS_IN_FLIGHT = 2


class ReadPools:
    """Threads for the reads inside one block, so they run concurrently too: remote COG
    reads are latency bound and a small AOI is a single block. Two pools, so a pass read
    waiting on its band reads never waits on its own pool. One per run: threads keep
    open datasets (and their cached tiles), which must not outlive the run."""

    def __init__(self, workers: int) -> None:
        options = io.current_options()
        self.passes, self.bands = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"clearsky-{kind}",
                               initializer=io.init_worker, initargs=(options,))
            for kind in ("pass", "band"))

    def shutdown(self) -> None:
        for pool in (self.passes, self.bands):
            pool.shutdown(wait=True, cancel_futures=True)


def search_scenes(params: SearchParams, progress: Optional[Progress] = None) -> SearchResult:
    """Every scene the catalog returns, with AOI coverage, AOI cloud % and a verdict."""
    params.validate()
    with io.gdal_env(params.max_workers):
        return _search_scenes(params, progress)


def _search_scenes(params: SearchParams, progress: Optional[Progress]) -> SearchResult:
    progress = progress or NullProgress()
    candidates, rejected, notes = catalog.search(params, SubProgress(progress, 0, 30))
    check_cancelled(progress)
    progress.info(f"{len(candidates)} scene(s) to check over the AOI")
    checking = SubProgress(progress, 30, 100)
    checked = clouds.check_aoi_clouds(candidates, params.aoi, params, checking)
    reports = checked + [SceneReport(scene=s, kept=False, reason=r) for s, r in rejected]
    reports.sort(key=lambda r: (r.scene.datetime, r.scene.tile, r.scene.id))
    progress.set_progress(100)
    return SearchResult(reports=reports, notes=notes)


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


@dataclass
class _Pass:
    """The tiles of one satellite pass: one observation per ground pixel."""

    pass_id: str
    scenes: List[Tuple[int, Scene]] = field(default_factory=list)  # (scene index, scene)
    score: float = 0.0  # AOI clear fraction (best tile)
    distance: float = 0.0  # seconds from the target date


def _target_datetime(params: MosaicParams) -> datetime:
    if params.target_date is not None:
        day = params.target_date
    else:
        day = params.start + (params.end - params.start) / 2
    return datetime.combine(day, time(12), tzinfo=timezone.utc)


def plan_passes(kept: Sequence[SceneReport], params: MosaicParams) -> List[_Pass]:
    """Group kept scenes by pass; order for best-available-pixel.

    Order: AOI clear fraction (whole percent, best first), then closeness to the target date.
    """
    target = _target_datetime(params)
    passes: OrderedDict[str, _Pass] = OrderedDict()
    for index, report in enumerate(kept):
        scene = report.scene
        entry = passes.setdefault(scene.pass_id, _Pass(scene.pass_id))
        entry.scenes.append((index, scene))
        clear = (report.aoi_coverage or 0.0) * (100.0 - (report.aoi_cloud or 0.0)) / 100.0
        entry.score = max(entry.score, clear)
        entry.distance = abs((scene.datetime - target).total_seconds())
    for entry in passes.values():  # larger AOI coverage first inside a pass
        entry.scenes.sort(key=lambda item: -(kept[item[0]].aoi_coverage or 0.0))
    return sorted(passes.values(), key=lambda p: (-round(p.score), p.distance, p.pass_id))


class SceneReader:
    """Reads one scene's SCL and bands onto an output grid (a block or a clip), masked."""

    def __init__(self, params: MosaicParams, grid: Grid,
                 pools: Optional[ReadPools] = None) -> None:
        self.params = params
        self.map = pools.bands.map if pools is not None else map
        self.invalid = frozenset(params.invalid_scl)
        # Dilation is given in 20 m SCL pixels; apply it in output pixels, reading a margin
        # so clouds just outside a block still grow into it.
        pixel_m = pixel_size_m(grid)
        self.radius = int(math.ceil(params.dilation * SCL_RESOLUTION / pixel_m))
        native = min(BAND_RESOLUTION[b] for b in params.bands)
        coarse = pixel_m > 1.5 * native
        self.resampling = Resampling.average if coarse else Resampling.bilinear

    def usable(self, scene: Scene, block: Grid) -> Optional[np.ndarray]:
        """Clear-pixel mask of the scene over the block from its SCL, or None if no data."""
        got = self.usable_and_covered(scene, block)
        return None if got is None else got[0]

    def usable_and_covered(
        self, scene: Scene, block: Grid
    ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(clear-pixel mask, has-data mask) of the scene over the block, or None if no data."""
        m = self.radius + 1
        wide = Grid(
            block.crs, block.transform * Affine.translation(-m, -m), block.width + 2 * m,
            block.height + 2 * m,
        )
        scl = io.read_to_grid(
            scene.assets[SCL], wide, resampling=Resampling.nearest, use_overviews=False
        )
        if scl is None:
            return None
        bad = clouds.invalid_mask(scl, self.invalid, self.radius)
        has_data = scl != 0
        ok = (~bad) & has_data
        return ok[m:-m, m:-m], has_data[m:-m, m:-m]

    def reflectance(
        self, scene: Scene, block: Grid, usable: np.ndarray
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Reflectance (nb, h, w) float32 and the final validity mask."""
        out = np.full((len(self.params.bands), block.height, block.width), np.nan, "float32")
        valid = usable.copy()

        def read(band: str) -> Optional[np.ndarray]:
            return io.read_to_grid(
                scene.assets[band], block, resampling=self.resampling, use_overviews=True
            )

        for i, dn in enumerate(self.map(read, self.params.bands)):
            if dn is None:
                valid[:] = False
                break
            refl = scene.radiometry.reflectance(dn)
            # DN 0 is nodata; raw DNs below the offset give negative reflectance at edges.
            valid &= (dn > 0) & (refl >= 0)
            out[i] = refl
        out[:, ~valid] = np.nan
        return out, valid


def _block_polygon_wgs84(block: Grid) -> Polygon:
    minx, miny, maxx, maxy = block.bounds
    tr = Transformer.from_crs(block.crs, "EPSG:4326", always_xy=True)
    xs = np.linspace(minx, maxx, 5)
    ys = np.linspace(miny, maxy, 5)
    ring = (
        [(x, miny) for x in xs] + [(maxx, y) for y in ys[1:]]
        + [(x, maxy) for x in xs[::-1][1:]] + [(minx, y) for y in ys[::-1][1:]]
    )
    lon, lat = tr.transform([p[0] for p in ring], [p[1] for p in ring])
    return Polygon(zip(lon, lat))


@dataclass
class _BlockResult:
    block: Block
    target: np.ndarray  # (h, w) bool: the output pixels that belong to the AOI
    values: np.ndarray  # (nb, h, w) float32, NaN where empty
    count: Optional[np.ndarray]  # (h, w) uint16
    source: Optional[np.ndarray]  # (h, w) int16, -1 where empty
    contributed: Dict[int, int]  # scene index -> pixels
    broken: Dict[int, str]  # scene index -> why it could not be read


class _SafeReads:
    """Skips scenes whose assets cannot be read (after the reader's retries), noting why.

    `known_broken` is shared between blocks of one run so a dead asset is not retried
    in every block; it is only an optimisation, each block stays correct on its own.
    """

    def __init__(self, reader: SceneReader, known_broken: Dict[int, str]) -> None:
        self.reader = reader
        self.known = known_broken
        self.broken: Dict[int, str] = {}

    def _guard(self, index: int, read, *args):
        if index in self.known or index in self.broken:
            return None
        try:
            return read(*args)
        except ReadError as exc:
            self.broken[index] = str(exc)
            self.known.setdefault(index, str(exc))
            return None

    def usable(self, index: int, scene: Scene, grid: Grid, target: np.ndarray):
        usable = self._guard(index, self.reader.usable, scene, grid)
        return None if usable is None else usable & target

    def usable_and_covered(self, index: int, scene: Scene, grid: Grid, target: np.ndarray):
        got = self._guard(index, self.reader.usable_and_covered, scene, grid)
        return None if got is None else (got[0] & target, got[1])

    def reflectance(self, index: int, scene: Scene, grid: Grid, usable: np.ndarray):
        return self._guard(index, self.reader.reflectance, scene, grid, usable)


def process_block(
    block: Block,
    passes: Sequence[_Pass],
    target: np.ndarray,
    params: MosaicParams,
    known_broken: Optional[Dict[int, str]] = None,
    pools: Optional[ReadPools] = None,
) -> _BlockResult:
    """Read, mask and reduce one block; depends only on its arguments, so it can be
    shipped to another worker (without `pools` its reads run one after the other)."""
    grid = block.grid
    reads = _SafeReads(SceneReader(params, grid, pools),
                       {} if known_broken is None else known_broken)
    footprint = _block_polygon_wgs84(grid)
    relevant = [
        [(i, s) for i, s in p.scenes if s.footprint.intersects(footprint)] for p in passes
    ]
    if params.method is Method.BEST:
        result = _best_block(block, relevant, target, params, reads)
    else:
        mapper = pools.passes.map if pools is not None else map
        relevant = [_native_first(scenes, grid.crs) for scenes in relevant]
        result = _stack_block(block, relevant, target, params, reads, mapper)
    result.broken = reads.broken
    return result


def _native_first(scenes: List[Tuple[int, Scene]], crs: str) -> List[Tuple[int, Scene]]:
    """Tiles of one pass with those in the output CRS first (read without warping); the
    others only fill what those leave empty. Stable, so the plan order holds otherwise.
    Only for stacks: best pixel keeps the plan's tile order (its choice of pixels)."""
    return sorted(scenes, key=lambda item: item[1].crs != crs)


def _best_block(block, relevant, target, params, reads: _SafeReads) -> _BlockResult:
    """First clear observation per pixel, passes in plan order; stops once the block is full."""
    grid = block.grid
    best = composite.BestPixel(len(params.bands), grid.shape)
    count = np.zeros(grid.shape, "uint16") if params.count_band else None
    contributed: Dict[int, int] = {}
    for scenes in relevant:
        if count is None and best.is_complete(target):
            break  # every AOI pixel of the block is filled: stop reading
        seen = np.zeros(grid.shape, bool)
        for index, scene in scenes:
            usable = reads.usable(index, scene, grid, target)
            if usable is None:
                continue
            seen |= usable
            # SCL pruning: read reflectance only where it can still fill a pixel.
            if not (usable & ~best.filled).any():
                continue
            read = reads.reflectance(index, scene, grid, usable)
            if read is None:
                continue
            filled = best.add(read[0], read[1], index)
            if filled:
                contributed[index] = contributed.get(index, 0) + filled
        if count is not None:
            count += seen.astype("uint16")
    values, source = best.result()
    source = source if params.source_band else None
    return _BlockResult(block, target, values, count, source, contributed, {})


def _read_pass(scenes, grid: Grid, target: np.ndarray, reads: _SafeReads):
    """The usable observations of one pass's tiles over the block, with their scene index."""
    observations, owners = [], []
    covered = np.zeros(grid.shape, bool)
    for index, scene in scenes:
        if covered.any() and not (target & ~covered).any():
            break  # tiles of one pass repeat one observation: the block is covered
        got = reads.usable_and_covered(index, scene, grid, target)
        if got is None:
            continue
        usable, has_data = got
        covered |= has_data
        if not usable.any():
            continue
        read = reads.reflectance(index, scene, grid, usable)
        if read is not None:
            observations.append(read)
            owners.append(index)
    return observations, owners


def _stack_block(block, relevant, target, params, reads: _SafeReads, mapper=map
                 ) -> _BlockResult:
    """Median or percentile over passes; the tiles of one pass merge into one observation.
    `mapper` (a pool's map) reads the passes concurrently; results come back in order."""
    grid = block.grid
    count = np.zeros(grid.shape, "uint16") if params.count_band else None
    contributed: Dict[int, int] = {}
    stack: List[np.ndarray] = []
    for observations, owners in mapper(
        lambda scenes: _read_pass(scenes, grid, target, reads), relevant
    ):
        if not observations:
            continue
        taken = np.zeros(grid.shape, bool)
        for (_, valid), index in zip(observations, owners):  # first valid tile wins
            new = valid & ~taken
            if new.any():
                contributed[index] = contributed.get(index, 0) + int(new.sum())
            taken |= valid
        values, valid = composite.merge_pass(observations)
        stack.append(values)
        if count is not None:
            count += valid.astype("uint16")
    if stack:
        percentile = 50.0 if params.method is Method.MEDIAN else params.percentile
        values = composite.reduce_stack(np.stack(stack), params.method.value, percentile)
    else:
        values = np.full((len(params.bands),) + grid.shape, np.nan, "float32")
    return _BlockResult(block, target, values, count, None, contributed, {})


def _encode(result: _BlockResult, params: MosaicParams) -> np.ndarray:
    """Block values -> the output's data type; 0 is nodata everywhere."""
    target = result.target
    values = result.values.copy()
    values[:, ~target] = np.nan
    if params.output_type is OutputType.VISUAL:
        layers = [composite.to_visual(values)]
        cap = 255
    else:
        layers = [composite.to_uint16(values)]
        cap = 65535
    dtype = layers[0].dtype
    if result.count is not None:
        layers.append(np.where(target, np.minimum(result.count, cap), 0).astype(dtype)[None])
    if result.source is not None:
        src = np.where(target & (result.source >= 0), result.source + 1, 0)
        layers.append(np.minimum(src, cap).astype(dtype)[None])
    return np.concatenate(layers, axis=0)


def _run_blocks(
    executor: Executor, blocks: Sequence[Block], job, window: int
) -> Iterator[_BlockResult]:
    """Submit at most `window` blocks at a time (bounded memory); yield in block order."""
    pending: List[Future] = []
    queue = list(blocks)
    while queue or pending:
        while queue and len(pending) < window:
            pending.append(executor.submit(job, queue.pop(0)))
        done = pending.pop(0)
        yield done.result()


def build_mosaic(
    params: MosaicParams, progress: Optional[Progress] = None, executor: Optional[Executor] = None
) -> MosaicResult:
    """Build the cloud-free composite and write it as a COG with its scene report."""
    params.validate()
    with io.gdal_env(params.max_workers):
        return _build_mosaic(params, progress, executor)


def _build_mosaic(
    params: MosaicParams, progress: Optional[Progress], executor: Optional[Executor]
) -> MosaicResult:
    progress = progress or NullProgress()
    io.check_output_path(params.output, params.overwrite)
    csv_path, json_path = report_paths(params.output, params.report_csv)

    search = _search_scenes(params, SubProgress(progress, 0, 20))
    reports = search.reports
    for r in reports:
        if r.kept and params.scene_ids is not None and r.scene.id not in params.scene_ids:
            r.kept, r.reason = False, "left out by the user"
    kept = [r for r in reports if r.kept]
    if not kept:
        raise NoScenesError(why_nothing_left(reports, params))

    grid = output_grid(params.aoi, params.target_crs, params.resolution)
    aoi_in_grid = params.aoi.to_crs(grid.crs)
    passes = plan_passes(kept, params)
    progress.info(
        f"Compositing {len(kept)} scene(s) from {len(passes)} pass(es) into a "
        f"{grid.width} x {grid.height} grid ({grid.crs}, {grid.resolution:g} m)"
    )
    blocks = grid.blocks(params.block_size)
    band_names = list(params.bands)
    if params.count_band:
        band_names.append("count")
    if params.source_band:
        band_names.append("source")
    dtype = "uint8" if params.output_type is OutputType.VISUAL else "uint16"
    contributed: Dict[int, int] = {}
    broken: Dict[int, str] = {}
    filled = aoi_pixels = 0

    def job(block: Block) -> _BlockResult:
        check_cancelled(progress)
        target = _target_mask(block.grid, aoi_in_grid, params.clip_to_aoi)
        return process_block(block, passes, target, params, broken, pools)

    pools = ReadPools(params.max_workers)
    own_executor = executor is None
    executor = executor or ThreadPoolExecutor(
        max_workers=BLOCKS_IN_FLIGHT, thread_name_prefix="clearsky-block",
        initializer=io.init_worker, initargs=(io.current_options(),),
    )
    blocks_progress = SubProgress(progress, 20, 92)
    try:
        with io.CogWriter(params.output, grid, len(band_names), dtype, 0, params.overwrite) as out:
            results = _run_blocks(executor, blocks, job, BLOCKS_IN_FLIGHT)
            for done, result in enumerate(results):
                check_cancelled(progress)
                target = result.target
                out.write(result.block.row_off, result.block.col_off, _encode(result, params))
                for index, n in result.contributed.items():
                    contributed[index] = contributed.get(index, 0) + n
                for index, why in result.broken.items():
                    broken.setdefault(index, why)
                aoi_pixels += int(target.sum())
                filled += int((np.isfinite(result.values[0]) & target).sum())
                blocks_progress.set_progress(100.0 * (done + 1) / len(blocks))
            for index, report in enumerate(kept):
                report.pixels_contributed = contributed.get(index, 0)
                if index in broken:
                    report.kept = bool(report.pixels_contributed)
                    report.reason = f"skipped, could not be read: {broken[index]}"
            used = [r.scene.id for r in kept if r.pixels_contributed]
            progress.info("Writing the Cloud-Optimized GeoTIFF")
            out.commit(
                descriptions=band_names,
                tags=_tags(params, used, kept),
                band_tags=_band_tags(params, band_names),
            )
    finally:
        if own_executor:
            executor.shutdown(wait=True, cancel_futures=True)
        pools.shutdown()

    header = {"output": str(params.output), "parameters": _params_summary(params)}
    write_scene_report(reports, csv_path, json_path, header)
    progress.set_progress(100)
    return MosaicResult(
        output=params.output,
        report_json=json_path,
        report_csv=csv_path,
        reports=reports,
        band_names=tuple(band_names),
        crs=grid.crs,
        resolution=grid.resolution,
        bounds=grid.bounds,
        shape=grid.shape,
        filled_fraction=filled / aoi_pixels if aoi_pixels else 0.0,
    )


def _target_mask(grid: Grid, aoi_in_grid, clip: bool) -> np.ndarray:
    if clip:
        return geometry_mask(grid, aoi_in_grid)
    return np.ones(grid.shape, bool)


def _params_summary(params: MosaicParams) -> dict:
    return {
        "catalog": params.catalog_url,
        "collection": params.collection,
        "start": str(params.start),
        "end": str(params.end),
        "max_scene_cloud": params.max_scene_cloud,
        "max_aoi_cloud": params.max_aoi_cloud,
        "invalid_scl": sorted(params.invalid_scl),
        "dilation": params.dilation,
        "bands": list(params.bands),
        "method": params.method.value,
        "percentile": params.percentile if params.method is Method.PERCENTILE else None,
        "output_type": params.output_type.value,
        "target_crs": params.target_crs,
        "resolution": params.resolution,
        "clip_to_aoi": params.clip_to_aoi,
        "aoi_wkt": params.aoi.wgs84.wkt,
    }


def _tags(params: MosaicParams, used: List[str], kept: Sequence[SceneReport]) -> dict:
    tags = {
        "CLEARSKY_PARAMETERS": json.dumps(_params_summary(params)),
        "CLEARSKY_SCENES": ",".join(used),
    }
    if params.output_type is OutputType.VISUAL:
        tags["CLEARSKY_STRETCH"] = "reflectance 0..0.3 -> 1..255, 0 = nodata"
    else:
        tags["CLEARSKY_ENCODING"] = "reflectance = DN * 0.0001, 0 = nodata"
    if params.source_band:
        tags["CLEARSKY_SOURCES"] = json.dumps(
            {str(i + 1): r.scene.id for i, r in enumerate(kept)}
        )
    return tags


def _band_tags(params: MosaicParams, band_names: List[str]) -> List[dict]:
    tags = []
    for name in band_names:
        if name in params.bands and params.output_type is OutputType.REFLECTANCE:
            tags.append({"scale": 0.0001, "offset": 0.0, "name": name})
        else:
            tags.append({"scale": 1.0, "offset": 0.0, "name": name})
    return tags
