"""The block task: read -> mask -> reduce -> encode one output block, from picklable inputs.

`run_block(task)` is a module-level function of one frozen `BlockTask` (block grid, the
passes with slim scenes whose hrefs and radiometry are resolved, the composite and mask
settings, the GDAL options as a plain dict) and returns a picklable `BlockResult`. It needs
no catalog, no progress object and no shared state, so any `concurrent.futures.Executor`
can run it: the default threads, a process pool or a Dask cluster. The parent plans,
submits, and is the only writer of the output.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Deque, Dict, FrozenSet, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from shapely.geometry.base import BaseGeometry

from . import budget, io
from .clouds import MaskRule
from .errors import ReadError
from .grid import Block, Grid, geometry_mask
from .options import Method, OutputType
from .output import encode
from .plan import Pass
from .reader import SceneReader
from .scene import MASK_ASSETS, Scene
from .seams import SeamSpec, SeamStats, compose
from .tiles import TileCache

Indexed = Tuple[int, Scene]


@dataclass(frozen=True)
class CompositeSpec:
    """What a block computes and how it is encoded."""

    method: Method
    percentile: float
    bands: Tuple[str, ...]
    output_type: OutputType
    count_band: bool = False
    source_band: bool = False
    statistics: Tuple[str, ...] = ()  # several statistics of one stack (then not `method`)

    @property
    def stacked(self) -> bool:
        """The block keeps every pass's observation (median, percentiles, statistics)."""
        return bool(self.statistics) or self.method is not Method.BEST

    @property
    def value_bands(self) -> int:
        return len(self.bands) * max(1, len(self.statistics))


@dataclass(frozen=True)
class BlockTask:
    """Everything one block needs; every field pickles."""

    block: Block
    passes: Tuple[Pass, ...]  # plan order; only the scenes whose footprint meets the block
    aoi: Optional[BaseGeometry]  # the AOI in the grid's CRS when clipping, else None
    composite: CompositeSpec
    mask: MaskRule
    gdal: Dict[str, object]  # GDAL configuration, set inside the task
    read_workers: int = 16  # simultaneous requests (the run's, or this task's own)
    skip: FrozenSet[int] = frozenset()  # scenes already known unreadable: not retried
    part: Optional[str] = None  # write the block here (GeoTIFF) and return its path instead
    run_id: str = ""  # the run's shared read pools, when the task runs in its process
    memory_mb: int = 1024  # the run's budget: sizes the task's own tile cache elsewhere
    seams: Optional[SeamSpec] = None  # normalisation, feathering, seam metric (core.seams)


@dataclass
class BlockResult:
    block: Block
    data: np.ndarray  # (bands, h, w) in the output's data type, 0 = nodata
    aoi_pixels: int  # output pixels of the block inside the AOI
    filled: int  # of those, how many got a value
    contributed: Dict[int, int] = field(default_factory=dict)  # scene index -> pixels
    broken: Dict[int, str] = field(default_factory=dict)  # scene index -> why unreadable
    reads: int = 0  # raster windows read (SCL and bands)
    seconds: float = 0.0
    part: Optional[str] = None  # the block's GeoTIFF part when the task wrote one (data empty)
    sha256: str = ""  # of the encoded block bytes
    failed: str = ""  # why no worker could compute the block (then data is nodata)
    seams: SeamStats = field(default_factory=SeamStats)  # the block's seam metric sums


def block_id(block: Block) -> str:
    h, w = block.shape
    return f"r{block.row_off}_c{block.col_off}_{h}x{w}"


