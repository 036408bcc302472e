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
from shapely.geometry import Polygon, box
from shapely.ops import transform as shp_transform
from shapely.prepared import prep

Bounds = Tuple[float, float, float, float]


def _aoi_in(bounds: Bounds, src_crs: str, dst_wkt: str):
    """The AOI rectangle (edges densified) as a polygon in the file's CRS: an AOI in
    another CRS (EPSG:3035 over UTM tiles) is a slanted quadrilateral there, and its
    bounding box would count tiles that it does not meet."""
    tr = Transformer.from_crs(src_crs, dst_wkt, always_xy=True)
    x0, y0, x1, y1 = bounds
    t = [i / 64 for i in range(64)]
    ring = ([(x0 + (x1 - x0) * f, y0) for f in t] + [(x1, y0 + (y1 - y0) * f) for f in t]
            + [(x1 - (x1 - x0) * f, y1) for f in t] + [(x0, y1 - (y1 - y0) * f) for f in t])
    return shp_transform(tr.transform, Polygon(ring))


def tile_bytes(path: Path, bounds: Bounds, bounds_crs: str) -> int:
    """Sum of BLOCK_SIZE_x_y of the full-resolution tiles of band 1 that meet the AOI."""
    ds = gdal.Open(str(path))
    try:
        x0, dx, _, y0, _, dy = ds.GetGeoTransform()
        aoi = _aoi_in(bounds, bounds_crs, ds.GetProjection())
        minx, miny, maxx, maxy = aoi.bounds
        inside = prep(aoi)
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
                tx, ty = x0 + bx * bw * dx, y0 + by * bh * dy
                if not inside.intersects(box(tx, ty + bh * dy, tx + bw * dx, ty)):
                    continue
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
