"""Cancel, retries, broken assets, output safety and the bytes a mosaic reads."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from clearsky.core.api import Aoi, CallbackProgress, MosaicParams, build_mosaic
from clearsky.core.errors import CancelledError, OutputError

START, END = date(2024, 6, 1), date(2024, 6, 30)


def small_aoi(world, size_deg: float = 0.006) -> Aoi:
    """A ~400 m square in tile 33UUU (inside the region, away from the nodata wedge)."""
    lon, lat = world.known_aois["clear_under_cloudy"].geometry.centroid.coords[0]
    return Aoi(box(lon - size_deg, lat - size_deg / 1.6, lon + size_deg, lat + size_deg / 1.6))


def params(world, served, path, **overrides) -> MosaicParams:
    values = dict(
        aoi=Aoi(world.region.buffer(-0.01), "EPSG:4326"), start=START, end=END,
        catalog_url=served.stac_url, output=path, max_aoi_cloud=100.0, block_size=128,
        max_workers=2,
    )
    values.update(overrides)
    return MosaicParams(**values)


def test_cancel_mid_run_leaves_no_file(world, served, tmp_path):
    path = tmp_path / "cancelled.tif"
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 40  # after the search and a few blocks

    progress = CallbackProgress(cancelled=cancelled)
    with pytest.raises(CancelledError):
        build_mosaic(params(world, served, path), progress)
    assert list(tmp_path.iterdir()) == []


def test_cancel_never_damages_an_existing_output(world, served, tmp_path):
    path = tmp_path / "existing.tif"
    path.write_bytes(b"the user's earlier mosaic")
    progress = CallbackProgress(cancelled=lambda: progress.percent > 30)
    with pytest.raises(CancelledError):
        build_mosaic(params(world, served, path, overwrite=True), progress)
    assert path.read_bytes() == b"the user's earlier mosaic"
    assert [p.name for p in tmp_path.iterdir()] == ["existing.tif"]


def test_existing_output_is_not_overwritten_unless_asked(world, served, tmp_path):
    path = tmp_path / "mine.tif"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="exists"):
        build_mosaic(params(world, served, path))
    assert path.read_bytes() == b"keep me"


def test_unwritable_output_folder_is_refused_up_front(world, served, tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        build_mosaic(params(world, served, tmp_path / "missing" / "m.tif"))


def test_a_503_burst_is_retried(world, served, assets, tmp_path):
    assets.configure(faults=[{"path": "*/red.tif", "kind": "503", "count": 3}])
    path = tmp_path / "retried.tif"
    result = build_mosaic(params(world, served, path, aoi=small_aoi(world), bands=("red",)))
    statuses = [r["status"] for r in assets.requests() if r["path"].endswith("/red.tif")]
    assert statuses.count(503) == 3
    assert 206 in statuses
    assert all(r.reason == "" for r in result.reports if r.kept)
    with rasterio.open(path) as src:
        assert (src.read(1) > 0).mean() > 0.9


def test_a_permanently_broken_asset_is_skipped_and_reported(world, served, assets, tmp_path):
    first = build_mosaic(
        params(world, served, tmp_path / "first.tif", aoi=small_aoi(world), bands=("red",))
    )
    victim = next(r.scene for r in first.reports if r.pixels_contributed)
    from osgeo import gdal

    gdal.VSICurlClearCache()  # the first run's bytes must not hide the fault
    broken = f"*/{victim.id}/red.tif"
    assets.configure(faults=[{"path": broken, "kind": "500", "count": None}])
    path = tmp_path / "second.tif"
    second = build_mosaic(params(world, served, path, aoi=small_aoi(world), bands=("red",)))
    row = next(r for r in second.reports if r.scene.id == victim.id)
    assert not row.kept and "could not be read" in row.reason
    assert row.pixels_contributed == 0
    assert second.filled_fraction > 0.9  # other passes fill the AOI
    with rasterio.open(path) as src:
        assert (src.read(1) > 0).mean() > 0.9


def cog_blocks_bytes(path, window_bounds) -> int:
    """Bytes of the full-resolution COG tiles that intersect the bounds (the floor)."""
    from rasterio.windows import from_bounds

    total = 0
    with rasterio.open(path) as src:
        win = from_bounds(*window_bounds, transform=src.transform)
        bh, bw = src.block_shapes[0]
        top, left = max(0, int(win.row_off)), max(0, int(win.col_off))
        bottom = min(src.height - 1, int(np.ceil(win.row_off + win.height)))
        right = min(src.width - 1, int(np.ceil(win.col_off + win.width)))
        rows = range(top // bh, bottom // bh + 1)
        cols = range(left // bw, right // bw + 1)
        for r in rows:
            for c in cols:
                offset = src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1)
                size = src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)
                if offset and size:
                    total += int(size)
    return total


def test_best_pixel_reads_little_more_than_the_floor(world, served, archive, assets, tmp_path):
    """Bytes served for a small AOI vs the COG blocks under it, for the scenes used."""
    from pyproj import Transformer

    aoi = small_aoi(world)
    path = tmp_path / "small.tif"
    result = build_mosaic(
        params(world, served, path, aoi=aoi, bands=("red", "green", "blue", "nir"),
               max_aoi_cloud=50.0, normalise=False)  # NORMALISE reads every pass first
    )
    served_bytes = sum(r["bytes"] for r in assets.requests() if r["path"].endswith(".tif"))
    floor = 0
    used = [r.scene for r in result.reports if r.pixels_contributed]
    assert used
    for scene in used:
        tr = Transformer.from_crs("EPSG:4326", scene.crs, always_xy=True)
        minx, miny, maxx, maxy = aoi.geometry.bounds
        xs, ys = tr.transform([minx, maxx, minx, maxx], [miny, miny, maxy, maxy])
        bounds = (min(xs), min(ys), max(xs), max(ys))
        for asset in ("scl", "red", "green", "blue", "nir"):
            local = archive / "data" / scene.collection / scene.id / f"{asset}.tif"
            floor += cog_blocks_bytes(local, bounds)
    ratio = served_bytes / floor
    print(f"bytes served {served_bytes}, floor {floor}, ratio {ratio:.2f}")
    assert ratio <= 1.5
    assert np.isfinite(ratio)
