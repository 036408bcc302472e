"""A Sentinel-2 L2A scene as the engine sees it, independent of the catalog's dialect."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Optional

import numpy as np
from shapely.geometry.base import BaseGeometry

# Common names of the Sentinel-2 bands the engine can read, with their native pixel size.
BAND_RESOLUTION = {
    "coastal": 60, "blue": 10, "green": 10, "red": 10, "rededge1": 20, "rededge2": 20,
    "rededge3": 20, "nir": 10, "nir08": 20, "nir09": 60, "swir16": 20, "swir22": 20,
}
SCL = "scl"
VISUAL = "visual"
# Sen2Cor cloud and snow probability layers (20 m, uint8 0-100 %; 0 means 0 %, not nodata).
CLOUD = "cloud"
SNOW = "snow"
# Bands the mask rules may read besides the output bands: `nir` for dark pixels under a
# projected shadow, and the ML model's inputs.
ML_BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
MASK_ASSETS = (SCL, CLOUD, SNOW) + ML_BANDS


@dataclass(frozen=True)
class Radiometry:
    """reflectance = DN * scale + offset, for DN > 0 (0 is nodata)."""

    scale: float = 0.0001
    offset: float = 0.0

    def reflectance(self, dn, out=None, where=True):  # numpy array in, float32 array out
        """Into `out` (float32, dn's shape) when given, only where `where`: no temporary
        arrays, and pixels outside `where` keep what `out` held."""
        if out is None:
            return dn.astype("float32") * self.scale + self.offset
        np.multiply(dn, np.float32(self.scale), out=out, dtype=np.float32, where=where)
        np.add(out, np.float32(self.offset), out=out, where=where)
        return out

    def first_valid_dn(self, dtype) -> Optional[int]:
        """The smallest DN > 0 whose reflectance is >= 0, for 8 and 16 bit integer DNs
        (None for other types, or when no DN qualifies): `dn >= first_valid_dn` is then
        exactly `(dn > 0) & (reflectance(dn) >= 0)`, without a float array per band."""
        return _first_valid_dn(float(self.scale), float(self.offset), np.dtype(dtype).str)


@functools.lru_cache(maxsize=64)
def _first_valid_dn(scale: float, offset: float, dtype: str) -> Optional[int]:
    kind = np.dtype(dtype)
    if kind.kind not in "ui" or kind.itemsize > 2:
        return None
    dn = np.arange(1, np.iinfo(kind).max + 1, dtype=kind)
    refl = np.multiply(dn, np.float32(scale), dtype=np.float32)
    refl += np.float32(offset)
    ok = refl >= 0  # float32 products and sums are monotone in the DN: ok is a suffix
    if not ok.any():
        return None
    first = int(np.argmax(ok))
    return int(dn[first]) if ok[first:].all() else None


@dataclass(frozen=True)
class Scene:
    """One item of a catalog, normalised.

    `assets` maps common band names ("red", "nir", ...) plus "scl", "visual" and, where the
    item has them, the "cloud" and "snow" probability layers to hrefs.
    `pass_id` is the same for every tile of one satellite pass, so overlapping tiles
    count as one observation. Tiles of one pass carry different `datetime`s (each tile's
    own sensing start, tens of seconds apart), so the key is platform + relative orbit +
    UTC day: one satellite crosses one relative orbit at most once a day.
    """

    id: str
    collection: str
    datetime: datetime
    platform: str
    tile: str
    crs: str
    footprint: BaseGeometry  # WGS84 (lon, lat), follows the valid data
    assets: Mapping[str, str]
    radiometry: Radiometry
    cloud_cover: Optional[float] = None
    relative_orbit: Optional[int] = None
    processing_baseline: Optional[str] = None
    sequence: int = 0
    sun_azimuth: Optional[float] = None  # view:sun_azimuth, degrees clockwise from north
    sun_elevation: Optional[float] = None  # view:sun_elevation, degrees above the horizon
    properties: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def pass_id(self) -> str:
        orbit = f"R{self.relative_orbit:03d}" if self.relative_orbit is not None else "R---"
        return f"{self.platform}_{orbit}_{self.datetime.strftime('%Y%m%d')}"

    @property
    def date(self):
        return self.datetime.date()
