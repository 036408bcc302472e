"""The run's read plan: which output blocks still to compute need each source tile.

The tile cache (`core.tiles`) keeps a decoded tile while a block that has not finished
will read it, and drops it when the last such block is done; of a tile it keeps only the
part those blocks read (a tile on the AOI's edge, an SCL tile twice a band tile's ground
size: a 6 km warped run held 96 MB of tiles, of which its blocks read 34); a tile no
pending block needs (the SCL of a scene the AOI check rejected, a tile beside the AOI) is
not kept at all. Overview levels are not told apart (the ML mask reads coarser levels
than the output's): a coarse tile the normalisation read stays while a block under it is
pending.
Memory then follows the blocks in flight and the tiles read ahead for the next ones, not
the size of the AOI, and no tile is dropped while a block will still ask for it (its
range would be fetched again).

A block needs a tile of a file when the block's task reads that file (a scene whose
footprint meets the block) and the tile meets the block's rectangle grown by the reads'
margin (mask dilation, shadow reach, feathering halo, warp kernel), measured in the
file's pixels from the block corners transformed into the file's CRS.
"""

from __future__ import annotations

import math
from typing import Dict, FrozenSet, Hashable, Mapping, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from rasterio.warp import transform

from . import io
from .grid import Grid
from .tiles import Cut

SOURCE_MARGIN = 3  # source pixels around a block's rectangle (warp kernels, rounding)
# Extra source pixels kept around the part of a tile the pending blocks read: a read that
# still reaches past the kept part fetches the tile again, so the cut errs on the wide side.
CUT_MARGIN = 8


