"""SCL masks, dilation, the per-AOI cloud share and the concurrent scene check."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from scipy.ndimage import binary_dilation
from shapely.geometry import box

from clearsky.core.aoi import Aoi
from clearsky.core.clouds import aoi_scl_stats, check_aoi_clouds, dilate, invalid_mask
from clearsky.core.errors import CancelledError
from clearsky.core.params import DEFAULT_INVALID_SCL, SearchParams
from clearsky.core.progress import NullProgress
from clearsky.core.scene import Radiometry, Scene

X0, Y0 = 400000.0, 5800000.0  # SCL origin, EPSG:32633, 20 m pixels


def disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


# --- dilation and masks ----------------------------------------------------------------

@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8])
def test_single_cloud_pixel_grows_into_a_disk(radius):
    mask = np.zeros((31, 31), dtype=bool)
    mask[15, 15] = True
    grown = dilate(mask, radius)
    expected = np.zeros_like(mask)
    expected[15 - radius:16 + radius, 15 - radius:16 + radius] = disk(radius)
    np.testing.assert_array_equal(grown, expected)
    assert grown.sum() == disk(radius).sum()  # e.g. 13 pixels for radius 2


def test_dilation_matches_scipy_on_random_masks_and_does_not_wrap():
    rng = np.random.default_rng(3)
    mask = rng.random((120, 97)) < 0.01
    mask[0, 0] = mask[-1, -1] = True  # corners: a wrap-around would light the far side
    for radius in (1, 2, 4, 7):
        np.testing.assert_array_equal(
            dilate(mask, radius), binary_dilation(mask, structure=disk(radius)))
    assert dilate(mask, 0) is not mask and (dilate(mask, 0) == mask).all()


def test_invalid_mask_dilates_clouds_but_not_nodata():
    scl = np.full((20, 20), 4, dtype=np.uint8)  # vegetation
    scl[:, :5] = 0  # nodata stripe
    scl[10, 12] = 9  # one high-probability cloud pixel
    scl[2, 18] = 1  # saturated: invalid, not cloud-like
    mask = invalid_mask(scl, DEFAULT_INVALID_SCL, dilation=2)
    assert mask[:, :5].all()
    # nodata stays exactly the stripe: column 5 (next to it) is valid except near the cloud
    assert not mask[:8, 5].any() and not mask[13:, 5].any()
    cloud = np.zeros_like(mask)
    cloud[8:13, 10:15] = disk(2)
    expected = (scl == 0) | (scl == 1) | cloud
    np.testing.assert_array_equal(mask, expected)
    # without dilation the mask is just the invalid classes
    np.testing.assert_array_equal(invalid_mask(scl, DEFAULT_INVALID_SCL), np.isin(scl, [0, 1, 9]))


def test_optional_classes_are_dilated_only_when_chosen():
    scl = np.full((15, 15), 5, dtype=np.uint8)
    scl[7, 7] = 11  # snow
    scl[2, 2] = 7  # unclassified
    default = invalid_mask(scl, DEFAULT_INVALID_SCL, dilation=1)
    assert not default.any()
    strict = invalid_mask(scl, DEFAULT_INVALID_SCL | {7, 11}, dilation=1)
    assert strict.sum() == 2 * 5 and strict[7, 8] and strict[2, 1]


# --- synthetic SCL files ---------------------------------------------------------------

def write_scl(path: Path, scl: np.ndarray, x0: float = X0, y0: float = Y0) -> str:
    with rasterio.open(path, "w", driver="GTiff", width=scl.shape[1], height=scl.shape[0],
                       count=1, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(x0, y0, 20, 20), nodata=0, tiled=True) as ds:
        ds.write(scl, 1)
    return str(path)


def scene(name: str, scl_href: str | None, crs: str = "EPSG:32633") -> Scene:
    assets = {"red": "unused.tif"}
    if scl_href:
        assets["scl"] = scl_href
    return Scene(
        id=name, collection="sentinel-2-c1-l2a",
        datetime=datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc), platform="sentinel-2a",
        tile="33UUU", crs=crs, footprint=box(12, 52, 14, 53), assets=assets,
        radiometry=Radiometry(0.0001, -0.1),
    )


@pytest.fixture
def striped(tmp_path) -> str:
    """200 x 200 SCL: vegetation; columns 50-79 cloud (9); rows 0-9 nodata."""
    scl = np.full((200, 200), 4, dtype=np.uint8)
    scl[:, 50:80] = 9
    scl[:10, :] = 0
    return write_scl(tmp_path / "scl.tif", scl)


def utm_aoi(minx, miny, maxx, maxy) -> Aoi:
    return Aoi(box(X0 + minx, Y0 - maxy, X0 + maxx, Y0 - miny), crs="EPSG:32633")


def test_aoi_stats_on_a_known_stripe(striped):
    # AOI columns 50-149 (x 1000..3000 m), rows 0-49 (y 0..1000 m below the origin):
    # 100 x 50 pixels, rows 0-9 nodata -> 80 % covered; 30 of 100 columns cloudy -> 30 %
    cov, cloud, n = aoi_scl_stats(scene("s", striped), utm_aoi(1000, 0, 3000, 1000),
                                  DEFAULT_INVALID_SCL, allow_local=True)
    assert n == 100 * 40
    assert cov == pytest.approx(80.0)
    assert cloud == pytest.approx(30.0)


def test_aoi_partly_outside_the_raster_counts_as_uncovered(striped):
    # x from -1000 m to 1000 m: the western half lies outside the file
    cov, cloud, n = aoi_scl_stats(scene("s", striped), utm_aoi(-1000, 1000, 1000, 2000),
                                  DEFAULT_INVALID_SCL, allow_local=True)
    assert cov == pytest.approx(50.0) and cloud == 0.0 and n == 50 * 50


def test_aoi_in_wgs84_matches_the_area_share(striped):
    # a lon/lat box inside the raster straddling the cloud stripe at x 1000..1600 m
    to_ll = Transformer.from_crs(32633, 4326, always_xy=True)
    lon0, lat0 = to_ll.transform(X0 + 700, Y0 - 3000)
    lon1, lat1 = to_ll.transform(X0 + 2300, Y0 - 1500)
    aoi = Aoi(box(lon0, lat0, lon1, lat1))
    cov, cloud, n = aoi_scl_stats(scene("s", striped), aoi, DEFAULT_INVALID_SCL,
                                  allow_local=True)
    geom = aoi.to_crs("EPSG:32633")
    cloudy = geom.intersection(box(X0 + 1000, Y0 - 4000, X0 + 1600, Y0)).area
    assert cov == pytest.approx(100.0)
    assert cloud == pytest.approx(100 * cloudy / geom.area, abs=1.0)
    assert n == pytest.approx(geom.area / 400, rel=0.02)


def test_tiny_aoi_inside_one_pixel_still_counts(striped):
    tiny = utm_aoi(1201, 401, 1208, 408)  # inside pixel (20, 60), misses its centre
    cov, cloud, n = aoi_scl_stats(scene("s", striped), tiny,
                                  DEFAULT_INVALID_SCL, allow_local=True)
    assert (cov, cloud, n) == (100.0, 100.0, 1)


def test_dilated_stats_grow_the_cloud_share(striped):
    aoi = utm_aoi(1000, 200, 3000, 1000)
    plain = aoi_scl_stats(scene("s", striped), aoi, DEFAULT_INVALID_SCL, allow_local=True)
    grown = aoi_scl_stats(scene("s", striped), aoi, DEFAULT_INVALID_SCL, allow_local=True,
                          dilation=2)
    assert plain[1] == pytest.approx(30.0) and grown[1] == pytest.approx(32.0)


# --- check_aoi_clouds ------------------------------------------------------------------

def test_check_aoi_clouds_applies_the_mosaic_mask_rule(striped):
    """The AOI cloud % shown is the share the mosaic refuses: classes and dilation alike."""
    aoi = utm_aoi(1000, 200, 3000, 1000)
    when = datetime(2024, 1, 1).date(), datetime(2024, 12, 31).date()
    default = SearchParams(aoi=aoi, start=when[0], end=when[1])
    assert default.dilation == 2
    (grown,) = check_aoi_clouds([scene("s", striped)], aoi, default, NullProgress(),
                                allow_local=True)
    plain = SearchParams(aoi=aoi, start=when[0], end=when[1], dilation=0)
    (flat,) = check_aoi_clouds([scene("s", striped)], aoi, plain, NullProgress(),
                               allow_local=True)
    assert flat.aoi_cloud == pytest.approx(30.0) and grown.aoi_cloud == pytest.approx(32.0)
    fewer = SearchParams(aoi=aoi, start=when[0], end=when[1], dilation=0,
                         invalid_scl=frozenset({0}))
    (none,) = check_aoi_clouds([scene("s", striped)], aoi, fewer, NullProgress(),
                               allow_local=True)
    assert none.aoi_cloud == pytest.approx(0.0)


def test_check_aoi_clouds_verdicts_in_input_order(tmp_path, striped):
    cloudy = np.full((200, 200), 8, dtype=np.uint8)
    cloudy[:, 100:] = 4
    cloudy[:, 100:137] = 3
    elsewhere = write_scl(tmp_path / "far.tif", np.full((50, 50), 4, np.uint8), x0=X0 + 50000)
    scenes = [
        scene("clear", striped),
        scene("cloudy", write_scl(tmp_path / "cloudy.tif", cloudy)),
        scene("far", elsewhere),
        scene("missing", str(tmp_path / "missing.tif")),
        scene("noscl", None),
    ]
    aoi2 = utm_aoi(1000, 1000, 3000, 2000)  # columns 50-149
    params = SearchParams(aoi=aoi2, start=datetime(2024, 1, 1).date(),
                          end=datetime(2024, 12, 31).date(), max_aoi_cloud=50.0, max_workers=3,
                          dilation=0)
    progress = NullProgress()
    reports = check_aoi_clouds(scenes, aoi2, params, progress, allow_local=True)
    assert [r.scene.id for r in reports] == ["clear", "cloudy", "far", "missing", "noscl"]
    clear, cloud, far, missing, noscl = reports
    assert clear.kept and clear.reason == "" and clear.aoi_cloud == pytest.approx(30.0)
    assert clear.aoi_coverage == pytest.approx(100.0)
    # cloudy: 50 cloud (8) columns + 37 shadow (3) of 100 columns
    assert not cloud.kept and cloud.reason == "AOI cloud 87.0 % > 50 %"
    assert not far.kept and far.reason == "does not cover the AOI" and far.aoi_coverage == 0.0
    assert not missing.kept and missing.reason.startswith("SCL could not be read: Could not read")
    assert noscl.reason == "SCL could not be read: the scene has no SCL asset"
    assert progress.percent == 100.0
    assert any("missing" in m for m in progress.messages)


def test_check_aoi_clouds_honours_cancel(striped):
    scenes = [scene(f"s{i}", striped) for i in range(6)]
    aoi = utm_aoi(1000, 0, 3000, 1000)
    params = SearchParams(aoi=aoi, start=datetime(2024, 1, 1).date(),
                          end=datetime(2024, 12, 31).date(), max_workers=2)

    class CancelAfterFirst(NullProgress):
        def set_progress(self, percent):
            super().set_progress(percent)
            self.cancel()

    progress = CancelAfterFirst()
    with pytest.raises(CancelledError):
        check_aoi_clouds(scenes, aoi, params, progress, allow_local=True)
    assert progress.percent < 100.0
    cancelled = NullProgress()
    cancelled.cancel()
    with pytest.raises(CancelledError):
        check_aoi_clouds(scenes, aoi, params, cancelled, allow_local=True)


def test_check_aoi_clouds_runs_scenes_concurrently(tmp_path, striped, monkeypatch):
    """Reads overlap in time: max_workers scenes are in flight at once."""
    from clearsky.core import clouds

    active, peak, lock = [0], [0], threading.Lock()
    real = clouds.read_native_window

    def slow(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            import time

            time.sleep(0.05)
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(clouds, "read_native_window", slow)
    aoi = utm_aoi(1000, 0, 3000, 1000)
    params = SearchParams(aoi=aoi, start=datetime(2024, 1, 1).date(),
                          end=datetime(2024, 12, 31).date(), max_workers=4)
    reports = check_aoi_clouds([scene(f"s{i}", striped) for i in range(8)], aoi, params,
                               NullProgress(), allow_local=True)
    assert peak[0] == 4 and all(r.kept for r in reports)
    assert not math.isnan(reports[0].aoi_cloud)


def test_class_lookup_is_isin():
    from clearsky.core.clouds import in_classes

    rng = np.random.default_rng(0)
    for dtype in ("uint8", "uint16", "int32"):
        scl = rng.integers(0, 300 if dtype != "uint8" else 256, (50, 60)).astype(dtype)
        # a few classes are compared, many looked up; 300 is no uint8 class
        for classes in ((3, 8, 9, 10), {0, 1}, (), (255, 11), tuple(range(1, 12)), (2, 300)):
            np.testing.assert_array_equal(in_classes(scl, classes),
                                          np.isin(scl, sorted(classes)))
