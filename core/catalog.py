"""STAC search, and STAC item -> Scene whatever the catalog's dialect.

Earth Search v1 names assets by band common name (`red`, `scl`), Planetary Computer and
Earth Search v0 by band number (`B04`, `SCL`); CRS, tile, orbit and baseline live under
different property names in each. Everything downstream sees only `Scene`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import posixpath
import re
import threading
import time
from datetime import datetime, timezone
from functools import partial
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from shapely.affinity import translate
from shapely.geometry import box, mapping, shape
from shapely.ops import unary_union

from .aoi import USER_AGENT
from .errors import CancelledError, CatalogError
from .geometry_ops import transform_xy
from .progress import Progress
from .redact import redact_text
from .scene import BAND_RESOLUTION, CLOUD, SCL, SNOW, VISUAL, Radiometry, Scene

# Sentinel-2 band numbers -> common names used by the engine (L2A has no B10).
BAND_NUMBERS = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B11": "swir16", "B12": "swir22",
}
BASELINE_04_DATE = datetime(2022, 1, 25, tzinfo=timezone.utc)  # BOA_ADD_OFFSET introduced
DEFAULT_SCALE = 0.0001
OFFSET_04 = -0.1  # BOA_ADD_OFFSET -1000 DN x 0.0001
BOA_FLAGS = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")
# Collections whose files had the offset removed by the publisher even where items say
# nothing: Earth Search v0 reprocessed its 04.00+ scenes with the offset applied
# (cirrus-geo/cirrus-earth-search#21) and flags newer ones with sentinel:boa_offset_applied.
OFFSET_REMOVED_COLLECTIONS = frozenset({"sentinel-s2-l2a-cogs"})

PAGE_SIZE = 100
MAX_ITEMS = 5000
TIMEOUT = 30.0  # seconds without a byte from the server (read time-out)
CONNECT_TIMEOUT = 10.0  # seconds to connect
DEADLINE = 60.0  # seconds for one whole request (a trickling server cannot hold it longer)
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # one page of JSON never needs more
CANCEL_POLL_S = 0.1  # how often a waiting request checks progress.is_cancelled()
MALFORMED = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
             RecursionError)
REMOTE_SCHEMES = ("http://", "https://", "s3://")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_BNUM = re.compile(r"^B0?(\d{1,2}|8A)$", re.IGNORECASE)
_TILE = re.compile(r"(?:^|_)T?(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z]{2})(?=_|$)")
_ORBIT = re.compile(r"_R(\d{3})_")
_BASELINE = re.compile(r"_N(\d{2})(\d{2})_")
_SEQUENCE = re.compile(r"_(\d+)_L2A$")
_SENSING = re.compile(r"_S(\d{8}T\d{6})_")


# --------------------------------------------------------------------------- item -> Scene


def scene_from_item(
    item,
    collection: Optional[str] = None,
    *,
    item_assets: Optional[Mapping[str, dict]] = None,
    base_href: Optional[str] = None,
) -> Scene:
    """A Scene from a STAC item (dict or pystac.Item), or CatalogError saying why not.

    `item_assets` (the collection's) helps name assets that carry no `eo:bands`;
    `base_href` resolves relative asset hrefs (default: the item's canonical/self link).
    """
    d = _as_dict(item)
    item_id = _item_id(d)
    try:
        return _scene(d, item_id, collection, item_assets, base_href)
    except CatalogError:
        raise
    except MALFORMED as exc:
        why = " ".join(str(exc).split())[:160]
        raise CatalogError(f"{item_id} is a malformed STAC item ({type(exc).__name__}: "
                           f"{why}).") from exc


def _item_id(d: Mapping) -> str:
    value = d.get("id")
    if isinstance(value, str) and value.strip():
        return redact_text(value.strip()[:200])
    return "<item without id>" if value in (None, "") else f"<item with id {str(value)[:80]!r}>"


def _scene(d: dict, item_id: str, collection, item_assets, base_href) -> Scene:
    props = d.get("properties") or {}
    if not isinstance(props, Mapping):
        raise CatalogError(f"{item_id} is a malformed STAC item (its properties are not an "
                           "object).")
    if not isinstance(d.get("assets"), Mapping):
        raise CatalogError(f"{item_id} is a malformed STAC item (its assets are not an object).")
    if not isinstance(item_assets, Mapping):
        item_assets = {}
    _check_sentinel2_l2a(d, item_id)
    assets = _resolved_assets(d, base_href)
    names = asset_names(assets, item_assets)
    if SCL not in names:
        raise CatalogError(f"{item_id} is not a Sentinel-2 L2A item: it has no SCL asset.")
    if not any(n in BAND_RESOLUTION for n in names):
        raise CatalogError(f"{item_id} has no reflectance band asset (red, green, nir ...).")
    crs = _crs(d, [assets[k] for k in names.values()])
    if crs is None:
        raise CatalogError(f"{item_id} has no CRS (neither proj:epsg nor proj:code).")
    if not _known_crs(crs):
        raise CatalogError(f"{item_id} has an unknown CRS ({crs[:60]}).")
    return Scene(
        id=item_id,
        collection=collection or d.get("collection") or "",
        datetime=_datetime(props, item_id),
        platform=_platform(props, item_id),
        tile=_tile(d) or "",
        crs=crs,
        footprint=_footprint(d, item_id),
        assets=_with_thumbnail({name: assets[key]["href"] for name, key in names.items()},
                               assets),
        radiometry=_radiometry(d, _band_assets(names, assets)),
        cloud_cover=_float(props.get("eo:cloud_cover")),
        relative_orbit=_relative_orbit(d),
        processing_baseline=_baseline(d),
        sequence=_sequence(d),
        sun_azimuth=_angle(props.get("view:sun_azimuth"), 0.0, 360.0),
        sun_elevation=_angle(props.get("view:sun_elevation"), 0.0, 90.0),
        properties=dict(props),
    )


def _as_dict(item) -> dict:
    if isinstance(item, Mapping):
        return dict(item)
    if item is None or isinstance(item, (str, bytes, int, float, list, tuple)):
        raise CatalogError(f"Not a STAC item: {type(item).__name__} {str(item)[:40]!r}.")
    if hasattr(item, "to_dict"):  # pystac.Item: make asset hrefs absolute where it can
        d = item.to_dict(transform_hrefs=False)
        for key, asset in getattr(item, "assets", {}).items():
            with contextlib.suppress(Exception):  # no self href: keep the href as written
                d["assets"][key]["href"] = asset.get_absolute_href() or asset.href
        return d
    raise CatalogError(f"Not a STAC item: {type(item).__name__}.")


def _check_sentinel2_l2a(d: dict, item_id: str) -> None:
    props = d.get("properties") or {}
    platform = str(props.get("platform") or "").lower()
    if platform and not platform.startswith("sentinel-2"):
        raise CatalogError(f"{item_id} is not a Sentinel-2 item (platform {platform}).")
    ptype = props.get("s2:product_type") or props.get("sentinel2:product_type") or ""
    if ptype and ptype != "S2MSI2A":
        raise CatalogError(
            f"{item_id} is not a Sentinel-2 L2A item (product type {ptype}: no SCL scene "
            "classification to mask clouds with)."
        )


def _resolved_assets(d: dict, base_href: Optional[str]) -> Dict[str, dict]:
    base = base_href or _link(d, "canonical") or _link(d, "self")
    out = {}
    for key, asset in (d.get("assets") or {}).items():
        if isinstance(asset, Mapping) and asset.get("href"):
            out[key] = dict(asset, href=_resolve(str(asset["href"]), base))
    return out


def _link(d: dict, rel: str) -> Optional[str]:
    links = d.get("links")
    for link in links if isinstance(links, list) else []:
        href = link.get("href") if isinstance(link, Mapping) else ""
        href = href if isinstance(href, str) else ""
        if link.get("rel") == rel and (_SCHEME.match(href) or href.startswith("/")):
            return href
    return None


def _resolve(href: str, base: Optional[str]) -> str:
    """Relative hrefs resolved against the item's location; absolute ones unchanged."""
    if _SCHEME.match(href) or href.startswith("/") or not base:
        return href
    if href.startswith("file:"):
        return href
    parts = urlsplit(base)
    path = posixpath.normpath(posixpath.join(posixpath.dirname(parts.path), href))
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


THUMBNAIL = "thumbnail"  # Scene.assets key of a small preview image (PNG/JPEG), if any


def _with_thumbnail(hrefs: Dict[str, str], assets: Mapping[str, dict]) -> Dict[str, str]:
    """`hrefs` plus the item's thumbnail (key or role "thumbnail", http(s) only)."""
    for key, asset in assets.items():
        found = asset.get("roles")
        roles: List[Any] = found if isinstance(found, list) else []
        href = asset.get("href")
        if (key.lower() == THUMBNAIL or THUMBNAIL in roles) and isinstance(href, str) and \
                href.startswith(("http://", "https://")):
            return {**hrefs, THUMBNAIL: href}
    return hrefs


def asset_names(
    assets: Mapping[str, dict], item_assets: Optional[Mapping] = None
) -> Dict[str, str]:
    """Engine band name ("red", "scl", "visual") -> asset key, by common name, not by key.

    Several assets may carry one band (`red` COG and `red-jp2`, `red_20m`): the COG wins,
    then the asset whose key is the band itself.
    """
    candidates: Dict[str, List[str]] = {}
    for key, asset in assets.items():
        template = (item_assets or {}).get(key) or {}
        name = _asset_band(key, asset, template)
        if name:
            candidates.setdefault(name, []).append(key)
    chosen = {name: min(keys, key=partial(_by_preference, assets, name))
              for name, keys in candidates.items()}
    # Probability layers only as COGs: the old collection's JPEG2000 ones sit in a
    # requester-pays bucket, and a whole-file read per scene would defeat range reads.
    return {name: key for name, key in chosen.items()
            if name not in (CLOUD, SNOW) or _preference(key, assets[key], name)[0] is False}


def _by_preference(assets: Mapping[str, dict], name: str, key: str) -> tuple:
    return _preference(key, assets[key], name)


def _asset_band(key: str, asset: Mapping, template: Mapping) -> Optional[str]:
    low = key.lower()
    base = re.split(r"[-_]", low)[0]
    if low == SCL or base == SCL:
        return SCL
    if low == VISUAL or base == VISUAL:
        return VISUAL
    if low in _PROBABILITY_KEYS:
        return _PROBABILITY_KEYS[low]
    if base in (CLOUD, SNOW) and not _eo_bands(asset):  # cloud-jp2, snow_20m ...
        return base
    bands = _eo_bands(asset) or _eo_bands(template)
    if bands is not None:
        if len(bands) != 1:
            return None  # multi-band (true colour previews): never a reflectance band
        b = bands[0]
        common = b.get("common_name") or b.get("eo:common_name")
        if common in BAND_RESOLUTION:
            return common
        name = str(b.get("name") or "")
        if _bnumber(name):
            return _bnumber(name)
        if name in BAND_RESOLUTION:
            return name
    return _bnumber(key) or (key if key in BAND_RESOLUTION else None)


# Probability layers: Earth Search c1 `cloud`/`snow`, Sen2Cor's MSK_CLDPRB / MSK_SNWPRB.
_PROBABILITY_KEYS = {"cloud": CLOUD, "snow": SNOW, "msk_cldprb": CLOUD, "msk_snwprb": SNOW,
                     "cloud_probability": CLOUD, "snow_probability": SNOW,
                     "cldprb": CLOUD, "snwprb": SNOW}


def _angle(value, low: float, high: float) -> Optional[float]:
    """A sun angle in degrees, or None when missing, not a number or out of range."""
    number = _float(value)
    if number is None or not (low <= number <= high):
        return None
    return number


def _eo_bands(asset: Mapping) -> Optional[list]:
    bands = asset.get("eo:bands") or asset.get("bands")
    return bands if isinstance(bands, list) and bands else None


def _bnumber(name: str) -> Optional[str]:
    m = _BNUM.match(name.strip())
    if not m:
        return None
    num = m.group(1).upper()
    return BAND_NUMBERS.get("B8A" if num == "8A" else f"B{int(num):02d}")


def _preference(key: str, asset: Mapping, name: str) -> tuple:
    kind = str(asset.get("type") or "").lower()
    href = str(asset.get("href") or "").lower()
    cog = "tiff" in kind or href.endswith((".tif", ".tiff"))
    exact = key.lower() == name or _bnumber(key) == name
    return (not cog, not exact, len(key), key)


def _crs(d: dict, assets: Iterable[Mapping]) -> Optional[str]:
    for src in [d.get("properties") or {}, *assets]:
        epsg = src.get("proj:epsg")
        if epsg:
            if isinstance(epsg, float) and epsg.is_integer():
                epsg = int(epsg)
            if isinstance(epsg, str) and epsg.strip().isdigit():
                epsg = int(epsg.strip())
            if isinstance(epsg, bool) or not isinstance(epsg, int):
                raise CatalogError(f"{_item_id(d)} has an unreadable CRS (proj:epsg "
                                   f"{str(epsg)[:40]!r}).")
            return f"EPSG:{epsg}"
        code = src.get("proj:code")
        if code:
            if not isinstance(code, str):
                raise CatalogError(f"{_item_id(d)} has an unreadable CRS (proj:code "
                                   f"{str(code)[:40]!r}).")
            return str(code)
    wkt = (d.get("properties") or {}).get("proj:wkt2")
    return str(wkt) if wkt else None


@functools.lru_cache(maxsize=256)
def _known_crs(text: str) -> bool:
    """True when PROJ knows the CRS (a catalog can name any number as its EPSG code)."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(text)
    except (CRSError, TypeError, ValueError):
        return False
    return True


def _datetime(props: Mapping, item_id: str) -> datetime:
    from dateutil.parser import isoparse

    value = props.get("datetime") or props.get("start_datetime")
    try:
        if not isinstance(value, str):
            raise TypeError(type(value).__name__)
        dt = isoparse(value)
        dt.replace(tzinfo=timezone.utc).timestamp()  # within what datetime can handle
    except (TypeError, ValueError, OverflowError) as exc:
        raise CatalogError(f"{item_id} has no readable datetime ({value!r}).") from exc
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _platform(props: Mapping, item_id: str) -> str:
    platform = str(props.get("platform") or "").lower()
    if platform:
        return platform
    m = re.match(r"^S2([A-D])_", item_id)
    return f"sentinel-2{m.group(1).lower()}" if m else "sentinel-2"


def _texts(d: dict) -> List[str]:
    """Identifiers that embed tile, orbit and baseline, most specific first."""
    p = d.get("properties") or {}
    keys = ("s2:product_uri", "sentinel:product_id", "sentinel2:product_title", "s2:granule_id")
    return [str(p[k]) for k in keys if p.get(k)] + [str(d.get("id") or "")]


def _tile(d: dict) -> Optional[str]:
    p = d.get("properties") or {}
    for prefix in ("mgrs:", "sentinel:"):
        zone, band, square = (p.get(prefix + k) for k in ("utm_zone", "latitude_band",
                                                            "grid_square"))
        if zone and band and square and str(zone).isdigit():
            return f"{int(zone):02d}{band}{square}"
    for value in (p.get("s2:mgrs_tile"), str(p.get("grid:code") or "").replace("MGRS-", "")):
        m = _TILE.search(str(value or ""))
        if m:
            return f"{int(m.group(1)):02d}{m.group(2)}{m.group(3)}"
    for text in _texts(d):
        m = _TILE.search(text.replace(".SAFE", ""))
        if m:
            return f"{int(m.group(1)):02d}{m.group(2)}{m.group(3)}"
    return None


def _relative_orbit(d: dict) -> Optional[int]:
    p = d.get("properties") or {}
    for key in ("sat:relative_orbit", "s2:relative_orbit", "sentinel2:relative_orbit_number"):
        if p.get(key) is not None:
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                return int(p[key])
    for text in _texts(d):
        m = _ORBIT.search(text + "_")
        if m:
            return int(m.group(1))
    return None


def _baseline(d: dict) -> Optional[str]:
    p = d.get("properties") or {}
    for key in ("s2:processing_baseline", "sentinel:processing_baseline",
                "sentinel2:processing_baseline"):
        if p.get(key):
            return str(p[key])
    for text in _texts(d):
        m = _BASELINE.search(text)
        if m:
            return f"{m.group(1)}.{m.group(2)}"
    return None


def _sequence(d: dict) -> int:
    p = d.get("properties") or {}
    for key in ("s2:sequence", "sentinel:sequence"):
        if p.get(key) is not None and str(p[key]).isdigit():
            return int(p[key])
    m = _SEQUENCE.search(str(d.get("id") or ""))
    return int(m.group(1)) if m else 0


def _footprint(d: dict, item_id: str):
    try:
        if d.get("geometry"):
            geom = shape(d["geometry"])
        elif d.get("bbox"):
            geom = box(*(float(v) for v in d["bbox"][:4]))
        else:
            raise CatalogError(f"{item_id} has neither geometry nor bbox.")
        if geom.is_empty or not all(math.isfinite(v) for v in geom.bounds):
            raise CatalogError(f"{item_id} has an empty or unreadable geometry.")
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise CatalogError(f"{item_id} has a {geom.geom_type} footprint, not a polygon.")
    except CatalogError:
        raise
    except Exception as exc:
        raise CatalogError(f"{item_id} has an unreadable geometry: {exc}.") from exc
    geom = geom if geom.is_valid else geom.buffer(0)
    return _split_antimeridian(geom)


def _split_antimeridian(geom):
    """A footprint drawn across the antimeridian (lon span > 180) as two parts, not a belt."""
    minx, _, maxx, _ = geom.bounds
    if maxx - minx <= 180:
        return geom
    def east(x, y, z=None):
        return np.where(np.asarray(x) < 0, np.asarray(x) + 360.0, x), y

    shifted = transform_xy(east, geom)
    if not shifted.is_valid:
        shifted = shifted.buffer(0)
    left = shifted.intersection(box(-180, -90, 180, 90))
    right = translate(shifted.intersection(box(180, -90, 540, 90)), xoff=-360.0)
    return unary_union([p for p in (left, right) if not p.is_empty])


def _float(value) -> Optional[float]:
    """A finite number, else None (a cloud cover "abc", NaN or true is unknown, not 0)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- radiometry


def resolve_radiometry(item) -> Radiometry:
    """Scale and offset that turn this item's DNs into reflectance (DN 0 stays nodata).

    Since processing baseline 04.00 (ESA, 25 Jan 2022) L2A files store
    DN = reflectance x 10000 + 1000 (BOA_ADD_OFFSET -1000). Publishers differ, so:

    1. `earthsearch:boa_offset_applied` (or v0's `sentinel:boa_offset_applied`) true:
       the publisher already subtracted the offset from the pixels -> offset 0, scale
       0.0001, whatever `raster:bands` says. Earth Search `sentinel-2-l2a` keeps
       `raster:bands` offset -0.1 on such items (Element84/earth-search#66, #71;
       cirrus-geo/cirrus-earth-search#21 and #33).
    2. Otherwise `raster:bands` scale/offset of the reflectance assets, when they carry
       them: right for `sentinel-2-c1-l2a` (raw DNs, 0.0001 / -0.1) and for
       `sentinel-2-l2a` items before 04.00 (offset 0).
    3. No `raster:bands` scale/offset (Planetary Computer, Earth Search v0): processing
       baseline >= 04.00 -> offset -0.1, unless the collection is one known to deliver
       offset-free pixels (OFFSET_REMOVED_COLLECTIONS); baseline < 04.00 -> offset 0;
       no baseline at all -> by date: before 2022-01-25 offset 0, else -0.1.

    Caveat (issues #66/#71 and cirrus #33): some Earth Search `sentinel-2-l2a` items are
    flagged false although their pixels are offset-free; no metadata tells them apart.
    """
    d = _as_dict(item)
    assets = _resolved_assets(d, None)
    return _radiometry(d, _band_assets(asset_names(assets), assets))


def _band_assets(names: Mapping[str, str], assets: Mapping[str, dict]) -> List[Mapping]:
    """Reflectance band assets, the visible and NIR ones first: a mosaic reads those."""
    order = [b for b in ("red", "green", "blue", "nir") if b in names]
    order += [b for b in BAND_RESOLUTION if b in names and b not in order]
    return [assets[names[b]] for b in order]


def _radiometry(d: dict, band_assets: Sequence[Mapping]) -> Radiometry:
    props = d.get("properties") or {}
    if any(props.get(flag) is True for flag in BOA_FLAGS):
        return Radiometry(scale=DEFAULT_SCALE, offset=0.0)
    for asset in band_assets:
        for rb in asset.get("raster:bands") or []:
            if isinstance(rb, Mapping) and ("scale" in rb or "offset" in rb):
                scale = rb.get("scale")
                return Radiometry(
                    scale=float(DEFAULT_SCALE if scale is None else scale),
                    offset=float(rb.get("offset") or 0.0),
                )
    baseline = _baseline(d)
    collection = str(d.get("collection") or "")
    if baseline is not None:
        if _version(baseline) >= (4, 0) and collection not in OFFSET_REMOVED_COLLECTIONS:
            return Radiometry(scale=DEFAULT_SCALE, offset=OFFSET_04)
        return Radiometry(scale=DEFAULT_SCALE, offset=0.0)
    when = _datetime(props, str(d.get("id")))
    if when < BASELINE_04_DATE or collection in OFFSET_REMOVED_COLLECTIONS:
        return Radiometry(scale=DEFAULT_SCALE, offset=0.0)
    return Radiometry(scale=DEFAULT_SCALE, offset=OFFSET_04)


def _version(baseline: Optional[str]) -> Tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(baseline).split("."))
    except ValueError:
        return (-1,)


# --------------------------------------------------------------------------- duplicates


def dedupe(scenes: Sequence[Scene]) -> Tuple[List[Scene], List[Tuple[Scene, str]]]:
    """Drop reprocessed duplicates, keeping the newest version of each acquisition.

    Two items are one acquisition when collection, tile and platform agree and either
    the sensing time (to the second) or the datastrip's sensing start does. The newest
    has the higher processing baseline, then the higher sequence, then the later
    `updated`. Input order is kept for the survivors.
    """
    parent = list(range(len(scenes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: Dict[tuple, int] = {}
    for i, s in enumerate(scenes):
        for key in _acquisition_keys(s):
            if key in seen:
                parent[find(i)] = find(seen[key])
            else:
                seen[key] = i
    groups: Dict[int, List[int]] = {}
    for i in range(len(scenes)):
        groups.setdefault(find(i), []).append(i)
    keep, dropped = set(), []
    for members in groups.values():
        best = max(members, key=lambda i: _newness(scenes[i]))
        keep.add(best)
        for i in members:
            if i != best:
                s, b = scenes[i], scenes[best]
                why = (f"listed twice by the catalog ({b.id})" if s.id == b.id
                       else f"reprocessed duplicate of {b.id}")
                dropped.append((s, why))
    return [s for i, s in enumerate(scenes) if i in keep], dropped


def _acquisition_keys(s: Scene) -> List[tuple]:
    base = (s.collection, s.tile, s.platform)
    keys: List[tuple] = [base + ("t", s.datetime.replace(microsecond=0))]
    m = _SENSING.search(str(s.properties.get("s2:datastrip_id") or "") + "_")
    if m:
        keys.append(base + ("ds", m.group(1)))
    return keys


def _newness(s: Scene) -> tuple:
    from dateutil.parser import isoparse

    try:
        updated = isoparse(str(s.properties.get("updated"))).timestamp()
    except (TypeError, ValueError, OverflowError):
        updated = float("-inf")
    return (_version(s.processing_baseline), s.sequence, updated)


# --------------------------------------------------------------------------- search


def search(
    params,
    progress: Progress,
    *,
    page_size: int = PAGE_SIZE,
    max_items: int = MAX_ITEMS,
    timeout: Tuple[float, float] = (CONNECT_TIMEOUT, TIMEOUT),
    deadline: float = DEADLINE,
) -> Tuple[List[Scene], List[Tuple[Scene, str]], List[str]]:
    """(candidates, rejected with a reason, notes) for the AOI, dates and collection.

    Scene cloud is filtered on the server when it can (Query or CQL2 Filter) and always
    again here: some servers ignore the filter. Reprocessed duplicates are dropped.
    An item that cannot become a Scene (malformed JSON values, no CRS, ...) is skipped
    with a note naming it and why; the other items are used.

    Every request has `timeout` (connect, read) seconds and at most `deadline` seconds in
    all; `progress.is_cancelled()` is checked every CANCEL_POLL_S while a request waits,
    so a cancel takes effect within a fraction of a second even when the server stalls.
    The HTTP session (and its sockets) is closed before this returns. Messages and notes
    carry no credentials or query strings (see redact).
    """
    from .deps import pystac_client

    url = params.catalog_url.rstrip("/")
    stac_io = _stac_io(pystac_client, progress, timeout, deadline,
                       headers=getattr(params, "catalog_headers", None),
                       proxy=getattr(params, "proxy", ""),
                       no_proxy=getattr(params, "no_proxy", ""))
    try:
        return _search(pystac_client, stac_io, url, params, progress, page_size, max_items)
    finally:
        stac_io.close()


def _search(pystac_client, stac_io, url, params, progress, page_size, max_items):
    client = _open(pystac_client, url, stac_io)
    shown = redact_text(url)
    item_assets = _collection_item_assets(client, url, params.collection)
    kwargs: Dict[str, Any] = {
        "collections": [params.collection],
        "intersects": mapping(params.aoi.wgs84),
        "datetime": f"{params.start.isoformat()}T00:00:00Z/{params.end.isoformat()}T23:59:59Z",
        "limit": page_size,
        "max_items": max_items + 1,
    }
    kwargs.update(_cloud_filter(client, pystac_client, params.max_scene_cloud))
    progress.info(f"Searching {params.collection} at {shown}")
    items, notes = _fetch(client, kwargs, url, progress, max_items)

    scenes: List[Scene] = []
    for d in items:
        try:
            scenes.append(scene_from_item(d, params.collection, item_assets=item_assets))
        except CatalogError as exc:
            name = _item_id(d) if isinstance(d, Mapping) else "?"
            notes.append(redact_text(f"Skipped item {name}: {exc}"))
        except Exception as exc:  # never let one item end the search
            name = _item_id(d) if isinstance(d, Mapping) else "?"
            notes.append(redact_text(f"Skipped item {name}: {name} could not be read "
                                     f"({type(exc).__name__}: {str(exc)[:160]})."))
    scenes, rejected = dedupe(scenes)
    candidates: List[Scene] = []
    for s in scenes:
        reason = _rejection(s, params, remote=url.startswith(("http://", "https://")))
        if reason:
            rejected.append((s, reason))
        else:
            candidates.append(s)
    progress.info(
        f"{len(items)} item(s) found: {len(candidates)} candidate(s), {len(rejected)} rejected"
    )
    progress.set_progress(100)
    return candidates, rejected, notes


_IO_CLASSES: Dict[int, type] = {}


def list_collections(url: str, headers: Optional[Mapping[str, str]] = None,
                     progress: Optional[Progress] = None, proxy: str = "",
                     no_proxy: str = "") -> List[Tuple[str, str]]:
    """(id, title) of every collection a STAC API offers: a connection's Test button."""
    from .deps import pystac_client

    stac_io = _stac_io(pystac_client, progress, headers=headers, proxy=proxy,
                       no_proxy=no_proxy)
    try:
        client = _open(pystac_client, url.rstrip("/"), stac_io)
        try:
            found = [(c.id, c.title or "") for c in client.get_collections()]
        except CancelledError:
            raise
        except Exception as exc:
            raise CatalogError(f"{redact_text(url)} answered, but its collections could not "
                               f"be listed: {redact_text(str(exc))[:200]}") from exc
        return sorted(found)
    finally:
        stac_io.close()


def _stac_io(pystac_client, progress: Optional[Progress], timeout=(CONNECT_TIMEOUT, TIMEOUT),
             deadline: float = DEADLINE, headers: Optional[Mapping[str, str]] = None,
             proxy: str = "", no_proxy: str = ""):
    """A StacApiIO whose every request is bounded: `timeout` (connect, read) seconds,
    `deadline` seconds in all, at most MAX_ANSWER_BYTES, and cancellable through `progress`.

    `proxy` ("http://[user:password@]host:port", the QGIS proxy) carries every request
    except those to the hosts of `no_proxy` ("a.org,b.net"); "" leaves requests' own
    choice (the HTTP(S)_PROXY environment variables).

    Retries: connection failures twice, 429/502/503/504 three times with back-off, all
    within the deadline; a read time-out is not retried (a stalled server rarely recovers).
    Call `.close()` when done: it closes the HTTP session and its sockets.
    """
    from urllib3 import Retry

    cls = _IO_CLASSES.get(id(pystac_client))
    if cls is None:
        cls = _IO_CLASSES[id(pystac_client)] = _bounded_io_class(pystac_client)
    retry = Retry(total=3, connect=2, read=0, backoff_factor=0.5,
                  status_forcelist=(429, 502, 503, 504), allowed_methods=None,
                  raise_on_status=False)
    sent = {"User-Agent": USER_AGENT, **(headers or {})}  # auth headers: sent, never stored
    io = cls(progress, tuple(timeout), float(deadline), headers=sent,
             timeout=tuple(timeout), max_retries=retry)
    io.no_proxy = no_proxy or ""
    if proxy:
        io.session.proxies = {"http": proxy, "https": proxy}
    return io


def _bounded_io_class(pystac_client):
    """StacApiIO subclass of this pystac_client (the vendored or the venv's copy)."""
    base: Any = pystac_client.stac_api_io.StacApiIO
    api_error = pystac_client.exceptions.APIError

    class BoundedStacApiIO(base):
        def __init__(self, progress, timeouts, deadline, **kwargs):
            self.progress, self.timeouts, self.deadline = progress, timeouts, deadline
            self._lock = threading.Lock()
            self._responses: list = []  # responses being read (shut down on abandon)
            self.closed = False
            self.no_proxy = ""  # hosts that bypass the session's proxy (see _stac_io)
            super().__init__(**kwargs)

        def update(self, *args, timeout=None, **kwargs):
            # Client.open calls update(timeout=None): keep ours instead of "no time-out"
            super().update(*args, timeout=timeout or self.timeouts, **kwargs)

        def request(self, href, method=None, headers=None, parameters=None):
            if self.closed:
                raise api_error("the catalog session is closed")
            done, box_ = threading.Event(), {}
            end = time.monotonic() + self.deadline

            def work():
                try:
                    box_["text"] = self._request(href, method, headers, parameters, end)
                except BaseException as exc:  # handed to the waiting thread
                    box_["error"] = exc
                finally:
                    done.set()

            threading.Thread(target=work, name="clearsky-stac-request", daemon=True).start()
            while not done.wait(CANCEL_POLL_S):
                if self.progress is not None and self.progress.is_cancelled():
                    self._abandon()
                    raise CancelledError()
                if time.monotonic() > end + CANCEL_POLL_S:
                    self._abandon()
                    raise api_error(f"timed out: no complete answer within {self.deadline:g} s "
                                    f"from {redact_text(href)}")
            if "error" in box_:
                raise box_["error"]
            return box_["text"]

        def _request(self, href, method, headers, parameters, end):
            import requests

            method = (method or "GET").upper()
            if method in ("POST", "PUT", "PATCH"):
                req = requests.Request(method=method, url=href, headers=headers, json=parameters)
            else:
                req = requests.Request(method=method, url=href, headers=headers,
                                       params=dict(parameters or {}))
            try:
                modified = self._req_modifier(req) if self._req_modifier else None
                prepped = self.session.prepare_request(modified or req)
                send_kwargs = self.session.merge_environment_settings(
                    prepped.url, proxies={}, stream=True, verify=True, cert=None)
                send_kwargs["stream"] = True
                if self.no_proxy and requests.utils.should_bypass_proxies(
                        prepped.url, no_proxy=self.no_proxy):
                    send_kwargs["proxies"] = {}
                resp = self.session.send(prepped, timeout=self.timeouts, **send_kwargs)
            except Exception as err:
                text = redact_text(" ".join(str(err).split()))
                if "timed out" in text.lower() or "timeout" in type(err).__name__.lower():
                    text = f"timed out ({text})"
                raise api_error(text) from None
            with self._lock:
                self._responses.append(resp)
            try:
                chunks, size = [], 0
                for chunk in resp.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise api_error(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
                    if time.monotonic() > end:
                        raise api_error(f"timed out: no complete answer within "
                                        f"{self.deadline:g} s")
                    chunks.append(chunk)
                resp._content = b"".join(chunks)
            except api_error:
                raise
            except Exception as err:
                raise api_error(redact_text(" ".join(str(err).split()))) from None
            finally:
                with self._lock, contextlib.suppress(ValueError):
                    self._responses.remove(resp)
                resp.close()
            if not 200 <= resp.status_code < 300:
                raise api_error.from_response(resp)
            try:
                return resp.content.decode("utf-8")
            except Exception as err:
                raise api_error(str(err)) from None

        def _abandon(self) -> None:
            """Stop waiting: shut the sockets of answers being read, close the session."""
            with self._lock:
                responses = list(self._responses)
            for resp in responses:
                _shutdown(resp)
            with contextlib.suppress(Exception):
                self.session.close()

        def close(self) -> None:
            self.closed = True
            self._abandon()

    return BoundedStacApiIO


def _shutdown(resp) -> None:
    """Shut down the socket under a streamed requests response (unblocks its reader)."""
    import socket

    with contextlib.suppress(Exception):
        fp = resp.raw._fp.fp  # http.client response -> socket file
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)


def _open(pystac_client, url: str, stac_io=None):
    io = stac_io if stac_io is not None else _stac_io(pystac_client, None)
    try:
        client = pystac_client.Client.open(url, stac_io=io, timeout=io.timeouts)
    except CancelledError:
        raise
    except Exception as exc:
        raise _open_error(url, exc) from exc
    conformance = pystac_client.conformance.ConformanceClasses
    if not client.conforms_to(conformance.ITEM_SEARCH):
        raise CatalogError(
            f"{url} is a STAC catalog without item search (/search): use a STAC API URL, "
            "e.g. https://earth-search.aws.element84.com/v1."
        )
    return client


def _open_error(url: str, exc: Exception) -> CatalogError:
    status = getattr(exc, "status_code", None)
    text = str(exc)
    url = redact_text(url)
    if status:
        return CatalogError(
            f"{url} is not a STAC API: it answered HTTP {status}. Check the catalog URL "
            "(for example https://earth-search.aws.element84.com/v1)."
        )
    if type(exc).__name__ == "APIError":
        why = "it did not answer in time" if "timed out" in text.lower() else "no connection"
        if "refused" in text.lower():
            why = "connection refused"
        return CatalogError(
            f"Could not reach the STAC API at {url} ({why}). Check the URL, your network "
            "connection and any proxy settings."
        )
    if isinstance(exc, ValueError) and "JSON" in type(exc).__name__ + text:
        why = "its answer is not JSON"
    elif "expected type" in text or "STAC" in text:
        why = "its answer is JSON but not a STAC catalog"
    else:
        why = f"{type(exc).__name__}: {redact_text(text)[:120]}"
    return CatalogError(
        f"{url} does not look like a STAC API ({why}). Check the catalog URL "
        "(for example https://earth-search.aws.element84.com/v1)."
    )


def _collection_item_assets(client, url: str, collection: str) -> Mapping[str, dict]:
    shown = redact_text(url)
    try:
        found = client.get_collection(collection)
    except CancelledError:
        raise
    except Exception as exc:
        status = getattr(exc, "status_code", None)
        if status not in (404, None) or "timed out" in str(exc):
            raise CatalogError(f"The STAC API at {shown} failed: {_short(exc)}") from exc
        found = None
    if found is None:
        try:
            offered = sorted(c.id for c in client.get_collections())
        except CancelledError:
            raise
        except Exception:
            offered = []
        listing = ", ".join(offered) if offered else "none could be listed"
        raise CatalogError(
            f"The STAC API at {shown} has no collection {collection!r}. It offers: {listing}."
        )
    item_assets = found.extra_fields.get("item_assets") or {}
    return item_assets if isinstance(item_assets, Mapping) else {}


def _cloud_filter(client, pystac_client, max_cloud: float) -> Dict[str, Any]:
    if max_cloud >= 100:
        return {}
    conformance = pystac_client.conformance.ConformanceClasses
    if client.conforms_to(conformance.QUERY):
        return {"query": {"eo:cloud_cover": {"lte": max_cloud}}}
    if client.conforms_to(conformance.FILTER):
        return {
            "filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, max_cloud]},
            "filter_lang": "cql2-json",
        }
    return {}


def _fetch(client, kwargs, url: str, progress: Progress, max_items: int):
    items: List[dict] = []
    notes: List[str] = []
    try:
        search = client.search(**kwargs)
        for page in search.pages_as_dicts():
            if progress.is_cancelled():
                raise CancelledError()
            features = page.get("features") if isinstance(page, Mapping) else None
            if not isinstance(features, list):
                notes.append("Skipped a page of results that holds no list of items.")
                break
            items.extend(features)
            matched = page.get("numberMatched") or (page.get("context") or {}).get("matched")
            if matched:
                progress.set_progress(min(95.0, 95.0 * len(items) / max(int(matched), 1)))
            if len(items) > max_items:
                break
            if progress.is_cancelled():
                raise CancelledError()
    except CancelledError:
        raise
    except Exception as exc:
        raise CatalogError(f"The search at {redact_text(url)} failed: {_short(exc)}") from exc
    if len(items) > max_items:
        items = items[:max_items]
        notes.append(
            f"The search stopped at {max_items} items: shorten the dates or shrink the area "
            "to see the rest."
        )
    return items, notes


def _short(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    text = redact_text(" ".join(str(exc).split()))[:200]
    return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"


def _rejection(scene: Scene, params, remote: bool) -> str:
    limit = params.max_scene_cloud
    if scene.cloud_cover is not None and scene.cloud_cover > limit:
        return f"scene cloud {scene.cloud_cover:.1f} % > {limit:g} %"
    wanted = tuple(getattr(params, "bands", ()) or ())
    needed = [SCL] + list(wanted or (b for b in scene.assets if b in BAND_RESOLUTION))
    missing = [b for b in needed if b not in scene.assets]
    if missing:
        return f"no asset for band(s) {', '.join(missing)}"
    if remote:
        local = [b for b in needed if not scene.assets[b].startswith(REMOTE_SCHEMES)]
        if local:
            return (
                f"asset {local[0]} is not on the web ({scene.assets[local[0]]}): a remote "
                "catalog may only point at http(s):// or s3:// data"
            )
    return ""
