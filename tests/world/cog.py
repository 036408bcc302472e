"""Write Cloud Optimized GeoTIFFs the way Earth Search serves them, byte-for-byte repeatably.

GDAL's COG driver: internal tiles of `block_size`, DEFLATE + horizontal predictor,
overviews (AVERAGE for reflectance/visual, NEAREST for SCL) computed with nodata 0
ignored. No timestamps or side-car files are written, so equal arrays give equal bytes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from affine import Affine
from osgeo import gdal, osr

# Set per call and thread-locally: tests of other modules share this process and GDAL.
_CONFIG = {"GDAL_PAM_ENABLED": "NO", "GDAL_NUM_THREADS": "1"}

_GDAL_TYPES = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.uint16): gdal.GDT_UInt16}


def overview_count(width: int, height: int, block_size: int) -> int:
    """Halvings until the smallest level fits one block (at least one overview)."""
    return max(1, math.ceil(math.log2(max(width, height) / block_size)))


def write_cog(path: Path, data: np.ndarray, transform: Affine, epsg: int, *,
              block_size: int = 512, resampling: str = "AVERAGE", rgb: bool = False) -> int:
    """Write `data` ((h, w) or (bands, h, w), uint8/uint16, nodata 0) as a COG; returns its size."""
    arr = data[np.newaxis] if data.ndim == 2 else data
    bands, height, width = arr.shape
    mem = gdal.GetDriverByName("MEM").Create("", width, height, bands, _GDAL_TYPES[arr.dtype])
    mem.SetGeoTransform(transform.to_gdal())
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    mem.SetProjection(srs.ExportToWkt())
    for i in range(bands):
        band = mem.GetRasterBand(i + 1)
        band.SetNoDataValue(0)
        band.WriteArray(arr[i])
        if rgb:
            band.SetColorInterpretation((gdal.GCI_RedBand, gdal.GCI_GreenBand,
                                         gdal.GCI_BlueBand)[i])
    options = [
        f"BLOCKSIZE={block_size}", "COMPRESS=DEFLATE", "PREDICTOR=YES", "LEVEL=4",
        f"OVERVIEW_RESAMPLING={resampling}", "OVERVIEWS=IGNORE_EXISTING",
        f"OVERVIEW_COUNT={overview_count(width, height, block_size)}", "NUM_THREADS=1",
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tif.part")
    saved = {k: gdal.GetThreadLocalConfigOption(k, None) for k in _CONFIG}
    try:
        for k, v in _CONFIG.items():
            gdal.SetThreadLocalConfigOption(k, v)
        out = gdal.GetDriverByName("COG").CreateCopy(str(tmp), mem, options=options)
        if out is None:
            raise RuntimeError(f"GDAL could not write {path}: {gdal.GetLastErrorMsg()}")
        out = None  # close: flushes the file
    finally:
        for k, v in saved.items():
            gdal.SetThreadLocalConfigOption(k, v)
        mem = None
    os.replace(tmp, path)
    return path.stat().st_size
