"""Area of interest: parse (WKT, GeoJSON, bbox, vector files, place names), reproject, validate.

Every failure is an `AoiError` whose message says what was wrong and what is accepted,
because the text usually comes straight from a user's clipboard or a file they picked.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

from pyproj import CRS, Geod
from shapely import wkt as shapely_wkt
from shapely.geometry import Polygon, box, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union
from shapely.validation import explain_validity

from .errors import AoiError
from .geometry_ops import transform_xy

WGS84 = "EPSG:4326"
ACCEPTED_FORMATS = (
    'WKT (e.g. "POLYGON ((13.3 52.4, 13.5 52.4, 13.5 52.6, 13.3 52.4))"), '
    'GeoJSON (a geometry, Feature or FeatureCollection) or a bounding box '
    '"minx,miny,maxx,maxy"'
)
REPAIR_TOLERANCE = 0.01  # buffer(0) repair only when it keeps the area within 1 %

_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class Aoi:
    """A polygon or multipolygon in a named CRS (anything pyproj understands)."""

    geometry: BaseGeometry
    crs: str = WGS84

    def __post_init__(self) -> None:
        if self.geometry is None or self.geometry.is_empty:
            raise AoiError("The area of interest is empty: draw or choose a polygon.")
        if self.geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise AoiError(
                f"The area of interest must be a polygon, not a {self.geometry.geom_type}."
            )
        try:
            CRS.from_user_input(self.crs)
        except Exception as exc:  # pyproj raises CRSError with a terse message
            raise AoiError(f"Unknown CRS for the area of interest: {self.crs!r}.") from exc

    def to_crs(self, crs: str) -> BaseGeometry:
        """The geometry in another CRS (lon/lat order for geographic CRSs)."""
        if CRS.from_user_input(crs) == CRS.from_user_input(self.crs):
            return self.geometry
        from .grid import transformer  # grid imports this module

        return transform_xy(transformer(self.crs, crs).transform, self.geometry)

    @property
    def wgs84(self) -> BaseGeometry:
        return self.to_crs(WGS84)

    @property
    def area_km2(self) -> float:
        """Geodesic area on the WGS84 ellipsoid: right in any CRS, at any latitude."""
        area, _ = _GEOD.geometry_area_perimeter(self.wgs84)
        return abs(area) / 1e6


# --------------------------------------------------------------------------- text


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BBOX = re.compile(rf"^\s*({_NUMBER})(?:\s*,\s*|\s+)({_NUMBER})(?:\s*,\s*|\s+)"
                   rf"({_NUMBER})(?:\s*,\s*|\s+)({_NUMBER})\s*$")
_EWKT = re.compile(r"^\s*SRID=(\d+)\s*;\s*(.*)$", re.IGNORECASE | re.DOTALL)


def parse_aoi(text: str, crs: str = WGS84) -> Aoi:
    """An AOI from WKT, GeoJSON or bbox text; `crs` applies unless the text names its own."""
    if text is None or not text.strip():
        raise AoiError(f"The area of interest is empty: paste {ACCEPTED_FORMATS}.")
    text = text.strip()
    bbox = _BBOX.match(text)
    if bbox:
        return _validated(_bbox_polygon(*(float(v) for v in bbox.groups())), crs)
    if text[0] in "{[":
        geometry, crs = _from_geojson(text, crs)
        return _validated(geometry, crs)
    ewkt = _EWKT.match(text)
    if ewkt:
        crs, text = f"EPSG:{ewkt.group(1)}", ewkt.group(2)
    try:
        geometry = shapely_wkt.loads(text)
    except Exception as exc:  # shapely raises WKTReadingError or GEOS errors
        raise AoiError(
            f"Could not read the area of interest {_excerpt(text)}: expected {ACCEPTED_FORMATS}."
        ) from exc
    return _validated(geometry, crs)


def _bbox_polygon(minx: float, miny: float, maxx: float, maxy: float) -> Polygon:
    if minx > maxx or miny > maxy:
        raise AoiError(
            f"The bounding box {minx:g},{miny:g},{maxx:g},{maxy:g} has min > max: "
            "write it as minx,miny,maxx,maxy (west,south,east,north)."
        )
    if minx == maxx or miny == maxy:
        raise AoiError("The bounding box has no area: min and max are equal.")
    return box(minx, miny, maxx, maxy)


def _from_geojson(text: str, crs: str):
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AoiError(
            f"The GeoJSON is not valid JSON ({exc}); expected {ACCEPTED_FORMATS}."
        ) from exc
    if not isinstance(data, dict) or "type" not in data:
        raise AoiError(f"The JSON is not GeoJSON (no \"type\"); expected {ACCEPTED_FORMATS}.")
    named = (data.get("crs") or {}).get("properties", {}).get("name")
    if named:  # pre-RFC 7946 GeoJSON may name its CRS, e.g. urn:ogc:def:crs:EPSG::25833
        crs = named
    geometries = list(_geojson_geometries(data))
    if not geometries:
        raise AoiError("The GeoJSON holds no geometry.")
    try:
        shapes = [shape(g) for g in geometries]
    except Exception as exc:
        raise AoiError(f"The GeoJSON geometry cannot be read: {exc}.") from exc
    polygons = [s for s in shapes if s.geom_type in ("Polygon", "MultiPolygon")]
    if not polygons:
        kinds = sorted({s.geom_type for s in shapes})
        raise AoiError(
            f"The GeoJSON holds {', '.join(kinds)}, not a polygon: the area of interest "
            "must be a Polygon or MultiPolygon."
        )
    return (polygons[0] if len(polygons) == 1 else _union(polygons)), crs


def _geojson_geometries(data: dict) -> Iterable[dict]:
    kind = data.get("type")
    if kind == "FeatureCollection":
        for feature in data.get("features") or []:
            yield from _geojson_geometries(feature)
    elif kind == "Feature":
        if data.get("geometry"):
            yield from _geojson_geometries(data["geometry"])
    elif kind == "GeometryCollection":
        for g in data.get("geometries") or []:
            yield from _geojson_geometries(g)
    elif kind in ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                  "MultiPolygon"):
        yield data
    else:
        raise AoiError(f"Unknown GeoJSON type {kind!r}; expected {ACCEPTED_FORMATS}.")


def _union(polygons: List[BaseGeometry]) -> BaseGeometry:
    """Union of valid parts (each repaired first, so one bad ring cannot poison the union)."""
    return unary_union([_repaired(p) for p in polygons])


def _excerpt(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


# --------------------------------------------------------------------------- validation


def _validated(geometry: BaseGeometry, crs: str) -> Aoi:
    """Check type, validity, area and, for lon/lat, the coordinate range."""
    if geometry is None or geometry.is_empty:
        raise AoiError("The area of interest is empty: draw or choose a polygon.")
    if geometry.geom_type == "GeometryCollection":
        parts = [g for g in geometry.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        if parts:
            geometry = _union(parts)
    if geometry.geom_type not in ("Polygon", "MultiPolygon"):
        raise AoiError(
            f"The area of interest must be a polygon, not a {geometry.geom_type}: "
            "draw an area or buffer the line/point first."
        )
    try:
        crs_obj = CRS.from_user_input(crs)
    except Exception as exc:
        raise AoiError(f"Unknown CRS for the area of interest: {crs!r}.") from exc
    if crs_obj.is_geographic:
        _check_lonlat(geometry)
    geometry = _repaired(geometry)
    if geometry.area <= 0:
        raise AoiError("The area of interest has no area (all its points lie on a line).")
    return Aoi(geometry, crs)


def _check_lonlat(geometry: BaseGeometry) -> None:
    minx, miny, maxx, maxy = geometry.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise AoiError(
            f"Coordinates ({minx:g}, {miny:g}, {maxx:g}, {maxy:g}) are outside the longitude "
            "-180..180 / latitude -90..90 range of a lon/lat CRS: are they in metres of "
            "another CRS? Then choose that CRS."
        )


def _repaired(geometry: BaseGeometry) -> BaseGeometry:
    """Valid geometry, or an AoiError: buffer(0) only when it keeps the drawn area."""
    if geometry.is_valid:
        return geometry
    why = explain_validity(geometry)
    intended = _intended_area(geometry)
    if intended <= 0:
        raise AoiError("The area of interest has no area (all its points lie on a line).")
    fixed = geometry.buffer(0)
    if (
        fixed.is_empty
        or fixed.geom_type not in ("Polygon", "MultiPolygon")
        or abs(fixed.area - intended) > REPAIR_TOLERANCE * intended
    ):
        where = re.search(r"\[(.*)\]", why)
        at = f" near ({where.group(1).replace(' ', ', ')})" if where else ""
        kind = "self-intersects" if "Self-intersection" in why else f"is invalid ({why})"
        raise AoiError(
            f"The area of interest polygon {kind}{at}: redraw it without crossing edges "
            "(an automatic repair would change its area by more than 1 %)."
        )
    return fixed


def _intended_area(geometry: BaseGeometry) -> float:
    """The area the user drew, every lobe counted (make_valid splits a bow tie in two)."""
    try:
        from shapely.validation import make_valid

        return make_valid(geometry).area
    except Exception:  # GEOS < 3.8: fall back to the planar ring area
        return abs(geometry.area)


# --------------------------------------------------------------------------- files


def aoi_from_file(path, layer: Optional[str] = None, where: Optional[str] = None) -> Aoi:
    """The union of the polygon features of a vector file (GeoPackage, GeoJSON, Shapefile ...).

    Read with OGR, which ships with QGIS and GDAL, in the layer's own CRS.
    """
    from osgeo import gdal, ogr  # imported here: only this function needs GDAL's vector side

    path = Path(path)
    if not path.exists():
        raise AoiError(f"The AOI file {path} does not exist.")
    gdal.PushErrorHandler("CPLQuietErrorHandler")  # errors become messages, not stderr noise
    try:
        gdal.ErrorReset()
        ds = ogr.Open(str(path))
        if ds is None:
            raise AoiError(
                f"Could not open {path} as a vector file: use a GeoPackage, GeoJSON or Shapefile."
            )
        lyr = _layer(ds, layer, path)
        geometries, others = _layer_polygons(lyr, where)
        if where and gdal.GetLastErrorType() >= gdal.CE_Failure:
            raise AoiError(
                f"The filter {where!r} is not valid for layer {lyr.GetName()!r}: "
                f"{gdal.GetLastErrorMsg()}"
            )
        crs = _layer_crs(lyr, path)
    finally:
        gdal.PopErrorHandler()
    if not geometries:
        found = f" (it holds {', '.join(sorted(others))})" if others else ""
        filt = f" matching {where!r}" if where else ""
        raise AoiError(f"Layer {lyr.GetName()!r} of {path.name} has no polygon{filt}{found}.")
    return _validated(geometries[0] if len(geometries) == 1 else _union(geometries), crs)


def _layer(ds, layer: Optional[str], path: Path):
    names = [ds.GetLayerByIndex(i).GetName() for i in range(ds.GetLayerCount())]
    lyr = ds.GetLayerByName(layer) if layer else ds.GetLayerByIndex(0)
    if lyr is None:
        raise AoiError(
            f"{path.name} has no layer {layer!r}; its layers are: {', '.join(names) or 'none'}."
        )
    return lyr


def _layer_polygons(lyr, where: Optional[str]):
    """(polygons, names of the other geometry types met) of the layer's features."""
    if where and lyr.SetAttributeFilter(where) != 0:
        raise AoiError(f"The filter {where!r} is not valid for layer {lyr.GetName()!r}.")
    geometries, others = [], set()
    lyr.ResetReading()
    for feature in lyr:
        g = feature.GetGeometryRef()
        if g is None:
            continue
        geom = shapely_wkt.loads(g.ExportToIsoWkt())
        if geom.geom_type in ("Polygon", "MultiPolygon"):
            geometries.append(geom)
        elif geom.geom_type == "GeometryCollection":
            geometries += [p for p in geom.geoms if p.geom_type in ("Polygon", "MultiPolygon")]
        else:
            others.add(geom.geom_type)
    return geometries, others


