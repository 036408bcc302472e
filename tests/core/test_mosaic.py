"""End-to-end mosaics on the offline archive, checked pixel by pixel against its truth."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
import rasterio
from pyproj import Geod
from shapely import affinity

from clearsky.core.api import Aoi, build_mosaic
from clearsky.core.errors import NoScenesError
from clearsky.core.params import Method, OutputType
from world.mosaic_truth import (
    CLOUD_LIKE,
    aoi_mask,
    mosaic_params,
    nan_percentile,
    read_mosaic,
    truth_for,
)

START, END = date(2024, 6, 1), date(2024, 6, 30)
BANDS = ("red", "green", "blue", "nir")


def pass_of(world, collection):
    return {item.id: item.pass_index for item in world.items(collection)}


@pytest.fixture(scope="module")
def best(world, served, tmp_path_factory):
    path = tmp_path_factory.mktemp("best") / "best.tif"
    result = build_mosaic(mosaic_params(world, served, path, source_band=True))
    data, names, _, _, tags = read_mosaic(path)
    return result, data, names, tags, truth_for(world, result, BANDS)


def test_best_pixel_spans_both_utm_zones_and_all_tiles(best):
    result, _, names, _, _ = best
    used = {r.scene.tile for r in result.reports if r.pixels_contributed}
    crs = {r.scene.crs for r in result.reports if r.pixels_contributed}
    assert len(used) >= 2
    assert crs == {"EPSG:32632", "EPSG:32633"}
    assert names == (*BANDS, "count", "source")
    assert result.crs == "EPSG:32633"  # UTM zone of the AOI centroid


def test_best_pixel_takes_no_cloud_shadow_or_cirrus_pixel(best, world):
    result, data, _, tags, truth = best
    sources = {int(k): v for k, v in json.loads(tags["CLEARSKY_SOURCES"]).items()}
    passes = pass_of(world, "sentinel-2-c1-l2a")
    source = data[len(BANDS) + 1]
    filled = source > 0
    assert filled.mean() > 0.5
    contaminated = 0
    for code in np.unique(source[filled]):
        p = passes[sources[int(code)]]
        here = source == code
        contaminated += int(np.isin(truth.scl[p][here], list(CLOUD_LIKE)).sum())
    assert contaminated == 0


def test_best_pixel_fills_every_pixel_with_a_clear_observation(best, world, served, tmp_path):
    result, data, _, _, truth = best
    filled = data[0] > 0
    fillable = truth.fillable()
    aoi = aoi_mask(mosaic_params(world, served, tmp_path / "x.tif").aoi, result)
    assert not (filled & ~aoi).any()
    missed = fillable & aoi & ~filled
    assert missed.sum() <= 0.001 * fillable.sum()
    assert not (filled & ~truth.possible()).any()
    assert result.filled_fraction > 0.9


def test_best_pixel_reflectance_matches_the_source_pass(best, world):
    _, data, _, tags, truth = best
    sources = {int(k): v for k, v in json.loads(tags["CLEARSKY_SOURCES"]).items()}
    passes = pass_of(world, "sentinel-2-c1-l2a")
    source = data[len(BANDS) + 1]
    for b, band in enumerate(BANDS):
        expected = np.full(source.shape, np.nan, "float32")
        for code in np.unique(source[source > 0]):
            here = source == code
            expected[here] = truth.reflectance[band][passes[sources[int(code)]]][here]
        got = data[b].astype("float32") / 10000
        filled = data[b] > 0
        close = np.abs(got - expected) <= 0.01
        assert close[filled].mean() >= 0.99, band


def test_valid_count_matches_truth(best):
    _, data, _, _, truth = best
    count = data[len(BANDS)].astype(int)
    strict = np.sum(truth.strict, axis=0)
    loose = np.sum(truth.loose, axis=0)
    inside = data[0] > 0
    ok = (count >= strict) & (count <= loose)
    assert ok[inside].mean() >= 0.995


@pytest.mark.parametrize("method,percentile", [(Method.MEDIAN, 50.0), (Method.PERCENTILE, 25.0)])
def test_median_and_percentile_match_truth(world, served, tmp_path, method, percentile):
    path = tmp_path / f"{method.value}.tif"
    params = mosaic_params(world, served, path, method=method, percentile=percentile)
    result = build_mosaic(params)
    data, *_ = read_mosaic(path)
    truth = truth_for(world, result, BANDS)
    filled = data[0] > 0
    assert not (filled & ~truth.possible()).any()
    aoi = aoi_mask(params.aoi, result)
    assert (truth.fillable() & aoi & ~filled).sum() <= 0.001 * truth.fillable().sum()
    for b, band in enumerate(BANDS):
        stack = np.array(truth.reflectance[band], dtype="float32")
        clear = np.array(truth.loose)
        stack[~clear] = np.nan
        with np.errstate(all="ignore"):
            low = np.nanmin(stack, axis=0) - 0.01
            high = np.nanmax(stack, axis=0) + 0.01
            strict_stack = np.where(np.array(truth.strict), stack, np.nan)
            expected = nan_percentile(strict_stack, percentile)
        got = data[b] / 10000
        # never a cloud, shadow or cirrus value: inside the range of the clear truth
        assert np.all((got >= low) & (got <= high) | ~filled), band
        both = filled & np.isfinite(expected)
        assert (np.abs(got - expected) <= 0.01)[both].mean() >= 0.99, band


def test_both_collections_give_the_same_mosaic(world, served, tmp_path):
    c1 = build_mosaic(mosaic_params(world, served, tmp_path / "c1.tif", method=Method.MEDIAN))
    l2a = build_mosaic(
        mosaic_params(
            world, served, tmp_path / "l2a.tif", method=Method.MEDIAN,
            collection="sentinel-2-l2a",
        )
    )
    a, *_ = read_mosaic(c1.output)
    b, *_ = read_mosaic(l2a.output)
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert (a[0] > 0).mean() > 0.5


def test_visual_output_is_8_bit_true_colour(world, served, tmp_path):
    path = tmp_path / "visual.tif"
    result = build_mosaic(
        mosaic_params(
            world, served, path, bands=("red", "green", "blue"),
            output_type=OutputType.VISUAL, count_band=False, target_crs="EPSG:25833",
        )
    )
    data, names, _, crs, tags = read_mosaic(path)
    assert data.dtype == np.uint8 and names == ("red", "green", "blue")
    assert crs == "EPSG:25833"
    truth = truth_for(world, result, ("red", "green", "blue"))
    filled = data[0] > 0
    # 0..0.3 reflectance -> 1..255: an 8-bit step is 0.0012 reflectance
    red = np.nanmedian(np.where(np.array(truth.strict), truth.reflectance["red"], np.nan), axis=0)
    expected = np.clip(1 + red / 0.3 * 254, 1, 255)
    assert (np.abs(data[0][filled] - expected[filled]) <= 12).mean() > 0.95
    assert "0..0.3" in tags["CLEARSKY_STRETCH"]


def test_clip_to_polygon_or_keep_the_rectangle(world, served, tmp_path):
    triangle = world.region.convex_hull.centroid.buffer(0.02, resolution=1)  # a diamond
    aoi = Aoi(triangle, "EPSG:4326")
    clipped = build_mosaic(
        mosaic_params(world, served, tmp_path / "clip.tif", aoi=aoi, count_band=False)
    )
    boxed = build_mosaic(
        mosaic_params(
            world, served, tmp_path / "box.tif", aoi=aoi, count_band=False, clip_to_aoi=False
        )
    )
    c, *_ = read_mosaic(clipped.output)
    b, *_ = read_mosaic(boxed.output)
    assert c.shape == b.shape
    assert 0.4 < (c[0] > 0).mean() < 0.6  # a diamond fills half its bounding box
    assert (b[0] > 0).mean() > 0.99


def test_report_lists_every_scene_with_a_verdict(world, served, tmp_path):
    path = tmp_path / "default-limits.tif"
    result = build_mosaic(mosaic_params(world, served, path, max_aoi_cloud=50.0))
    rows = json.loads(result.report_json.read_text())["scenes"]
    csv_lines = result.report_csv.read_text().splitlines()
    assert len(rows) == len(result.reports) == len(csv_lines) - 1
    assert csv_lines[0].startswith("id,collection,datetime,platform,tile,scene_cloud")
    rejected = [r for r in rows if not r["kept"]]
    assert any(r["reason"].startswith("AOI cloud") for r in rejected)
    assert all(r["reason"] for r in rejected)
    assert all(r["aoi_cloud"] <= 50 for r in rows if r["kept"])


def test_no_scene_left_says_which_filter(world, served, tmp_path):
    known = world.known_aois["cloudy_under_clear"]
    day = world.passes[known.pass_index].datetime.date()
    cloudy = mosaic_params(
        world, served, tmp_path / "none.tif", aoi=Aoi(known.geometry), start=day, end=day,
        max_aoi_cloud=50.0,
    )
    with pytest.raises(NoScenesError, match=r"AOI cloud over the limit.*Raise the maximum"):
        build_mosaic(cloudy)
    empty = mosaic_params(
        world, served, tmp_path / "none.tif", start=date(2024, 5, 1), end=date(2024, 5, 20)
    )
    with pytest.raises(NoScenesError, match="no sentinel-2-c1-l2a scene over the AOI between"):
        build_mosaic(empty)
    assert list(tmp_path.iterdir()) == []


def test_geographic_target_crs_uses_metres_for_the_cloud_rules(world, served, tmp_path):
    """EPSG:4326 at RESOLUTION=10: 10 m pixels on the ground at the AOI's latitude (in
    degrees of longitude and latitude), the dilation stays 40 m, the mosaic stays clear."""
    aoi = Aoi(affinity.scale(world.region, 0.3, 0.3), "EPSG:4326")
    geo = build_mosaic(
        mosaic_params(
            world, served, tmp_path / "geo.tif", aoi=aoi, target_crs="EPSG:4326",
            resolution=10, count_band=False,
        )
    )
    data, *_ = read_mosaic(geo.output)
    truth = truth_for(world, geo, BANDS)
    filled = data[0] > 0
    assert filled.mean() > 0.9
    assert not (filled & ~truth.possible()).any()
    with rasterio.open(geo.output) as ds:
        xdeg, ydeg = ds.res
        lon, lat = aoi.wgs84.centroid.x, aoi.wgs84.centroid.y
    geod = Geod(ellps="WGS84")
    assert geod.inv(lon, lat, lon + xdeg, lat)[2] == pytest.approx(10.0, rel=0.01)
    assert geod.inv(lon, lat, lon, lat + ydeg)[2] == pytest.approx(10.0, rel=0.01)


def test_blocks_run_on_any_executor_with_the_same_pixels(world, served, tmp_path):
    """The block jobs go through a concurrent.futures.Executor (a Dask client offers the same
    interface): one worker thread or the default pool give identical mosaics."""
    from concurrent.futures import ThreadPoolExecutor

    params = dict(method=Method.MEDIAN, count_band=False, block_size=128)
    default = build_mosaic(mosaic_params(world, served, tmp_path / "default.tif", **params))
    with ThreadPoolExecutor(max_workers=1) as single:
        one = build_mosaic(
            mosaic_params(world, served, tmp_path / "one.tif", **params), executor=single
        )
    a, *_ = read_mosaic(default.output)
    b, *_ = read_mosaic(one.output)
    assert (a[0] > 0).mean() > 0.5
    assert np.array_equal(a, b)


@pytest.mark.parametrize("method", [Method.BEST, Method.MEDIAN])
def test_block_tasks_run_in_other_processes_with_identical_pixels(world, served, tmp_path,
                                                                  method):
    """The block task is a module-level function of picklable inputs: a process pool (spawned
    workers that share nothing with this process) gives the same bytes as the threads."""
    import multiprocessing
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    from clearsky.core import blocks

    seen = []

    class Recording(ProcessPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            assert fn is blocks.run_block
            seen.append(len(pickle.dumps(args)))
            return super().submit(fn, *args, **kwargs)

    params = dict(method=method, count_band=True, block_size=128,
                  source_band=method is Method.BEST)
    threads = build_mosaic(mosaic_params(world, served, tmp_path / "threads.tif", **params))
    spawn = multiprocessing.get_context("spawn")
    with Recording(max_workers=2, mp_context=spawn) as pool:
        procs = build_mosaic(
            mosaic_params(world, served, tmp_path / "procs.tif", **params), executor=pool)
    a, names_a, *_ = read_mosaic(threads.output)
    b, names_b, *_ = read_mosaic(procs.output)
    assert names_a == names_b and (a[0] > 0).mean() > 0.5
    assert np.array_equal(a, b)
    assert len(seen) == len(threads_blocks(threads)) and max(seen) < 2_000_000
    assert [r.row() for r in threads.reports] == [r.row() for r in procs.reports]


def threads_blocks(result):
    rows, cols = result.shape
    return [(r, c) for r in range(0, rows, 128) for c in range(0, cols, 128)]


def test_no_report_when_none_is_asked_for(world, served, tmp_path):
    aoi = Aoi(affinity.scale(world.region, 0.1, 0.1), "EPSG:4326")
    result = build_mosaic(mosaic_params(world, served, tmp_path / "m.tif", aoi=aoi,
                                        write_report=False))
    assert result.report_csv is None and result.report_json is None
    # no report; the COG's STAC item is part of the output, not of the report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.stac.json", "m.tif"]


def test_two_runs_at_once_in_one_process_do_not_share_their_read_threads(world, served,
                                                                         tmp_path):
    """A dialog build and a Processing run at the same time: each run keeps its own read
    pools until it ends, so neither can shut down threads the other still uses."""
    from concurrent.futures import ThreadPoolExecutor

    aoi = Aoi(affinity.scale(world.region, 0.3, 0.3), "EPSG:4326")
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(build_mosaic, mosaic_params(
            world, served, tmp_path / f"{n}.tif", aoi=aoi, block_size=64,
            method=Method.MEDIAN)) for n in ("a", "b")]
        a, b = (r.result(timeout=300) for r in runs)
    assert np.array_equal(read_mosaic(a.output)[0], read_mosaic(b.output)[0])
