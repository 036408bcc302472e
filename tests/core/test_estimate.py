"""Issue 12: the estimate after the search, and the limits that refuse a run before it reads."""

from __future__ import annotations

import pytest
from osgeo import gdal
from shapely import affinity
from shapely.geometry import box

from clearsky.core.api import Aoi, LimitError, build_mosaic, estimate_mosaic
from clearsky.core.progress import CallbackProgress
from world.mosaic_truth import mosaic_params

REFLECTANCE = ("red.tif", "green.tif", "blue.tif", "nir.tif")


def _served(log):
    return sum(int(e.get("bytes") or 0) for e in log)


@pytest.mark.parametrize("statistics,resolution", [("25,50,75", 10.0), ("50", 30.0)])
def test_estimate_is_within_20_percent_of_the_bytes_read(world, served, assets, tmp_path,
                                                         statistics, resolution):
    """`estimate_mosaic` (the dialog's Estimate button: it opens every header) against the
    bytes the run reads after its search; the run itself, far below MAX_READ_GB, opens no
    header for its estimate and logs a bound, which holds. The search's own SCL reads come
    before and are not part of either."""
    params = mosaic_params(world, served, tmp_path / "m.tif", statistics=statistics,
                           resolution=resolution)
    exact = estimate_mosaic(params)
    gdal.VSICurlClearCache()  # the run starts cold, as it would without the Estimate button
    assets.clear_log()
    mark = {}

    def info(message):
        if message.startswith("Estimating the reads"):
            mark["at"] = len(assets.requests())

    result = build_mosaic(params, CallbackProgress(on_info=info))
    log = assets.requests()
    read = _served(log[mark["at"]:])
    assert exact.headers_read and exact.from_headers and exact.scenes > 0
    error = abs(exact.read_bytes - read) / read
    bound = result.estimate
    print(f"\nestimate {exact.read_bytes / 1e6:.2f} MB, read {read / 1e6:.2f} MB after the "
          f"search ({error:.1%}); the run's bound {bound.read_bytes / 1e6:.2f} MB; "
          f"{exact.text()}")
    assert error <= 0.20
    assert not bound.from_headers and not exact.upper_bound and bound.tile_bound >= read
    assert "headers not read: far below MAX_READ_GB" in bound.text()
    assert (bound.scenes, bound.passes) == (exact.scenes, exact.passes)
    # nothing of a reflectance tile is read before the blocks: the estimate opens nothing
    assert not any(e["path"].endswith(REFLECTANCE) for e in log[:mark["at"]])
    assert _served(log[mark["at"]:]) == read


def test_estimate_mosaic_reads_no_reflectance_pixel(world, served, assets, tmp_path):
    params = mosaic_params(world, served, tmp_path / "m.tif", statistics="25,50,75")
    figures = estimate_mosaic(params)
    assert figures.width * figures.height == figures.pixels > 0
    assert figures.output_bytes == figures.pixels * figures.bands * 2
    assert figures.bands == 13  # 4 bands x 3 statistics + count
    assert figures.read_bytes > 0 and figures.read_requests > 0 and figures.seconds > 0
    assert figures.refusal(params) is None
    assert not (tmp_path / "m.tif").exists()
    for e in assets.requests():
        if e["path"].endswith(REFLECTANCE) and e.get("range"):
            assert int(e["range"][6:].split("-")[1].split(",")[0]) < 16384, e


def test_a_continent_sized_aoi_is_refused_before_any_reflectance_read(world, served, assets,
                                                                      tmp_path):
    centre = world.region.centroid
    continent = Aoi(box(centre.x - 15, centre.y - 12, centre.x + 15, centre.y + 12), "EPSG:4326")
    params = mosaic_params(world, served, tmp_path / "europe.tif", aoi=continent,
                           statistics="25,50,75")
    with pytest.raises(LimitError) as info:
        build_mosaic(params)
    text = str(info.value)
    assert "GiB before compression" in text and "MAX_OUTPUT_GIB" in text
    assert "pixels" in text
    # refused from the grid alone, before the search: not one asset byte is read
    assert assets.requests() == []
    assert list(tmp_path.iterdir()) == []
    figures = estimate_mosaic(params)
    assert not figures.headers_read and "MAX_OUTPUT_GIB" in figures.refusal(params)


def test_the_read_limit_names_the_figures_and_the_option(world, served, assets, tmp_path):
    aoi = Aoi(affinity.scale(world.region, 0.3, 0.3), "EPSG:4326")
    params = mosaic_params(world, served, tmp_path / "m.tif", aoi=aoi, max_read_gb=0.0001)
    with pytest.raises(LimitError, match=r"would read about .* GB .*MAX_READ_GB"):
        build_mosaic(params)
    for e in assets.requests():
        if e["path"].endswith(REFLECTANCE) and e.get("range"):
            assert int(e["range"][6:].split("-")[1].split(",")[0]) < 16384, e
    assert list(tmp_path.iterdir()) == []
    params.max_read_gb = 0  # no limit
    assert build_mosaic(params).output.exists()
