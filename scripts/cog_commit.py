"""Time of `CogWriter` (blocks written, then `commit`) with the temporary part left
uncompressed or DEFLATE-compressed (why core.io.PLAIN_PART_BYTES exists).

    .venv/bin/python scripts/cog_commit.py

The same 2000 x 2000 x 5 band uint16 mosaic-like raster as scripts/cog_level.py, written
in 512 px blocks as a mosaic writes them; interleaved rounds, min / median / max.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from affine import Affine

from clearsky.core import io
from clearsky.core.grid import Grid


def _data(n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:n, 0:n]
    base = (800 + 300 * np.sin(x / 37.0) + 200 * np.cos(y / 53.0)
            + rng.integers(0, 60, (n, n))).astype("uint16")
    return np.stack([base + 100 * k for k in range(4)] + [np.full((n, n), 7, "uint16")])


def _write(data: np.ndarray, out: Path, plain_limit: int) -> float:
    io.PLAIN_PART_BYTES = plain_limit
    grid = Grid("EPSG:32633", Affine(10, 0, 500000, 0, -10, 5800000), data.shape[2],
                data.shape[1])
    t0 = time.perf_counter()
    with io.gdal_env(), io.CogWriter(out, grid, data.shape[0], data.dtype, 0, True) as w:
        for block in grid.blocks(512):
            r, c = block.row_off, block.col_off
            h, wd = block.shape
            w.write(r, c, data[:, r:r + h, c:c + wd])
        w.commit()
    return time.perf_counter() - t0


def main(rounds: int = 5) -> None:
    data = _data()
    default = io.PLAIN_PART_BYTES
    times: dict = {"uncompressed part": [], "DEFLATE part": []}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for name, limit in (("uncompressed part", default), ("DEFLATE part", 0)):
                out = Path(tmp, name.replace(" ", "_") + ".tif")
                times[name].append(_write(data, out, limit))
                sizes[name] = out.stat().st_size
    for name, got in times.items():
        print(f"{name}: {min(got):.3f} / {statistics.median(got):.3f} / {max(got):.3f} s, "
              f"COG {sizes[name]} bytes")


if __name__ == "__main__":
    main()
