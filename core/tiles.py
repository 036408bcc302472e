"""Decoded source tiles shared by every read of a run: each COG tile is fetched once.

Neighbouring output blocks need the same source tiles (their windows overlap by the warp
margin and by the mask dilation), the AOI cloud check reads the very SCL tiles the blocks
read again, and GDAL's own caches are per dataset handle, that is per thread. So a run
keeps one `TileCache`: a window read asks it for the tiles under the window; tiles already
decoded are copied from memory, the missing ones are fetched in runs of adjacent tiles (one
request per run, GDAL merges consecutive ranges) by the first thread that needs them while
the others wait for that fetch instead of repeating it. The cache is bounded in bytes
(least recently used tiles go first) and every fetch holds one of the run's request slots,
so `max_workers` is the number of simultaneous HTTP requests of the whole run.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Dict, Hashable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from rasterio.windows import Window

from .errors import ReadError
from .handles import Handles

TileKey = Tuple[Hashable, int, int, int]  # (dataset key, band, tile row, tile col)
Rows = Mapping[int, Tuple[int, int]]  # tile row -> (first, last) tile column
Coords = Union[Sequence[float], np.ndarray]

# One decoded tile may not claim more than this (a hostile header can claim a 2^31 x 2^31
# tile; GDAL would try to allocate it).
MAX_TILE_BYTES = 64 * 1024 * 1024
WAIT_S = 120.0  # longest wait for another thread's fetch (its own time-outs end it sooner)
Cut = Tuple[int, int, int, int]  # (first row, first column, end row, end column) in a tile


class Held(NamedTuple):
    """A decoded tile, or the part of it the plan's pending blocks read: `data` starts at
    row `top`, column `left` of the tile."""

    data: np.ndarray
    top: int = 0
    left: int = 0

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def covers(self, cut: Cut) -> bool:
        y0, x0, y1, x1 = cut
        h, w = self.data.shape
        return (self.top <= y0 and self.left <= x0 and y1 <= self.top + h
                and x1 <= self.left + w)


class TileCache:
    """Decoded tiles of the run's source files, bounded by `budget` bytes."""

    def __init__(self, budget: int, requests: int = 16, max_read: Optional[int] = None
                 ) -> None:
        self.budget = max(0, int(budget))
        self.max_read = max_read  # the most bytes one window read may allocate
        # The run's area (crs, bounds): reads of a tile row extend to the row's tiles in it.
        self.extent: Optional[Tuple[str, Tuple[float, float, float, float]]] = None
        self.spans: Dict[Tuple[Hashable, int], Rows] = {}
        self.requests = threading.BoundedSemaphore(max(1, int(requests)))
        self._tiles: OrderedDict[TileKey, Held] = OrderedDict()
        self._fetching: Dict[TileKey, threading.Event] = {}
        self._bytes = 0
        self._pending = 0  # bytes of read-ahead tiles claimed and not yet stored
        self._lock = threading.Lock()
        self.fetched = 0  # tiles decoded from fetched bytes
        self.hits = 0  # tiles served from memory
        self.peak_bytes = 0
        self.done = False  # set when the run that owns the cache has ended (see `end`)
        self._opening: Dict[str, threading.Lock] = {}
        self.handles = Handles()  # the run's open datasets, lent to its worker threads
        # The read plan (core.readplan) of the blocks being computed, when there is one:
        # a tile stays while a pending block will read it (its pins), and goes when the
        # last of them is done, or at once when none will.
        self.plan = None
        self._geo: Dict[Hashable, tuple] = {}  # dataset key -> (transform, crs)
        self._shapes: Dict[Tuple[Hashable, int], Tuple[int, int]] = {}  # tile shape
        self._pins: Dict[TileKey, set] = {}
        self._pinned: Dict[int, set] = {}  # block -> the tiles it pins
        self.dropped = 0  # tiles let go because no pending block needs them
        self.refetched = 0  # tiles fetched again: a read reached past the part kept
        self._uncut: set = set()  # tiles a read reached past the cut of: kept whole since

    # --- public -------------------------------------------------------------------------

    def read(self, ds, key: Hashable, band: int, window: Window,
             limit: Optional[int] = None, span: Optional[Rows] = None,
             keep: Optional[Rows] = None) -> np.ndarray:
        """`ds.read(band, window=window)` (the window lies inside the raster) from tiles.

        `limit`: the most bytes the window may take (ReadError before allocating).
        `span`: per tile row, the tile columns of this file that the run will read (its
        area): a fetch in a row extends to the missing tiles of that row within it, so a
        row of tiles costs one request instead of one per block that meets it.
        `keep`: per tile row, the only tile columns the caller will use (a warp's source
        footprint, slanted in the window); the window's other tiles are zeros, not
        fetched."""
        th, tw = _tile_shape(ds, band)
        dtype = np.dtype(ds.dtypes[band - 1])
        h, w = int(window.height), int(window.width)
        r0, c0 = int(window.row_off), int(window.col_off)
        if limit is not None:
            check_window(h, w, dtype, limit)
        rows = range(r0 // th, (r0 + h - 1) // th + 1)
        cols = range(c0 // tw, (c0 + w - 1) // tw + 1)
        keys = [(key, band, r, c) for r in rows for c in cols
                if keep is None or (r in keep and keep[r][0] <= c <= keep[r][1])]
        # per tile, the part of it under the window (tile offsets, end exclusive)
        wants = {k: (max(0, r0 - k[2] * th), max(0, c0 - k[3] * tw),
                     min(th, r0 + h - k[2] * th), min(tw, c0 + w - k[3] * tw))
                 for k in keys}
        got, mine, others = self._claim(wants)
        extra = self._extend(mine, span, th * tw * dtype.itemsize) if span else []
        try:
            got.update(self._fetch(ds, band, mine + extra, (th, tw)))
        finally:
            self._release(mine + extra, len(extra) * th * tw * dtype.itemsize)
        for k in others:
            tile = self._await(k, wants[k])
            got[k] = tile if tile is not None else self._fetch_one(ds, band, k, (th, tw))
        out = np.empty((h, w), dtype) if keep is None else np.zeros((h, w), dtype)
        for k in keys:
            tile = got[k]
            ty, tx = k[2] * th + tile.top, k[3] * tw + tile.left  # where its data starts
            ys, xs = max(ty, r0), max(tx, c0)
            ye = min(ty + tile.data.shape[0], r0 + h)
            xe = min(tx + tile.data.shape[1], c0 + w)
            out[ys - r0:ye - r0, xs - c0:xe - c0] = tile.data[ys - ty:ye - ty, xs - tx:xe - tx]
        return out

    def opening(self, path: str) -> threading.Lock:
        """The lock one file's opens take in turn (one per file of the run). Take a request
        slot first, then this lock: a fetch that must open another handle of its file holds
        its slot already, so an open holding this lock while it waited for a slot could
        wait for that fetch forever, and the fetch for it. To wait for another thread's
        open, take this lock alone first (holding it, wait for nothing else)."""
        with self._lock:
            return self._opening.setdefault(path, threading.Lock())

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return {"fetched": self.fetched, "hits": self.hits, "bytes": self._bytes,
                    "peak_bytes": self.peak_bytes, "tiles": len(self._tiles),
                    "dropped": self.dropped, "refetched": self.refetched}

    def clear(self) -> None:
        with self._lock:
            self._tiles.clear()
            self._bytes = 0
            self._pins.clear()
            self._pinned.clear()
            self._uncut.clear()

    def use_plan(self, plan) -> None:
        """Keep tiles by `plan` from now on: the tiles already held (the AOI check's SCL,
        the normalisation's reads) stay only if a pending block of the plan meets them."""
        with self._lock:
            self.plan = plan
            self._pins.clear()
            self._pinned.clear()
            for k in list(self._tiles):
                found = self._need_cut(k)
                if found is not None and not found[0]:
                    self._evict(k)
                    self.dropped += 1
                elif found is not None:
                    self._store(k, self._tiles[k], *found)

    def block_done(self, block: int) -> None:
        """Block `block` of the plan is finished: the tiles only it still needed go."""
        with self._lock:
            if self.plan is None:
                return
            self.plan.done(block)
            for k in self._pinned.pop(block, ()):
                pins = self._pins.get(k)
                if pins is None:
                    continue
                pins.discard(block)
                if not pins:
                    self._evict(k)
                    self.dropped += 1

    def drop_plan(self) -> None:
        """Back to least-recently-used alone (between the composites of a run)."""
        with self._lock:
            self.plan = None
            self._pins.clear()
            self._pinned.clear()

    def end(self) -> None:
        """The owning run is over: drop the tiles, close the idle handles (those still
        lent to an abandoned read close when it gives them back)."""
        self.done = True
        self.handles.close()
        self.clear()

    def forget_path(self, path: str) -> None:
        """Drop the tiles of one file, every level (before a retry of a failed read)."""
        with self._lock:
            for k in [k for k in self._tiles if _path_of(k[0]) == path]:
                self._evict(k)

    # --- claiming and fetching ------------------------------------------------------------

    def _claim(self, wants: Dict[TileKey, Cut]):
        """Split the tiles of a read: held (and covering the part read), being fetched by
        another thread, to fetch here."""
        got: Dict[TileKey, Held] = {}
        mine: List[TileKey] = []
        others: List[TileKey] = []
        with self._lock:
            for k, want in wants.items():
                tile = self._tiles.get(k)
                if tile is not None and not tile.covers(want):
                    self._evict(k)  # a read past the kept part: fetch it again, keep it whole
                    self._uncut.add(k)
                    self.refetched += 1
                    tile = None
                if tile is not None:
                    self._tiles.move_to_end(k)
                    got[k] = tile
                    self.hits += 1
                elif k in self._fetching:
                    others.append(k)
                else:
                    self._fetching[k] = threading.Event()
                    mine.append(k)
        return got, mine, others

    def _extend(self, mine: List[TileKey], span: Rows, tile_bytes: int
                ) -> List[TileKey]:
        """Claim the missing tiles beside each claimed row run, within the row's `span`,
        while the read-ahead claimed and not yet stored stays within half the cache's
        budget (the least recently used tiles make way for it): read-ahead along the row.
        Counting the tiles already cached against it, as it once did, stopped it for the
        rest of the run as soon as the cache was full."""
        extra: List[TileKey] = []
        with self._lock:
            room = self.budget // 2 - self._pending
            for key, band, r, c in sorted(mine):
                if r not in span:
                    continue
                lo, hi = span[r]
                for step in (-1, 1):
                    n = c + step
                    while lo <= n <= hi and room >= tile_bytes:
                        k = (key, band, r, n)
                        if k in self._tiles or k in self._fetching:
                            break
                        if self.plan is not None and self._need(k) == frozenset():
                            break  # no block left to compute reads it
                        self._fetching[k] = threading.Event()
                        extra.append(k)
                        room -= tile_bytes
                        self._pending += tile_bytes
                        n += step
        return extra

    def _release(self, keys: List[TileKey], pending: int = 0) -> None:
        with self._lock:
            self._pending -= pending
            for k in keys:
                event = self._fetching.pop(k, None)
                if event is not None:
                    event.set()

    def _await(self, k: TileKey, want: Cut) -> Optional[Held]:
        with self._lock:
            event = self._fetching.get(k)
        if event is not None and not event.wait(WAIT_S):
            return None
        with self._lock:
            tile = self._tiles.get(k)
            if tile is not None and not tile.covers(want):  # the caller fetches it again
                self._uncut.add(k)
                self.refetched += 1
                return None
            if tile is not None:
                self.hits += 1
            return tile

    def _fetch(self, ds, band: int, keys: List[TileKey], shape: Tuple[int, int]
               ) -> Dict[TileKey, Held]:
        """Fetch `keys` in runs of adjacent tiles along rows: one read (request) per run."""
        out: Dict[TileKey, Held] = {}
        by_row: Dict[int, List[int]] = {}
        for _, _, r, c in keys:
            by_row.setdefault(r, []).append(c)
        for r, cs in sorted(by_row.items()):
            for start, end in _runs(sorted(cs)):
                out.update(self._fetch_run(ds, band, keys[0][0], r, start, end, shape))
        return out

    def _fetch_one(self, ds, band: int, k: TileKey, shape: Tuple[int, int]) -> Held:
        return self._fetch_run(ds, band, k[0], k[2], k[3], k[3], shape)[k]

    def _fetch_run(self, ds, band: int, key: Hashable, row: int, c0: int, c1: int,
                   shape: Tuple[int, int]) -> Dict[TileKey, Held]:
        """One read of tiles c0..c1 of a row; each is kept (the part the plan's pending
        blocks read) and handed whole to this read."""
        th, tw = shape
        y, x = row * th, c0 * tw
        h, w = min(th, ds.height - y), min((c1 + 1) * tw, ds.width) - x
        with self.requests:
            data = ds.read(band, window=Window(x, y, w, h))
        tiles = {(key, band, row, c): Held(np.ascontiguousarray(data[:, (c - c0) * tw:
                                                                   (c - c0 + 1) * tw]))
                 for c in range(c0, c1 + 1)}
        geo = (ds.transform, ds.crs)
        with self._lock:
            self._geo.setdefault(key, geo)
            self._shapes.setdefault((key, band), shape)
            self.fetched += len(tiles)
            for k, tile in tiles.items():
                found = self._need_cut(k) if self.plan is not None else None
                if found is not None and not found[0]:
                    self.dropped += 1
                    continue  # served to this read only
                if tile.nbytes > self.budget:
                    continue
                self._evict(k)
                if found is None:
                    self._tiles[k] = tile
                    self._bytes += tile.nbytes
                else:
                    self._store(k, tile, *found)
            while self._bytes > self.budget and self._tiles:
                self._evict(next(iter(self._tiles)))
            self.peak_bytes = max(self.peak_bytes, self._bytes)
        return tiles

    # --- the plan's pins (under the lock) ---------------------------------------------------

    def _need(self, k: TileKey) -> Optional[frozenset]:
        found = self._need_cut(k)
        return None if found is None else found[0]

    def _need_cut(self, k: TileKey) -> Optional[Tuple[frozenset, Optional[Cut]]]:
        geo, shape = self._geo.get(k[0]), self._shapes.get((k[0], k[1]))
        if self.plan is None or geo is None or shape is None:
            return None
        return self.plan.need(k[0], geo, k[2], k[3], shape)

    def _store(self, k: TileKey, tile: Held, blocks: frozenset, cut: Optional[Cut]) -> None:
        """Hold `tile` for `blocks` (pinned), cut to the part they read: the rest of a
        tile on the AOI's edge would sit in memory unread. A tile a read once reached
        past the cut of stays whole (else every such read would fetch it again). Its
        earlier pins are gone already (evicted, or cleared by `use_plan`)."""
        old = self._tiles.pop(k, None)
        if old is not None:
            self._bytes -= old.nbytes
        if cut is not None and k not in self._uncut:
            y0, x0 = max(cut[0], tile.top), max(cut[1], tile.left)
            y1 = min(cut[2], tile.top + tile.data.shape[0])
            x1 = min(cut[3], tile.left + tile.data.shape[1])
            if y1 <= y0 or x1 <= x0:  # a part held before the plan, none of it read now
                self.dropped += 1
                return
            if (y1 - y0) * (x1 - x0) < tile.data.size:
                part = tile.data[y0 - tile.top:y1 - tile.top, x0 - tile.left:x1 - tile.left]
                tile = Held(part.copy(), y0, x0)
        self._tiles[k] = tile
        self._bytes += tile.nbytes
        self._pin(k, blocks)

    def _pin(self, k: TileKey, blocks: frozenset) -> None:
        self._pins[k] = set(blocks)
        for b in blocks:
            self._pinned.setdefault(b, set()).add(k)

    def _evict(self, k: TileKey) -> None:
        old = self._tiles.pop(k, None)
        if old is not None:
            self._bytes -= old.nbytes
        for b in self._pins.pop(k, ()):
            pinned = self._pinned.get(b)
            if pinned is not None:
                pinned.discard(k)


def size_text(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n < 10 * 2**20 else f"{n / 2**20:.0f} MB"


def check_window(height: int, width: int, dtype, limit: int) -> None:
    """ReadError before allocating a window of more than `limit` bytes, with the figures."""
    size = int(height) * int(width) * np.dtype(dtype).itemsize
    if size > limit:
        raise ReadError(
            f"A read of {width} x {height} pixels ({size_text(size)}) exceeds the "
            f"{size_text(limit)} one read may take under the memory budget: raise MEMORY_MB "
            "(on Dask workers it is capped at their memory limit), or use a coarser "
            "resolution or a smaller AOI.")


def tile_rows(xs: Coords, ys: Coords, shape: Tuple[int, int], margin: float, rows: range,
              cols: range) -> Dict[int, Tuple[int, int]]:
    """Per tile row of `rows`, the first and last tile column of `cols` that meet the
    closed ring (`xs`, `ys`, in the file's pixels) grown by `margin` pixels; rows it does
    not meet are left out.

    A square AOI in EPSG:3035 is a slanted quadrilateral in a UTM file: the tiles of its
    bounding box outside it held a tenth of a warped run's bytes. The x extent of the
    ring's part within a row's band is the x extent of its edges clipped to the band
    (a bounded shape meets a band only across its boundary), so the ring may be any
    shape, convex or not, without a polygon library."""
    th, tw = shape
    x0, y0 = np.asarray(xs, float), np.asarray(ys, float)
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    dx, dy = x1 - x0, y1 - y0
    flat = dy == 0
    step = np.where(flat, 1.0, dy)
    out: Dict[int, Tuple[int, int]] = {}
    for r in rows:
        a, b = r * th - margin, (r + 1) * th + margin
        ta, tb = (a - y0) / step, (b - y0) / step
        inside = (y0 >= a) & (y0 <= b)
        lo = np.where(flat, np.where(inside, 0.0, np.inf), np.minimum(ta, tb))
        hi = np.where(flat, np.where(inside, 1.0, -np.inf), np.maximum(ta, tb))
        lo, hi = np.maximum(lo, 0.0), np.minimum(hi, 1.0)
        met = lo <= hi
        if not met.any():
            continue
        ends = np.concatenate([x0[met] + dx[met] * lo[met], x0[met] + dx[met] * hi[met]])
        first = max(cols.start, math.floor((ends.min() - margin) / tw))
        last = min(cols.stop - 1, math.floor((ends.max() + margin) / tw))
        if first <= last:
            out[r] = (first, last)
    return out


def _runs(cols: List[int]) -> List[Tuple[int, int]]:
    """(first, last) of each run of consecutive numbers in sorted `cols`."""
    runs: List[Tuple[int, int]] = []
    for c in cols:
        if runs and c == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], c)
        else:
            runs.append((c, c))
    return runs


def _path_of(key: Hashable) -> object:
    return key[0] if isinstance(key, tuple) and key else key


def _tile_shape(ds, band: int) -> Tuple[int, int]:
    """The file's (tile height, tile width), refused when one tile claims absurd memory."""
    th, tw = (int(v) for v in ds.block_shapes[band - 1])
    itemsize = np.dtype(ds.dtypes[band - 1]).itemsize
    if th < 1 or tw < 1 or th * tw * itemsize > MAX_TILE_BYTES:
        raise ReadError(
            f"{ds.name}: its header claims {tw} x {th} pixel tiles "
            f"({size_text(th * tw * itemsize)} each), more than the "
            f"{size_text(MAX_TILE_BYTES)} a tile may take; not a usable COG.")
    return th, tw
