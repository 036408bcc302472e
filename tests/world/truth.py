"""`World`: the truth API that tests compare mosaics against, pixel by pixel.

Every method takes any grid (CRS, affine transform, shape) and evaluates the world at its
pixel centres, so truth on a 10 m tile grid, a 20 m SCL grid or a user's EPSG:25833 output
grid all come from the same functions of lon/lat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple

import numpy as np
from affine import Affine
from pyproj import Transformer
from shapely import vectorized
from shapely.geometry import Polygon
from shapely.ops import transform as shp_transform

from .geography import (
    Grid,
    Points,
    Tile,
    local_polygon_to_wgs84,
    make_tiles,
    points,
    region_bounds_m,
    region_polygon,
)
from .landscape import ALL_BANDS, WEATHER_PROXY, Landscape
from .passes import (
    CLEAR_UNDER_CLOUDY_PASS,
    CLOUDY_UNDER_CLEAR_PASS,
    DUPLICATE,
    Pass,
    make_passes,
    weather_specs,
)
from .weather import make_misses, make_weather, snow_probability

DEFAULT_INVALID = frozenset({0, 1, 3, 8, 9, 10})
CLOUD_CLASSES = frozenset({8, 9, 10})  # what eo:cloud_cover counts
C1, L2A = "sentinel-2-c1-l2a", "sentinel-2-l2a"
COLLECTIONS = (C1, L2A)
BASELINE, REPROCESSED_BASELINE = "05.10", "05.11"
OLD_CALIBRATION = 0.97  # the superseded _0_ duplicate is 3 % darker than the truth

# Known AOIs: centre (local m) and vertex radii (m) of small irregular hexagons.
AOI_SHAPES = {
    "clear_under_cloudy": ((-700.0, 550.0), (300, 260, 320, 280, 310, 250)),
    "cloudy_under_clear": ((900.0, -500.0), (280, 330, 260, 300, 270, 310)),
}
AOI_PASS = {"clear_under_cloudy": CLEAR_UNDER_CLOUDY_PASS,
            "cloudy_under_clear": CLOUDY_UNDER_CLEAR_PASS}
AOI_TILE = "33UUU"


@dataclass(frozen=True)
class KnownAoi:
    """An AOI with a promise about one pass (see `promise`)."""

    name: str
    geometry: Polygon  # WGS84 lon/lat
    pass_index: int
    tile: str
    promise: str

    @property
    def geometry_wgs84(self) -> Polygon:
        return self.geometry


@dataclass(frozen=True)
class ItemInfo:
    """One item that `build_archive` writes."""

    id: str
    collection: str
    pass_index: int
    tile: str
    datetime: datetime
    sequence: int
    processing_baseline: str
    superseded_by: Optional[str] = None  # newer reprocessing of the same scene
    calibration: float = 1.0  # pixels = truth x calibration (only the superseded one != 1)


def _aoi_polygon(centre, radii) -> Tuple[Polygon, float]:
    cx, cy = centre
    angles = np.radians(np.arange(len(radii)) * 360.0 / len(radii) + 10.0)
    local = Polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles)])
    return local_polygon_to_wgs84(local), float(max(radii)) + 10.0


class World:
    """A deterministic synthetic Sentinel-2 L2A world around south-east Berlin."""

    # Swath edge of the R022 passes: x = a * extent_m + b * y (local metres), no data west of
    # it. A slanted line like a descending orbit's track; subclasses may move it.
    swath_edge = (-0.2, 0.23)

    def __init__(self, extent_km: float = 12.0, seed: int = 2024, calendar: str = "june"
                 ) -> None:
        self.calendar = calendar  # passes.CALENDARS: "june" (10 passes) or "year" (8)
        # the year archive is kept small: sentinel-2-c1-l2a only
        self.collections = COLLECTIONS if calendar == "june" else (C1,)
        if extent_km < 5.0:
            raise ValueError("extent_km must be at least 5 so that all four tiles reach the region")
        self.extent_km, self.seed = float(extent_km), int(seed)
        self.bounds_m = region_bounds_m(self.extent_km)
        self.region = region_polygon(self.extent_km)
        self.tiles: List[Tile] = make_tiles(self.extent_km)
        assert len(self.tiles) == 4, [t.id for t in self.tiles]
        self._tile = {t.id: t for t in self.tiles}
        self.passes: List[Pass] = make_passes(calendar)
        self.landscape = Landscape(self.seed, len(self.passes))
        shapes = {name: _aoi_polygon(*spec) for name, spec in AOI_SHAPES.items()}
        self.known_aois: Dict[str, KnownAoi] = {
            "clear_under_cloudy": KnownAoi(
                "clear_under_cloudy", shapes["clear_under_cloudy"][0], CLEAR_UNDER_CLOUDY_PASS,
                AOI_TILE, "tile eo:cloud_cover >= 60 % while the AOI is 100 % clear"),
            "cloudy_under_clear": KnownAoi(
                "cloudy_under_clear", shapes["cloudy_under_clear"][0], CLOUDY_UNDER_CLEAR_PASS,
                AOI_TILE, "tile eo:cloud_cover <= 10 % while >= 60 % of the AOI is cloud"),
        }
        c1, r1 = AOI_SHAPES["clear_under_cloudy"][0], shapes["clear_under_cloudy"][1]
        c2, r2 = AOI_SHAPES["cloudy_under_clear"][0], shapes["cloudy_under_clear"][1]
        self.weather = make_weather(self.seed, self.bounds_m, weather_specs(calendar),
                                    (*c1, r1), (*c2, r2))
        self.misses = make_misses(self.bounds_m, len(self.passes))  # what SCL misses
        self._pass_tiles: Dict[int, List[Tile]] = {}
        self._cloud_cover: Dict[Tuple[int, str], float] = {}

    def __reduce__(self):  # rebuild (cheaply) instead of pickling caches
        return (type(self), (self.extent_km, self.seed, self.calendar))

    def __repr__(self) -> str:
        extra = "" if self.calendar == "june" else f", calendar={self.calendar!r}"
        return f"World(extent_km={self.extent_km}, seed={self.seed}{extra})"

    # ----------------------------------------------------------------- geometry
    def tile(self, tile_id: str) -> Tile:
        return self._tile[tile_id]

    def swath_edge_x(self, y):
        """x (local m) of the swath edge line at local y; R022 has no data west of it."""
        x0, slope = self.swath_edge
        return x0 * self.extent_km * 1000.0 + slope * np.asarray(y)

    def swath_edge_line_wgs84(self, margin_km: float = 200.0):
        """Two lon/lat points of the swath-edge line, far outside the region."""
        from .geography import to_lonlat

        ys = np.array([-margin_km * 1000.0, margin_km * 1000.0])
        lon, lat = to_lonlat(self.swath_edge_x(ys), ys)
        return list(zip(lon.tolist(), lat.tolist()))

    def _covered(self, p: Pass, pts: Points) -> np.ndarray:
        """True where pass `p` has data: inside one of its tiles and not in the wedge."""
        key = ("covered", self.extent_km, self.seed, self.calendar, self.swath_edge, p.index)
        if key not in pts.cache:
            cov = np.zeros(pts.shape, bool)
            for t in self.pass_tiles(p.index):
                cov |= pts.in_window(t)
            if p.swath_edge:
                cov &= pts.x >= self.swath_edge_x(pts.y)
            pts.cache[key] = cov
        return pts.cache[key]

    def pass_tiles(self, pass_index: int) -> List[Tile]:
        """Tiles with at least one valid SCL pixel in this pass (those get items)."""
        if pass_index not in self._pass_tiles:
            p = self.passes[pass_index]
            keep = []
            for t in self.tiles:
                if not p.swath_edge:
                    keep.append(t)
                    continue
                pts = points(Grid(t.crs, t.transform20, (t.height20, t.width20)))
                if np.any(pts.x >= self.swath_edge_x(pts.y)):
                    keep.append(t)
            self._pass_tiles[pass_index] = keep
        return self._pass_tiles[pass_index]

    # --------------------------------------------------------------- evaluation
    @staticmethod
    def _points(crs, transform, shape) -> Points:
        return points(Grid.of(crs, transform, shape))

    def _surface(self, band: str, p: Pass, pts: Points) -> np.ndarray:
        if band not in ALL_BANDS:
            raise ValueError(f"unknown band {band!r}; the world has {ALL_BANDS}")
        snow = self.weather[p.index].snow_cover(pts)
        return self.landscape.surface(band, p.index, p.season, pts, snow)

    def _scl(self, p: Pass, pts: Points, covered: np.ndarray, sky=None) -> np.ndarray:
        w = self.weather[p.index]
        sky = sky if sky is not None else w.sky(pts)
        scl = sky.classify(self.landscape.surface_scl(pts), w.snow_cover(pts))
        scl = self.misses[p.index].classify(scl, pts)
        scl[~covered] = 0
        return scl

    def reflectance(self, band: str, pass_index: int, crs, transform, shape) -> np.ndarray:
        """True surface reflectance (float32, quantised to 1e-4; snow is part of the surface);
        NaN where the pass has no data (swath-edge wedge, outside every tile of the pass)."""
        p, pts = self.passes[pass_index], self._points(crs, transform, shape)
        r = self._surface(band, p, pts)
        return np.where(self._covered(p, pts), r, np.nan).astype(np.float32)

    def observed(self, band: str, pass_index: int, crs, transform, shape) -> np.ndarray:
        """What the sensor saw (clouds, shadows, cirrus, saturation included); NaN = no data.
        Equals `reflectance` wherever `clear` is true."""
        p, pts = self.passes[pass_index], self._points(crs, transform, shape)
        r = self._observe(band, p, pts)
        return np.where(self._covered(p, pts), r, np.nan).astype(np.float32)

    def _observe(self, band: str, p: Pass, pts: Points, sky=None) -> np.ndarray:
        """The sensor's reflectance over `pts`; bands without weather tables of their own
        take their proxy's cloud tops and cirrus gains (landscape.WEATHER_PROXY)."""
        sky = sky if sky is not None else self.weather[p.index].sky(pts)
        proxy = WEATHER_PROXY[band]
        return self.misses[p.index].observe(proxy, sky.observe(proxy, self._surface(band, p, pts)),
                                            pts)

    def scl(self, pass_index: int, crs, transform, shape) -> np.ndarray:
        """SCL classes (uint8) at the pixel centres; 0 where the pass has no data."""
        p, pts = self.passes[pass_index], self._points(crs, transform, shape)
        return self._scl(p, pts, self._covered(p, pts))

    def missed(self, pass_index: int, crs, transform, shape) -> np.ndarray:
        """True where SCL calls a pixel clear (4/5) although haze or a cloud shadow changed
        it (the phenomena of `weather.Misses`); False where the pass has no data."""
        p, pts = self.passes[pass_index], self._points(crs, transform, shape)
        return self.misses[p.index].missed(pts) & self._covered(p, pts)

    def cloud_probability(self, pass_index: int, crs, transform, shape) -> np.ndarray:
        """The `cloud` asset's values (uint8 %, 0 = 0 % and where the pass has no data)."""
        p, pts = self.passes[pass_index], self._points(crs, transform, shape)
        scl = self._scl(p, pts, self._covered(p, pts))
        return self.misses[p.index].cloud_probability(scl, pts)

    def snow_probability(self, pass_index: int, crs, transform, shape) -> np.ndarray:
        """The `snow` asset's values (uint8 %)."""
        p, pts = self.passes[pass_index], self._points(crs, transform, shape)
        prob = snow_probability(self.weather[p.index].snow_cover(pts), pts.shape)
        return np.where(self._covered(p, pts), prob, 0).astype(np.uint8)

    def clear(self, pass_index: int, crs, transform, shape,
              invalid: Iterable[int] = DEFAULT_INVALID) -> np.ndarray:
        """True where the pass has a usable observation (SCL not in `invalid`)."""
        return ~np.isin(self.scl(pass_index, crs, transform, shape), sorted(invalid))

    def clear_count(self, crs, transform, shape, invalid: Iterable[int] = DEFAULT_INVALID,
                    passes: Optional[Iterable[int]] = None) -> np.ndarray:
        """Number of passes with a clear observation per pixel (uint8)."""
        idx = range(len(self.passes)) if passes is None else passes
        count = np.zeros(tuple(shape), np.uint8)
        for i in idx:
            count += self.clear(i, crs, transform, shape, invalid)
        return count

    # ------------------------------------------------------------- scene facts
    def cloud_cover(self, pass_index: int, tile_id: str) -> float:
        """eo:cloud_cover of the item: % of the tile's valid SCL pixels in classes 8, 9, 10."""
        key = (pass_index, tile_id)
        if key not in self._cloud_cover:
            t = self.tile(tile_id)
            scl = self.scl(pass_index, t.crs, t.transform20, (t.height20, t.width20))
            valid = np.count_nonzero(scl)
            cloudy = np.count_nonzero(np.isin(scl, sorted(CLOUD_CLASSES)))
            self._cloud_cover[key] = 100.0 * cloudy / valid if valid else 0.0
        return self._cloud_cover[key]

    def aoi_scl(self, geometry_wgs84, pass_index: int, tile_id: str = AOI_TILE,
                resolution: int = 20) -> np.ndarray:
        """SCL values of the tile-grid pixels whose centres fall inside the AOI (1-D)."""
        t = self.tile(tile_id)
        to_tile = Transformer.from_crs("EPSG:4326", t.crs, always_xy=True)
        geom = shp_transform(to_tile.transform, geometry_wgs84)
        tr, (rows, cols) = t.grid(resolution)
        minx, miny, maxx, maxy = geom.bounds
        c0, r0 = (int(max(0, math.floor(v))) for v in ~tr * (minx, maxy))
        c1, r1 = (int(min(lim, math.ceil(v))) for v, lim in zip(~tr * (maxx, miny), (cols, rows)))
        sub = tr * Affine.translation(c0, r0)
        shape = (r1 - r0, c1 - c0)
        scl = self.scl(pass_index, t.crs, sub, shape)
        gx, gy = Grid.of(t.crs, sub, shape).native_centres()
        inside = vectorized.contains(geom, gx, gy)
        return scl[inside]

    def aoi_cloud_percent(self, name_or_geometry, pass_index: Optional[int] = None,
                          tile_id: str = AOI_TILE, resolution: int = 20,
                          classes: FrozenSet[int] = CLOUD_CLASSES) -> float:
        """% of the AOI's pixels (with data) whose SCL is in `classes`."""
        if isinstance(name_or_geometry, str):
            aoi = self.known_aois[name_or_geometry]
            geom, pass_index = aoi.geometry, aoi.pass_index if pass_index is None else pass_index
        else:
            geom = name_or_geometry
        scl = self.aoi_scl(geom, pass_index, tile_id, resolution)
        valid = scl[scl != 0]
        return 100.0 * np.count_nonzero(np.isin(valid, sorted(classes))) / max(valid.size, 1)

    def items(self, collection: str) -> List[ItemInfo]:
        """The items `build_archive` writes for `collection`, in archive order."""
        if collection not in self.collections:
            raise ValueError(f"unknown collection {collection!r}; the world has "
                             f"{self.collections}")
        out = []
        for p in self.passes:
            for t in self.pass_tiles(p.index):
                when = p.tile_datetime(t.id)
                if collection == C1:
                    iid = f"S2{p.letter}_T{t.id}_{p.datetime:%Y%m%dT%H%M%S}_L2A"
                    out.append(ItemInfo(iid, C1, p.index, t.id, when, 0, BASELINE))
                    continue
                base = f"S2{p.letter}_{t.id}_{p.datetime:%Y%m%d}"
                if (p.index, t.id) == DUPLICATE:
                    out.append(ItemInfo(f"{base}_0_L2A", L2A, p.index, t.id, when, 0, BASELINE,
                                        f"{base}_1_L2A", OLD_CALIBRATION))
                    out.append(ItemInfo(f"{base}_1_L2A", L2A, p.index, t.id, when, 1,
                                        REPROCESSED_BASELINE))
                else:
                    out.append(ItemInfo(f"{base}_0_L2A", L2A, p.index, t.id, when, 0, BASELINE))
        return out
