"""Four seasons from one search, on the year-long offline archive (World(calendar="year")).

The archive (tests/world/year.py) has two passes in each of 2024-DJF, -MAM, -JJA and -SON;
its own fixtures here build it once (its own cache key) and serve it on 127.0.0.1.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
import rasterio

from clearsky.core import mosaic as mosaic_module
from clearsky.core.api import build_mosaic
from clearsky.core.clouds import MaskRule
from world.mosaic_truth import mosaic_params
from world.period_truth import check_statistics_cog, passes_between
from world.rangelog import covered, ranges, served_bytes, span_bytes
from world.year import SEASON_DATES, SEASONS, YEAR_END, YEAR_START, year_archive, year_world

C1 = "sentinel-2-c1-l2a"
BANDS = ("red", "nir")
RADIUS = MaskRule().radius_px(10.0)


@pytest.fixture(scope="module")
def yworld():
    return year_world()


@pytest.fixture(scope="module")
def yarchive(yworld):
    return year_archive(yworld)


@pytest.fixture(scope="module")
def yserved(yarchive):
    from world.servers import ServedArchive

    with ServedArchive(yarchive) as both:
        yield both


@pytest.fixture
def yassets(yserved):
    from osgeo import gdal

    yserved.assets.reset()
    gdal.VSICurlClearCache()
    yield yserved.assets
    yserved.assets.reset()
    gdal.VSICurlClearCache()


def _item_dates(archive):
    items = json.loads((archive / "stac" / "items" / f"{C1}.json").read_text())["features"]
    return {f["id"]: date.fromisoformat(f["properties"]["datetime"][:10]) for f in items}


def test_the_year_archive_has_two_passes_per_season_and_the_june_one_is_unchanged(
        yworld, yarchive, world):
    days = [p.datetime.date() for p in yworld.passes]
    for name, (first, last) in SEASON_DATES.items():
        assert sum(first <= d <= last for d in days) == 2, name
    manifest = json.loads((yarchive / "manifest.json").read_text())
    assert manifest["calendar"] == "year" and manifest["collections"] == [C1]
    with pytest.raises(ValueError, match="unknown collection"):
        yworld.items("sentinel-2-l2a")  # the year archive is kept small: c1 only
    assert set(_item_dates(yarchive).values()) == set(days)
    # the default world keeps its ten June passes
    assert world.calendar == "june" and len(world.passes) == 10
    assert {p.datetime.month for p in world.passes} == {6}


def test_four_seasons_from_one_search_each_with_its_own_dates_and_pixels(
        yworld, yarchive, yserved, yassets, tmp_path, monkeypatch):
    searches = []
    real_search = mosaic_module.run_search

    def spy(*args, **kwargs):
        searches.append(args)
        return real_search(*args, **kwargs)

    monkeypatch.setattr(mosaic_module, "run_search", spy)
    params = mosaic_params(yworld, yserved, tmp_path / "year.tif", start=YEAR_START,
                           end=YEAR_END, bands=BANDS, statistics="25,50,75", periods="season")
    result = build_mosaic(params)
    together = yassets.requests()
    assert len(searches) == 1
    assert [o.name for o in result.outputs] == list(SEASONS)
    assert [o.output.name for o in result.outputs] == [f"year_{s}.tif" for s in SEASONS]
    dates = _item_dates(yarchive)
    for out in result.outputs:
        first, last = SEASON_DATES[out.name]
        assert (out.start, out.end) == (first, last)
        assert len(out.scenes) >= 2  # both passes of the season gave pixels (one tile each)
        assert all(first <= dates[s] <= last for s in out.scenes), out.name
        item = json.loads(out.stac_item.read_text())
        props = item["properties"]
        assert props["start_datetime"][:10] == str(first), out.name
        assert props["end_datetime"][:10] == str(last), out.name
        derived = {link["href"].rsplit("/", 1)[-1] for link in item["links"]
                   if link["rel"] == "derived_from"}
        assert derived == set(out.scenes)
        with rasterio.open(out.output) as src:
            assert src.tags()["CLEARSKY_PERIOD"] == f"{out.name}: {first}/{last}"
            assert src.descriptions == tuple(f"{b}_p{q}" for q in (25, 50, 75)
                                             for b in BANDS) + ("count",)
            assert set(src.tags()["CLEARSKY_SCENES"].split(",")) == set(out.scenes)
        season_passes = passes_between(yworld, first, last)
        assert len(season_passes) == 2
        check_statistics_cog(yworld, out.output, season_passes, RADIUS)

    # the four separate runs, one season each: the same pixels, and together read no
    # byte that the separate runs did not read
    from osgeo import gdal

    separate = []
    for n, name in enumerate(SEASONS):
        first, last = SEASON_DATES[name]
        yassets.reset()
        gdal.VSICurlClearCache()
        single = build_mosaic(mosaic_params(yworld, yserved, tmp_path / f"s{n}.tif",
                                            start=first, end=last, bands=BANDS,
                                            statistics="25,50,75"))
        separate.append(yassets.requests())
        with rasterio.open(single.output) as a, rasterio.open(result.outputs[n].output) as b:
            assert np.array_equal(a.read(), b.read()), name
    assert len(searches) == 5
    union = ranges([e for log in separate for e in log])
    assert _nonempty(together) and covered(ranges(together), union)
    assert span_bytes(ranges(together)) <= span_bytes(union)
    print(f"\n4 seasons x p25/p50/p75: one run {served_bytes(together) / 1e6:.2f} MB served "
          f"({span_bytes(ranges(together)) / 1e6:.2f} MB distinct) in {len(together)} "
          f"requests; 4 runs {sum(served_bytes(x) for x in separate) / 1e6:.2f} MB served "
          f"({span_bytes(union) / 1e6:.2f} MB distinct) in {sum(len(x) for x in separate)}")


def _nonempty(log) -> bool:
    return sum(1 for e in log if e.get("bytes")) > 10
