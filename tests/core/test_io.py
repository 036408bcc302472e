"""Windowed reads (local and over a loopback HTTP range server), GDAL env, output checks."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from clearsky.core import io
from clearsky.core.errors import OutputError, ReadError
from clearsky.core.grid import Grid
from world.servers import RangeServer

SCL_CLASSES = (0, 3, 4, 5, 6, 8, 9, 10)


def write_cog(path: Path, array: np.ndarray, crs: str, transform: Affine, *,
              resampling: str = "AVERAGE", blocksize: int = 512) -> Path:
    """A COG with overviews, written straight with rasterio (independent of core.io)."""
    tmp = path.with_suffix(".src.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=array.shape[1], height=array.shape[0],
                       count=1, dtype=array.dtype, crs=crs, transform=transform,
                       nodata=0) as ds:
        ds.write(array, 1)
    rasterio.shutil.copy(tmp, path, driver="COG", BLOCKSIZE=str(blocksize),
                         OVERVIEW_RESAMPLING=resampling, COMPRESS="DEFLATE")
    tmp.unlink()
    return path


@pytest.fixture(scope="module")
def cogs(tmp_path_factory):
    """A 2048 x 2048 random-noise COG (incompressible: bytes track pixels) and an SCL."""
    root = tmp_path_factory.mktemp("cogs")
    rng = np.random.default_rng(7)
    noise = rng.integers(1, 60000, size=(2048, 2048), dtype=np.uint16)
    write_cog(root / "big.tif", noise, "EPSG:32633", from_origin(400000, 5800000, 10, 10))
    write_cog(root / "broken.tif", noise[:600, :600], "EPSG:32633",
              from_origin(400000, 5800000, 10, 10))  # served only with faults
    patches = rng.choice(SCL_CLASSES, size=(86, 86)).astype(np.uint8)
    scl = np.kron(patches, np.ones((3, 3), dtype=np.uint8))[:256, :256]  # 20 m pixels
    write_cog(root / "scl.tif", scl, "EPSG:32633", from_origin(400000, 5800000, 20, 20),
              resampling="AVERAGE", blocksize=128)
    return root, noise, scl


@pytest.fixture(scope="module")
def server(cogs):
    with RangeServer(cogs[0]) as srv:
        yield srv


def served_bytes(server: RangeServer, name: str) -> int:
    return server.bytes_served("/" + name)


# --- paths and env ---------------------------------------------------------------------

def test_gdal_path_maps_remote_schemes_and_refuses_local_files():
    assert io.gdal_path("https://x.org/a/B04.tif") == "/vsicurl/https://x.org/a/B04.tif"
    assert io.gdal_path("http://127.0.0.1:9/a.tif") == "/vsicurl/http://127.0.0.1:9/a.tif"
    assert io.gdal_path("s3://bucket/k/B04.tif") == "/vsis3/bucket/k/B04.tif"
    assert io.gdal_path("/data/a.tif", allow_local=True) == "/data/a.tif"
    assert io.gdal_path("file:///data/a.tif", allow_local=True) == "/data/a.tif"
    for href in ("/etc/passwd", "file:///data/a.tif", "relative/a.tif"):
        with pytest.raises(ReadError, match="only http"):
            io.gdal_path(href)


def test_read_functions_refuse_local_files_by_default(cogs):
    grid = Grid("EPSG:32633", from_origin(400000, 5800000, 10, 10), 10, 10)
    with pytest.raises(ReadError, match="Refusing"):
        io.read_to_grid(str(cogs[0] / "big.tif"), grid)
    with pytest.raises(ReadError, match="Refusing"):
        io.read_native_window(str(cogs[0] / "scl.tif"), grid.bounds, grid.crs)


def test_gdal_env_options_reach_worker_threads():
    seen = {}

    def worker(key):
        with io.ensure_env():
            seen[key] = rasterio.env.getenv().get("GDAL_HTTP_TIMEOUT")

    def pooled():
        return rasterio.env.getenv().get("GDAL_HTTP_TIMEOUT")

    with io.gdal_env(GDAL_HTTP_TIMEOUT=7) as env:
        assert env.options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
        t = threading.Thread(target=worker, args=("inside",))
        t.start()
        t.join()
        with ThreadPoolExecutor(2, initializer=io.init_worker,
                                initargs=(io.current_options(),)) as pool:
            assert pool.submit(pooled).result() == "7"
    t = threading.Thread(target=worker, args=("after",))
    t.start()
    t.join()
    assert seen == {"inside": "7", "after": io.gdal_options()["GDAL_HTTP_TIMEOUT"]}


def test_choose_overview_picks_the_coarsest_level_not_coarser_than_the_grid():
    factors = [2, 4, 8, 16]
    pick = lambda target: io.choose_overview(10980, 10980, 10.0, factors, target)  # noqa: E731
    assert pick(10.0) is None
    assert pick(15.0) is None
    assert pick(20.0) == 0
    assert pick(30.0) == 0
    assert pick(60.0) == 1
    assert pick(80.0) == 2
    assert pick(1000.0) == 3
    # 1001 px / 2 rounds up to 501 overview px: 19.98 m, still not coarser than 20 m
    assert io.choose_overview(1001, 1001, 10.0, [2], 20.0) == 0


# --- read_to_grid ----------------------------------------------------------------------

def test_reprojection_between_utm_zones_matches_the_analytic_field(tmp_path):
    """A smooth field defined on lon/lat, stored in EPSG:32632, read into an EPSG:32633
    grid across the 12E zone line: every pixel within 0.5 % of the analytic value."""
    lon0, lat0 = 11.95, 48.0
    to32 = Transformer.from_crs(4326, 32632, always_xy=True)
    x0, y0 = to32.transform(lon0 - 0.05, lat0 + 0.04)
    x0, y0 = round(x0, -1), round(y0, -1)
    n, res = 400, 20.0

    def field(lon, lat):
        return 4000 + 40000 * (lon - lon0) + 30000 * (lat - lat0) + 2e5 * (lat - lat0) ** 2

    cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    lon, lat = Transformer.from_crs(32632, 4326, always_xy=True).transform(
        x0 + cols * res, y0 - rows * res)
    src = np.rint(field(lon, lat)).astype(np.uint16)
    assert src.min() > 1000
    href = write_cog(tmp_path / "field.tif", src, "EPSG:32632", from_origin(x0, y0, res, res))

    to33 = Transformer.from_crs(4326, 32633, always_xy=True)
    cx, cy = to33.transform(lon0 + 0.005, lat0)
    cx, cy = round(cx, -1), round(cy, -1)
    grid = Grid("EPSG:32633", from_origin(cx - 2000, cy + 2000, 20, 20), 200, 200)
    got = io.read_to_grid(str(href), grid, resampling=Resampling.bilinear, allow_local=True)
    assert got is not None and got.dtype == np.uint16 and got.shape == (200, 200)
    gc, gr = np.meshgrid(np.arange(200) + 0.5, np.arange(200) + 0.5)
    glon, glat = Transformer.from_crs(32633, 4326, always_xy=True).transform(
        cx - 2000 + gc * 20, cy + 2000 - gr * 20)
    expected = field(glon, glat)
    assert (got > 0).all()
    assert np.abs(got - expected).max() / expected.min() < 0.005


def test_no_overlap_or_only_nodata_gives_none(tmp_path):
    data = np.zeros((100, 100), dtype=np.uint16)
    data[:, 50:] = 500
    href = str(write_cog(tmp_path / "half.tif", data, "EPSG:32633",
                         from_origin(400000, 5800000, 10, 10)))
    far = Grid("EPSG:32633", from_origin(500000, 5800000, 10, 10), 20, 20)
    assert io.read_to_grid(href, far, allow_local=True) is None
    empty_half = Grid("EPSG:32633", from_origin(400000, 5800000, 10, 10), 40, 40)
    assert io.read_to_grid(href, empty_half, allow_local=True) is None
    full = Grid("EPSG:32633", from_origin(400000, 5800000, 10, 10), 100, 100)
    got = io.read_to_grid(href, full, resampling=Resampling.nearest, allow_local=True)
    np.testing.assert_array_equal(got, data)


def test_coarse_grid_reads_the_matching_overview_only(server, cogs):
    """A 40 m grid over a 10 m COG reads the 4x overview: a sixteenth of the bytes."""
    url = f"{server.url}/big.tif"
    grid = Grid("EPSG:32633", from_origin(400000, 5800000, 40, 40), 512, 512)
    server.clear_log()
    got = io.read_to_grid(url, grid, resampling=Resampling.nearest)
    with_overview = served_bytes(server, "big.tif")
    server.clear_log()
    full = io.read_to_grid(url, grid, resampling=Resampling.nearest, use_overviews=False)
    without = served_bytes(server, "big.tif")
    with rasterio.open(cogs[0] / "big.tif", overview_level=1) as ov:
        assert ov.res == (40.0, 40.0)
        np.testing.assert_array_equal(got, ov.read(1))
    assert full is not None and full.shape == (512, 512)
    assert without > 2048 * 2048 * 2 * 0.9  # all the full-resolution pixels
    assert with_overview < 0.1 * without
    assert with_overview < 512 * 512 * 2 * 1.3  # the overview's blocks plus the header


def test_small_grid_reads_only_its_window(server, cogs):
    """A 10 m grid over 256 x 256 pixels inside one 512 block: that block, not the file."""
    url = f"{server.url}/big.tif"
    grid = Grid("EPSG:32633", from_origin(400000 + 640 * 10, 5800000 - 640 * 10, 10, 10), 256, 256)
    server.clear_log()
    got = io.read_to_grid(url, grid, resampling=Resampling.nearest)
    np.testing.assert_array_equal(got, cogs[1][640:896, 640:896])
    size = (cogs[0] / "big.tif").stat().st_size
    assert served_bytes(server, "big.tif") < 0.1 * size


def test_concurrent_reads_from_worker_threads(server, cogs):
    url = f"{server.url}/big.tif"
    grids = [Grid("EPSG:32633", from_origin(400000 + c * 10, 5800000 - r * 10, 10, 10), 128, 128)
             for r in (0, 700, 1500) for c in (0, 900, 1900)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(
            lambda g: io.read_to_grid(url, g, resampling=Resampling.nearest), grids))
    for g, got in zip(grids, results):
        c, r = (~from_origin(400000, 5800000, 10, 10)) * (g.transform.c, g.transform.f)
        c, r = int(round(c)), int(round(r))
        expected = cogs[1][r:r + 128, c:c + 128]
        np.testing.assert_array_equal(got[:expected.shape[0], :expected.shape[1]], expected)


def test_scl_read_with_nearest_and_no_overviews_keeps_the_classes(cogs):
    """SCL into a coarser grid in another CRS keeps only class values; its averaged
    overview (what must never be read) would not."""
    href = str(cogs[0] / "scl.tif")
    to32 = Transformer.from_crs(32633, 32632, always_xy=True)
    x, y = to32.transform(400000 + 500, 5800000 - 500)
    grid = Grid("EPSG:32632", from_origin(round(x), round(y), 60, 60), 60, 60)
    got = io.read_to_grid(href, grid, resampling=Resampling.nearest, use_overviews=False,
                          allow_local=True)
    assert got is not None and got.any()
    assert set(np.unique(got)) <= set(SCL_CLASSES)
    averaged = io.read_to_grid(href, grid, resampling=Resampling.nearest, use_overviews=True,
                               allow_local=True)
    assert not set(np.unique(averaged)) <= set(SCL_CLASSES)


# --- failures and retries --------------------------------------------------------------

def test_transient_5xx_are_retried(server, cogs):
    grid = Grid("EPSG:32633", from_origin(400000, 5800000, 10, 10), 64, 64)
    io.close_datasets()
    server.configure(faults=[{"path": "/scl.tif", "kind": "503", "count": 2}])
    try:
        with io.gdal_env(GDAL_HTTP_RETRY_DELAY="0.05"):
            got = io.read_native_window(f"{server.url}/scl.tif", grid.bounds, grid.crs)
        assert got is not None
        np.testing.assert_array_equal(got[0], cogs[2][:32, :32])
        statuses = [e["status"] for e in server.requests() if e["path"] == "/scl.tif"]
        assert statuses.count(503) == 2 and statuses[-1] in (200, 206)
    finally:
        server.reset()


def test_persistent_failure_raises_read_error_after_bounded_tries(server):
    server.configure(faults=[{"path": "/broken.tif", "kind": "500", "count": None}])
    grid = Grid("EPSG:32633", from_origin(400000, 5800000, 10, 10), 64, 64)
    url = f"{server.url}/broken.tif"
    try:
        t0 = time.monotonic()
        with io.gdal_env(GDAL_HTTP_MAX_RETRY=0), pytest.raises(ReadError) as err:
            io.read_to_grid(url, grid, tries=3, backoff=0.01)
        assert time.monotonic() - t0 < 10
        msg = str(err.value)
        assert msg.startswith(f"Could not read {url}: ") and msg.endswith("after 3 tries")
        assert len([e for e in server.requests() if e["path"] == "/broken.tif"]) >= 3
    finally:
        server.reset()


def test_missing_file_fails_at_once(server):
    grid = Grid("EPSG:32633", from_origin(400000, 5800000, 10, 10), 64, 64)
    with pytest.raises(ReadError, match="after 1 try$"):
        io.read_to_grid(f"{server.url}/nothing.tif", grid, tries=3, backoff=5)


# --- read_native_window ----------------------------------------------------------------

def test_native_window_returns_source_pixels_aligned_to_the_source_grid(cogs):
    href = str(cogs[0] / "scl.tif")
    scl = cogs[2]
    bounds = (400000 + 105, 5800000 - 995, 400000 + 395, 5800000 - 601)  # not on pixel edges
    arr, transform, crs = io.read_native_window(href, bounds, "EPSG:32633", allow_local=True)
    assert crs == "EPSG:32633"
    assert transform == from_origin(400000 + 100, 5800000 - 600, 20, 20)
    np.testing.assert_array_equal(arr, scl[30:50, 5:20])
    wide = io.read_native_window(href, bounds, "EPSG:32633", allow_local=True, margin=2)
    np.testing.assert_array_equal(wide[0], scl[28:52, 3:22])


def test_native_window_pads_outside_the_raster_and_accepts_other_crs(cogs):
    href = str(cogs[0] / "scl.tif")
    bounds = (400000 - 100, 5800000 - 200, 400000 + 100, 5800000 + 60)
    arr, transform, _ = io.read_native_window(href, bounds, "EPSG:32633", allow_local=True)
    assert arr.shape == (13, 10) and transform == from_origin(400000 - 100, 5800000 + 60, 20, 20)
    assert not arr[:3].any() and not arr[:, :5].any()
    np.testing.assert_array_equal(arr[3:, 5:], cogs[2][:10, :5])
    assert io.read_native_window(href, (0, 0, 10, 10), "EPSG:32633", allow_local=True) is None
    lonlat = Transformer.from_crs(32633, 4326, always_xy=True).transform_bounds(
        400500, 5799500, 401000, 5799800)
    arr, transform, _ = io.read_native_window(href, lonlat, "EPSG:4326", allow_local=True)
    x0, y0 = transform.c, transform.f
    assert x0 <= 400500 and y0 >= 5799800
    assert x0 + arr.shape[1] * 20 >= 401000 and y0 - arr.shape[0] * 20 <= 5799500


# --- output checks ---------------------------------------------------------------------

def test_check_output_path(tmp_path):
    io.check_output_path(tmp_path / "out.tif", overwrite=False)
    io.check_output_path(tmp_path / "out.TIFF", overwrite=False)
    with pytest.raises(OutputError, match="does not exist"):
        io.check_output_path(tmp_path / "nope" / "out.tif", overwrite=True)
    with pytest.raises(OutputError, match=r"\.tif or \.tiff"):
        io.check_output_path(tmp_path / "out.png", overwrite=True)
    (tmp_path / "old.tif").write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists"):
        io.check_output_path(tmp_path / "old.tif", overwrite=False)
    io.check_output_path(tmp_path / "old.tif", overwrite=True)
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        io.check_output_path(tmp_path / "dir.tif", overwrite=True)


def test_a_header_longer_than_the_first_request_is_read_on_and_gives_the_pixels(tmp_path):
    """The first request of a file takes io.HEADER_BYTES: a COG of 16 px tiles, whose tile
    offsets and sizes alone fill about 170 KB, is read on by GDAL in further requests and
    gives its pixels exactly; a file whose header fits takes the one request."""
    rng = np.random.default_rng(3)
    data = rng.integers(1, 60000, size=(2048, 2048), dtype=np.uint16)
    transform = from_origin(400000, 5800000, 10, 10)
    write_cog(tmp_path / "tiny_tiles.tif", data, "EPSG:32633", transform, blocksize=16)
    write_cog(tmp_path / "usual.tif", data, "EPSG:32633", transform, blocksize=512)
    with rasterio.open(tmp_path / "tiny_tiles.tif") as ds:
        first = min(int(ds.get_tag_item(f"BLOCK_OFFSET_{x}_0", "TIFF", bidx=1))
                    for x in range(ds.width // 16))
    assert first > 8 * io.HEADER_BYTES  # the header is far longer than the first request
    grid = Grid("EPSG:32633", transform * Affine.translation(300, 200), 40, 30)
    with RangeServer(tmp_path) as srv, io.gdal_env():
        for name in ("tiny_tiles.tif", "usual.tif"):
            srv.clear_log()
            got = io.read_to_grid(f"{srv.url}/{name}", grid, resampling=Resampling.nearest,
                                  use_overviews=False)
            assert np.array_equal(got, data[200:230, 300:340]), name
            gets = [r for r in srv.requests() if r["method"] == "GET"]
            assert gets[0]["range"] == f"bytes=0-{io.HEADER_BYTES - 1}", name
            if name == "usual.tif":  # the header, then the one tile under the grid
                assert len(gets) == 2, gets
            else:
                assert 2 < len(gets) < 40, len(gets)
