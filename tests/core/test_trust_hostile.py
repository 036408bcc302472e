"""Issue 10, items 1 and 8: a hostile or broken asset server can never make Clearsky read a
local file, chain to another URL, or give silently missing pixels.

The range server answers a `.tif` href with a VRT (raw band over a local file, a local
GeoTIFF, another loopback URL), redirects to file://, ftp:// and other schemes, and ignores
Range. Local bait files are watched with inotify (every open or read of them counts), the
other loopback server's log must stay empty, and every scene fails with a plain reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import struct
import threading
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from osgeo import gdal

from clearsky.core import io
from clearsky.core.errors import ReadError
from clearsky.core.grid import Grid
from world.servers import RangeServer

CRS = "EPSG:32633"
ORIGIN = (500000.0, 5800000.0)
VALUES = 4242  # every pixel of the local bait GeoTIFF
TRIED: list = []  # (href kind, outcome): the closing note counts them


def grid(n: int = 64) -> Grid:
    return Grid(CRS, Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), n, n)


def geotiff(path: Path, value: int, n: int = 64) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="uint16",
                       crs=CRS, transform=grid(n).transform, tiled=True, blockxsize=16,
                       blockysize=16) as ds:
        ds.write(np.full((n, n), value, np.uint16), 1)
    return path


def raw_vrt(target: str) -> str:
    return f"""<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>{CRS}</SRS>
  <GeoTransform>{ORIGIN[0]}, 10, 0, {ORIGIN[1]}, 0, -10</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">
    <SourceFilename relativetoVRT="0">{target}</SourceFilename>
    <ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>64</LineOffset>
  </VRTRasterBand></VRTDataset>"""


def source_vrt(target: str) -> str:
    return f"""<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>{CRS}</SRS>
  <GeoTransform>{ORIGIN[0]}, 10, 0, {ORIGIN[1]}, 0, -10</GeoTransform>
  <VRTRasterBand dataType="UInt16" band="1"><SimpleSource>
    <SourceFilename relativetoVRT="0">{target}</SourceFilename><SourceBand>1</SourceBand>
  </SimpleSource></VRTRasterBand></VRTDataset>"""


class Inotify:
    """Counts opens and reads of watched files by anyone (Linux inotify via libc)."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, paths) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0
        for p in paths:
            assert self.libc.inotify_add_watch(self.fd, str(p).encode(),
                                               self.IN_ACCESS | self.IN_OPEN) >= 0

    def events(self) -> int:
        count = 0
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return count
            offset = 0
            while offset < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                offset += 16 + length
                count += 1

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Two range servers: the hostile asset store and `other` (must never be asked)."""
    root = tmp_path_factory.mktemp("hostile")
    local = tmp_path_factory.mktemp("local")  # bait a catalog must never reach
    secret = local / "secret.txt"
    secret.write_bytes(b"root:x:0:0:SECRET-LINE-OF-A-LOCAL-FILE:/root:/bin/bash\n" * 80)
    bait = geotiff(local / "bait.tif", VALUES)
    geotiff(root / "good.tif", 1000)  # 8 kB: fits in GDAL's first read of a file
    geotiff(root / "big.tif", 1000, n=512)  # 512 kB: GDAL must read it in ranges
    (root / "other").mkdir()
    with RangeServer(root) as store, RangeServer(root / "other") as other:
        geotiff(root / "other" / "remote.tif", 777)
        yield store, other, secret, bait


def hostile_faults(store, other, secret: Path, bait: Path) -> dict:
    other_url = f"{other.url}/remote.tif"
    return {
        "/raw-local.tif": {"kind": "body", "body": raw_vrt(str(secret))},
        "/raw-passwd.tif": {"kind": "body", "body": raw_vrt("/etc/passwd")},
        "/local-geotiff.tif": {"kind": "body", "body": source_vrt(str(bait))},
        "/vsi-local.tif": {"kind": "body", "body": source_vrt(f"/vsicurl/file://{bait}")},
        "/other-url.tif": {"kind": "body", "body": source_vrt(f"/vsicurl/{other_url}")},
        "/to-file.tif": {"kind": "redirect", "location": f"file://{bait}"},
        "/to-ftp.tif": {"kind": "redirect", "location": f"ftp://127.0.0.1:{FTP_PORT}/b.tif"},
        "/to-gopher.tif": {"kind": "redirect", "location": f"gopher://127.0.0.1:{FTP_PORT}/"},
        "/to-scp.tif": {"kind": "redirect", "location": f"scp://127.0.0.1:{FTP_PORT}/b.tif"},
        "/no-range.tif": {"kind": "ignore_range", "path": "/big.tif"},
    }


FTP_PORT = 0  # set by the ftp_trap fixture


@pytest.fixture(scope="module")
def ftp_trap():
    """A listening socket that counts connections: a redirect to ftp:// must never reach it."""
    global FTP_PORT
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    FTP_PORT = listener.getsockname()[1]
    hits, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            hits.append(1)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield hits
    stop.set()
    thread.join(5)
    listener.close()


