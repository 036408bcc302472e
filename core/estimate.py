"""What a run will cost, known after the search and before any pixel is composited.

Output size comes from the grid alone; the bytes and requests to read come from the COG
tile tables (the TIFF header GDAL fetches in its first request, `BLOCK_SIZE_x_y` per tile)
of every asset a block will read, at the overview level the read will use; the time from
a throughput and a per-request latency. The limits (`max_read_gb`, `max_output_gib`)
refuse a run from these figures before any reflectance is read: the output limit from the
grid alone, before a single band header is opened.
"""

from __future__ import annotations

import math
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import rasterio
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds

from . import io, output
from .clouds import SCL_RESOLUTION
from .errors import ClearskyError, ReadError
from .grid import Grid, pixel_size_m
from .io import CPLE_BaseError
from .options import option
from .params import MosaicParams
from .periods import Period
from .plan import plan_passes
from .progress import Progress, check_cancelled
from .results import SceneReport
from .scene import BAND_RESOLUTION, SCL, Scene
from .tiles import TileCache

# Measured on the offline archive and Earth Search from a laptop (bench/): remote COG reads
# run at about 40 MB/s with 8 concurrent requests, each request costing ~60 ms of latency.
THROUGHPUT_BYTES_S = 40e6
REQUEST_LATENCY_S = 0.06
HEADER_BYTES = io.HEADER_BYTES  # the first request of every file
GB, GIB = 1e9, 2.0**30


class LimitError(ClearskyError):
    """The estimate is over a limit: nothing was read beyond the search."""


@dataclass
class PeriodEstimate:
    name: str
    scenes: int
    passes: int


@dataclass
class Estimate:
    """The figures of a run, before it reads a pixel to composite."""

    width: int
    height: int
    bands: int  # per file
    files: int
    bytes_per_pixel: int
    scenes: int = 0  # distinct scenes composited (all periods)
    passes: int = 0
    read_bytes: int = 0  # tile bytes plus one header per opened file
    read_requests: int = 0  # tiles (GDAL merges neighbours, so at most this many)
    files_opened: int = 0
    headers_read: bool = False  # False: refused on the output size, read figures not known
    periods: List[PeriodEstimate] = field(default_factory=list)
    upper_bound: bool = False  # best available pixel stops reading blocks once full
    from_headers: bool = False  # read figures from the tile tables (else from the windows)
    tile_bound: int = 0  # without headers: the whole uncompressed tiles under the blocks

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def output_bytes(self) -> int:
        """Uncompressed size of every output file together."""
        return self.pixels * self.bands * self.bytes_per_pixel * self.files

    @property
    def seconds(self) -> float:
        return self.read_bytes / THROUGHPUT_BYTES_S + self.read_requests * REQUEST_LATENCY_S / 8

    def summary(self) -> Dict[str, object]:
        """The figures as plain values (the report's header, logs)."""
        return {
            "width": self.width, "height": self.height, "bands": self.bands,
            "files": self.files, "output_bytes": self.output_bytes, "scenes": self.scenes,
            "passes": self.passes, "read_bytes": self.read_bytes if self.headers_read else None,
            "read_requests": self.read_requests if self.headers_read else None,
            "files_opened": self.files_opened, "seconds": round(self.seconds, 1),
            "upper_bound": self.upper_bound, "from_headers": self.from_headers,
            "periods": [{"name": p.name, "scenes": p.scenes, "passes": p.passes}
                        for p in self.periods],
        }

    def text(self) -> str:
        files = f"{self.files} files of " if self.files > 1 else ""
        lines = [
            f"Estimate: output {files}{self.width} x {self.height} pixels x {self.bands} "
            f"band(s), {self.output_bytes / GIB:.2f} GiB before compression"]
        if self.headers_read and not self.from_headers and not self.upper_bound:
            lines.append(
                f"{self.scenes} scene(s) from {self.passes} pass(es); about "
                f"{self.read_bytes / 1e6:.1f} MB of pixels under the blocks before "
                "compression (headers not read: far below MAX_READ_GB)")
        elif self.headers_read:
            at_most = "at most " if self.upper_bound else ""
            lines.append(
                f"{self.scenes} scene(s) from {self.passes} pass(es); {at_most}"
                f"{self.read_bytes / 1e6:.1f} MB to read in about {self.read_requests} "
                f"request(s)" + (f" from {self.files_opened} file(s)" if self.files_opened
                                 else "") + f"; about {_duration(self.seconds)}")
        return "; ".join(lines) + "."

    def refusal(self, params: MosaicParams) -> Optional[str]:
        """Why the limits refuse this run, naming the figures and the option to raise."""
        out_key, read_key = option("max_output_gib").key, option("max_read_gb").key
        if params.max_output_gib and self.output_bytes > params.max_output_gib * GIB:
            return (
                f"The output would hold {self.output_bytes / GIB:.1f} GiB before compression "
                f"({self.files} file(s) of {self.width} x {self.height} pixels x {self.bands} "
                f"band(s)), over the limit of {params.max_output_gib:g} GiB: choose a smaller "
                f"AOI, a coarser resolution or fewer bands, or raise {out_key} (0 = no limit).")
        if self.headers_read and params.max_read_gb and \
                self.read_bytes > params.max_read_gb * GB:
            return (
                f"The run would read about {self.read_bytes / GB:.1f} GB from {self.scenes} "
                f"scene(s) ({self.read_requests} request(s), about {_duration(self.seconds)}), "
                f"over the limit of {params.max_read_gb:g} GB: choose a smaller AOI, fewer "
                f"dates or bands, a coarser resolution, or raise {read_key} (0 = no limit).")
        return None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def output_estimate(params: MosaicParams, grid: Grid, files: int) -> Estimate:
    """The output figures only: from the grid, no request."""
    names = output.band_names(params)
    size = 1 if output.dtype_of(params.output_type) == "uint8" else 2
    return Estimate(grid.width, grid.height, len(names), max(1, files), size)


