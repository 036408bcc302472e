"""Masked reads of one scene onto an output grid: the SCL first, then the bands.

Used by the mosaic's block task and by the clear clips alike: it needs only the bands,
the mask rule and the grid, no mosaic parameters.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from rasterio.enums import Resampling

from . import io
from .clouds import MaskRule
from .grid import Grid, pixel_size_m
from .scene import BAND_RESOLUTION, SCL, Scene


def band_resampling(band: str, pixel_m: float) -> Resampling:
    """Reflectance resampling of one band read at its native pixel size: average when the
    output is coarser than 1.5x it (a 10 m band on a 30 m output), else bilinear (a 20 m
    band on a 10 m output is upsampled). The SCL is never read with this: always nearest.
    Reads decide from the level they actually read (`io.reflectance_resampling`)."""
    return io.reflectance_resampling(BAND_RESOLUTION[band], pixel_m)


def resampling_for(bands: Iterable[str], pixel_m: float) -> Dict[str, Resampling]:
    """Each band's resampling (`band_resampling`) for an output of `pixel_m` metres."""
    return {b: band_resampling(b, pixel_m) for b in bands}


class SceneReader:
    """Reads one scene's SCL and bands onto a grid (a block or a clip), masked.

    `band_map` maps the band reads (the builtin map, or a thread pool's map to read the
    bands of one scene concurrently)."""

    def __init__(self, bands: Sequence[str], rule: MaskRule, grid: Grid,
                 band_map: Callable = map) -> None:
        self.bands = tuple(bands)
        self.rule = rule
        self.map = band_map
        pixel_m = self.pixel_m = pixel_size_m(grid)
        # Dilation is given in 20 m SCL pixels; apply it in output pixels, reading a margin
        # so clouds just outside the grid still grow into it.
        self.radius = rule.radius_px(pixel_m)
        # Per band, from the pixel size of the file or overview level actually read (mixed
        # 10/20/60 m bands each get their own): io.read_to_grid decides (None).
        self.resampling: Dict[str, Optional[Resampling]] = {b: None for b in self.bands}

    def usable(self, scene: Scene, grid: Grid) -> Optional[np.ndarray]:
        """Clear-pixel mask of the scene over the grid from its SCL, or None if no data."""
        got = self.usable_and_covered(scene, grid)
        return None if got is None else got[0]

    def usable_and_covered(
        self, scene: Scene, grid: Grid
    ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(clear-pixel mask, has-data mask) of the scene over the grid, or None if no data.

        The mask layers are read with a margin: the dilation's, plus, when the rule
        projects shadows, their reach (clouds outside the grid shade it)."""
        reach = self.rule.reach_px(scene, self.pixel_m)
        m = self.radius + 1 + reach
        wide = Grid(
            grid.crs, grid.transform * Affine.translation(-m, -m), grid.width + 2 * m,
            grid.height + 2 * m,
        )
        scl = io.read_to_grid(
            scene.assets[SCL], wide, resampling=Resampling.nearest, use_overviews=False
        )
        if scl is None:
            return None
        bad = self.rule.unusable(scl, self.radius, scene=scene, grid=wide, reach=reach)
        has_data = scl != 0
        ok = (~bad) & has_data
        return ok[m:-m, m:-m], has_data[m:-m, m:-m]

    def reflectance(
        self, scene: Scene, grid: Grid, usable: np.ndarray, out: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Reflectance (nb, h, w) float32 and the final validity mask.

        Only the rows and columns that hold a usable pixel are read: a tile that fills a
        strip its neighbour of the same pass left empty, or the few pixels no earlier
        scene gave, costs that strip and not a warp of the whole grid.
        `out` (float32 (nb, h, w), e.g. a block's stack slot): written only at the valid
        pixels and returned, so a further tile of the same pass or nothing else fills the
        rest; otherwise a new array, NaN where not valid."""
        if out is None:
            out = np.full((len(self.bands), grid.height, grid.width), np.nan, "float32")
        valid = usable.copy()
        box = _bounding_box(usable)
        if box is None:
            return out, valid
        r0, r1, c0, c1 = box
        sub = grid if (r1 - r0, c1 - c0) == grid.shape else grid.subgrid(
            r0, c0, r1 - r0, c1 - c0)
        part, ok = out[:, r0:r1, c0:c1], valid[r0:r1, c0:c1]

        def read(band: str) -> Optional[np.ndarray]:
            return io.read_to_grid(
                scene.assets[band], sub, resampling=self.resampling[band], use_overviews=True
            )

        dns = []
        for dn in self.map(read, self.bands):
            if dn is None:  # a band with nothing here: the scene gives no pixel
                valid[:] = False
                return out, valid
            dns.append(dn)
        radiometry = scene.radiometry
        scratch: Optional[np.ndarray] = None
        for dn in dns:
            # DN 0 is nodata; raw DNs below the offset give negative reflectance at edges.
            first = radiometry.first_valid_dn(dn.dtype)
            if first is not None:
                ok &= dn >= first
            else:  # float or wide DNs: judge the reflectance itself, in one scratch array
                if scratch is None:
                    scratch = np.empty(dn.shape, np.float32)
                ok &= (dn > 0) & (radiometry.reflectance(dn, out=scratch) >= 0)
        for i, dn in enumerate(dns):  # the same arithmetic again, now at the valid pixels
            radiometry.reflectance(dn, out=part[i], where=ok)
        return out, valid


def _bounding_box(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """(first row, end row, first column, end column) of the True pixels, or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