def test_hostile_hrefs_are_refused_and_no_local_file_or_other_url_is_read(hostile, ftp_trap):
    store, other, secret, bait = hostile
    faults = hostile_faults(store, other, secret, bait)
    rules = [{"path": f.get("path", path), "count": None, **{k: v for k, v in f.items()
                                                              if k != "path"}}
             for path, f in faults.items()]
    store.reset()
    store.configure(faults=rules)
    other.reset()
    watch = Inotify([secret, bait])
    passwd = Path("/etc/passwd").read_bytes()[:64]
    reasons = {}
    try:
        with io.gdal_env(2):
            for path, fault in faults.items():
                gdal.VSICurlClearCache()
                href = store.url + (fault.get("path") if fault["kind"] == "ignore_range"
                                    else path)
                for read in (lambda h: io.read_to_grid(h, grid(), tries=2, backoff=0.01),
                             lambda h: io.read_native_window(h, grid().bounds, CRS, tries=1)):
                    with pytest.raises(ReadError) as err:
                        out = read(href)
                        # never reached: but if it were, the pixels must not be the bait's
                        assert out is None or VALUES not in np.asarray(out[0] if isinstance(
                            out, tuple) else out)
                    reasons[path] = str(err.value)
                    TRIED.append((path, "refused"))
        local_reads = watch.events()
    finally:
        watch.close()
        store.reset()
    assert local_reads == 0, "a local file was opened or read"
    assert other.requests() == [], "a VRT made GDAL request another URL"
    assert ftp_trap == [], "a redirect reached an ftp server"
    for message in reasons.values():  # plain words, never file content
        assert "SECRET-LINE" not in message and passwd.decode(errors="ignore") not in message
    for path in ("/raw-local.tif", "/raw-passwd.tif", "/local-geotiff.tif", "/vsi-local.tif",
                 "/other-url.tif"):
        assert "not a GeoTIFF (only GeoTIFF/COG assets are read)" in reasons[path], reasons[path]
    for path in ("/to-file.tif", "/to-ftp.tif", "/to-gopher.tif", "/to-scp.tif"):
        assert "redirected to" in reasons[path], reasons[path]
    assert "the server ignores HTTP Range requests" in reasons["/no-range.tif"]
    assert len(TRIED) == 2 * len(faults)
    print(f"\nhostile hrefs tried: {len(TRIED)}, local file opens/reads: {local_reads}, "
          f"requests to the other server: 0, ftp connections: {len(ftp_trap)}")


def test_a_redirect_to_another_http_server_is_followed(hostile):
    """http(s) -> http(s) redirects stay allowed (signed S3 URLs use them)."""
    store, other, _, _ = hostile
    store.reset()
    store.configure(faults=[{"path": "/moved.tif", "kind": "redirect", "count": None,
                             "location": f"{other.url}/remote.tif"}])
    gdal.VSICurlClearCache()
    try:
        with io.gdal_env(2):
            out = io.read_to_grid(f"{store.url}/moved.tif", grid())
    finally:
        store.reset()
    assert out is not None and (out == 777).all()


def test_a_server_that_ignores_range_after_the_header_fails_the_scene(hostile):
    """The header came with ranges, the tiles without: the read fails with the reason,
    never returns zeros where the pixels were."""
    store, _, _, _ = hostile
    store.reset()
    gdal.VSICurlClearCache()
    with io.gdal_env(2):
        big = f"{store.url}/big.tif"
        assert (io.read_to_grid(big, grid(32), use_overviews=False) == 1000).all()
        store.configure(faults=[{"path": "/*.tif", "kind": "ignore_range", "count": None}])
        far = Grid(CRS, Affine(10, 0, ORIGIN[0] + 4000, 0, -10, ORIGIN[1] - 4000), 64, 64)
        try:
            with pytest.raises(ReadError, match="ignores HTTP Range requests"):
                io.read_to_grid(big, far, use_overviews=False)
            # GDAL 3.6 keeps a small file (here 8 kB) that arrives whole: pixels are right
            gdal.VSICurlClearCache()
            assert (io.read_to_grid(f"{store.url}/good.tif", grid()) == 1000).all()
        finally:
            store.reset()


