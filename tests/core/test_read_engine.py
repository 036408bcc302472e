"""The read engine: tiles fetched once, no warp on the source lattice, memory by budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from clearsky.core import budget, io
from clearsky.core import tiles as tiles_mod
from clearsky.core.api import Aoi, MosaicParams, build_mosaic
from clearsky.core.errors import InvalidParameterError, ReadError
from clearsky.core.grid import Grid
from clearsky.core.tiles import TileCache

CRS = "EPSG:32633"
ORIGIN = (399960.0, 5800020.0)  # a real Sentinel-2 tile corner


def write_tiff(path: Path, data: np.ndarray, res: float, tile: int = 64, nodata=0) -> Path:
    h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1,
                       dtype=data.dtype.name, crs=CRS, nodata=nodata, tiled=True,
                       blockxsize=tile, blockysize=tile, compress="deflate",
                       transform=Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1])) as ds:
        ds.write(data, 1)
    return path


def gdal_warp(path: Path, grid: Grid, resampling: Resampling, raw: bool,
              **options) -> np.ndarray:
    with rasterio.open(path) as ds:
        src = ds.read(1)
        dst = np.zeros(grid.shape, src.dtype)
        reproject(src, dst, src_transform=ds.transform, src_crs=ds.crs,
                  src_nodata=None if raw else 0, dst_transform=grid.transform,
                  dst_crs=grid.crs, dst_nodata=None if raw else 0, resampling=resampling,
                  **options)
    return dst


@pytest.mark.parametrize("k", [1, 2, 3, 6])
@pytest.mark.parametrize("resampling", [Resampling.nearest, Resampling.average])
@pytest.mark.parametrize("raw", [False, True])
def test_a_grid_on_the_source_lattice_is_decimated_as_gdal_warps_it(tmp_path, k, resampling,
                                                                    raw):
    rng = np.random.default_rng(k)
    data = rng.integers(0, 12000, (240, 240)).astype("uint16")
    data[rng.random(data.shape) < 0.2] = 0  # nodata holes (values 0 % when raw)
    path = write_tiff(tmp_path / "b.tif", data, 20.0)
    # 12 source pixels in from the corner, k source pixels per output pixel
    grid = Grid(CRS, Affine(20.0 * k, 0, ORIGIN[0] + 240, 0, -20.0 * k, ORIGIN[1] - 240),
                200 // k, 200 // k)
    ours = io.read_to_grid(str(path), grid, resampling=resampling, use_overviews=False,
                           allow_local=True, raw=raw)
    assert io._lattice(rasterio.open(path), grid, rasterio.crs.CRS.from_string(CRS)) == \
        (12, 12, k)
    np.testing.assert_array_equal(ours, gdal_warp(path, grid, resampling, raw))


@pytest.mark.parametrize("m", [2, 3, 6])
@pytest.mark.parametrize("offset", [(0, 0), (5, 7), (-9, -4)])
@pytest.mark.parametrize("raw", [False, True])
def test_a_grid_finer_on_the_source_lattice_repeats_pixels_as_gdal_warps_it(tmp_path, m,
                                                                             offset, raw):
    """A 20 m SCL on a 10 m grid (or 3x, 6x finer), its origin anywhere on the fine lattice,
    also partly outside the raster: nearest without the warper, byte-equal to GDAL's."""
    rng = np.random.default_rng(m)
    data = rng.integers(0, 12, (90, 90)).astype("uint8")
    data[rng.random(data.shape) < 0.2] = 0
    path = write_tiff(tmp_path / "scl.tif", data, 20.0, nodata=0)
    fine = 20.0 / m
    col, row = offset
    grid = Grid(CRS, Affine(fine, 0, ORIGIN[0] + col * fine, 0, -fine,
                            ORIGIN[1] - row * fine), 37 * m, 29 * m)
    ours = io.read_to_grid(str(path), grid, resampling=Resampling.nearest,
                           use_overviews=False, allow_local=True, raw=raw)
    assert io._fine_lattice(rasterio.open(path), grid, rasterio.crs.CRS.from_string(CRS)) \
        == (col, row, m)
    np.testing.assert_array_equal(ours, gdal_warp(path, grid, Resampling.nearest, raw))


@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.average,
                                        Resampling.nearest])
@pytest.mark.parametrize("holes", [False, True])
def test_a_warped_read_gives_gdals_masked_warp_with_or_without_nodata(tmp_path, resampling,
                                                                      holes):
    """Into EPSG:3035 (every pixel warped): a window with no nodata pixel is warped by
    GDAL's unmasked kernel (about 3x faster for bilinear), one with nodata by the masked
    one; both equal GDAL's masked warp of the whole file, byte for byte."""
    rng = np.random.default_rng(7)
    data = rng.integers(1, 12000, (300, 300)).astype("uint16")
    if holes:
        data[rng.random(data.shape) < 0.05] = 0
    path = write_tiff(tmp_path / "b.tif", data, 10.0)
    res = 20.0 if resampling is Resampling.average else 10.0
    west, south, east, north = rasterio.warp.transform_bounds(
        CRS, "EPSG:3035", ORIGIN[0] + 500, ORIGIN[1] - 2500, ORIGIN[0] + 2500,
        ORIGIN[1] - 500)
    grid = Grid("EPSG:3035", Affine(res, 0, west, 0, -res, north),
                int((east - west) // res), int((north - south) // res))
    ours = io.read_to_grid(str(path), grid, resampling=resampling, use_overviews=False,
                           allow_local=True)
    assert ours is not None and (ours > 0).mean() > 0.5
    kernel = io.kernel_scale(resampling, 10.0, res)  # the kernel width the engine fixes
    np.testing.assert_array_equal(ours, gdal_warp(path, grid, resampling, raw=False,
                                                  **kernel))


@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.cubic,
                                        Resampling.average, Resampling.nearest])