# --- the read figures from the tile tables -------------------------------------------------

@dataclass(frozen=True)
class _Read:
    """One asset a run reads: which file, with or without overviews, with what margin."""

    href: str
    use_overviews: bool
    margin: int  # source pixels read around each block's window
    band: str = SCL


def _tiles(read: _Read, grids: Sequence[Grid], run: Optional[TileCache] = None
           ) -> Tuple[int, int]:
    """(bytes, tiles) of the asset's tiles under any of `grids` (the blocks that read it),
    each tile once (GDAL's /vsicurl/ cache serves a tile a second block needs), at the
    overview level a read uses."""
    path = io.gdal_path(read.href)
    # No retries here: an unreadable file costs the estimate nothing (it counts as 0 bytes)
    # and the run's own reads retry it with their budget.
    options = {**io.current_options(), "GDAL_HTTP_MAX_RETRY": "0"}
    with rasterio.Env(**options):
        ds = io._open(path)
        try:
            factors = ds.overviews(1) if read.use_overviews else []
            level = None
            if factors:
                level = io.choose_overview(ds.width, ds.height, max(ds.res), factors,
                                           io._pixel_size_in(grids[0], ds.crs))
            scale = 1 if level is None else factors[level]
            width, height = (ds.width, ds.height) if level is None else (
                -(-ds.width // scale), -(-ds.height // scale))
            th, tw = ds.block_shapes[0]
            inv = ~ds.transform
            wanted: set = set()
            for grid in grids:
                bounds = io.bounds_in(grid.crs, ds.crs, grid.bounds)
                corners = [inv * (x, y) for x in (bounds[0], bounds[2])
                           for y in (bounds[1], bounds[3])]
                cols = [c * width / ds.width for c, _ in corners]
                rows = [r * height / ds.height for _, r in corners]
                m = read.margin
                c0, c1 = max(0, math.floor(min(cols)) - m), min(width, math.ceil(max(cols)) + m)
                r0, r1 = max(0, math.floor(min(rows)) - m), min(height, math.ceil(max(rows)) + m)
                if c1 <= c0 or r1 <= r0:
                    continue
                wanted.update((tx, ty) for ty in range(r0 // th, (r1 - 1) // th + 1)
                              for tx in range(c0 // tw, (c1 - 1) // tw + 1))
            total = tiles = 0
            for tx, ty in wanted:
                size = ds.get_tag_item(f"BLOCK_SIZE_{tx}_{ty}", "TIFF", bidx=1, ovr=level)
                offset = ds.get_tag_item(f"BLOCK_OFFSET_{tx}_{ty}", "TIFF", bidx=1, ovr=level)
                if size and offset:
                    # a COG puts its small overviews right after the header: the part of a
                    # tile inside the header's first request is not fetched again
                    end = int(offset) + int(size)
                    total += max(0, end - max(int(offset), HEADER_BYTES))
                    tiles += int(end > HEADER_BYTES)
            io.keep_for_run(run, path, ds)  # the run's blocks read it next
            return total, tiles
        finally:
            io._close_transient()


def _plan_reads(params: MosaicParams, grid: Grid, chosen: Sequence[SceneReport], passes,
                radius: int, jobs: Dict[_Read, List[Grid]]) -> None:
    """The reads the blocks will make, as the block task makes them: per block and pass,
    the tiles whose footprint meets the block, in the output CRS first; for stacks a pass
    stops at the tile that completes the block's cover; a scene clear nowhere over the AOI
    is read for its SCL only."""
    from shapely.geometry import Polygon

    stacked = bool(params.statistics) or params.method.value != "best"
    aoi = params.aoi.wgs84 if params.clip_to_aoi else None
    cloud = {r.scene.id: r.aoi_cloud for r in chosen}
    for block in grid.blocks(params.block_size):
        area = _grid_wgs84(block.grid)
        if aoi is not None:
            area = area.intersection(aoi)
            if area.is_empty:
                continue
        for p in passes:
            scenes = [s for _i, s in p.scenes if s.footprint.intersects(area)]
            if stacked:
                scenes.sort(key=lambda s: s.crs != grid.crs)
            covered: Polygon = Polygon()
            for scene in scenes:
                if stacked and not covered.is_empty and area.difference(covered).area < \
                        1e-6 * area.area:
                    break
                jobs.setdefault(_Read(scene.assets[SCL], False, radius + 1), []).append(
                    block.grid)
                covered = covered.union(scene.footprint)
                if (cloud.get(scene.id) or 0.0) >= 100.0:
                    continue  # nothing usable over the AOI: no band is read
                for band in params.bands:
                    jobs.setdefault(_Read(scene.assets[band], True, 2, band), []).append(
                        block.grid)


def read_estimate(estimate: Estimate, params: MosaicParams, grid: Grid,
                  kept: Sequence[SceneReport], periods: Sequence[Optional[Period]],
                  max_workers: int = 8, progress: Optional[Progress] = None,
                  headers: bool = True) -> Estimate:
    """Fill in scenes, passes, bytes and requests: from the assets' tile tables, or with
    `headers` False (and always for best available pixel) as the upper bound of the
    uncompressed windows, which needs no request."""
    estimate.periods.clear()
    estimate.passes = 0
    from .clouds import MaskRule

    radius = MaskRule(frozenset(params.invalid_scl), int(params.dilation)).radius_px(
        pixel_size_m(grid))
    footprint = _grid_wgs84(grid)
    jobs: Dict[_Read, List[Grid]] = {}
    used: Dict[str, Scene] = {}
    for period in periods:
        chosen = [r for r in kept if period is None or period.contains(r.scene.date)]
        chosen = [r for r in chosen if r.scene.footprint.intersects(footprint)]
        start, end = (params.start, params.end) if period is None else (period.start,
                                                                        period.end)
        passes = plan_passes(chosen, start, end, params.target_date)
        estimate.periods.append(PeriodEstimate(period.name if period else "", len(chosen),
                                               len(passes)))
        estimate.passes += len(passes)
        for r in chosen:
            used[r.scene.id] = r.scene
        _plan_reads(params, grid, chosen, passes, radius, jobs)
    estimate.scenes = len(used)
    sizes: Dict[_Read, Tuple[int, int]] = {}

    run = io.current_tiles()

    def one(read: _Read) -> Tuple[_Read, Tuple[int, int]]:
        try:
            return read, _tiles(read, jobs[read], run)
        except (ReadError, RasterioError, CPLE_BaseError, OSError):
            return read, (0, 0)  # unreadable: the run will skip the scene and say why

    stacked = bool(params.statistics) or params.method.value != "best"
    opened = [r for r in jobs] if stacked and headers else []
    estimate.tile_bound = 0
    if not opened:
        # Best available pixel reads few of the files (it stops once a block is full):
        # opening every header would cost more than the run reads (1.4 s of a 4 s demo).
        # Its bound is the uncompressed window at the level each read uses, with no
        # request: uint16 bands at the overview the output needs, uint8 SCL at 20 m. A
        # stack far below MAX_READ_GB (`run_estimate`) logs the same figure, and decides
        # it is far below from the whole tiles under its blocks (`tile_bound`).
        metres = pixel_size_m(grid)
        for read in jobs:
            sizes[read] = _bound(read, jobs[read], metres, whole_tiles=False)
        estimate.tile_bound = sum(_bound(read, jobs[read], metres, whole_tiles=True)[0]
                                  for read in jobs)
    pool = ThreadPoolExecutor(max_workers=max(1, max_workers),
                              thread_name_prefix="clearsky-estimate")
    finished = False
    try:
        pending = {pool.submit(one, read) for read in opened}
        while pending:  # cancel is honoured while a header request is stalled
            if progress is not None:
                check_cancelled(progress)
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                read, got = future.result()
                sizes[read] = got
        finished = True
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)
    # band files are opened here first (one header request each); the search opened the SCL
    band_files = {r.href for r in opened if r.use_overviews}
    estimate.files_opened = len({r.href for r in opened})
    estimate.read_bytes = sum(b for b, _ in sizes.values()) + HEADER_BYTES * len(band_files)
    estimate.read_requests = sum(t for _, t in sizes.values()) + len(band_files)
    estimate.headers_read = True  # the read figures are known (from headers or windows)
    estimate.from_headers = bool(opened)
    estimate.upper_bound = not stacked
    return estimate


TILE_PX = 1024  # the tile side a header-free bound allows for (Sentinel-2 COGs: 1024)
# A stack whose header-free bound stays under this share of MAX_READ_GB is not near it:
# the bound counts whole uncompressed tiles under the blocks; the share leaves room for
# larger tiles and for tiles fetched again after the tile cache dropped them.
BOUND_SHARE = 0.25


def _bound(read: _Read, grids: Sequence[Grid], metres: float, whole_tiles: bool
           ) -> Tuple[int, int]:
    """(bytes, requests) at most, without a request: the uncompressed windows of `grids`
    at the level the read uses or, `whole_tiles`, the `TILE_PX` tiles under their union."""
    if read.use_overviews:
        level, depth = float(BAND_RESOLUTION.get(read.band, 10)), 2
        while level * 2 <= metres * (1 + 1e-6):
            level *= 2
    else:
        level, depth = SCL_RESOLUTION, 1
    scale = metres / level  # source pixels per output pixel
    if not whole_tiles:
        pixels = sum(g.width * g.height for g in grids) * scale ** 2
        return int(pixels * depth), len(grids)
    ref = grids[0].transform
    cols = [(g.transform.c - ref.c) / ref.a for g in grids]
    rows = [(g.transform.f - ref.f) / ref.e for g in grids]
    width = (max(c + g.width for c, g in zip(cols, grids)) - min(cols)) * scale
    height = (max(r + g.height for r, g in zip(rows, grids)) - min(rows)) * scale
    margin = 2 * read.margin
    tiles = ((math.ceil((width + margin) / TILE_PX) + 1)
             * (math.ceil((height + margin) / TILE_PX) + 1))
    return tiles * TILE_PX * TILE_PX * depth, tiles


def run_estimate(estimate: Estimate, params: MosaicParams, grid: Grid,
                 kept: Sequence[SceneReport], periods: Sequence[Optional[Period]],
                 max_workers: int = 8, progress: Optional[Progress] = None) -> Estimate:
    """The estimate a run checks its limit against, costing it as little as possible.

    Opening every band header for the exact figure takes about a second of a median run
    (two requests per file before any block starts), so a run whose bound stays far
    below MAX_READ_GB keeps the bound; only one that may come near the limit opens the
    headers, and is refused on the exact figure (`estimate_mosaic` always opens them)."""
    read_estimate(estimate, params, grid, kept, periods, max_workers, progress, headers=False)
    if params.max_read_gb and estimate.tile_bound > params.max_read_gb * GB * BOUND_SHARE:
        read_estimate(estimate, params, grid, kept, periods, max_workers, progress)
    return estimate


def _grid_wgs84(grid: Grid):
    from shapely.geometry import box

    minx, miny, maxx, maxy = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds,
                                              densify_pts=21)
    return box(minx, miny, maxx, maxy)


def estimate_mosaic(params: MosaicParams, progress=None) -> Estimate:
    """Search, check the AOI's clouds, then estimate the run without compositing a pixel.

    A run the output limit refuses is not searched at all (the figures say why). Otherwise
    it reads the catalog, the SCL under the AOI (the search's own cloud check) and the headers
    of the assets the run would read; never a reflectance pixel. `refusal(params)` of the
    result says whether the limits would refuse the run."""
    from .errors import NoScenesError
    from .grid import output_grid
    from .periods import split_periods
    from .progress import NullProgress, SubProgress
    from .search import run_search, why_nothing_left

    params.validate()
    progress = progress or NullProgress()
    grid = output_grid(params.aoi, params.target_crs, params.resolution)
    periods: List[Optional[Period]] = list(split_periods(params.periods, params.start,
                                                         params.end)) or [None]
    figures = output_estimate(params, grid, len(periods))
    if figures.refusal(params) is not None:  # known from the grid: nothing is searched
        return figures
    with io.gdal_env(params.max_workers,
                     **io.proxy_options(params.proxy, params.no_proxy)), \
            io.run_tiles(params.memory_mb, params.max_workers):
        search = run_search(params, SubProgress(progress, 0, 80))
        kept = [r for r in search.reports if r.kept and
                (params.scene_ids is None or r.scene.id in params.scene_ids)]
        if not kept:
            raise NoScenesError(why_nothing_left(search.reports, params))
        read_estimate(figures, params, grid, kept, periods, params.max_workers, progress)
    progress.set_progress(100)
    return figures
