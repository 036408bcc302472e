"""check_aoi_clouds on the served offline archive (STAC search + HTTP range reads) vs truth."""

from __future__ import annotations

import numpy as np
import pytest

from clearsky.core import catalog
from clearsky.core.aoi import Aoi
from clearsky.core.clouds import check_aoi_clouds
from clearsky.core.params import DEFAULT_INVALID_SCL, SearchParams
from clearsky.core.progress import NullProgress

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
                          max_workers=4)
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