@pytest.mark.parametrize("holes", [False, True])
def test_a_warp_fetches_only_the_tiles_under_its_grid_and_gets_the_same_pixels(
        tmp_path, resampling, holes):
    """Into EPSG:3035 the grid is a slanted square in the UTM file: the tiles of its source
    window outside it (plus the kernel's reach) are not fetched, and the pixels are
    GDAL's warp of the whole file all the same, byte for byte."""
    rng = np.random.default_rng(11)
    data = rng.integers(1, 12000, (400, 400)).astype("uint16")
    if holes:
        data[rng.random(data.shape) < 0.05] = 0
    path = write_tiff(tmp_path / "b.tif", data, 10.0, tile=16)
    res = 20.0 if resampling is Resampling.average else 10.0
    # a square in EPSG:3035 about the file's centre, 3 km a side (the file is 4 km)
    cx, cy = rasterio.warp.transform(CRS, "EPSG:3035", [ORIGIN[0] + 2000],
                                     [ORIGIN[1] - 2000])
    side = int(3000 // res)
    west, north = round(cx[0]) - 1500, round(cy[0]) + 1500
    grid = Grid("EPSG:3035", Affine(res, 0, west, 0, -res, north), side, side)
    tiles = TileCache(64 * 2**20)
    with io.thread_tiles(tiles):
        ours = io.read_to_grid(str(path), grid, resampling=resampling, use_overviews=False,
                               allow_local=True)
    kernel = io.kernel_scale(resampling, 10.0, res)
    np.testing.assert_array_equal(ours, gdal_warp(path, grid, resampling, raw=False,
                                                  **kernel))
    with rasterio.open(path) as ds:
        win = io._window(ds, io.bounds_in(grid.crs, ds.crs, grid.bounds), 2, clip=True)
    in_window = (math.ceil((win.row_off + win.height) / 16) - win.row_off // 16) * \
        (math.ceil((win.col_off + win.width) / 16) - win.col_off // 16)
    # the slanted square leaves four corner triangles of its bounding box unread
    assert tiles.stats()["fetched"] < 0.97 * in_window, (tiles.stats(), in_window)


@pytest.mark.parametrize("seed", range(6))
def test_the_tiles_under_a_ring_are_those_a_polygon_test_finds(seed):
    """Each row's first and last tile column are those whose tile, grown by the margin,
    meets the polygon, for slanted quadrilaterals of any size and place."""
    from shapely.geometry import Polygon, box

    rng = np.random.default_rng(seed)
    cx, cy, half = rng.uniform(100, 300), rng.uniform(100, 300), rng.uniform(20, 150)
    angle = rng.uniform(0, np.pi / 2)
    corners = [(cx + half * np.cos(angle + k * np.pi / 2),
                cy + half * np.sin(angle + k * np.pi / 2)) for k in range(4)]
    t = np.linspace(0, 1, 7)[:-1]
    ring = [(x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)
            for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]) for f in t]
    xs, ys = zip(*ring)
    margin, (th, tw) = 2.5, (24, 32)
    got = tiles_mod.tile_rows(xs, ys, (th, tw), margin, range(0, 20), range(0, 14))
    poly = Polygon(ring)
    want = {}
    for r in range(20):
        met = [c for c in range(14) if poly.intersects(
            box(c * tw - margin, r * th - margin, (c + 1) * tw + margin,
                (r + 1) * th + margin))]
        if met:
            want[r] = (min(met), max(met))
    assert got == want


def test_the_kernel_follows_the_ratio_of_the_pixel_sizes():
    assert io.kernel_scale(Resampling.bilinear, 10.0, 13.0) == {"XSCALE": "0.7692",
                                                                "YSCALE": "0.7692"}
    assert io.kernel_scale(Resampling.cubic, 20.0, 10.0) == {"XSCALE": "1", "YSCALE": "1"}
    assert io.kernel_scale(Resampling.bilinear, 10.0, 10.004) == {"XSCALE": "1",
                                                                  "YSCALE": "1"}
    assert io.kernel_scale(Resampling.average, 10.0, 30.0) == {}  # footprint, not kernel
    assert io.kernel_scale(Resampling.nearest, 10.0, 13.0) == {}


@pytest.mark.parametrize("res", [10.0, 13.0])
@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.cubic])
def test_a_strip_of_a_warped_grid_gets_the_pixels_of_the_whole_grid(tmp_path, resampling,
                                                                    res):
    """Reflectance reads only the rows and columns that hold a usable pixel. From UTM 33 to
    UTM 32 at 10 m (source windows are rotated squares), GDAL would widen the kernel by
    the ratio of the windows: a 12 px wide strip came out blurred, up to thousands of DN
    off the same pixels of the whole grid. With the kernel fixed by the pixel sizes, a
    strip differs only by GDAL's approximate transformer (1/8 pixel): a few DN on noise."""
    rng = np.random.default_rng(3)
    path = write_tiff(tmp_path / "b.tif", rng.integers(1, 12000, (400, 400)).astype("uint16"),
                      10.0)
    x, y = rasterio.warp.transform(CRS, "EPSG:32632", [ORIGIN[0] + 800], [ORIGIN[1] - 800])
    side = int(2000 // res)
    grid = Grid("EPSG:32632", Affine(res, 0, round(x[0]), 0, -res, round(y[0])), side, side)
    whole = io.read_to_grid(str(path), grid, resampling=resampling, use_overviews=False,
                            allow_local=True).astype(int)
    r0, c0, h = side // 10, side // 2 - 6, side * 8 // 10
    strip = io.read_to_grid(str(path), grid.subgrid(r0, c0, h, 12), resampling=resampling,
                            use_overviews=False, allow_local=True).astype(int)
    diff = np.abs(strip - whole[r0:r0 + h, c0:c0 + 12])
    assert (whole > 0).all()
    assert diff.max() <= 40 and np.median(diff) <= 2, (diff.max(), np.median(diff))


def test_reflectance_resampling_follows_the_level_read():
    assert io.reflectance_resampling(20.0, 30.0) is Resampling.bilinear  # 1.5x: interpolate
    assert io.reflectance_resampling(10.0, 30.0) is Resampling.average
    assert io.reflectance_resampling(20.0, 10.0) is Resampling.bilinear


def test_tiles_are_decoded_once_and_shared_by_threads(tmp_path):
    data = np.arange(256 * 256, dtype="uint16").reshape(256, 256) % 5000 + 1
    path = write_tiff(tmp_path / "t.tif", data, 10.0, tile=64)
    tiles = TileCache(64 * 2**20, requests=4)
    windows = [(r, c) for r in range(0, 200, 25) for c in range(0, 200, 25)]

    def read(rc):
        r, c = rc
        with rasterio.open(path) as ds:
            return tiles.read(ds, str(path), 1, rasterio.windows.Window(c, r, 56, 56))

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(read, windows))
    for (r, c), part in zip(windows, got):
        np.testing.assert_array_equal(part, data[r:r + 56, c:c + 56])
    # the windows need the 16 tiles of the file: each decoded once, all other uses hits
    assert tiles.stats()["fetched"] == 16


def test_a_row_of_tiles_is_read_ahead_within_the_runs_area(tmp_path):
    """A fetch in a row takes the row's other missing tiles inside the span in the same
    read, so the next blocks along the row find them decoded."""
    data = (np.arange(256 * 256, dtype="uint32").reshape(256, 256) % 60000 + 1).astype("uint16")
    path = write_tiff(tmp_path / "r.tif", data, 10.0, tile=64)
    tiles = TileCache(64 * 2**20)
    with rasterio.open(path) as ds:
        part = tiles.read(ds, "r", 1, rasterio.windows.Window(70, 10, 20, 20), span={0: (0, 2)})
        np.testing.assert_array_equal(part, data[10:30, 70:90])
        assert tiles.stats()["fetched"] == 3  # tile columns 0..2 of row 0, not column 3
        np.testing.assert_array_equal(
            tiles.read(ds, "r", 1, rasterio.windows.Window(0, 0, 190, 60), span={0: (0, 2)}),
            data[0:60, 0:190])
        assert tiles.stats()["fetched"] == 3 and tiles.stats()["hits"] == 3


def test_a_header_claiming_huge_tiles_is_refused_before_allocating(tmp_path):
    path = write_tiff(tmp_path / "h.tif", np.ones((64, 64), "uint16"), 10.0, tile=16)
    raw = bytearray(path.read_bytes())
    # the IFD entries TileWidth (322) and TileLength (323): claim 32768 x 32768 (2 GiB tiles)
    for tag in (322, 323):
        at = _ifd_entry(raw, tag)
        raw[at + 2:at + 4] = (3).to_bytes(2, "little")  # SHORT
        raw[at + 8:at + 12] = (32768).to_bytes(2, "little") + b"\0\0"
    path.write_bytes(bytes(raw))
    tiles = TileCache(64 * 2**20)
    with io.thread_tiles(tiles), pytest.raises(ReadError, match="claims 32768 x 32768"):
        io.read_native_window(str(path), (ORIGIN[0], ORIGIN[1] - 640, ORIGIN[0] + 640,
                                          ORIGIN[1]), CRS, allow_local=True)