def _layer_crs(lyr, path: Path) -> str:
    srs = lyr.GetSpatialRef()
    if srs is None:
        raise AoiError(f"{path.name} has no CRS (a Shapefile needs its .prj file).")
    srs = srs.Clone()
    if srs.GetAuthorityName(None) is None:
        srs.AutoIdentifyEPSG()
    name, code = srs.GetAuthorityName(None), srs.GetAuthorityCode(None)
    if name and code:
        return f"{name}:{code}"
    return srs.ExportToWkt()


# --------------------------------------------------------------------------- place names

NOMINATIM_URL = "https://nominatim.openstreetmap.org"
VERSION = "0.1.0"
# The plugin is not published yet: no homepage exists. Update when it has one.
HOMEPAGE = "not published yet"
USER_AGENT = f"Clearsky/{VERSION} (QGIS plugin for cloud-free Sentinel-2 mosaics; {HOMEPAGE})"
GEOCODE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Place:
    """One geocoding result: its display name, its outline as an AOI, and its OSM kind."""

    name: str
    aoi: Aoi
    kind: str


class RateLimiter:
    """At most one request per `interval` seconds across all threads (Nominatim's policy).

    Used as a context manager around the whole request: requests run one at a time and
    the next starts `interval` after the previous one *finished*, so the server never
    sees two closer than that, whatever the network delays.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: Optional[float] = None

    def __enter__(self) -> RateLimiter:
        self._lock.acquire()  # held during the request: callers queue up one by one
        if self._last is not None:
            delay = self._last + self.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return self

    def __exit__(self, *exc) -> None:
        self._last = time.monotonic()
        self._lock.release()


NOMINATIM_LIMITER = RateLimiter(1.0)


def geocode(place: str, *, session=None, url: str = NOMINATIM_URL, limit: int = 5) -> List[Place]:
    """Places matching a name, outlined by their OSM boundary (a point gets its bbox).

    Honours the Nominatim usage policy: an identifying User-Agent and at most one
    request per second from this process.
    """
    import requests  # bundled with the plugin; imported here so aoi parsing never needs it

    if not place or not place.strip():
        raise AoiError("Type a place name to search for.")
    http = session or requests.Session()
    params = {"q": place.strip(), "format": "geojson", "polygon_geojson": 1, "limit": int(limit)}
    try:
        with NOMINATIM_LIMITER:
            response = http.get(
                url.rstrip("/") + "/search",
                params=params,
                headers={"User-Agent": USER_AGENT, "Accept": "application/geo+json, */*"},
                timeout=GEOCODE_TIMEOUT,
            )
    except requests.RequestException as exc:
        raise AoiError(
            f"The place search at {url} cannot be reached ({type(exc).__name__}): "
            "check the network connection or draw the area instead."
        ) from exc
    if response.status_code != 200:
        raise AoiError(
            f"The place search at {url} answered HTTP {response.status_code}"
            f"{' (too many requests: wait a minute)' if response.status_code == 429 else ''}."
        )
    try:
        features = response.json().get("features") or []
    except ValueError as exc:
        raise AoiError(f"The place search at {url} did not answer GeoJSON.") from exc
    return [p for p in (_place(f) for f in features) if p is not None]


def _place(feature: dict) -> Optional[Place]:
    props = feature.get("properties") or {}
    name = props.get("display_name") or props.get("name") or "?"
    kind = "/".join(str(props[k]) for k in ("category", "type") if props.get(k))
    geometry = feature.get("geometry")
    outline = None
    if geometry and geometry.get("type") in ("Polygon", "MultiPolygon"):
        outline = shape(geometry)
    elif feature.get("bbox"):
        minx, miny, maxx, maxy = (float(v) for v in feature["bbox"][:4])
        if maxx - minx < 1e-4 or maxy - miny < 1e-4:  # a bare point: about 10 m around it
            minx, miny, maxx, maxy = minx - 1e-4, miny - 1e-4, maxx + 1e-4, maxy + 1e-4
        outline = box(minx, miny, maxx, maxy)
    if outline is None:
        return None
    try:
        return Place(name=name, aoi=_validated(outline, WGS84), kind=kind)
    except AoiError:
        return None  # an unusable outline is skipped, not fatal for the other results
