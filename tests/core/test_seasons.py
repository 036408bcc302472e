"""Issue 12: several statistics from one read, several periods from one search."""

from __future__ import annotations

import json
import time
from datetime import date

import numpy as np
import pytest
import rasterio

from clearsky.core.api import build_mosaic
from clearsky.core.errors import InvalidParameterError
from clearsky.core.options import parse_statistics
from clearsky.core.periods import split_periods
from world.mosaic_truth import aoi_mask, mosaic_params, nan_percentile, read_mosaic, truth_for
from world.rangelog import covered, ranges, served_bytes, span_bytes

BANDS = ("red", "green", "blue", "nir")
HALVES = "2024-06-01/2024-06-15,2024-06-16/2024-06-30"


def test_statistics_parse_percentiles_and_moments():
    assert parse_statistics("25, 50,75") == ("p25", "p50", "p75")
    assert parse_statistics("50;mean std") == ("p50", "mean", "std")
    assert parse_statistics("") == ()
    with pytest.raises(InvalidParameterError, match="run from 0 to 100"):
        parse_statistics("25,101")
    with pytest.raises(InvalidParameterError, match="listed twice"):
        parse_statistics("50,p50")
    with pytest.raises(InvalidParameterError, match="e.g. 25,50,75"):
        parse_statistics("median")


def test_periods_cut_months_and_seasons_to_the_dates():
    seasons = split_periods("season", date(2023, 12, 10), date(2024, 6, 30))
    assert [(p.name, str(p.start), str(p.end)) for p in seasons] == [
        ("2024-DJF", "2023-12-10", "2024-02-29"), ("2024-MAM", "2024-03-01", "2024-05-31"),
        ("2024-JJA", "2024-06-01", "2024-06-30")]
    months = split_periods("month", date(2024, 5, 20), date(2024, 6, 30))
    assert [p.name for p in months] == ["2024-05", "2024-06"]
    halves = split_periods(HALVES, date(2024, 6, 1), date(2024, 6, 30))
    assert [p.name for p in halves] == ["2024-06-01_2024-06-15", "2024-06-16_2024-06-30"]
    assert split_periods("", date(2024, 6, 1), date(2024, 6, 30)) == []
    with pytest.raises(InvalidParameterError, match="outside the dates"):
        split_periods("2024-07-01/2024-07-10", date(2024, 6, 1), date(2024, 6, 30))
    with pytest.raises(InvalidParameterError, match="PERIODS takes"):
        split_periods("weekly", date(2024, 6, 1), date(2024, 6, 30))


@pytest.fixture(scope="module")
def quartiles(world, served, tmp_path_factory):
    path = tmp_path_factory.mktemp("stats") / "q.tif"
    params = mosaic_params(world, served, path, statistics="25,50,75,mean,std")
    result = build_mosaic(params)
    return params, result, read_mosaic(path), truth_for(world, result, BANDS)


def test_one_read_gives_every_percentile_band_named(quartiles):
    _, result, (data, names, *_), _ = quartiles
    expected = [f"{b}_{s}" for s in ("p25", "p50", "p75", "mean", "std") for b in BANDS]
    assert list(names) == expected + ["count"]
    assert result.band_names == tuple(names)
    assert data.shape[0] == len(expected) + 1


def test_percentiles_are_ordered_and_match_the_truth(quartiles):
    params, result, (data, names, *_), truth = quartiles
    aoi = aoi_mask(params.aoi, result)
    index = {n: i for i, n in enumerate(names)}
    for band in BANDS:
        p25, p50, p75 = (data[index[f"{band}_p{q}"]].astype(int) for q in (25, 50, 75))
        filled = p50 > 0
        assert filled[aoi].mean() > 0.9
        assert ((p25 <= p50) & (p50 <= p75))[filled].all(), band
        stack = np.array(truth.reflectance[band], dtype="float32")
        strict = np.where(np.array(truth.strict), stack, np.nan)
        for q, got in zip((25, 50, 75), (p25, p50, p75)):
            expected = nan_percentile(strict, q)
            both = filled & np.isfinite(expected)
            close = np.abs(got / 10000 - expected) <= 0.01
            assert close[both].mean() >= 0.99, (band, q, close[both].mean())
        with np.errstate(all="ignore"):
            mean = np.nanmean(strict, axis=0)
            std = np.nanstd(strict, axis=0)
        both = filled & np.isfinite(mean)
        assert (np.abs(data[index[f"{band}_mean"]] / 10000 - mean) <= 0.01)[both].mean() >= 0.99
        assert (np.abs(data[index[f"{band}_std"]] / 10000 - std) <= 0.01)[both].mean() >= 0.99