def _ifd_entry(raw: bytearray, tag: int) -> int:
    assert raw[:2] == b"II"
    ifd = int.from_bytes(raw[4:8], "little")
    for i in range(int.from_bytes(raw[ifd:ifd + 2], "little")):
        at = ifd + 2 + 12 * i
        if int.from_bytes(raw[at:at + 2], "little") == tag:
            return at
    raise AssertionError(f"tag {tag} not found")


def test_a_window_over_the_budget_is_refused_with_the_figures(tmp_path):
    path = write_tiff(tmp_path / "w.tif", np.ones((512, 512), "uint16"), 10.0)
    expected = (r"512 x 512 pixels \(0.5 MB\) exceeds the 0.1 MB one read may take under "
                "the memory budget: raise MEMORY_MB")
    with io.thread_tiles(TileCache(2**20, max_read=100_000)), \
            pytest.raises(ReadError, match=expected):
        io.read_native_window(str(path), (ORIGIN[0], ORIGIN[1] - 5120, ORIGIN[0] + 5120,
                                          ORIGIN[1]), CRS, allow_local=True)


def test_an_scl_claiming_millimetre_pixels_is_refused_not_counted(tmp_path):
    """A hostile header with 1 mm pixels would turn a 1 km AOI into 10^12 pixels of chunks."""
    from datetime import datetime, timezone

    from shapely.geometry import box

    from clearsky.core import clouds
    from clearsky.core.aoi import Aoi
    from clearsky.core.scene import Radiometry, Scene

    path = write_tiff(tmp_path / "scl.tif", np.full((64, 64), 4, "uint8"), 0.001)
    scene = Scene("mm", "test", datetime(2024, 6, 1, tzinfo=timezone.utc), "sentinel-2a",
                  "33UUU", CRS, box(0, 0, 1, 1), {"scl": str(path)}, Radiometry())
    aoi = Aoi(box(ORIGIN[0], ORIGIN[1] - 1000, ORIGIN[0] + 1000, ORIGIN[1]), CRS)
    with pytest.raises(ReadError, match="its pixels are 0.001 m, not the SCL's 20 m"):
        clouds.aoi_scl_stats(scene, aoi, {8, 9}, allow_local=True)


def test_best_pixel_reads_each_scenes_bands_once_when_a_clear_pixel_stays_invalid():
    """A pixel the SCL calls clear but whose bands are invalid in every scene (dark water
    below the offset): pass after pass is read for it, each scene's bands once, and the
    rest of the block keeps the first scene's values."""
    from types import SimpleNamespace

    from clearsky.core import seams
    from clearsky.core.blocks import CompositeSpec
    from clearsky.core.options import Method, OutputType
    from clearsky.core.plan import Pass

    grid = Grid(CRS, Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), 4, 4)
    band_reads = []

    class Reads:
        def usable_and_covered(self, index, scene, wide, target):
            return target.copy(), np.ones(wide.shape, bool)

        def reflectance(self, index, scene, grid, usable, out):
            band_reads.append(index)
            valid = usable.copy()
            valid[0, 0] = False  # never valid here
            out[:, valid] = 0.01 * (index + 1)
            return out, valid

    passes = tuple(Pass(f"p{i}", ((i, object()),), 50.0, 0.0) for i in range(30))
    task = SimpleNamespace(passes=passes, seams=seams.SeamSpec(), composite=CompositeSpec(
        Method.BEST, 25.0, ("red",), OutputType.REFLECTANCE))
    with ThreadPoolExecutor(2) as pool:
        values, _, _, contributed, _ = seams.compose(task, grid, np.ones((4, 4), bool),
                                                     Reads(), map, None, pool)
    assert sorted(band_reads) == list(range(30))
    assert np.isnan(values[0, 0, 0]) and np.allclose(values[0].ravel()[1:], 0.01)
    assert contributed == {0: 15}


@pytest.mark.parametrize("count_band", [False, True])
def test_best_pixel_reads_the_next_passes_masks_with_this_passes_bands_and_no_more(
        count_band):
    """Three passes: the first clear on the left half, the second on the right half, the
    third everywhere. The second pass's cloud masks are asked for while the first pass's
    bands are being read (the bands wait for that request, up to 5 s); the third pass's
    masks are never read, since the first two passes cover the block, unless a count band
    wants every pass's observations."""
    import threading
    from types import SimpleNamespace

    from clearsky.core import seams
    from clearsky.core.blocks import CompositeSpec
    from clearsky.core.options import Method, OutputType
    from clearsky.core.plan import Pass

    grid = Grid(CRS, Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), 8, 8)
    clear = [np.zeros((8, 8), bool) for _ in range(3)]
    clear[0][:, :4] = clear[1][:, 4:] = clear[2][:, :] = True
    masks_read, asked = [], {k: threading.Event() for k in range(3)}
    overlapped = []

    class Reads:
        def usable_and_covered(self, index, scene, wide, target):
            masks_read.append(index)
            asked[index].set()
            return clear[index] & target, np.ones(wide.shape, bool)

        def reflectance(self, index, scene, grid, usable, out):
            if index == 0:
                overlapped.append(asked[1].wait(5.0))
            out[:, usable] = 0.1 * (index + 1)
            return out, usable.copy()

    passes = tuple(Pass(f"p{k}", ((k, object()),), 90.0 - k, 0.0) for k in range(3))
    task = SimpleNamespace(
        passes=passes, seams=seams.SeamSpec(feather_m=0.0, fits=()),
        composite=CompositeSpec(Method.BEST, 25.0, ("red",), OutputType.REFLECTANCE,
                                count_band=count_band))
    with ThreadPoolExecutor(2) as pool:
        values, count, _, contributed, _ = seams.compose(
            task, grid, np.ones((8, 8), bool), Reads(), map, None, pool)
    assert overlapped == [True]
    assert masks_read == ([0, 1, 2] if count_band else [0, 1])
    assert np.allclose(values[0][:, :4], 0.1) and np.allclose(values[0][:, 4:], 0.2)
    assert contributed == {0: 32, 1: 32}
    if count_band:
        assert (count[:, :4] == 2).all() and (count[:, 4:] == 2).all()


# --- the budget -----------------------------------------------------------------------------

