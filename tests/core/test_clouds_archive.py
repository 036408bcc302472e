"""check_aoi_clouds on the served offline archive (STAC search + HTTP range reads) vs truth."""

from __future__ import annotations

import numpy as np
import pytest

from clearsky.core import catalog
from clearsky.core.aoi import Aoi
from clearsky.core.clouds import MaskRule, check_aoi_clouds
from clearsky.core.grid import Grid, geometry_mask, reproject_geometry
from clearsky.core.io import gdal_env, read_native_window
from clearsky.core.params import DEFAULT_INVALID_SCL, SearchParams
from clearsky.core.progress import NullProgress
from clearsky.core.reader import SceneReader

C1 = "sentinel-2-c1-l2a"


def truth_cloud(world, geometry, pass_index, tile_id):
    """% of the AOI's covered 20 m pixels that World.clear calls unusable (nodata aside)."""
    scl = world.aoi_scl(geometry, pass_index, tile_id)
    valid = scl[scl != 0]
    if not valid.size:
        return None
    return 100.0 * np.isin(valid, sorted(DEFAULT_INVALID_SCL - {0})).mean()


@pytest.mark.parametrize("name", ["clear_under_cloudy", "cloudy_under_clear"])
def test_check_aoi_clouds_on_the_archive_matches_world_truth(world, served, assets, name):
    known = world.known_aois[name]
    aoi = Aoi(known.geometry)
    days = sorted(p.datetime.date() for p in world.passes)
    params = SearchParams(aoi=aoi, start=days[0], end=days[-1], catalog_url=served.stac_url,
                          collection=C1, max_scene_cloud=100.0, max_aoi_cloud=50.0,
                          max_workers=4, dilation=0)  # the truth counts the SCL as it is
    scenes, _, _ = catalog.search(params, NullProgress())
    assert len(scenes) >= len(world.passes)  # every pass, some in two tiles
    progress = NullProgress()
    reports = check_aoi_clouds(scenes, aoi, params, progress)
    assert [r.scene.id for r in reports] == [s.id for s in scenes]
    assert progress.percent == 100.0
    passes = {item.id: item.pass_index for item in world.items(C1)}
    compared = 0
    for report in reports:
        s = report.scene
        expected = truth_cloud(world, known.geometry, passes[s.id], s.tile)
        if expected is None:
            assert report.reason == "does not cover the AOI", s.id
            continue
        assert report.aoi_cloud == pytest.approx(expected, abs=0.5), s.id
        assert report.kept == (expected <= 50.0), s.id
        compared += 1
    assert compared >= len(world.passes)
    # only SCL bytes were fetched, and only a small part of each SCL file
    requested = [e["path"] for e in assets.requests()]
    assert requested and all("scl" in p.lower() for p in requested)
    promised = [r for r in reports if passes[r.scene.id] == known.pass_index]
    assert promised
    for r in promised:
        if name == "clear_under_cloudy":
            assert r.kept and r.aoi_cloud == pytest.approx(0.0, abs=0.5)
        else:
            assert not r.kept and r.aoi_cloud >= 60.0 and r.reason.endswith("> 50 %")


def test_aoi_cloud_is_the_share_the_mosaic_refuses(world, served):
    """With the default rule (dilation 2), the AOI cloud % of each scene equals the share of
    the AOI's covered pixels that the mosaic's reader marks unusable on the same 20 m grid."""
    known = world.known_aois["cloudy_under_clear"]
    aoi = Aoi(known.geometry.buffer(0.01))
    days = sorted(p.datetime.date() for p in world.passes)
    params = SearchParams(aoi=aoi, start=days[0], end=days[-1], catalog_url=served.stac_url,
                          collection=C1, max_scene_cloud=100.0, max_workers=4)
    assert params.dilation == 2
    scenes, _, _ = catalog.search(params, NullProgress())
    reports = check_aoi_clouds(scenes, aoi, params, NullProgress())
    compared = grown = 0
    with gdal_env(4):
        for report in reports:
            if not report.aoi_coverage:
                continue
            scene = report.scene
            geom = reproject_geometry(aoi.geometry, aoi.crs, scene.crs)
            scl, transform, crs = read_native_window(scene.assets["scl"], geom.bounds, scene.crs)
            grid = Grid(crs, transform, scl.shape[1], scl.shape[0])
            usable, has_data = SceneReader(("red",), MaskRule(), grid).usable_and_covered(
                scene, grid)
            inside = geometry_mask(grid, geom) & has_data
            refused = 100.0 * (inside & ~usable).sum() / inside.sum()
            assert report.aoi_cloud == pytest.approx(refused, abs=0.5), scene.id
            plain = np.isin(scl[inside], sorted(DEFAULT_INVALID_SCL)).mean() * 100
            grown += report.aoi_cloud > plain + 0.5
            compared += 1
    assert compared >= len(world.passes)
    assert grown >= 3  # the dilation changed the figure the user sees on several scenes
