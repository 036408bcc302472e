"""The output pixel grid: CRS, snapped bounds, blocks, and AOI masks on it.

Grids are snapped to multiples of the resolution so that two runs at one resolution
(different AOIs, different dates) produce pixels that line up exactly.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
from affine import Affine
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import geometry_mask as _rio_geometry_mask
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.wkb import loads as wkb_loads

from .aoi import Aoi
from .errors import InvalidParameterError
from .geometry_ops import transform_xy

MAX_GRID_SIDE = 1_000_000  # pixels; beyond this the resolution is almost surely in wrong units
# rasterio's in-memory rasterize/warp, run in threads, now and then emit a spurious
# NotGeoreferencedWarning although a transform is given and the result is right (see
# opendatacube/odc-geo#131, GlacioHack/geoutils#851). We always pass transforms: hide it there.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning,
                        module=r"rasterio\.(features|warp)$")


@dataclass(frozen=True)
class Grid:
    """A north-up output grid: `transform` maps (col, row) to the CRS's (x, y)."""

    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> Tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> Tuple[float, float, float, float]:
        t = self.transform
        x0, y0 = t.c, t.f
        x1, y1 = t * (self.width, self.height)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    @property
    def resolution(self) -> float:
        """Pixel width in CRS units (square except on a geographic CRS, see `res`)."""
        return abs(self.transform.a)

    @property
    def res(self) -> Tuple[float, float]:
        """(x, y) pixel size in CRS units."""
        return abs(self.transform.a), abs(self.transform.e)

    def subgrid(self, row_off: int, col_off: int, height: int, width: int) -> Grid:
        """The window of this grid starting at (row_off, col_off), same CRS and pixel size."""
        if row_off < 0 or col_off < 0 or height < 1 or width < 1:
            raise ValueError(f"Invalid window {row_off, col_off, height, width}")
        if row_off + height > self.height or col_off + width > self.width:
            raise ValueError(f"Window {row_off, col_off, height, width} exceeds {self.shape}")
        return Grid(
            self.crs, self.transform * Affine.translation(col_off, row_off), width, height
        )

    def blocks(self, size: int) -> List[Block]:
        """Square blocks of `size` pixels in row-major order; edge blocks are smaller."""
        if size < 1:
            raise ValueError("Block size must be positive")
        out = []
        for row in range(0, self.height, size):
            for col in range(0, self.width, size):
                h, w = min(size, self.height - row), min(size, self.width - col)
                out.append(Block(row, col, self.subgrid(row, col, h, w)))
        return out


@dataclass(frozen=True)
class Block:
    """One block of an output grid; `grid` is the block's own subgrid."""

    row_off: int
    col_off: int
    grid: Grid

    @property
    def shape(self) -> Tuple[int, int]:
        return self.grid.shape


def utm_zone(lon: float, lat: float) -> int:
    """UTM zone number, with the Norway and Svalbard exceptions that MGRS tiles follow."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        return 32
    if 72.0 <= lat < 84.0 and 0.0 <= lon < 42.0:
        if lon < 9.0:
            return 31
        if lon < 21.0:
            return 33
        if lon < 33.0:
            return 35
        return 37
    return zone


def utm_crs_for(aoi: Aoi) -> str:
    """EPSG code of the WGS84 UTM zone of the AOI's centroid (326zz north, 327zz south)."""
    c = aoi.wgs84.centroid
    zone = utm_zone(c.x, c.y)
    return f"EPSG:{32600 + zone if c.y >= 0 else 32700 + zone}"


def densify(geometry: BaseGeometry, parts: int = 64) -> BaseGeometry:
    """Add vertices so each polygon edge is at most 1/`parts` of the bbox diagonal.

    Reprojecting only the vertices of a long straight edge misses its curvature in the
    target CRS; extra vertices keep bounds and masks accurate (shapely 1.8 has no segmentize).
    """
    minx, miny, maxx, maxy = geometry.bounds
    step = math.hypot(maxx - minx, maxy - miny) / parts
    if step <= 0:
        return geometry

    def ring(coords) -> list:
        pts = np.asarray(coords, dtype=float)[:, :2]
        out = []
        for a, b in zip(pts[:-1], pts[1:]):
            n = max(1, int(math.ceil(math.hypot(*(b - a)) / step)))
            t = np.arange(n)[:, None] / n
            out.append(a + (b - a) * t)
        out.append(pts[-1:])
        return np.concatenate(out).tolist()

    def poly(p: Polygon) -> Polygon:
        return Polygon(ring(p.exterior.coords), [ring(i.coords) for i in p.interiors])

    if isinstance(geometry, Polygon):
        return poly(geometry)
    if isinstance(geometry, MultiPolygon):
        return MultiPolygon([poly(p) for p in geometry.geoms])
    return geometry


def transformer(src_crs, dst_crs) -> Transformer:
    """A (lon/lat order) pyproj Transformer, made once per CRS pair: making one takes tens
    of milliseconds, and blocks and scenes ask for the same few pairs again and again."""
    return _transformer(str(src_crs), str(dst_crs))


@functools.lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


@functools.lru_cache(maxsize=64)
def _same_crs(src: str, dst: str) -> bool:
    """Making a pyproj CRS takes milliseconds; the AOI check asks once per scene."""
    return CRS.from_user_input(src) == CRS.from_user_input(dst)


