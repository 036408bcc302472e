"""Clear clips for many small AOIs: only clear passes, one aligned GeoTIFF each, one CSV."""

from __future__ import annotations

import csv
from datetime import date

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from clearsky.core.api import Aoi, SearchParams, clear_clips
from clearsky.core.errors import OutputError

START, END = date(2024, 6, 1), date(2024, 6, 30)


@pytest.fixture(scope="module")
def clips(world, served, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    aois = [(name, Aoi(known.geometry)) for name, known in world.known_aois.items()]
    params = SearchParams(
        aoi=aois[0][1], start=START, end=END, catalog_url=served.stac_url, max_scene_cloud=100.0,
        max_aoi_cloud=2.0,
    )
    return clear_clips(params, aois, folder, bands=("red", "nir")), folder


def test_csv_lists_exactly_the_clips_written(clips):
    result, folder = clips
    with open(result.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == [str(rec.path) for rec in result.records]
    assert sorted(p.name for p in folder.glob("*.tif")) == sorted(
        rec.path.name for rec in result.records
    )
    assert all(float(r["aoi_cloud"]) <= 2.0 for r in rows)


def test_clear_under_cloudy_scene_is_kept_and_the_reverse_is_not(clips, world):
    result, _ = clips
    passes = {item.id: item.pass_index for item in world.items("sentinel-2-c1-l2a")}

    def kept_passes(name):
        return {passes[rec.scene_id] for rec in result.records if rec.aoi_name == name}

    assert world.known_aois["clear_under_cloudy"].pass_index in kept_passes("clear_under_cloudy")
    assert world.known_aois["cloudy_under_clear"].pass_index not in kept_passes(
        "cloudy_under_clear"
    )


def test_each_clip_is_clear_and_matches_truth(clips, world):
    result, _ = clips
    passes = {item.id: item.pass_index for item in world.items("sentinel-2-c1-l2a")}
    assert result.records
    grids = {}
    for rec in result.records:
        with rasterio.open(rec.path) as src:
            data = src.read()
            grids.setdefault(rec.aoi_name, set()).add((src.transform, src.shape))
            minx, _, _, maxy = src.bounds
            transform = from_origin(minx, maxy, *src.res)
            p = passes[rec.scene_id]
            truth = world.reflectance("red", p, src.crs.to_string(), transform, src.shape)
            clear = world.clear(p, src.crs.to_string(), transform, src.shape)
            filled = data[0] > 0
            assert src.descriptions == ("red", "nir")
            good = filled & clear
            assert (np.abs(data[0][good] / 10000 - truth[good]) <= 0.01).mean() >= 0.99
    # every clip of one AOI sits on the same grid, so they stack as a time series
    assert all(len(g) == 1 for g in grids.values())


def test_clips_never_overwrite_unless_asked(clips, world, served):
    result, folder = clips
    before = {p: p.read_bytes() for p in folder.glob("*.tif")}
    aois = [(name, Aoi(known.geometry)) for name, known in world.known_aois.items()]
    params = SearchParams(
        aoi=aois[0][1], start=START, end=END, catalog_url=served.stac_url, max_aoi_cloud=2.0
    )
    with pytest.raises(OutputError, match="already exist"):
        clear_clips(params, aois, folder, bands=("red", "nir"))
    assert before == {p: p.read_bytes() for p in folder.glob("*.tif")}


def test_an_unreadable_scene_is_skipped_and_a_cancel_leaves_no_clip(
    world, served, assets, tmp_path
):
    from osgeo import gdal

    from clearsky.core.errors import CancelledError
    from clearsky.core.progress import CallbackProgress

    aois = [("park", Aoi(world.known_aois["clear_under_cloudy"].geometry))]
    params = SearchParams(
        aoi=aois[0][1], start=START, end=END, catalog_url=served.stac_url, max_scene_cloud=100.0,
        max_aoi_cloud=2.0,
    )
    first = clear_clips(params, aois, tmp_path / "a", bands=("red",))
    broken = first.records[0].scene_id
    gdal.VSICurlClearCache()  # the first run's bytes must not hide the fault
    assets.configure(faults=[{"path": f"*/{broken}/red.tif", "kind": "500", "count": None}])
    second = clear_clips(params, aois, tmp_path / "b", bands=("red",))
    assert broken not in {r.scene_id for r in second.records}
    assert len(second.records) == len(first.records) - 1
    why = {r.scene.id: r.reason for r in second.reports["park"]}
    assert why[broken].startswith("skipped, could not be read")
    assets.reset()

    progress = CallbackProgress(cancelled=lambda: progress.percent > 55)
    with pytest.raises(CancelledError):
        clear_clips(params, aois, tmp_path / "c", bands=("red",), progress=progress)
    assert list((tmp_path / "c").glob("*.tif")) == []
    assert not (tmp_path / "c" / "clear_clips.csv").exists()
