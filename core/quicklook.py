"""A small true-colour quicklook of a scene: its thumbnail bytes, or a COG's coarsest overview.

`read_quicklook` reads the coarsest overview of an http(s)/s3 GeoTIFF (the `visual` asset)
into an RGB array of at most `max_side` x `max_side` pixels: a few tile requests, never the
full-resolution data. Only the GTiff driver may open it, as for every remote read
(core.io.ALLOWED_DRIVERS), and the GDAL time-outs and proxy of `core.io` apply.
The dialog fetches a `thumbnail` asset (a small PNG/JPEG) itself, through QGIS's network
manager with THUMBNAIL_MAX_BYTES and THUMBNAIL_TIMEOUT, and falls back to this.
"""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

from . import io
from .errors import ReadError
from .redact import redact_text

MAX_SIDE = 256  # pixels: the quicklook's longer side at most
THUMBNAIL_MAX_BYTES = 2 * 1024 * 1024
THUMBNAIL_TIMEOUT = 10.0  # seconds in all
REFLECTANCE_WHITE = 3000  # uint16 DN (0.3 reflectance) shown as white, as the visual output


def read_quicklook(href: str, max_side: int = MAX_SIDE, proxy: str = "",
                   no_proxy: str = "") -> np.ndarray:
    """(rows, cols, 3) uint8 RGB of the coarsest overview of `href`, longer side <= max_side.

    A one-band file comes back grey; more than three bands: the first three. uint8 data are
    shown as they are (a true-colour COG), other types stretched 0..REFLECTANCE_WHITE.
    """
    path = io.gdal_path(href)  # http(s) and s3 only: a catalog cannot point at local files
    side = max(1, int(max_side))
    try:
        with io.gdal_env(1, **io.proxy_options(proxy, no_proxy)):
            with rasterio.open(path, driver=io.ALLOWED_DRIVERS[0]) as ds:
                levels = ds.overviews(1)
            kwargs = {"overview_level": len(levels) - 1} if levels else {}
            with rasterio.open(path, driver=io.ALLOWED_DRIVERS[0], **kwargs) as ds:
                scale = min(1.0, side / max(ds.width, ds.height))
                rows = max(1, round(ds.height * scale))
                cols = max(1, round(ds.width * scale))
                bands = list(range(1, min(3, ds.count) + 1))
                data = ds.read(bands, out_shape=(len(bands), rows, cols),
                               resampling=Resampling.nearest)
    except (RasterioError, OSError, io.CPLE_BaseError) as exc:  # RasterioIOError is OSError
        raise ReadError(f"No quicklook from {redact_text(href)}: "
                        f"{redact_text(str(exc))[:200]}") from None
    return to_rgb(data)


def to_rgb(data: np.ndarray) -> np.ndarray:
    """(bands, rows, cols) -> (rows, cols, 3) uint8."""
    if data.shape[0] < 3:
        data = np.repeat(data[:1], 3, axis=0)
    if data.dtype != np.uint8:
        data = np.clip(data.astype("float32") * (255.0 / REFLECTANCE_WHITE), 0, 255)
    return np.ascontiguousarray(np.moveaxis(data[:3].astype(np.uint8), 0, -1))
