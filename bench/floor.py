"""The byte floor: sizes of the COG tiles that intersect the AOI, read from the local files.

A reader cannot fetch less than the compressed tiles under the AOI at the resolution it
needs, so `bytes served / floor` says how much a tool over-reads (headers, overviews,
tiles outside the AOI, scenes it did not need). Needs GDAL's Python bindings (QGIS venv).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Tuple

from osgeo import gdal
from pyproj import Transformer

Bounds = Tuple[float, float, float, float]


def _bounds_in(bounds: Bounds, src_crs: str, dst_wkt: str) -> Bounds:
    tr = Transformer.from_crs(src_crs, dst_wkt, always_xy=True)
    return tr.transform_bounds(*bounds, densify_pts=21)


def tile_bytes(path: Path, bounds: Bounds, bounds_crs: str) -> int:
    """Sum of BLOCK_SIZE_x_y of the full-resolution tiles of band 1 that meet `bounds`."""
    ds = gdal.Open(str(path))
    try:
        x0, dx, _, y0, _, dy = ds.GetGeoTransform()
        minx, miny, maxx, maxy = _bounds_in(bounds, bounds_crs, ds.GetProjection())
        band = ds.GetRasterBand(1)
        bw, bh = band.GetBlockSize()
        c0 = max(0, math.floor((minx - x0) / dx))
        c1 = min(ds.RasterXSize, math.ceil((maxx - x0) / dx))
        r0 = max(0, math.floor((maxy - y0) / dy))
        r1 = min(ds.RasterYSize, math.ceil((miny - y0) / dy))
        if c1 <= c0 or r1 <= r0:
            return 0
        total = 0
        for by in range(r0 // bh, (r1 - 1) // bh + 1):
            for bx in range(c0 // bw, (c1 - 1) // bw + 1):
                size = band.GetMetadataItem(f"BLOCK_SIZE_{bx}_{by}", "TIFF")
                total += int(size or 0)
        return total
    finally:
        ds = None


def floor_bytes(root: Path, scenes: Iterable[Tuple[str, str]], assets: Iterable[str],
                bounds: Bounds, bounds_crs: str) -> int:
    """Floor over `scenes` ((collection, item id)) and `assets` (file stems) of an archive."""
    assets = list(assets)
    return sum(tile_bytes(Path(root) / "data" / c / i / f"{a}.tif", bounds, bounds_crs)
               for c, i in scenes for a in assets)
