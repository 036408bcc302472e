"""Cloud masks beyond SCL on the offline archive: its haze and shadows that SCL misses.

The archive's pass MISSES_PASS has two haze discs whose SCL says 4/5 (their pixels are
brighter and the `cloud` probability layer says 70 %) and a small cloud SCL flags whose
shadow it does not; the truth knows every pixel they change (`World.missed`).
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
from shapely.geometry import box

from clearsky.core import catalog
from clearsky.core.aoi import Aoi
from clearsky.core.api import MosaicParams, build_mosaic
from clearsky.core.clouds import MaskRule, check_aoi_clouds
from clearsky.core.grid import Grid
from clearsky.core.io import gdal_env
from clearsky.core.options import CloudMask
from clearsky.core.params import SearchParams
from clearsky.core.progress import NullProgress
from clearsky.core.reader import SceneReader
from world.geography import local_polygon_to_wgs84
from world.mosaic_truth import read_mosaic
from world.weather import MISSES_PASS

C1 = "sentinel-2-c1-l2a"
START, END = date(2024, 6, 1), date(2024, 6, 30)


def east_aoi(world) -> Aoi:
    """The strip along the region's east edge where the archive puts what SCL misses: the
    haze and the caster cloud's shadow are inside, the caster cloud itself just east of
    it (so SCL calls the pass 100 % clear over the AOI, and only a reader that reads the
    shadows' margin sees the cloud)."""
    xmin, ymin, xmax, ymax = world.bounds_m
    return Aoi(local_polygon_to_wgs84(box(xmax - 850.0, -1400.0, xmax - 285.0, 1400.0)))


def pass_of(world) -> dict:
    return {item.id: item.pass_index for item in world.items(C1)}


def build(world, served, path, mask: CloudMask):
    params = MosaicParams(
        aoi=east_aoi(world), start=START, end=END, catalog_url=served.stac_url, collection=C1,
        output=path, bands=("red", "nir"), max_scene_cloud=100.0, max_aoi_cloud=100.0,
        source_band=True, target_date=date(2024, 6, 18), cloud_mask=mask, block_size=256)
    result = build_mosaic(params)
    data, _, _, _, tags = read_mosaic(path)
    return result, data, tags


def contamination(world, result, data, tags) -> int:
    """Mosaic pixels whose value comes from a pixel SCL missed (haze or shadow)."""
    sources = {int(k): v for k, v in json.loads(tags["CLEARSKY_SOURCES"]).items()}
    passes = pass_of(world)
    source = data[-1]
    bad = 0
    for code in np.unique(source[source > 0]):
        p = passes[sources[int(code)]]
        missed = world.missed(p, result.crs, result.transform, result.shape)
        bad += int((missed & (source == code)).sum())
    return bad


def observations(world, served, grid: Grid, rule: MaskRule):
    """(% of the truly clear observations (SCL clear and nothing missed) over the grid that
    the rule refuses, observations SCL missed that the rule accepts), over every scene."""
    params = SearchParams(aoi=Aoi(box(*grid.bounds), grid.crs), start=START, end=END,
                          catalog_url=served.stac_url, collection=C1, max_scene_cloud=100.0)
    scenes, _, _ = catalog.search(params, NullProgress())
    passes = pass_of(world)
    reader = SceneReader(("red",), rule, grid)
    clear = lost = accepted = 0
    with gdal_env(4):
        for scene in scenes:
            got = reader.usable_and_covered(scene, grid)
            if got is None:
                continue
            ok, has = got
            p = passes[scene.id]
            missed = world.missed(p, grid.crs, grid.transform, grid.shape)
            truth = world.clear(p, grid.crs, grid.transform, grid.shape) & ~missed & has
            clear += int(truth.sum())
            lost += int((truth & ~ok).sum())
            accepted += int((missed & ok).sum())
    return 100.0 * lost / clear, accepted


@pytest.fixture(scope="module")
def mosaics(world, served, tmp_path_factory):
    folder = tmp_path_factory.mktemp("masks")
    return {mask: build(world, served, folder / f"{mask.name}.tif", mask)
            for mask in (CloudMask.SCL, CloudMask.SHADOW)}


def test_the_archive_has_what_scl_misses_where_the_items_say(world, served):
    """Haze and unflagged shadows exist in the truth; the c1 items carry the probability
    assets and the sun angles that put the shadows where they are."""
    params = SearchParams(aoi=east_aoi(world), start=START, end=END,
                          catalog_url=served.stac_url, collection=C1, max_scene_cloud=100.0)
    scenes, _, _ = catalog.search(params, NullProgress())
    assert scenes and all({"cloud", "snow"} <= set(s.assets) for s in scenes)
    s = scenes[0]
    assert s.sun_azimuth == pytest.approx(124.5, abs=0.1)
    assert s.sun_elevation == pytest.approx(57.1, abs=0.1)
    t = world.tile("33UVU")
    tr, shape = t.grid(20)
    missed = world.missed(MISSES_PASS, t.crs, tr, shape)
    assert missed.sum() > 50  # 20 m pixels
    scl = world.scl(MISSES_PASS, t.crs, tr, shape)
    assert set(np.unique(scl[missed])) <= {4, 5, 7}  # SCL calls them clear
    prob = world.cloud_probability(MISSES_PASS, t.crs, tr, shape)
    assert (prob[missed] >= 40).mean() > 0.5  # the haze is in the probability layer
    assert (prob[missed] == 0).any()  # the shadows are not


def test_scl_prob_shadow_removes_the_contamination_scl_lets_through(world, served, mosaics):
    by_scl = contamination(world, *mosaics[CloudMask.SCL])
    by_rule = contamination(world, *mosaics[CloudMask.SHADOW])
    print(f"\ncontaminated mosaic pixels: scl {by_scl}, scl+prob+shadow {by_rule} "
          f"({100.0 * (1 - by_rule / by_scl):.1f} % fewer)")
    assert by_scl >= 500  # the archive really fools SCL: ~5 ha at 10 m
    assert by_rule <= 0.1 * by_scl
    for result, _data, _ in mosaics.values():
        assert result.filled_fraction > 0.99


def test_per_observation_the_rule_masks_what_scl_missed_and_little_else(world, served,
                                                                       mosaics):
    """Scene by scene on the mosaic's grid (not only through the pass order): the missed
    pixels the mask lets through drop >= 90 %, the clear ones it refuses grow <= 5 points."""
    result = mosaics[CloudMask.SCL][0]
    grid = Grid(result.crs, result.transform, result.shape[1], result.shape[0])
    lost_scl, let_scl = observations(world, served, grid, MaskRule())
    lost_rule, let_rule = observations(world, served, grid, MaskRule(kind=CloudMask.SHADOW))
    _, let_prob = observations(world, served, grid, MaskRule(kind=CloudMask.PROB))
    print(f"\nmissed observations let through: scl {let_scl}, scl+prob {let_prob}, "
          f"scl+prob+shadow {let_rule}; clear observations refused: scl {lost_scl:.2f} %, "
          f"scl+prob+shadow {lost_rule:.2f} % (+{lost_rule - lost_scl:.2f} points)")
    assert let_scl >= 500
    assert let_prob < let_scl  # the haze goes with the probability layer ...
    assert let_rule <= 0.1 * let_scl  # ... the shadow with the projection
    assert lost_rule - lost_scl <= 5.0


def test_the_report_says_which_rule_and_layers_each_scene_used(mosaics):
    for mask, (result, _, _) in mosaics.items():
        rows = [r.row() for r in result.reports]
        assert rows and all(row["mask"].startswith(mask.value + ": scl") for row in rows)
        if mask is CloudMask.SHADOW:
            assert all(row["mask"] == "scl+prob+shadow: scl+cloud+shadow" for row in rows)
        if result.report_json is not None:
            saved = json.loads(result.report_json.read_text())
            assert [s["mask"] for s in saved["scenes"]] == [row["mask"] for row in rows]


def test_aoi_cloud_check_uses_the_chosen_rule(world, served):
    """The missed haze and shadow count in the AOI cloud % of their pass only with the
    probability and shadow parts, and the % is what the rule's reader refuses."""
    aoi = east_aoi(world)
    by_mask = {}
    for mask in (CloudMask.SCL, CloudMask.PROB, CloudMask.SHADOW):
        params = SearchParams(aoi=aoi, start=START, end=END, catalog_url=served.stac_url,
                              collection=C1, max_scene_cloud=100.0, max_aoi_cloud=100.0,
                              cloud_mask=mask)
        scenes, _, _ = catalog.search(params, NullProgress())
        reports = check_aoi_clouds(scenes, aoi, params, NullProgress())
        passes = pass_of(world)
        by_mask[mask] = {r.scene.id: r for r in reports if passes[r.scene.id] == MISSES_PASS
                         and r.aoi_coverage}
    ids = sorted(by_mask[CloudMask.SCL])
    assert ids
    shaded = 0
    for sid in ids:
        scl, prob, shadow = (by_mask[m][sid] for m in (CloudMask.SCL, CloudMask.PROB,
                                                       CloudMask.SHADOW))
        assert scl.aoi_cloud == 0.0, sid  # SCL sees nothing
        assert prob.aoi_cloud > 1.0, sid  # the haze
        assert shadow.aoi_cloud >= prob.aoi_cloud, sid
        shaded += shadow.aoi_cloud > prob.aoi_cloud + 0.3  # the tiles under the shadow
        assert scl.mask == "scl: scl" and prob.mask == "scl+prob: scl+cloud"
    assert shaded >= 1