def test_vsi_chains_in_hrefs_are_refused_before_any_request():
    for href in ("/vsicurl/file:///etc/passwd", "/vsicurl?url=file:///etc/passwd",
                 "/vsizip//vsicurl/http://x/a.zip/a.tif", "file:///etc/passwd", "/etc/passwd",
                 "ftp://127.0.0.1/a.tif", "/vsimem/a.tif"):
        with pytest.raises(ReadError, match="only http"):
            io.gdal_path(href)
    assert io.gdal_path("/vsicurl/https://h/a.tif") == "/vsicurl/https://h/a.tif"


def test_gdal_env_refuses_ftp_only_while_active():
    key = "ftp_proxy"  # what libcurl reads for ftp:// URLs
    before = os.environ.get(key)
    with io.gdal_env(1):
        assert os.environ[key].startswith("clearsky-refuses-ftp")
        with io.gdal_env(1):  # nested: still refused
            pass
        assert os.environ[key].startswith("clearsky-refuses-ftp")
    assert os.environ.get(key) == before


def test_controls_the_bait_is_real_and_the_watch_sees_reads(hostile, ftp_trap):
    """Positive controls: without the driver allow-list the hostile VRT does read the local
    bait (so the test above is meaningful), and the inotify watch counts that read."""
    store, other, secret, bait = hostile
    faults = hostile_faults(store, other, secret, bait)
    store.reset()
    store.configure(faults=[{"path": "/local-geotiff.tif", "count": None,
                             **faults["/local-geotiff.tif"]}])
    watch = Inotify([bait])
    gdal.VSICurlClearCache()
    try:
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), \
                rasterio.open(f"/vsicurl/{store.url}/local-geotiff.tif") as ds:
            assert ds.driver == "VRT" and (ds.read(1) == VALUES).all()
        assert watch.events() > 0
    finally:
        watch.close()
        store.reset()


def test_a_mosaic_skips_hostile_scenes_with_the_reason_and_reads_nothing_local(
        world, served, assets, tmp_path):
    """End to end (catalog -> clouds -> mosaic): one scene's red band is a VRT over a local
    GeoTIFF, another's SCL redirects to file://. Both are reported with the reason, no local
    file is touched and the pixels equal those of a run where the two assets just fail."""
    from shapely.geometry import box as shp_box

    from clearsky.core.api import Aoi, MosaicParams, build_mosaic

    lon, lat = world.known_aois["clear_under_cloudy"].geometry.centroid.coords[0]
    aoi = Aoi(shp_box(lon - 0.006, lat - 0.004, lon + 0.006, lat + 0.004))

    def run(path):
        gdal.VSICurlClearCache()
        return build_mosaic(MosaicParams(
            aoi=aoi, start=date(2024, 6, 1), end=date(2024, 6, 30), catalog_url=served.stac_url,
            output=path, max_aoi_cloud=100.0, block_size=128, max_workers=2, bands=("red",)))

    first = run(tmp_path / "first.tif")
    contributors = [r.scene for r in first.reports if r.pixels_contributed]
    vrt_victim = contributors[0]
    scl_victim = next(r.scene for r in first.reports if r.kept and r.scene != vrt_victim)
    bait = geotiff(tmp_path / "bait.tif", VALUES)
    watch = Inotify([bait])
    try:
        assets.configure(faults=[
            {"path": f"*/{vrt_victim.id}/red.tif", "kind": "body", "count": None,
             "body": source_vrt(str(bait))},
            {"path": f"*/{scl_victim.id}/scl.tif", "kind": "redirect", "count": None,
             "location": f"file://{bait}"}])
        hostile = run(tmp_path / "hostile.tif")
        local_reads = watch.events()
    finally:
        watch.close()
    rows = {r.scene.id: r for r in hostile.reports}
    assert local_reads == 0
    assert not rows[vrt_victim.id].kept and rows[vrt_victim.id].pixels_contributed == 0
    assert "not a GeoTIFF" in rows[vrt_victim.id].reason, rows[vrt_victim.id].reason
    assert not rows[scl_victim.id].kept and "redirected to" in rows[scl_victim.id].reason
    gone = f"{assets.url}/missing.tif"  # a 404: the same two assets simply fail
    assets.configure(faults=[{"path": f"*/{vrt_victim.id}/red.tif", "kind": "redirect",
                              "count": None, "location": gone},
                             {"path": f"*/{scl_victim.id}/scl.tif", "kind": "redirect",
                              "count": None, "location": gone}])
    reference = run(tmp_path / "reference.tif")
    with rasterio.open(tmp_path / "hostile.tif") as a, \
            rasterio.open(tmp_path / "reference.tif") as b:
        assert np.array_equal(a.read(), b.read())
    assert {r.scene.id for r in reference.reports if r.kept} == \
        {r.scene.id for r in hostile.reports if r.kept}
    TRIED.extend([("mosaic red VRT", "refused"), ("mosaic scl redirect", "refused")])
