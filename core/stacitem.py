"""A STAC Item describing one output COG: written beside it as `<stem>.stac.json`.

Geometry (the AOI, or the grid's rectangle when not clipped), the datetime range of its
period, `proj:*` of the grid, `raster:bands` (scale, offset, nodata) per band, a
`derived_from` link to every source item that gave a pixel, and the parameters. pystac and
QGIS's STAC support open it; hrefs to the COG are relative, so the pair can be moved.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from pyproj import CRS
from rasterio.warp import transform_bounds
from shapely.geometry import box, mapping

from .errors import OutputError
from .grid import Grid
from .redact import redact_obj, redact_text
from .report import atomic_write_text
from .scene import Scene

STAC_VERSION = "1.0.0"
EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
MARK = "clearsky:parameters"  # how an earlier Clearsky item is recognised


def item_path(output: Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".stac.json")


def check_item_path(output: Path, overwrite: bool) -> Path:
    """The item's path after the COG's consent rule: an existing file is replaced only when
    overwriting is allowed or when it is an earlier Clearsky item."""
    path = item_path(output)
    if path.is_dir():
        raise OutputError(f"{path} is a folder: choose another output name.")
    if path.exists() and not overwrite and not _is_our_item(path):
        raise OutputError(f"{path} exists and is not a Clearsky STAC item: choose another "
                          "output name or allow overwriting.")
    return path


def _is_our_item(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8")[:1_000_000])
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and MARK in (data.get("properties") or {})


def _utc(day: date, end: bool) -> str:
    moment = datetime.combine(day, time(23, 59, 59) if end else time(0), tzinfo=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def source_href(catalog_url: str, scene: Scene) -> str:
    """The STAC API address of a source item (credentials and query strings removed)."""
    base = redact_text(catalog_url).split("?")[0].rstrip("/")
    return f"{base}/collections/{scene.collection}/items/{scene.id}"


def make_item(output: Path, grid: Grid, geometry_wgs84, start: date, end: date,
              band_names: Sequence[str], band_tags: Sequence[Dict[str, object]], dtype: str,
              resolution: float, sources: Sequence[Scene], catalog_url: str,
              parameters: dict, period: Optional[str] = None) -> dict:
    output = Path(output)
    crs = CRS.from_user_input(grid.crs)
    epsg = crs.to_epsg()
    if geometry_wgs84 is None:
        geometry_wgs84 = box(*transform_bounds(grid.crs, "EPSG:4326", *grid.bounds,
                                               densify_pts=21))
    t = grid.transform
    bands: List[Dict[str, object]] = []
    for name, tag in zip(band_names, band_tags):
        bands.append({"name": name, "nodata": 0, "data_type": dtype,
                      "scale": tag.get("scale", 1.0), "offset": tag.get("offset", 0.0),
                      "spatial_resolution": resolution})
    properties: Dict[str, object] = {
        "datetime": None,
        "start_datetime": _utc(start, False),
        "end_datetime": _utc(end, True),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "proj:epsg": epsg,
        "proj:shape": [grid.height, grid.width],
        "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "proj:bbox": list(grid.bounds),
        "gsd": resolution,
        MARK: parameters,
        "clearsky:sources": len(sources),
    }
    if epsg is None:
        properties["proj:wkt2"] = crs.to_wkt()
    if period:
        properties["clearsky:period"] = period
    links = [{"rel": "derived_from", "href": source_href(catalog_url, s),
              "type": "application/geo+json", "title": s.id} for s in sources]
    return redact_obj({
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": EXTENSIONS,
        "id": output.stem,
        "geometry": mapping(geometry_wgs84),
        "bbox": list(geometry_wgs84.bounds),
        "properties": properties,
        "links": links,
        "assets": {
            "data": {"href": f"./{output.name}", "type": COG_TYPE,
                     "title": "Cloud-free composite", "roles": ["data"],
                     "raster:bands": bands},
        },
    })


def write_item(path: Path, item: dict) -> None:
    text = json.dumps(item, indent=1, default=str)
    atomic_write_text(Path(os.fspath(path)), text + "\n")