def digest(data: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def write_part(path: str, grid: Grid, data: np.ndarray) -> None:
    """The block as a small georeferenced GeoTIFF, written whole or not at all."""
    tmp = f"{path}.tmp"
    with rasterio.open(tmp, "w", driver="GTiff", width=grid.width, height=grid.height,
                       count=data.shape[0], dtype=data.dtype.name, crs=grid.crs,
                       transform=grid.transform, nodata=0, compress="DEFLATE",
                       zlevel=1) as ds:
        ds.write(data)
    os.replace(tmp, path)


def read_part(path: str) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def slim(scene: Scene, bands: Sequence[str]) -> Scene:
    """The scene with only what a worker reads: the SCL and band hrefs, no item properties."""
    assets = {k: v for k, v in scene.assets.items() if k in MASK_ASSETS or k in bands}
    return replace(scene, assets=assets, properties={})


# --- read pools ---------------------------------------------------------------------------

class ReadPools:
    """Threads for the reads inside a block, so they run concurrently: remote COG reads
    are latency bound and a small AOI is a single block. Two pools, so a pass read waiting
    on its band reads never waits on its own pool. Threads keep open datasets, which must
    not outlive the run: shut them down with the run. Every read goes through `tiles`, the
    run's tile cache, whose request slots bound the simultaneous requests."""

    def __init__(self, workers: int, options: Dict[str, object],
                 tiles: Optional[TileCache] = None, memory_mb: int = 1024) -> None:
        self._own = tiles is None and io.current_tiles() is None
        if tiles is None:
            tiles = io.current_tiles() or io.new_tiles(memory_mb, workers)
        self.tiles = tiles
        self.passes, self.bands = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"clearsky-{kind}",
                               initializer=io.init_worker, initargs=(options, tiles))
            for kind in ("pass", "band"))
        self.ahead = max(1, min(workers, budget.PASSES_AHEAD))  # what the block budget counts

    def map_passes(self, func: Callable, items: Sequence) -> Iterator:
        """`func` over `items` on the pass pool, results in order, at most `ahead` of them
        submitted and not yet consumed: Executor.map submits them all, so one stalled
        read would let every other pass's arrays pile up behind it."""
        pending: Deque[Future] = deque()
        try:
            for item in items:
                pending.append(self.passes.submit(func, item))
                if len(pending) >= self.ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def shutdown(self, wait: bool = True) -> None:
        for pool in (self.passes, self.bands):
            pool.shutdown(wait=wait, cancel_futures=True)
        if self._own:  # the tiles and open datasets were this pool's alone
            self.tiles.end()


_SHARED: Dict[str, ReadPools] = {}  # run id -> its pools in this process
_SHARED_LOCK = threading.Lock()
_orchestrator = False  # this process runs mosaics (QGIS, qgis_process): it keeps no pools


@contextlib.contextmanager
def shared_pools(run_id: str, workers: int, options: Dict[str, object]) -> Iterator[ReadPools]:
    """Read pools that the tasks of one run (`BlockTask.run_id`) share in this process, so
    their open datasets serve every block; tasks run elsewhere (another process, or another
    run) make their own."""
    global _orchestrator
    pools = ReadPools(workers, options)
    with _SHARED_LOCK:
        _SHARED[run_id] = pools
        _orchestrator = True
    ok = False
    try:
        yield pools
        ok = True
    finally:
        with _SHARED_LOCK:
            _SHARED.pop(run_id, None)
        pools.shutdown(wait=ok)  # after a cancel or an error, stalled reads are not waited for


# A run's pools in a process that orchestrates no run (a Dask worker): kept between the
# run's tasks there, so its files are opened once per worker and a tile fetched for one
# block serves the next, then closed once no task of the run has come for KEPT_IDLE_S. A
# process that orchestrates keeps none: a dataset still open when QGIS shuts GDAL down
# crashes it, and its tasks find their run's pools in _SHARED anyway.
KEPT_IDLE_S = 30.0


@dataclass
class _Kept:
    pools: ReadPools
    users: int = 0
    timer: Optional[threading.Timer] = None

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        # not waiting: a task that failed mid-block may leave reads running, bounded only
        # by GDAL's time-outs; their datasets close when they end (TileCache.end)
        self.pools.shutdown(wait=False)
        self.pools.tiles.end()


_KEPT: Dict[str, _Kept] = {}  # run id -> its kept pools


@contextlib.contextmanager
def _kept_pools(task: BlockTask) -> Iterator[ReadPools]:
    run_id = task.run_id
    with _SHARED_LOCK:
        kept = _KEPT.get(run_id)
        if kept is None:
            tiles = io.new_tiles(task.memory_mb, task.read_workers)
            kept = _KEPT[run_id] = _Kept(ReadPools(task.read_workers, task.gdal, tiles))
        kept.users += 1
        if kept.timer is not None:
            kept.timer.cancel()
            kept.timer = None
        # another run's idle pools go now, not after KEPT_IDLE_S: two runs' tiles at once
        # would take twice the worker's share of MEMORY_MB
        stale = [_KEPT.pop(k) for k, v in list(_KEPT.items()) if v.users == 0]
    for old in stale:
        old.close()
    try:
        yield kept.pools
    finally:
        with _SHARED_LOCK:
            kept.users -= 1
            if kept.users == 0 and _KEPT.get(run_id) is kept:
                kept.timer = threading.Timer(KEPT_IDLE_S, _close_idle, (run_id, kept))
                kept.timer.daemon = True
                kept.timer.start()


@atexit.register
def _close_kept() -> None:
    """At the worker's exit: no dataset may outlive GDAL."""
    with _SHARED_LOCK:
        kept = list(_KEPT.values())
        _KEPT.clear()
    for k in kept:
        k.close()