def test_the_same_check_in_one_window_would_exceed_it(big_scl):
    """The measurement can fail: the whole file as one chunk grows the process by more
    than that budget (given a budget large enough to let the window through at all), and
    the 256 MB budget refuses such a window before allocating it."""
    x0, y1 = ORIGIN
    bounds = json.dumps([x0 + 1, y1 - SIDE * 20 + 1, x0 + SIDE * 20 - 1, y1 - 1])
    out = subprocess.run([sys.executable, "-c", AOI_CHECK_RSS, str(big_scl), CRS, bounds,
                          "4096", str(SIDE)], capture_output=True, text=True, timeout=300,
                         check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["grew_mb"] > 256, got
    refused = subprocess.run([sys.executable, "-c", AOI_CHECK_RSS, str(big_scl), CRS, bounds,
                              "256", str(SIDE)], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert "exceeds the 64 MB one read may take under the memory budget" in refused.stderr


@pytest.mark.parametrize("passes", [1, 40, 1000, 10000])
def test_blocks_hold_the_budget_whatever_the_passes(passes):
    sized = budget.blocks_for(1024, passes, 4, stacked=True)
    held = sized.side ** 2 * budget.stack_bytes_per_pixel(passes, 4, True) * sized.in_flight
    assert held <= 1024 * 2**20 * budget.BLOCK_SHARE
    assert sized.side >= budget.MIN_SIDE


def test_a_grid_a_little_over_one_block_is_cut_evenly_not_into_a_block_and_a_strip():
    sized = budget.Blocks(512, 2)
    assert budget.evened(sized, 600, 600) == budget.Blocks(304, 2)  # 304 + 296, not 512 + 88
    assert budget.evened(sized, 2048, 1024) == sized and budget.evened(sized, 400, 90) == sized
    assert budget.evened(sized, 600, 500) == sized  # 304 px would cut the 500 px side in two
    rng = np.random.default_rng(5)
    for width, height in rng.integers(16, 6000, size=(300, 2)):
        got = budget.evened(sized, int(width), int(height))
        assert got.side % budget.SIDE_STEP == 0 and got.side <= 512 and got.in_flight == 2
        for n_px in (width, height):  # as many blocks along each side as 512 px blocks
            assert math.ceil(n_px / got.side) == math.ceil(n_px / 512)


def test_a_grid_that_fits_one_block_only_alone_is_one_block():
    """1,000 passes over a 140 px AOI: in 96 px blocks (two in flight) every block would
    fetch every tile of every pass again (they outgrow the tile cache); one 140 px block
    fetches them once, and still holds the budget."""
    two = budget.blocks_for(1024, 1000, 4, stacked=True)
    assert two.in_flight == 2 and two.side < 140
    assert budget.blocks_for(1024, 1000, 4, stacked=True, grid_side=two.side) == two
    one = budget.blocks_for(1024, 1000, 4, stacked=True, grid_side=140)
    assert one == budget.Blocks(140, 1)
    assert 140 ** 2 * budget.stack_bytes_per_pixel(1000, 4, True) <= \
        1024 * 2**20 * budget.BLOCK_SHARE
    assert budget.blocks_for(1024, 1000, 4, stacked=True, grid_side=400) == two  # too large
    assert budget.blocks_for(1024, 10, 4, stacked=True, grid_side=2000) == \
        budget.Blocks(512, 2)


@pytest.mark.parametrize("feather", [False, True])
def test_a_stacked_block_composites_within_its_bytes_per_pixel(feather):
    """The block budget's per-pixel figure against what numpy allocates (tracemalloc)
    while 300 passes are stacked, reduced and, with feathering, blended."""
    import tracemalloc
    from types import SimpleNamespace

    from clearsky.core import composite, seams
    from clearsky.core.params import Method

    n, nb, h, w = 300, 4, 48, 48
    rng = np.random.default_rng(3)
    cspec = SimpleNamespace(statistics=(), method=Method.MEDIAN, percentile=50.0)
    tracemalloc.start()
    try:
        stack = composite.Stack(n, nb, (h, w))
        valids = composite.Stack(n, 1, (h, w), "bool")
        weights = composite.Stack(n if feather else 0, 1, (h, w))
        for _ in range(n):
            valid = rng.random((h, w)) < 0.7
            stack.add(np.where(valid, rng.random((nb, h, w), dtype=np.float32), np.nan))
            valids.add(valid)
            if feather:
                weights.add(np.where(valid, rng.random((h, w)), 0.0))
        out = seams._reduce(stack.view(), cspec)
        if feather:
            out = seams._feathered(stack.view(), valids.view()[:, 0], weights.view()[:, 0],
                                   out, cspec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.isfinite(out).mean() > 0.99
    allowed = budget.stack_bytes_per_pixel(n, nb, True, feathered=feather) * h * w
    assert peak <= allowed, (peak / (h * w), allowed / (h * w))


@pytest.mark.parametrize("passes,bands,feather_m", [(3, 4, 0.0), (300, 4, 0.0),
                                                    (300, 1, 100.0), (300, 12, 100.0)])
def test_a_best_pixel_block_composites_within_its_bytes_per_pixel(passes, bands, feather_m):
    """Best pixel holds one pass (and the next's masks) at a time: what numpy allocates
    (tracemalloc) while `passes` passes, each clear at 2 % of the pixels, fill a 48 px
    block stays within the budget's per-pixel figure, which does not grow with the
    passes (a long run is not cut into smaller blocks than a short one)."""
    import tracemalloc
    from types import SimpleNamespace

    from clearsky.core import seams
    from clearsky.core.blocks import CompositeSpec
    from clearsky.core.options import Method, OutputType
    from clearsky.core.plan import Pass

    h = w = 48
    grid = Grid(CRS, Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), h, w)
    rng = np.random.default_rng(1)

    class Reads:
        def usable_and_covered(self, index, scene, wide, target):
            return (rng.random(wide.shape) < 0.02) & target, np.ones(wide.shape, bool)

        def reflectance(self, index, scene, grid, usable, out):
            out[:, usable] = rng.random((out.shape[0], int(usable.sum())), dtype=np.float32)
            return out, usable.copy()

    task = SimpleNamespace(
        passes=tuple(Pass(f"p{k}", ((k, object()),), 90.0, 0.0) for k in range(passes)),
        seams=seams.SeamSpec(feather_m=feather_m, fits=()),
        composite=CompositeSpec(Method.BEST, 25.0, tuple(f"b{i}" for i in range(bands)),
                                OutputType.REFLECTANCE, count_band=True, source_band=True))
    with ThreadPoolExecutor(2) as pool:
        tracemalloc.start()
        try:
            values, count, *_ = seams.compose(task, grid, np.ones((h, w), bool), Reads(),
                                              map, None, pool)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert np.isfinite(values[0]).mean() > (0.99 if passes > 100 else 0.03)
    assert count.max() >= 1
    allowed = budget.stack_bytes_per_pixel(passes, bands, False, feather_m > 0) * h * w
    assert peak <= allowed, (peak / (h * w), allowed / (h * w))
    assert budget.blocks_for(256, passes, bands, stacked=False) == \
        budget.blocks_for(256, 1, bands, stacked=False)


def test_pass_reads_run_at_most_the_workers_ahead_of_the_stack():
    """A stalled first pass does not let the others pile up behind it in memory."""
    import threading

    from clearsky.core.blocks import ReadPools

    release, started = threading.Event(), []

    def read(k):
        started.append(k)
        if k == 0:
            release.wait(10)
        return k

    pools = ReadPools(3, {}, TileCache(32 * 2**20, 3))
    try:
        got = []
        consumer = threading.Thread(target=lambda: got.extend(pools.map_passes(read, range(20))))
        consumer.start()
        threading.Event().wait(0.5)
        assert len(started) <= 3
        release.set()
        consumer.join(10)
        assert got == list(range(20))
    finally:
        pools.shutdown()


def test_a_budget_too_small_for_the_passes_names_the_figure_to_raise():
    with pytest.raises(InvalidParameterError, match=r"raise MEMORY_MB to at least \d+"):
        budget.blocks_for(128, 200_000, 12, stacked=True)


def test_a_dilation_wider_than_the_budget_allows_is_refused():
    with pytest.raises(InvalidParameterError, match="Lower DILATION.*or raise MEMORY_MB"):
        budget.check_margin(2000, 512, 1024, 16, "The cloud mask dilation")
    budget.check_margin(101, 512, 1024, 16, "The cloud mask dilation")  # DILATION 50 at 10 m


def test_a_tile_stays_while_a_block_still_to_compute_reads_it_and_goes_after(tmp_path):
    """The read plan: four 512 px blocks over a file of 256 px tiles. A tile is kept while
    a pending block's rectangle (plus a few source pixels) meets it, dropped when the last
    of them is done, and not kept at all when no pending block reads it; tiles held from
    before the plan (the AOI check's) go when no block of the plan reads them."""
    from rasterio.windows import Window

    from clearsky.core.readplan import ReadPlan

    data = np.random.default_rng(9).integers(1, 1000, (1024, 1024)).astype("uint16")
    path = write_tiff(tmp_path / "b.tif", data, 10.0, tile=256)
    grid = Grid(CRS, Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), 1024, 1024)
    key, scene = (str(path), None), {0: frozenset({str(path)})}
    tiles = TileCache(64 * 2**20, 4)
    with rasterio.open(path) as ds:
        tiles.read(ds, key, 1, Window(0, 0, 256, 256))
        tiles.read(ds, (str(tmp_path / "other.tif"), None), 1, Window(0, 0, 256, 256))
        assert tiles.stats()["tiles"] == 2
        nobody = frozenset()
        tiles.use_plan(ReadPlan(grid, 512, 0, [nobody, nobody, nobody, {0}], scene))
        # only block 3 reads the file, far from tile 0; no block reads the other file
        assert tiles.stats()["tiles"] == 0
        tiles.use_plan(ReadPlan(grid, 512, 0, [frozenset({0})] * 4, scene))
        got = tiles.read(ds, key, 1, Window(0, 0, 512, 512))
        np.testing.assert_array_equal(got, data[:512, :512])
        assert tiles.stats()["tiles"] == 4
        tiles.block_done(0)
        # tile (0, 0) was block 0's alone; the three beside blocks 1, 2, 3 stay for them
        assert tiles.stats()["tiles"] == 3
        fetched = tiles.stats()["fetched"]
        tiles.read(ds, key, 1, Window(0, 0, 256, 256))  # a read no pending block makes
        assert tiles.stats()["fetched"] == fetched + 1 and tiles.stats()["tiles"] == 3
        np.testing.assert_array_equal(tiles.read(ds, key, 1, Window(256, 256, 300, 300)),
                                      data[256:556, 256:556])
        assert tiles.stats()["fetched"] == fetched + 1 + 3  # (1, 1) was still held
        for block in (1, 2, 3):
            tiles.block_done(block)
        assert tiles.stats()["tiles"] == 0
    # an overview level coarser than the output is read too (the ML mask models at 20 m):
    # the geometry decides, not the level
    plan = ReadPlan(grid, 512, 0, [frozenset({0})] * 4, scene)
    coarse = (Affine(20, 0, ORIGIN[0], 0, -20, ORIGIN[1]), CRS)
    assert plan.blocks_needing((str(path), 0), coarse, 0, 0, (256, 256)) == {0, 1, 2, 3}
    assert plan.blocks_needing((str(path), 0), coarse, 1, 1, (256, 256)) == {0, 1, 2, 3}
    assert plan.blocks_needing((str(path), 0), coarse, 3, 3, (256, 256)) == frozenset()


def test_a_tile_is_held_cut_to_what_the_pending_blocks_read(tmp_path):
    """A 300 px grid over the corner of a file of 256 px tiles: of the three tiles its edge
    crosses only the strip under the grid is held (with the plan's margins), the reads
    get the file's pixels, and a read past the strip fetches that tile again whole."""
    from rasterio.windows import Window

    from clearsky.core import readplan
    from clearsky.core.readplan import ReadPlan

    data = np.random.default_rng(4).integers(1, 1000, (1024, 1024)).astype("uint16")
    path = write_tiff(tmp_path / "b.tif", data, 10.0, tile=256)
    grid = Grid(CRS, Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), 300, 300)
    key = (str(path), None)
    tiles = TileCache(64 * 2**20, 4)
    tiles.use_plan(ReadPlan(grid, 300, 0, [frozenset({0})], {0: frozenset({str(path)})}))
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(tiles.read(ds, key, 1, Window(0, 0, 300, 300)),
                                      data[:300, :300])
        edge = 300 + readplan.SOURCE_MARGIN + readplan.CUT_MARGIN  # rows, columns kept
        assert tiles.stats()["bytes"] == edge * edge * 2 < 0.6 * 4 * 256 * 256 * 2
        np.testing.assert_array_equal(tiles.read(ds, key, 1, Window(20, 250, 280, 50)),
                                      data[250:300, 20:300])
        assert tiles.stats()["fetched"] == 4 and tiles.stats()["refetched"] == 0
        np.testing.assert_array_equal(tiles.read(ds, key, 1, Window(250, 250, 100, 100)),
                                      data[250:350, 250:350])
        # tile (1, 1) was held 55 x 55: fetched again; tiles (0, 1) and (1, 0) cover
        # only up to the cut too, so they come again as well
        assert tiles.stats()["refetched"] == 3 and tiles.stats()["fetched"] == 7
        # and are kept whole from then on: the same read again fetches nothing
        np.testing.assert_array_equal(tiles.read(ds, key, 1, Window(250, 250, 100, 100)),
                                      data[250:350, 250:350])
        assert tiles.stats()["refetched"] == 3 and tiles.stats()["fetched"] == 7


