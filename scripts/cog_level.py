"""Time and size of the output COG by DEFLATE level (why core.io.COG_DEFLATE_LEVEL is 3).

    .venv/bin/python scripts/cog_level.py

Writes a 2000 x 2000 x 5 band uint16 mosaic-like raster (smooth reflectance with noise
and a count band) as the engine's tiled part file, then converts it with GDAL's COG driver
as `CogWriter.commit` does, at several levels; best of 3 per level.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine


def main() -> None:
    n = 2000
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:n, 0:n]
    base = (800 + 300 * np.sin(x / 37.0) + 200 * np.cos(y / 53.0)
            + rng.integers(0, 60, (n, n))).astype("uint16")
    data = np.stack([base + 100 * k for k in range(4)] + [np.full((n, n), 7, "uint16")])
    with tempfile.TemporaryDirectory() as tmp:
        part, cog = Path(tmp, "part.tif"), Path(tmp, "cog.tif")
        with rasterio.open(part, "w", driver="GTiff", width=n, height=n, count=5,
                           dtype="uint16", crs="EPSG:32633", nodata=0, tiled=True,
                           transform=Affine(10, 0, 500000, 0, -10, 5800000), blockxsize=512,
                           blockysize=512, compress="DEFLATE", zlevel=1, predictor=2) as ds:
            ds.write(data)
        for level in (None, 1, 3, 6, 9):
            opts = dict(COMPRESS="DEFLATE", PREDICTOR="2", BLOCKSIZE="512",
                        OVERVIEW_RESAMPLING="AVERAGE", BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
            if level is not None:
                opts["LEVEL"] = str(level)
            times = []
            for _ in range(3):
                t = time.perf_counter()
                rasterio.shutil.copy(str(part), str(cog), driver="COG", **opts)
                times.append(time.perf_counter() - t)
            print(f"LEVEL {level or 'default'}: {min(times):.2f} s, "
                  f"{os.path.getsize(cog) / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