def _close_idle(run_id: str, kept: _Kept) -> None:
    with _SHARED_LOCK:
        if kept.users or _KEPT.get(run_id) is not kept:
            return
        del _KEPT[run_id]
    kept.close()


@contextlib.contextmanager
def _pools_for(task: BlockTask) -> Iterator[ReadPools]:
    with _SHARED_LOCK:
        pools = _SHARED.get(task.run_id) if task.run_id else None
    if pools is not None:
        yield pools
        return
    if task.run_id and not _orchestrator:  # a worker of a run orchestrated elsewhere
        with _kept_pools(task) as pools:
            yield pools
        return
    tiles = io.new_tiles(task.memory_mb, task.read_workers)
    own = ReadPools(task.read_workers, task.gdal, tiles)
    try:
        yield own
    finally:
        own.shutdown()
        tiles.end()


@contextlib.contextmanager
def _gdal(options: Dict[str, object]) -> Iterator[None]:
    if rasterio.env.hasenv():
        yield
        return
    with rasterio.Env(**options):
        yield


# --- the task -------------------------------------------------------------------------------

def run_block(task: BlockTask) -> BlockResult:
    """Read, mask, reduce and encode one block; depends only on `task`."""
    started = time.perf_counter()
    grid = task.block.grid
    spec = task.composite
    inside_aoi = task.aoi is not None
    target = geometry_mask(grid, task.aoi) if inside_aoi else np.ones(grid.shape, bool)
    with _gdal(task.gdal), _pools_for(task) as pools, io.thread_tiles(pools.tiles):
        reads = _SafeReads(SceneReader(spec.bands, task.mask, grid, pools.bands.map), task.skip)
        if task.seams is None:  # a task made without seam options: none (the mosaic's has)
            task = replace(task, seams=SeamSpec())
        values, count, source, contributed, stats = compose(
            task, grid, target, reads, pools.map_passes, _native_first, pools.passes)
    data = encode(values, target, count, source, spec.output_type)
    sha = digest(data)
    if task.part is not None:
        write_part(task.part, grid, data)
        data = data[:, :0, :0]  # the parent reads the part: no pixels travel back
    return BlockResult(
        block=task.block, data=data, aoi_pixels=int(np.count_nonzero(target)),
        filled=int(np.count_nonzero(np.isfinite(values[0]) & target)), contributed=contributed,
        broken=reads.broken, reads=reads.count, seconds=time.perf_counter() - started,
        part=task.part, sha256=sha, seams=stats,
    )


class _SafeReads:
    """Skips scenes whose assets cannot be read (after the reader's retries), noting why."""

    def __init__(self, reader: SceneReader, skip: FrozenSet[int]) -> None:
        self.reader = reader
        self.skip = skip
        self.broken: Dict[int, str] = {}
        self.count = 0
        self._lock = threading.Lock()

    def _guard(self, index: int, read: Callable, *args):
        if index in self.skip or index in self.broken:
            return None
        with self._lock:
            self.count += 1
        try:
            return read(*args)
        except ReadError as exc:
            self.broken.setdefault(index, str(exc))
            return None

    def usable_and_covered(self, index: int, scene: Scene, grid: Grid, target: np.ndarray):
        got = self._guard(index, self.reader.usable_and_covered, scene, grid)
        return None if got is None else (got[0] & target, got[1])

    def reflectance(self, index: int, scene: Scene, grid: Grid, usable: np.ndarray,
                    out: Optional[np.ndarray] = None):
        return self._guard(index, self.reader.reflectance, scene, grid, usable, out)


def _native_first(scenes: List[Indexed], crs: str) -> List[Indexed]:
    """Tiles of one pass with those in the output CRS first (read without warping); the
    others only fill what those leave empty. Stable, so the plan order holds otherwise.
    Only for stacks: best pixel keeps the plan's tile order (its choice of pixels)."""
    return sorted(scenes, key=lambda item: item[1].crs != crs)


def _read_pass(scenes: List[Indexed], grid: Grid, target: np.ndarray, reads: _SafeReads):
    """The usable observations of one pass's tiles over the block, with their scene index.

    A tile counts as covering its pixels only once its bands were read: when one tile
    cannot be read, the overlapping tile of the same pass still fills them."""
    observations, owners = [], []
    covered = np.zeros(grid.shape, bool)
    for index, scene in scenes:
        if covered.any() and not (target & ~covered).any():
            break  # tiles of one pass repeat one observation: the block is covered
        got = reads.usable_and_covered(index, scene, grid, target)
        if got is None:
            continue
        usable, has_data = got
        if not usable.any():
            covered |= has_data
            continue
        read = reads.reflectance(index, scene, grid, usable)
        if read is None:
            continue
        covered |= has_data
        observations.append(read)
        owners.append(index)
    return observations, owners
