"""Where the test world lies: the region, the four real MGRS tiles, pixel-centre sampling.

Everything the world "is" (landscape, clouds, swath edge) is a function of lon/lat,
expressed in a local metric frame (metres east/north of the region centre, an
equirectangular projection, so a straight line in lon/lat is a straight line here).
Any raster grid is evaluated by mapping its pixel centres into that frame, so two
tiles in different UTM zones see the same world.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import Polygon, box

CENTRE_LON, CENTRE_LAT = 13.52, 52.34  # south-east Berlin
M_PER_DEG_LAT = 111_250.0
M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(CENTRE_LAT))
TILE_SIZE_M = 109_800
SNAP_M = 60  # 10, 20 and 60 m grids share the tile origin

# (MGRS id, EPSG, upper-left x, upper-left y) of the real 109.8 km tiles.
REAL_TILES = (
    ("32UQD", 32632, 699_960, 5_900_040),
    ("33UUU", 32633, 300_000, 5_900_040),
    ("33UVU", 32633, 399_960, 5_900_040),
    ("33UUT", 32633, 300_000, 5_800_020),
)


def to_local(lon, lat):
    """lon/lat (degrees) -> metres east/north of the region centre."""
    return (np.asarray(lon) - CENTRE_LON) * M_PER_DEG_LON, (
        np.asarray(lat) - CENTRE_LAT
    ) * M_PER_DEG_LAT


def to_lonlat(x, y):
    """Local metres -> lon/lat (degrees); the exact inverse of `to_local`."""
    return CENTRE_LON + np.asarray(x) / M_PER_DEG_LON, CENTRE_LAT + np.asarray(y) / M_PER_DEG_LAT


def region_bounds_m(extent_km: float) -> Tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of the region in local metres: extent wide, 0.75 x tall."""
    half_w, half_h = extent_km * 500.0, extent_km * 375.0
    return -half_w, -half_h, half_w, half_h


def region_polygon(extent_km: float) -> Polygon:
    """The region as a lon/lat rectangle (WGS84)."""
    xmin, ymin, xmax, ymax = region_bounds_m(extent_km)
    (lon0, lon1), (lat0, lat1) = to_lonlat([xmin, xmax], [ymin, ymax])
    return box(float(lon0), float(lat0), float(lon1), float(lat1))


def local_polygon_to_wgs84(poly: Polygon) -> Polygon:
    lon, lat = to_lonlat(*np.asarray(poly.exterior.coords).T)
    return Polygon(list(zip(np.round(lon, 9).tolist(), np.round(lat, 9).tolist())))


