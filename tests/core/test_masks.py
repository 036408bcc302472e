"""The parts of the cloud mask: probability layers (and their nodata-0 trap), projected
shadows, the fallback to SCL, the report's `mask` text and the optional ML dependency."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date

import numpy as np
import pytest
from affine import Affine
from rasterio.enums import Resampling
from shapely.geometry import box

from clearsky.core import catalog, io, mlmask, shadows
from clearsky.core.aoi import Aoi
from clearsky.core.clouds import MaskRule, aoi_scl_stats
from clearsky.core.errors import InvalidParameterError
from clearsky.core.grid import Grid
from clearsky.core.options import CloudMask
from clearsky.core.params import MosaicParams, SearchParams
from clearsky.core.progress import NullProgress
from clearsky.core.reader import SceneReader
from world.geography import local_polygon_to_wgs84
from world.weather import MISSES_PASS, SHADOW_OFFSET

C1 = "sentinel-2-c1-l2a"


def scenes_of(world, served, aoi, pass_index=None):
    params = SearchParams(aoi=aoi, start=date(2024, 6, 1), end=date(2024, 6, 30),
                          catalog_url=served.stac_url, collection=C1, max_scene_cloud=100.0)
    scenes, _, _ = catalog.search(params, NullProgress())
    passes = {item.id: item.pass_index for item in world.items(C1)}
    return [s for s in scenes if pass_index is None or passes[s.id] == pass_index]


def east_aoi(world) -> Aoi:
    xmin, ymin, xmax, ymax = world.bounds_m
    return Aoi(local_polygon_to_wgs84(box(xmax - 850.0, -1400.0, xmax - 285.0, 1400.0)))


# ------------------------------------------------------------------ the nodata-0 trap

def test_probability_layers_are_read_raw_because_0_means_0_percent(world, served, assets):
    """The `cloud` COG's metadata says nodata 0 (as Earth Search's does). A nodata-aware
    read of a clear window returns None ("no data": the scene would be dropped); the raw
    read returns the zeros, and every value equals the truth's probability layer."""
    scene = scenes_of(world, served, east_aoi(world), 0)[0]  # pass 0: clear over the strip
    aoi = east_aoi(world).to_crs(scene.crs)
    tr, _ = world.tile(scene.tile).grid(20)
    col, row = (int(v) for v in ~tr * (aoi.centroid.x, aoi.centroid.y))
    x, y = tr * (col - 16, row - 16)  # 32 x 32 pixels of the tile's own 20 m grid
    grid = Grid(scene.crs, Affine(20.0, 0.0, x, 0.0, -20.0, y), 32, 32)
    with io.gdal_env(2):
        trap = io.read_to_grid(scene.assets["cloud"], grid, resampling=Resampling.nearest,
                               use_overviews=False)
        raw = io.read_to_grid(scene.assets["cloud"], grid, resampling=Resampling.nearest,
                              use_overviews=False, raw=True)
    truth = world.cloud_probability(0, scene.crs, grid.transform, grid.shape)
    assert not truth.any()  # 0 % cloud everywhere there
    assert trap is None  # what a nodata-honouring reader makes of 0 %
    assert raw is not None and raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, truth)