def reproject_geometry(geometry: BaseGeometry, src_crs: str, dst_crs: str) -> BaseGeometry:
    """`geometry` from src_crs to dst_crs (x/y = lon/lat order), densified first.

    Made once per geometry and CRS pair: the AOI check asks for the AOI in the CRS of each
    of its scenes from worker threads, and a pyproj transformer used in a new thread is
    built again there (tens of milliseconds each; a sixth of a warped run's CPU)."""
    if _same_crs(str(src_crs), str(dst_crs)):
        return geometry
    return _reprojected(geometry.wkb, str(src_crs), str(dst_crs))


@functools.lru_cache(maxsize=16)
def _reprojected(wkb: bytes, src_crs: str, dst_crs: str) -> BaseGeometry:
    return transform_xy(transformer(src_crs, dst_crs).transform, densify(wkb_loads(wkb)))


def pixel_size_in_crs(aoi: Aoi, crs: CRS, metres: float) -> Tuple[float, float]:
    """(x, y) pixel size in `crs` units for `metres` on the ground at the AOI's centre.

    Projected CRSs scale by their unit (metres, feet); a geographic CRS gets the degrees
    of longitude and latitude that span `metres` at the AOI's latitude, so the pixels are
    `metres` wide on the ground in both directions, not only at the equator.
    """
    if not crs.is_geographic:
        factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        size = metres / (factor or 1.0)
        return size, size
    c = aoi.wgs84.centroid
    lat = min(max(c.y, -89.0), 89.0)
    geod = Geod(ellps="WGS84")
    step = 0.01  # degrees: short enough to be straight, long enough to be exact in floats
    per_lon = geod.inv(c.x, lat, c.x + step, lat)[2] / step
    per_lat = geod.inv(c.x, lat - step / 2, c.x, lat + step / 2)[2] / step
    return metres / per_lon, metres / per_lat


def output_grid(aoi: Aoi, crs: str | None, resolution: float) -> Grid:
    """The grid covering the AOI in `crs` (default: its UTM zone), snapped outward.

    `resolution` is the pixel size in metres on the ground, whatever the CRS's units.
    """
    if not resolution or resolution <= 0 or not math.isfinite(resolution):
        raise InvalidParameterError(f"The resolution must be positive, not {resolution}.")
    crs = crs or utm_crs_for(aoi)
    try:
        crs_obj = CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"Unknown output CRS {crs!r}: use an EPSG code such as EPSG:32633."
        ) from exc
    xres, yres = pixel_size_in_crs(aoi, crs_obj, resolution)
    geom = reproject_geometry(aoi.geometry, aoi.crs, crs_obj.to_wkt())
    minx, miny, maxx, maxy = geom.bounds
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise InvalidParameterError(
            f"The area of interest cannot be expressed in {crs}: choose a CRS that covers it."
        )
    eps = 1e-9  # absorbs float noise so a bound already on the grid is not pushed out a pixel
    x0 = math.floor(minx / xres + eps) * xres
    y0 = math.floor(miny / yres + eps) * yres
    x1 = math.ceil(maxx / xres - eps) * xres
    y1 = math.ceil(maxy / yres - eps) * yres
    width = max(1, int(round((x1 - x0) / xres)))
    height = max(1, int(round((y1 - y0) / yres)))
    if max(width, height) > MAX_GRID_SIDE:
        raise InvalidParameterError(
            f"The output would be {width} x {height} pixels of {resolution:g} m: choose a "
            "coarser resolution (in metres, whatever the CRS units) or a smaller area."
        )
    return Grid(crs, Affine(xres, 0.0, x0, 0.0, -yres, y1), width, height)


def pixel_size_m(grid: Grid) -> float:
    """The ground size of the grid's central pixel in metres, whatever the CRS units.

    Rules given in metres (the SCL cloud dilation, the choice between bilinear and
    average resampling) must not be applied to degrees.
    """
    crs = CRS.from_user_input(grid.crs)
    if crs.is_projected:
        factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        return grid.resolution * (factor or 1.0)
    col, row = grid.width / 2.0, grid.height / 2.0
    (x0, y0), (x1, y1), (x2, y2) = (grid.transform * p for p in ((col, row), (col + 1, row),
                                                                  (col, row + 1)))
    to_lonlat = transformer(crs, "EPSG:4326")
    (lon0, lon1, lon2), (lat0, lat1, lat2) = to_lonlat.transform([x0, x1, x2], [y0, y1, y2])
    geod = Geod(ellps="WGS84")
    dx = geod.inv(lon0, lat0, lon1, lat1)[2]
    dy = geod.inv(lon0, lat0, lon2, lat2)[2]
    return float(min(dx, dy))


def geometry_mask(grid: Grid, geometry: BaseGeometry, *, all_touched: bool = False) -> np.ndarray:
    """Boolean (height, width) array, True where the pixel centre (or any part, with
    all_touched) lies inside `geometry`, which must be in grid.crs."""
    if geometry is None or geometry.is_empty or not geometry.intersects(box(*grid.bounds)):
        return np.zeros(grid.shape, dtype=bool)
    return _rio_geometry_mask(
        [geometry], out_shape=grid.shape, transform=grid.transform,
        all_touched=all_touched, invert=True,
    )