class ReadPlan:
    """Blocks of `grid.blocks(side)` (row-major), the scenes each one reads
    (`block_scenes`, scene indices) and the files of each scene (`scene_paths`): every
    file a block may read, so a file the plan does not name is one no block reads.
    Not thread-safe by itself: the tile cache calls it under its own lock."""

    def __init__(self, grid: Grid, side: int, margin_px: int,
                 block_scenes: Sequence[FrozenSet[int]],
                 scene_paths: Mapping[int, FrozenSet[str]]) -> None:
        self.grid, self.side = grid, int(side)
        self.rows = math.ceil(grid.height / self.side)
        self.cols = math.ceil(grid.width / self.side)
        if len(block_scenes) != self.rows * self.cols:
            raise ValueError("one set of scenes per block")
        self.margin = int(margin_px)
        by_scene: Dict[int, list] = {}
        for block, scenes in enumerate(block_scenes):
            for scene in scenes:
                by_scene.setdefault(scene, []).append(block)
        lists: Dict[str, list] = {}
        for scene, blocks in by_scene.items():
            for p in scene_paths.get(scene, ()):
                lists.setdefault(p, []).extend(blocks)
        # path -> indices of the blocks reading it
        self._readers = {p: np.unique(np.asarray(v, np.int64)) for p, v in lists.items()}
        self._done = np.zeros(len(block_scenes), bool)
        self._rects: Dict[str, np.ndarray] = {}  # CRS -> (blocks, 4) bounds in that CRS
        self._files: Dict[Hashable, Optional[Tuple[np.ndarray, np.ndarray]]] = {}

    def index(self, row_off: int, col_off: int) -> int:
        return (row_off // self.side) * self.cols + col_off // self.side

    def done(self, block: int) -> None:
        self._done[block] = True

    def blocks_needing(self, key: Hashable, geo, row: int, col: int, shape: Tuple[int, int]
                       ) -> Optional[FrozenSet[int]]:
        """The pending blocks that read tile (row, col) of the file `key` ((path, level,
        ...)), at any level (the ML mask reads coarser levels than the output's, and on a
        geographic grid the level follows each block's latitude); `geo` is the file's
        (transform, crs). None: the plan cannot tell (a rotated file), so the cache keeps
        the tile as it would without a plan."""
        found = self.need(key, geo, row, col, shape)
        return None if found is None else found[0]

    def need(self, key: Hashable, geo, row: int, col: int, shape: Tuple[int, int]
             ) -> Optional[Tuple[FrozenSet[int], Optional[Cut]]]:
        """`blocks_needing`, and the part of the tile those blocks read (row and column
        offsets in the tile, end exclusive, grown by `CUT_MARGIN`; None: none of it)."""
        if key not in self._files:
            self._files[key] = self._file_rects(key, geo)
        found = self._files[key]
        if found is None:
            return None
        blocks, rects = found
        if not len(blocks):
            return frozenset(), None
        th, tw = shape
        y0, x0 = row * th, col * tw
        hit = ((rects[:, 0] < x0 + tw) & (rects[:, 2] > x0) & (rects[:, 1] < y0 + th)
               & (rects[:, 3] > y0))
        hit &= ~self._done[blocks]
        if not hit.any():
            return frozenset(), None
        r = rects[hit]
        if not np.isfinite(r).all():  # a corner the transformation could not take
            return frozenset(int(b) for b in blocks[hit]), (0, 0, th, tw)
        m = CUT_MARGIN
        cut = (max(0, math.floor(r[:, 1].min()) - m - y0),
               max(0, math.floor(r[:, 0].min()) - m - x0),
               min(th, math.ceil(r[:, 3].max()) + m - y0),
               min(tw, math.ceil(r[:, 2].max()) + m - x0))
        return frozenset(int(b) for b in blocks[hit]), cut

    # --- geometry ---------------------------------------------------------------------

    def _file_rects(self, key: Hashable, geo) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(blocks reading the file, their rectangles in its pixels: x0, y0, x1, y1)."""
        path = key[0]  # type: ignore[index]
        transform, crs = geo
        t: Affine = transform
        if t.b or t.d or not t.a or not t.e:
            return None
        readers = self._readers.get(path)
        if readers is None:  # no block reads the file (a scene the AOI check rejected)
            return np.zeros(0, np.int64), np.zeros((0, 4))
        bounds = self._rects_in(crs)[readers]
        xs = (bounds[:, [0, 2]] - t.c) / t.a
        ys = (bounds[:, [1, 3]] - t.f) / t.e
        rects = np.stack([xs.min(axis=1) - SOURCE_MARGIN, ys.min(axis=1) - SOURCE_MARGIN,
                          xs.max(axis=1) + SOURCE_MARGIN, ys.max(axis=1) + SOURCE_MARGIN],
                         axis=1)
        return readers, rects

    def _rects_in(self, crs) -> np.ndarray:
        """Every block's rectangle, grown by the margin, as bounds in `crs`: its corners
        and edge midpoints, all blocks in one transformation."""
        name = str(crs)
        got = self._rects.get(name)
        if got is not None:
            return got
        g, m = self.grid, self.margin
        xs, ys = [], []
        for r in range(self.rows):
            for c in range(self.cols):
                r0, c0 = r * self.side - m, c * self.side - m
                r1 = min((r + 1) * self.side, g.height) + m
                c1 = min((c + 1) * self.side, g.width) + m
                for col, row in ((c0, r0), (c1, r0), (c0, r1), (c1, r1),
                                 ((c0 + c1) / 2, r0), ((c0 + c1) / 2, r1),
                                 (c0, (r0 + r1) / 2), (c1, (r0 + r1) / 2)):
                    x, y = g.transform * (col, row)
                    xs.append(x)
                    ys.append(y)
        src, dst = io._crs(g.crs), io._crs(crs)
        if src == dst:
            tx, ty = np.asarray(xs), np.asarray(ys)
        else:  # rasterio's point transform: GDAL's cache of transformations
            tx, ty = (np.asarray(v) for v in transform(src, dst, xs, ys))
        tx, ty = tx.reshape(-1, 8), ty.reshape(-1, 8)
        rects = np.stack([tx.min(axis=1), ty.min(axis=1), tx.max(axis=1), ty.max(axis=1)],
                         axis=1)
        self._rects[name] = rects
        return rects