def test_percentiles_take_over_the_single_statistic(world, served, tmp_path, quartiles):
    """p50 of the list is the median method's band, pixel for pixel."""
    _, _, (data, names, *_), _ = quartiles
    build_mosaic(mosaic_params(world, served, tmp_path / "m.tif", method="median"))
    median, *_ = read_mosaic(tmp_path / "m.tif")
    for b, band in enumerate(BANDS):
        assert np.array_equal(median[b], data[list(names).index(f"{band}_p50")])


def test_periods_from_one_search_read_no_more_than_separate_runs(world, served, assets,
                                                                  tmp_path):
    params = mosaic_params(world, served, tmp_path / "halves.tif", statistics="25,50,75",
                           periods=HALVES)
    t0 = time.perf_counter()
    result = build_mosaic(params)
    together_s = time.perf_counter() - t0
    together = assets.requests()
    assert [o.name for o in result.outputs] == ["2024-06-01_2024-06-15",
                                                "2024-06-16_2024-06-30"]
    assert [o.output.name for o in result.outputs] == [
        "halves_2024-06-01_2024-06-15.tif", "halves_2024-06-16_2024-06-30.tif"]
    searches = [e for e in together if "/search" in str(e.get("path"))]
    assert not searches  # the STAC API is another server; the range log has only assets
    ids = {r.scene.id: r.scene for r in result.reports}
    for out in result.outputs:
        assert out.scenes
        assert all(out.start <= ids[s].date <= out.end for s in out.scenes)
        with rasterio.open(out.output) as ds:
            assert ds.tags()["CLEARSKY_PERIOD"].startswith(out.name)
            assert ds.descriptions[:3] == ("red_p25", "green_p25", "blue_p25")
    report = json.loads(result.report_json.read_text())
    assert [p["name"] for p in report["periods"]] == [o.name for o in result.outputs]

    separate, separate_s = [], 0.0
    for n, period in enumerate(HALVES.split(",")):
        first, last = (date.fromisoformat(d) for d in period.split("/"))
        assets.reset()
        from osgeo import gdal

        gdal.VSICurlClearCache()
        t0 = time.perf_counter()
        single = build_mosaic(mosaic_params(world, served, tmp_path / f"s{n}.tif", start=first,
                                            end=last, statistics="25,50,75"))
        separate_s += time.perf_counter() - t0
        separate.append(assets.requests())
        # the same pixels as the period's file of the multi-period run
        with rasterio.open(single.output) as a, rasterio.open(result.outputs[n].output) as b:
            assert np.array_equal(a.read(), b.read())
    union = ranges([e for log in separate for e in log])
    assert covered(ranges(together), union)
    print(f"\ndistinct bytes: one run {span_bytes(ranges(together)) / 1e6:.2f} MB, union of "
          f"the separate runs {span_bytes(union) / 1e6:.2f} MB")
    print(f"2 half-month periods x p25/p50/p75: one run {served_bytes(together) / 1e6:.2f} MB in "
          f"{len(together)} requests, {together_s:.1f} s; separate runs "
          f"{sum(served_bytes(x) for x in separate) / 1e6:.2f} MB in "
          f"{sum(len(x) for x in separate)} requests, {separate_s:.1f} s")
    # Raw totals can differ by a tile fetched twice by two threads at once (either run):
    # the claim is about which bytes are read, so compare distinct bytes.
    assert span_bytes(ranges(together)) <= span_bytes(union)