@dataclass(frozen=True)
class Tile:
    """A synthetic tile: the real MGRS tile window cut down to the region."""

    id: str
    epsg: int
    crs: str
    transform10: Affine
    width10: int
    height10: int

    @property
    def transform20(self) -> Affine:
        return self.transform10 * Affine.scale(2)

    @property
    def width20(self) -> int:
        return self.width10 // 2

    @property
    def height20(self) -> int:
        return self.height10 // 2

    def grid(self, resolution: int) -> Tuple[Affine, Tuple[int, int]]:
        """(transform, (rows, cols)) of this tile at 10, 20 or 60 m."""
        f = resolution // 10
        return self.transform10 * Affine.scale(f), (self.height10 // f, self.width10 // f)

    @property
    def bounds(self) -> Tuple[float, float, float, float]:
        t = self.transform10
        return t.c, t.f - 10 * self.height10, t.c + 10 * self.width10, t.f

    @property
    def utm_zone(self) -> int:
        return int(self.id[:2])

    @property
    def latitude_band(self) -> str:
        return self.id[2]

    @property
    def grid_square(self) -> str:
        return self.id[3:]

    def footprint_wgs84(self, points_per_edge: int = 16) -> Polygon:
        """The tile window as a lon/lat polygon (edges densified: they curve in lon/lat)."""
        xmin, ymin, xmax, ymax = self.bounds
        t = np.linspace(0.0, 1.0, points_per_edge, endpoint=False)
        xs = np.concatenate([xmin + (xmax - xmin) * t, np.full_like(t, xmax),
                             xmax - (xmax - xmin) * t, np.full_like(t, xmin)])
        ys = np.concatenate([np.full_like(t, ymin), ymin + (ymax - ymin) * t,
                             np.full_like(t, ymax), ymax - (ymax - ymin) * t])
        lon, lat = _to_wgs84(self.crs).transform(xs, ys)
        return Polygon(list(zip(lon.tolist(), lat.tolist())))


def _snap_down(v: float, origin: float) -> float:
    return origin + math.floor((v - origin) / SNAP_M) * SNAP_M


def _snap_up(v: float, origin: float) -> float:
    return origin + math.ceil((v - origin) / SNAP_M) * SNAP_M


def make_tiles(extent_km: float) -> List[Tile]:
    """The real tiles intersected with the region, snapped outward to 60 m, clipped to the tile."""
    xmin, ymin, xmax, ymax = region_bounds_m(extent_km)
    t = np.linspace(0.0, 1.0, 65)
    xs = np.concatenate([xmin + (xmax - xmin) * t, np.full_like(t, xmax),
                         xmax - (xmax - xmin) * t, np.full_like(t, xmin)])
    ys = np.concatenate([np.full_like(t, ymin), ymin + (ymax - ymin) * t,
                         np.full_like(t, ymax), ymax - (ymax - ymin) * t])
    lon, lat = to_lonlat(xs, ys)
    tiles = []
    for tile_id, epsg, ulx, uly in REAL_TILES:
        crs = f"EPSG:{epsg}"
        ex, ey = _from_wgs84(crs).transform(lon, lat)
        x0, x1 = max(ex.min(), ulx), min(ex.max(), ulx + TILE_SIZE_M)
        y0, y1 = max(ey.min(), uly - TILE_SIZE_M), min(ey.max(), uly)
        if x0 >= x1 or y0 >= y1:
            continue  # this real tile does not reach the region
        x0, x1 = max(_snap_down(x0, ulx), ulx), min(_snap_up(x1, ulx), ulx + TILE_SIZE_M)
        y0 = max(_snap_down(y0, uly), uly - TILE_SIZE_M)
        y1 = min(_snap_up(y1, uly), uly)
        tiles.append(Tile(tile_id, epsg, crs, Affine(10.0, 0.0, float(x0), 0.0, -10.0, float(y1)),
                          int(round((x1 - x0) / 10)), int(round((y1 - y0) / 10))))
    return tiles


_TRANSFORMERS: Dict[Tuple[str, str], Transformer] = {}


def _transformer(src: str, dst: str) -> Transformer:
    key = (src, dst)
    if key not in _TRANSFORMERS:
        _TRANSFORMERS[key] = Transformer.from_crs(src, dst, always_xy=True)
    return _TRANSFORMERS[key]


def _to_wgs84(crs: str) -> Transformer:
    return _transformer(crs, "EPSG:4326")


def _from_wgs84(crs: str) -> Transformer:
    return _transformer("EPSG:4326", crs)


def normalize_crs(crs) -> str:
    """Any CRS spelling (str, pyproj or rasterio CRS) -> 'EPSG:n' when it has one, else WKT."""
    c = CRS.from_user_input(crs)
    code = c.to_epsg()
    return f"EPSG:{code}" if code is not None else c.to_wkt()


def normalize_transform(transform) -> Affine:
    if isinstance(transform, Affine):
        return transform
    return Affine(*tuple(transform)[:6])


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform (rasterio order), shape (rows, cols)."""

    crs: str
    transform: Affine
    shape: Tuple[int, int]

    @classmethod
    def of(cls, crs, transform, shape) -> Grid:
        return cls(normalize_crs(crs), normalize_transform(transform),
                   (int(shape[0]), int(shape[1])))

    def native_centres(self) -> Tuple[np.ndarray, np.ndarray]:
        rows, cols = self.shape
        c, r = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
        t = self.transform
        return t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f


class Points:
    """Pixel centres of a grid in lon/lat and local metres, plus a scratch cache."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        gx, gy = grid.native_centres()
        if grid.crs == "EPSG:4326":
            lon, lat = gx, gy
        else:
            lon, lat = _to_wgs84(grid.crs).transform(gx, gy)
        self.lon, self.lat = np.asarray(lon), np.asarray(lat)
        self.x, self.y = to_local(self.lon, self.lat)
        self.x32, self.y32 = self.x.astype(np.float32), self.y.astype(np.float32)
        self.cache: dict = {}

    @property
    def shape(self) -> Tuple[int, int]:
        return self.grid.shape

    def in_window(self, tile: Tile) -> np.ndarray:
        """True where the pixel centre lies inside the tile window."""
        key = ("window", tile)
        if key not in self.cache:
            if self.grid.crs == tile.crs:
                tx, ty = self.grid.native_centres()
            else:
                tx, ty = _from_wgs84(tile.crs).transform(self.lon, self.lat)
            xmin, ymin, xmax, ymax = tile.bounds
            self.cache[key] = (tx >= xmin) & (tx < xmax) & (ty > ymin) & (ty <= ymax)
        return self.cache[key]


_POINTS: OrderedDict[Grid, Points] = OrderedDict()
_POINTS_MAX = 10  # the 10 m and 20 m grids of all four tiles, plus two


def points(grid: Grid) -> Points:
    """Pixel centres of `grid` (a small LRU cache: tiles are evaluated many times)."""
    if grid in _POINTS:
        _POINTS.move_to_end(grid)
        return _POINTS[grid]
    p = Points(grid)
    _POINTS[grid] = p
    while len(_POINTS) > _POINTS_MAX:
        _POINTS.popitem(last=False)
    return p