def test_probabilities_are_never_averaged_even_on_a_coarse_grid(world, served, assets):
    """At 60 m the rule reads full-resolution pixels with nearest: only values the layer
    holds (0, 25, 55, 70, 90), never an averaged overview's in-between ones."""
    scene = scenes_of(world, served, east_aoi(world), MISSES_PASS)[0]
    from clearsky.core.clouds import _probability

    t = world.tile(scene.tile)
    tr, (rows, cols) = t.grid(20)
    x, y = tr * (cols // 2 - 150, rows // 2 - 150)
    grid = Grid(scene.crs, Affine(60.0, 0.0, x, 0.0, -60.0, y), 100, 100)
    with io.gdal_env(2):
        prob = _probability(scene, "cloud", grid, False, None)
        averaged = io.read_to_grid(scene.assets["cloud"], grid,
                                   resampling=Resampling.nearest, use_overviews=True)
    assert prob is not None and prob.any()
    assert set(np.unique(prob)) <= {0, 25, 55, 70, 90}
    truth = world.cloud_probability(MISSES_PASS, scene.crs, grid.transform, grid.shape)
    assert (prob == truth).mean() > 0.99  # nearest on 20 m pixels vs the 60 m centres
    assert averaged is not None and not set(np.unique(averaged)) <= {0, 25, 55, 70, 90}


# ------------------------------------------------------------------ projected shadows

def test_shadows_are_projected_away_from_the_sun_over_the_height_range():
    cloud = np.zeros((400, 400), bool)
    cloud[200, 200] = True
    swept = shadows.project(cloud, 10.0, azimuth=124.5, elevation=57.1)
    rows, cols = np.nonzero(swept)
    east = (cols - 200) * 10.0
    north = (200 - rows) * 10.0
    assert (east < 0).all() and (north > 0).all()  # north-west of a south-east sun
    bearing = np.degrees(np.arctan2(east, north)) % 360
    assert np.abs(bearing - (124.5 + 180)).max() < 6
    distance = np.hypot(east, north)
    near, far = shadows.shadow_distances(57.1)
    assert near == pytest.approx(500 / math.tan(math.radians(57.1)))
    assert distance.min() >= near - 30 and distance.max() <= far + 30
    # the archive's shadows (600 m high clouds) lie inside the sweep
    sx, sy = SHADOW_OFFSET
    assert swept[200 - int(round(sy / 10)), 200 + int(round(sx / 10))]


def test_a_low_sun_is_capped_and_the_reader_reads_that_margin():
    assert shadows.shadow_distances(10.0)[1] == shadows.MAX_REACH_M
    assert shadows.reach_px(10.0, 10.0) == int(shadows.MAX_REACH_M / 10) + 1
    assert shadows.reach_px(None, 10.0) == 0


def test_dark_pixels_exclude_water():
    nir = np.array([[0.05, 0.05, 0.3, np.nan]])
    scl = np.array([[4, 6, 4, 0]])
    assert shadows.dark(nir, scl).tolist() == [[True, False, False, False]]


# ------------------------------------------------------------------ rule, fallback, report

def test_rule_from_params_and_the_scl_fallback_of_items_without_the_asset(world, served):
    params = SearchParams(aoi=east_aoi(world), start=date(2024, 6, 1), end=date(2024, 6, 30),
                          cloud_mask=CloudMask.SHADOW, cloud_prob=55.0, dilation=1)
    rule = MaskRule.from_params(params)
    assert (rule.kind, rule.prob, rule.dilation) == (CloudMask.SHADOW, 55.0, 1)
    assert MaskRule.from_params(replace(params, cloud_mask="scl+prob")).kind is CloudMask.PROB
    scene = scenes_of(world, served, east_aoi(world), MISSES_PASS)[0]
    assert rule.describe(scene) == "scl+prob+shadow: scl+cloud+shadow"
    bare = replace(scene, assets={k: v for k, v in scene.assets.items()
                                  if k not in ("cloud", "snow")}, sun_azimuth=None)
    assert rule.describe(bare) == ("scl+prob+shadow: scl (no cloud probability asset, SCL "
                                   "clouds only; no sun angles or nir band, no projected "
                                   "shadows)")
    with_snow = replace(rule, invalid=rule.invalid | {11})
    assert with_snow.describe(scene) == "scl+prob+shadow: scl+cloud+snow+shadow"
    aoi = east_aoi(world)
    with io.gdal_env(2):
        plain = aoi_scl_stats(bare, aoi, rule.invalid, rule=rule.scl_only())
        fallback = aoi_scl_stats(bare, aoi, rule.invalid, rule=rule)
        full = aoi_scl_stats(scene, aoi, rule.invalid, rule=rule)
    assert fallback == plain  # without the layers, the SCL rule exactly
    assert full[1] > plain[1] + 1.0


def test_snow_probability_joins_only_when_snow_is_masked(world, served):
    """Snow is masked with class 11; its probability >= CLOUD_PROB adds the snow edges."""
    t = world.tile("33UUU")
    tr20, shape20 = t.grid(20)
    pass_index, r, c = next((p, *np.argwhere(scl == 11)[0]) for p in (5, 8, 3, 9)
                            for scl in [world.scl(p, t.crs, tr20, shape20)] if (scl == 11).any())
    scene = next(s for s in scenes_of(world, served, Aoi(world.region), pass_index)
                 if s.tile == "33UUU")
    x, y = tr20 * (c - 32, r - 32)
    grid = Grid(scene.crs, Affine(10.0, 0.0, x, 0.0, -10.0, y), 128, 128)
    prob_rule = MaskRule(kind=CloudMask.PROB, dilation=0)
    with io.gdal_env(2):
        without = SceneReader(("red",), prob_rule, grid).usable(scene, grid)
        masked = replace(prob_rule, invalid=prob_rule.invalid | {11}, prob=20.0)
        with_snow = SceneReader(("red",), masked, grid).usable(scene, grid)
        scl_snow = SceneReader(("red",), replace(masked, kind=CloudMask.SCL), grid).usable(
            scene, grid)
    assert without is not None and with_snow is not None and scl_snow is not None
    assert (~with_snow).sum() > (~scl_snow).sum() > (~without).sum()
    assert with_snow.any()  # not all cloud there


def test_ml_refused_with_an_install_hint_when_the_packages_are_missing(monkeypatch):
    monkeypatch.setattr(mlmask, "missing", lambda: ("ukis_csmask",))
    params = MosaicParams(aoi=Aoi(box(13.5, 52.3, 13.51, 52.31)), start=date(2024, 6, 1),
                          end=date(2024, 6, 2), output="x.tif", cloud_mask="ml")
    with pytest.raises(InvalidParameterError) as err:
        params.validate()
    assert "pip install" in str(err.value) and "ukis-csmask" in str(err.value)
    assert "Missing: ukis_csmask" in str(err.value)


def test_unknown_cloud_mask_is_refused_with_the_choices():
    params = SearchParams(aoi=Aoi(box(13.5, 52.3, 13.51, 52.31)), start=date(2024, 6, 1),
                          end=date(2024, 6, 2), cloud_mask="fmask")
    with pytest.raises(InvalidParameterError, match="scl, scl\\+prob, scl\\+prob\\+shadow, ml"):
        params.validate()
