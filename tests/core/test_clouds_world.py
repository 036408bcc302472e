"""The AOI cloud check against the synthetic world's truth (tests/world), on both UTM zones.

SCL windows are written straight from `World.scl` on each tile's own 20 m grid, so this
runs without the served archive; it checks the AOI rasterisation, CRS handling and class
counting of `check_aoi_clouds` against `World.aoi_scl`/`World.clear`.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from shapely.geometry import box
from shapely.ops import transform as shp_transform

from clearsky.core.aoi import Aoi
from clearsky.core.clouds import check_aoi_clouds
from clearsky.core.params import DEFAULT_INVALID_SCL, SearchParams
from clearsky.core.progress import NullProgress
from clearsky.core.scene import Radiometry, Scene

TILES = ("33UUU", "32UQD")  # the AOIs' own zone and the neighbouring one


def scl_window(world, tmp_path, pass_index, tile, geom_wgs84, margin=3):
    """Write the world's SCL under the AOI's bbox (plus margin) on the tile's 20 m grid."""
    tr, _ = tile.grid(20)
    geom = shp_transform(Transformer.from_crs(4326, tile.crs, always_xy=True).transform,
                         geom_wgs84)
    minx, miny, maxx, maxy = geom.bounds
    c0, r0 = (math.floor(v) - margin for v in ~tr * (minx, maxy))
    c1, r1 = (math.ceil(v) + margin for v in ~tr * (maxx, miny))
    sub = tr * Affine.translation(c0, r0)
    scl = world.scl(pass_index, tile.crs, sub, (r1 - r0, c1 - c0))
    path = tmp_path / f"{tile.id}_{pass_index}_{id(geom_wgs84)}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=c1 - c0, height=r1 - r0, count=1,
                       dtype="uint8", crs=tile.crs, transform=sub, nodata=0) as ds:
        ds.write(scl, 1)
    inside_tile = box(*tile.bounds).contains(geom)
    return str(path), inside_tile


def test_aoi_cloud_matches_the_world_truth(world, tmp_path):
    invalid = DEFAULT_INVALID_SCL
    for aoi_info in world.known_aois.values():
        aoi = Aoi(aoi_info.geometry)
        scenes, truth = [], []
        for i in range(len(world.passes)):
            for tile_id in TILES:
                tile = world.tile(tile_id)
                href, inside = scl_window(world, tmp_path, i, tile, aoi_info.geometry)
                scenes.append(Scene(
                    id=f"{tile_id}_{i}", collection="sentinel-2-c1-l2a",
                    datetime=datetime(2024, 1, 1, tzinfo=timezone.utc), platform="sentinel-2a",
                    tile=tile_id, crs=tile.crs, footprint=aoi_info.geometry,
                    assets={"scl": href}, radiometry=Radiometry()))
                scl = world.aoi_scl(aoi_info.geometry, i, tile_id)
                valid = scl[scl != 0]
                cloud = 100.0 * np.isin(valid, sorted(invalid - {0})).mean() if valid.size else None
                truth.append((cloud, 100.0 * valid.size / scl.size if inside else None))
        params = SearchParams(aoi=aoi, start=date(2024, 1, 1), end=date(2024, 12, 31),
                              max_aoi_cloud=50.0, max_workers=4, dilation=0)
        reports = check_aoi_clouds(scenes, aoi, params, NullProgress(), allow_local=True)
        assert len(reports) == len(truth) == 2 * len(world.passes)
        for report, (cloud, coverage) in zip(reports, truth):
            name = f"{aoi_info.name} {report.scene.id}"
            if cloud is None:
                assert not report.kept and report.reason == "does not cover the AOI", name
                continue
            assert report.aoi_cloud == pytest.approx(cloud, abs=0.5), name
            if coverage is not None:
                assert report.aoi_coverage == pytest.approx(coverage, abs=0.5), name
            assert report.kept == (report.aoi_cloud <= 50.0), name
        # the promises the world makes about its known AOIs hold for our check too
        promised = reports[aoi_info.pass_index * len(TILES)]
        if aoi_info.name == "clear_under_cloudy":
            assert promised.kept and promised.aoi_cloud == pytest.approx(0.0, abs=0.5)
        else:
            assert not promised.kept and promised.aoi_cloud >= 60.0
            assert promised.reason.startswith("AOI cloud ") and promised.reason.endswith("> 50 %")