def _held_state_is_the_files(tiles: TileCache, data: np.ndarray) -> None:
    """Every held part equals the file where it says it starts, the bytes add up, and
    every pinned tile is held."""
    with tiles._lock:
        assert tiles._bytes == sum(t.nbytes for t in tiles._tiles.values())
        for (key, band, r, c), held in tiles._tiles.items():
            th, tw = tiles._shapes[(key, band)]
            y, x = r * th + held.top, c * tw + held.left
            h, w = held.data.shape
            assert h > 0 and w > 0 and y + h <= min((r + 1) * th, data.shape[0])
            assert x + w <= min((c + 1) * tw, data.shape[1])
            np.testing.assert_array_equal(held.data, data[y:y + h, x:x + w])
        assert set(tiles._pins) <= set(tiles._tiles)


@pytest.mark.parametrize("seed", range(12))
def test_random_reads_through_cut_tiles_give_the_files_pixels(tmp_path, seed):
    """Random rasters (edge tiles of every size), tile sizes, grids, blocks, budgets and
    plans set before or after tiles are held; random windows, row read-ahead, finished
    blocks and plans replaced in between, then four threads reading at once: every read
    is the file's pixels and what the cache holds stays consistent."""
    import random

    from rasterio.windows import Window

    from clearsky.core.readplan import ReadPlan

    rng = random.Random(seed)
    height, width, tile = rng.randint(40, 400), rng.randint(40, 400), rng.choice([16, 32, 64])
    data = np.random.default_rng(seed).integers(1, 60000, (height, width)).astype("uint16")
    path = write_tiff(tmp_path / "r.tif", data, 10.0, tile=tile)
    res = 10.0 * rng.choice([0.5, 1, 1.3, 2, 3.7])
    x0 = ORIGIN[0] + rng.uniform(-50, 6 * width)
    y0 = ORIGIN[1] - rng.uniform(-50, 6 * height)
    grid = Grid(CRS, Affine(res, 0, x0, 0, -res, y0), rng.randint(5, 200), rng.randint(5, 200))
    side = rng.randint(8, 64)
    n = math.ceil(grid.height / side) * math.ceil(grid.width / side)
    scenes = [frozenset({0}) if rng.random() < 0.7 else frozenset() for _ in range(n)]

    def plan():
        return ReadPlan(grid, side, rng.randint(0, 10), scenes, {0: frozenset({str(path)})})

    tiles = TileCache(rng.choice([10**9, 20_000, 100_000]), 4)
    key = (str(path), None)
    if rng.random() < 0.5:
        tiles.use_plan(plan())

    def window(limit: int = 10**6) -> Window:
        r, c = rng.randrange(height), rng.randrange(width)
        return Window(c, r, rng.randint(1, min(limit, width - c)),
                      rng.randint(1, min(limit, height - r)))

    with rasterio.open(path) as ds:
        for _ in range(60):
            p = rng.random()
            if p < 0.08:
                tiles.block_done(rng.randrange(n))
            elif p < 0.12:
                tiles.drop_plan() if rng.random() < 0.5 else tiles.use_plan(plan())
            else:
                win = window()
                span = ({r: (0, (width - 1) // tile) for r in range((height - 1) // tile + 1)}
                        if rng.random() < 0.3 else None)
                np.testing.assert_array_equal(
                    tiles.read(ds, key, 1, win, span=span),
                    data[win.row_off:win.row_off + win.height,
                         win.col_off:win.col_off + win.width])
            _held_state_is_the_files(tiles, data)
    windows = [[window(80) for _ in range(30)] for _ in range(4)]

    def reader(wins):
        with rasterio.open(path) as ds:
            for win in wins:
                np.testing.assert_array_equal(
                    tiles.read(ds, key, 1, win),
                    data[win.row_off:win.row_off + win.height,
                         win.col_off:win.col_off + win.width])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(reader, windows))
    _held_state_is_the_files(tiles, data)


# --- against the served archive -------------------------------------------------------------

@pytest.mark.parametrize("method", ["median", "best"])
def test_a_run_fetches_no_byte_twice(world, served, assets, tmp_path, monkeypatch, method):
    """The AOI check and the blocks of a composite over the whole region (many 128 px
    blocks sharing source tiles and SCL; best pixel with its default normalisation and
    feathering halo): the server log's ranges do not overlap per file, and the header is
    fetched without a HEAD request per file. The read plan dropped tiles as their last
    block was done, yet none too early, and no read reached past the part of a tile kept:
    nothing was fetched again."""
    ended = []
    end = TileCache.end
    monkeypatch.setattr(TileCache, "end", lambda self: (ended.append(self.stats()),
                                                        end(self)))
    assets.clear_log()
    build_mosaic(MosaicParams(
        aoi=Aoi(world.region.buffer(-0.01), "EPSG:4326"), start=date(2024, 6, 1),
        end=date(2024, 6, 30), catalog_url=served.stac_url, output=tmp_path / "m.tif",
        max_aoi_cloud=100.0, block_size=128, method=method))
    by_file: dict = {}
    for r in assets.requests():
        if r["path"].endswith(".tif") and r.get("range"):
            start, end = (int(v) for v in r["range"].split("=")[1].split("-"))
            by_file.setdefault(r["path"], []).append((start, end))
    assert len(by_file) > 40
    twice = {}
    for path, spans in by_file.items():
        spans.sort()
        overlap = sum(max(0, min(e0, e1) - s1 + 1)
                      for (s0, e0), (s1, e1) in zip(spans, spans[1:]))
        if overlap:
            twice[path] = spans
    assert twice == {}
    (stats,) = ended
    assert stats["tiles"] == 0 and stats["dropped"] >= 0.9 * stats["fetched"], stats
    assert stats["refetched"] == 0, stats  # no read reached past the part of a tile kept


def test_threads_reading_one_file_in_turn_open_it_once(served, assets):
    """Eight worker threads of one run read one remote COG one after the other, GDAL's HTTP
    cache emptied in between (as a large run's tile bytes push the headers out of it):
    one HEAD and one header read reach the server. Each thread used to open the file
    itself, and fetched the header again (51 of 160 files in the aligned median bench)."""
    from osgeo import gdal

    tif = next(served.root.glob("data/*/*/green.tif"))
    url = f"{assets.url}/{tif.relative_to(served.root).as_posix()}"
    tiles = TileCache(64 * 2**20, 16)
    with rasterio.open(tif) as ds:
        grid = Grid(ds.crs.to_string(), ds.transform * Affine.translation(
            ds.width // 2, ds.height // 2), 64, 64)
    pools = [ThreadPoolExecutor(1, initializer=io.init_worker,
                                initargs=(io.gdal_options(16), tiles)) for _ in range(8)]
    try:
        reads = []
        for pool in pools:
            gdal.VSICurlClearCache()
            reads.append(pool.submit(io.read_to_grid, url, grid).result())
    finally:
        for pool in pools:
            pool.submit(io.close_datasets).result()
            pool.shutdown()
        tiles.end()
    assert all(r is not None and (r == reads[0]).all() for r in reads)
    mine = [r for r in assets.requests() if r["path"].endswith(tif.relative_to(served.root)
                                                                .as_posix())]
    assert [r["method"] for r in mine].count("HEAD") == 1, mine
    assert sum(1 for r in mine if r.get("range") == "bytes=0-16383") == 1, mine


def test_threads_opening_one_file_at_once_send_one_head(served, assets):
    """Eight worker threads of one run open the same remote COG at the same moment: one
    HEAD and one header read reach the server (each thread used to send its own HEAD)."""
    tif = next(served.root.glob("data/*/*/red.tif"))
    url = f"{assets.url}/{tif.relative_to(served.root).as_posix()}"
    assets.configure(delay_ms=200)  # the first open is still in flight when the others come
    tiles = TileCache(64 * 2**20, 16)
    with rasterio.open(tif) as ds:  # a window of the file's own grid, read through the run
        grid = Grid(ds.crs.to_string(), ds.transform * Affine.translation(
            ds.width // 2, ds.height // 2), 64, 64)  # inside the data (its corner is empty)
    try:
        with ThreadPoolExecutor(8, initializer=io.init_worker,
                                initargs=(io.gdal_options(16), tiles)) as pool:
            reads = list(pool.map(lambda _: io.read_to_grid(url, grid), range(8)))
            pool.submit(io.close_datasets).result()
    finally:
        tiles.end()  # as a run does: its open datasets must not outlive it
    assert all(r is not None and r.shape == (64, 64) for r in reads)
    mine = [r for r in assets.requests() if r["path"].endswith(tif.relative_to(served.root)
                                                                .as_posix())]
    assert [r["method"] for r in mine].count("HEAD") == 1, mine
    assert sum(1 for r in mine if r.get("range") == "bytes=0-16383") == 1, mine


def test_a_fetch_reopening_its_file_while_another_thread_opens_it_finishes(tmp_path):
    """One request slot. A fetch holds it and must open another handle of its file (every
    handle busy) while another thread opens the same file at an overview level: both
    finish. The opener used to take the file's lock, then wait for the slot the fetch held
    while the fetch waited for that lock: a block hung for good."""
    path = "/vsimem/clearsky-lock-order.tif"
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=1,
                       dtype="uint16", crs=CRS, tiled=True, blockxsize=64, blockysize=64,
                       transform=Affine(10.0, 0, ORIGIN[0], 0, -10.0, ORIGIN[1])) as ds:
        ds.write(np.arange(256 * 256, dtype="uint16").reshape(256, 256), 1)
        ds.build_overviews([2], Resampling.nearest)
    tiles = TileCache(2**20, requests=1)
    reopen = io._reopener(tiles, path, {"driver": "GTiff"})
    has_slot, go = threading.Event(), threading.Event()
    reopened, opened = [], []

    def fetch():
        with tiles.requests:
            has_slot.set()
            go.wait(10)
            with reopen() as ds:
                reopened.append(ds.read(1, window=Window(0, 0, 4, 4)))

    def open_overview():
        key = (path, 0)
        opened.append(io._source(tiles, path, {"driver": "GTiff", "overview_level": 0}, key))

    first = threading.Thread(target=fetch, daemon=True)
    second = threading.Thread(target=open_overview, daemon=True)
    try:
        first.start()
        assert has_slot.wait(10)
        second.start()
        lock = tiles.opening(path)
        for _ in range(100):  # until the opener holds the file's lock, if it takes it now
            if lock.locked():
                break
            time.sleep(0.01)
        go.set()
        first.join(10)
        second.join(10)
        assert not first.is_alive() and not second.is_alive(), "the two reads wait forever"
        assert reopened[0].tolist()[0] == [0, 1, 2, 3]
        assert (opened[0].width, opened[0].height) == (128, 128)
    finally:
        go.set()
        tiles.end()
        rasterio.shutil.delete(path)


def test_a_thread_waiting_for_another_threads_open_leaves_its_request_slot_free(served, assets):
    """Two request slots. A's open of file X is held 3 s by the server (then dropped); B
    asks for X meanwhile and waits for A's open; C opens file Y. C gets the free slot at
    once: B waits for the open without a slot (taking a slot first, B held C up until A's
    open ended)."""
    x, y = sorted(served.root.glob("data/*/*/red.tif"))[:2]
    url = {t: io.gdal_path(f"{assets.url}/{t.relative_to(served.root).as_posix()}")
           for t in (x, y)}
    assets.configure(faults=[{"path": "/" + x.relative_to(served.root).as_posix(),
                              "kind": "timeout", "count": 1, "hold_s": 3}])
    tiles = TileCache(64 * 2**20, requests=2)
    kwargs = {"driver": "GTiff"}
    ended = {}

    def open_(name, t):
        try:
            with rasterio.Env(**io.gdal_options(2)):
                io._source(tiles, url[t], kwargs, (url[t], None))
        except Exception as exc:  # A's held request is dropped: its open fails
            ended[name + " error"] = type(exc).__name__
        ended[name] = time.monotonic()

    threads = {n: threading.Thread(target=open_, args=(n, t), daemon=True)
               for n, t in (("A", x), ("B", x), ("C", y))}
    try:
        t0 = time.monotonic()
        threads["A"].start()
        time.sleep(0.3)
        threads["B"].start()
        time.sleep(0.3)
        threads["C"].start()
        for t in threads.values():
            t.join(30)
        assert not any(t.is_alive() for t in threads.values())
    finally:
        tiles.end()
    assert ended["A"] - t0 > 2.5, ended  # the held open
    assert ended["C"] - t0 < 2.0 and "C error" not in ended, ended


AOI_CHECK_RSS = textwrap.dedent("""
    import json, sys
    from datetime import datetime, timezone
    from shapely.geometry import box
    from clearsky.core import clouds, io
    from clearsky.core.aoi import Aoi
    from clearsky.core.scene import Radiometry, Scene
    path, crs, bounds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    scene = Scene("big", "test", datetime(2024, 6, 1, tzinfo=timezone.utc), "sentinel-2a",
                  "33UUU", crs, box(0, 0, 1, 1), {"scl": path}, Radiometry())
    rule = clouds.MaskRule(frozenset({0, 3, 8, 9, 10}), 2)
    def peak_kb():  # VmHWM: this process's peak (ru_maxrss keeps the parent's across exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    before = peak_kb()
    with io.gdal_env(2), io.run_tiles(int(sys.argv[4]), 2):
        io.init_worker(None, io.current_tiles())
        cov, cloud, n = clouds.aoi_scl_stats(scene, Aoi(box(*bounds), crs), rule.invalid,
                                             allow_local=True, rule=rule,
                                             chunk=int(sys.argv[5]))
    after = peak_kb()
    print(json.dumps({"coverage": cov, "cloud": cloud, "pixels": n,
                      "before_mb": before / 1024, "grew_mb": (after - before) / 1024}))
""")

SIDE = 12288  # 20 m SCL pixels: a 246 km square (150 MB of SCL, 600 MB of masks at once)


@pytest.fixture(scope="module")
def big_scl(tmp_path_factory) -> Path:
    """An SCL COG over a 246 km square: vegetation with a cloud band (class 9) over the
    rows 1/4..1/2 of the file, written by strips of tiles so the test itself stays small."""
    path = tmp_path_factory.mktemp("big") / "scl.tif"
    with rasterio.open(path, "w", driver="GTiff", width=SIDE, height=SIDE, count=1,
                       dtype="uint8", crs=CRS, nodata=0, tiled=True, blockxsize=512,
                       blockysize=512, compress="deflate",
                       transform=Affine(20.0, 0, ORIGIN[0], 0, -20.0, ORIGIN[1])) as ds:
        for row in range(0, SIDE, 512):
            strip = np.full((512, SIDE), 4, "uint8")
            if SIDE // 4 <= row < SIDE // 2:
                strip[:] = 9
            ds.write(strip, 1, window=rasterio.windows.Window(0, row, SIDE, 512))
    return path


def test_the_aoi_check_of_a_huge_aoi_stays_within_the_budget(big_scl):
    """Counted in chunks, a whole-file AOI check holds a few MB, not the 150 MB window
    and its masks (measured in a subprocess: peak RSS growth during the check)."""
    x0, y1 = ORIGIN
    bounds = [x0 + 1, y1 - SIDE * 20 + 1, x0 + SIDE * 20 - 1, y1 - 1]
    out = subprocess.run(
        [sys.executable, "-c", AOI_CHECK_RSS, str(big_scl), CRS, json.dumps(bounds), "256",
         "1024"], capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["pixels"] == SIDE * SIDE
    assert got["coverage"] == pytest.approx(100.0)
    # a quarter of the rows is cloud, grown by the 2-pixel dilation on both sides
    assert got["cloud"] == pytest.approx(100.0 * (SIDE // 4 + 4) / SIDE, abs=1e-6)
    # within the 256 MB budget (tiles <= 64 MB, chunks of 1024^2 pixels, GDAL's caches);
    # the whole window would be 150 MB of SCL plus its masks
    print(got)
    assert got["grew_mb"] < 256, got


def test_reflectance_reads_only_the_rows_and_columns_with_a_usable_pixel(tmp_path,
                                                                          monkeypatch):
    """A tile that only fills a strip its neighbour left empty costs that strip: the
    bands are read on the strip's box, and give there the pixels of a whole-grid read."""
    from datetime import datetime, timezone

    from shapely.geometry import box

    from clearsky.core.clouds import MaskRule
    from clearsky.core.reader import SceneReader
    from clearsky.core.scene import Radiometry, Scene

    rng = np.random.default_rng(5)
    bands = {b: write_tiff(tmp_path / f"{b}.tif",
                           rng.integers(1, 12000, (200, 200)).astype("uint16"), 10.0)
             for b in ("red", "nir")}
    scene = Scene("s", "c", datetime(2024, 6, 1, tzinfo=timezone.utc), "sentinel-2a",
                  "33UUU", CRS, box(0, 0, 1, 1), {b: str(p) for b, p in bands.items()},
                  Radiometry(0.0001, -0.1))
    # in the neighbouring UTM zone: every read is a warp
    x, y = rasterio.warp.transform(CRS, "EPSG:32632", [ORIGIN[0] + 100], [ORIGIN[1] - 100])
    grid = Grid("EPSG:32632", Affine(10.0, 0, round(x[0]), 0, -10.0, round(y[0])), 150, 150)
    shapes = []
    read = io.read_to_grid

    def spy(href, g, **kw):
        shapes.append(g.shape)
        return read(href, g, allow_local=True, **kw)

    monkeypatch.setattr(io, "read_to_grid", spy)
    reader = SceneReader(("red", "nir"), MaskRule(), grid)
    everything = np.ones(grid.shape, bool)
    strip = np.zeros(grid.shape, bool)
    strip[30:120, 140:147] = True
    strip[60, 139] = True
    whole, whole_valid = reader.reflectance(scene, grid, everything)
    part, valid = reader.reflectance(scene, grid, strip)
    assert shapes == [(150, 150)] * 2 + [(90, 8)] * 2
    assert whole_valid[strip].mean() > 0.8
    both = valid & whole_valid
    assert not (valid & ~strip).any() and both.sum() >= 0.99 * (strip & whole_valid).sum()
    assert np.abs(part[:, both] - whole[:, both]).max() <= 0.004  # GDAL's 1/8 px, on noise
    assert np.isnan(part[:, ~valid]).all()
    shapes.clear()
    nothing, valid = reader.reflectance(scene, grid, np.zeros(grid.shape, bool))
    assert shapes == [] and not valid.any() and np.isnan(nothing).all()
    # a band with nothing under the box: no pixel of the box is valid
    far = write_tiff(tmp_path / "far.tif", np.ones((50, 50), "uint16"), 10.0)
    with rasterio.open(far, "r+") as ds:
        ds.transform = Affine(10.0, 0, ORIGIN[0] + 50_000, 0, -10.0, ORIGIN[1])
    lost = Scene("s", "c", scene.datetime, "sentinel-2a", "33UUU", CRS, box(0, 0, 1, 1),
                 {"red": str(bands["red"]), "nir": str(far)}, Radiometry(0.0001, -0.1))
    out, valid = reader.reflectance(lost, grid, strip)
    assert not valid.any() and np.isnan(out).all()
    # into a pass's slot: only the strip's valid pixels are written, the rest is kept
    slot = np.full((2, *grid.shape), 7.0, "float32")
    got, valid = reader.reflectance(scene, grid, strip, out=slot)
    assert got is slot and valid.sum() > 0.8 * strip.sum()
    np.testing.assert_array_equal(slot[:, valid], part[:, valid])
    assert (slot[:, ~valid] == 7.0).all()


@pytest.mark.parametrize("dtype", ["uint16", "uint8", "int16"])
@pytest.mark.parametrize("scale,offset", [(0.0001, -0.1), (0.0001, 0.0), (2.75e-05, -0.2),
                                          (0.0001, 0.3), (1e-7, -1.0)])
def test_the_first_valid_dn_is_exactly_the_reflectance_rule(dtype, scale, offset):
    """`dn >= first_valid_dn` must select the very pixels `(dn > 0) & (reflectance >= 0)`
    selects, for every DN of the type, or say it cannot (None)."""
    from clearsky.core.scene import Radiometry

    radiometry = Radiometry(scale, offset)
    info = np.iinfo(dtype)
    dn = np.arange(info.min, info.max + 1).astype(dtype)
    rule = (dn > 0) & (radiometry.reflectance(dn, out=np.empty(dn.shape, "float32")) >= 0)
    first = radiometry.first_valid_dn(dtype)
    if first is None:
        assert not rule.any()
    else:
        np.testing.assert_array_equal(dn >= first, rule)
    assert radiometry.first_valid_dn("float32") is None


def test_a_warp_takes_the_coordinate_operation_chosen_once_per_crs_pair():
    """GDAL would search PROJ's database again for every read (its cache is keyed by the
    read's own area); the engine hands it the operation every point of the read takes,
    only when that choice is unambiguous."""
    from clearsky.core import operations

    berlin = (13.0, 52.0, 14.0, 52.6)
    chosen = operations.warp_options("EPSG:32633", "EPSG:3035", lambda: berlin)
    assert "proj=laea" in chosen["COORDINATE_OPERATION"]  # the ETRS89 candidate, not ballpark
    assert len(operations.candidates("EPSG:32633", "EPSG:3035")) >= 2
    # a read across the western edge of ETRS89's area: some points would take another op
    assert operations.warp_options("EPSG:32628", "EPSG:3035",
                                   lambda: (-17.0, 40.0, -15.0, 41.0)) \
        == {}
    # between two UTM zones of one datum PROJ has one operation, valid everywhere
    assert len(operations.candidates("EPSG:32632", "EPSG:32633")) == 1
    assert operations.warp_options("EPSG:32632", "EPSG:32633", lambda: berlin)
    # several regional candidates (German grids): GDAL decides
    assert operations.warp_options("EPSG:32632", "EPSG:31467", lambda: berlin) == {}
    # the rule itself: one regional candidate of known accuracy that holds the read, then
    # a ballpark fallback (unknown accuracy) that PROJ takes only outside its area
    region, ballpark = ("a", (0.0, 0.0, 10.0, 10.0), 1.0), ("b", None, -1.0)
    assert operations.choose([region, ballpark], (1, 1, 2, 2)) == "a"
    assert operations.choose([ballpark, region], (1, 1, 2, 2)) == "a"
    assert operations.choose([region, ballpark], (9, 9, 11, 11)) is None
    assert operations.choose([region, ballpark], (20, 20, 21, 21)) == "b"
    assert operations.choose([region, ("c", None, 0.5)], (1, 1, 2, 2)) is None  # better
    assert operations.choose([("a", (0.0, 0.0, 10.0, 10.0), -1.0), ballpark],
                             (1, 1, 2, 2)) is None
    assert operations.choose([region, ("c", (1.0, 1.0, 3.0, 3.0), 2.0), ballpark],
                             (1, 1, 2, 2)) is None


@pytest.mark.parametrize("dst_crs", ["EPSG:3035", "EPSG:32632"])
def test_a_warp_with_the_chosen_operation_gives_gdals_own_pixels(tmp_path, dst_crs):
    """Byte-equal to GDAL left to choose, for the warps of the benchmark (UTM 33 into
    EPSG:3035 and into UTM 32)."""
    rng = np.random.default_rng(11)
    path = write_tiff(tmp_path / "b.tif", rng.integers(1, 12000, (300, 300)).astype("uint16"),
                      10.0)
    west, south, east, north = rasterio.warp.transform_bounds(
        CRS, dst_crs, ORIGIN[0] + 500, ORIGIN[1] - 2500, ORIGIN[0] + 2500, ORIGIN[1] - 500)
    grid = Grid(dst_crs, Affine(10.0, 0, round(west), 0, -10.0, round(north)),
                int((east - west) // 10), int((north - south) // 10))
    for how in (Resampling.nearest, Resampling.bilinear):
        ours = io.read_to_grid(str(path), grid, resampling=how, use_overviews=False,
                               allow_local=True)
        src, dst = rasterio.crs.CRS.from_string(CRS), rasterio.crs.CRS.from_string(dst_crs)
        assert io._operation(src, dst, io.bounds_in(dst, src, grid.bounds))  # handed over
        np.testing.assert_array_equal(
            ours, gdal_warp(path, grid, how, raw=False, **io.kernel_scale(how, 10.0, 10.0)))
