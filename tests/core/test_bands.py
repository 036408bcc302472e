"""Every band at its own resolution: 10 m and 20 m bands mixed on 10, 20 and 30 m outputs.

The offline archive holds rededge1-3, nir08, swir16, swir22 at 20 m and coastal, nir09 at
60 m, as Earth Search publishes them. What is compared, and why it is fair:

- The truth is `world.reflectance` evaluated at the output pixel centres. The archive's
  pixels are point samples of the same smooth fields (features >= 300 m) at each band's
  own pixel centres, so bilinear upsampling (a 20 m band on a 10 m grid) and averaging
  (a 10 m band's 20 m overview averaged onto a 30 m grid) both reproduce the field at the
  output centre within a few 1e-4 (measured: the 99th percentile error is printed). The
  tolerance is 0.01 for >= 99 % of the filled pixels, and the 99th percentile must stay
  below 0.005: a wrong resampling near clouds (cloud values bled into a clear pixel) or a
  shifted grid fails it.
- A 30 m output must read each 10 m band from its overview (20 m), each 20 m band at full
  resolution, and the SCL always at full resolution with nearest (checked on the pixels,
  and on the range server's byte ranges for the mosaic).
- The red edge (rededge1-3, nir08) and the 60 m bands (coastal, nir09) on 10, 20 and 60 m
  grids, by best pixel and median, with the same tolerance; on a grid of a band's own
  resolution its pixels are the archive's DNs (p99 error <= 1 DN).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from clearsky.core import io
from clearsky.core.api import build_mosaic
from clearsky.core.catalog import scene_from_item
from clearsky.core.clouds import MaskRule
from clearsky.core.grid import Grid
from clearsky.core.params import Method
from clearsky.core.reader import SceneReader, band_resampling, resampling_for
from world.mosaic_truth import mosaic_params, nan_percentile, read_mosaic, truth_for

SIX = ("blue", "green", "red", "nir", "swir16", "swir22")
RESOLUTIONS = (10.0, 20.0, 30.0)
C1 = "sentinel-2-c1-l2a"


def _pass_of(world):
    return {item.id: item.pass_index for item in world.items(C1)}


def _radius(resolution: float) -> int:
    return MaskRule().radius_px(resolution)


def _errors(got, expected, filled):
    both = filled & np.isfinite(expected)
    return np.abs(got - expected)[both]


def _check(err, what):
    assert err.size > 1000, what
    assert (err <= 0.01).mean() >= 0.99, (what, float((err <= 0.01).mean()))
    assert np.percentile(err, 99) <= 0.005, (what, float(np.percentile(err, 99)))


def test_resampling_is_chosen_per_band_by_its_own_pixel_size():
    assert band_resampling("swir16", 10.0) == Resampling.bilinear  # 20 m upsampled
    assert band_resampling("swir16", 20.0) == Resampling.bilinear
    assert band_resampling("swir16", 30.0) == Resampling.bilinear  # 1.5x: not averaged
    assert band_resampling("swir16", 60.0) == Resampling.average
    assert band_resampling("red", 10.0) == Resampling.bilinear
    assert band_resampling("red", 20.0) == Resampling.average
    assert band_resampling("red", 30.0) == Resampling.average
    assert band_resampling("coastal", 30.0) == Resampling.bilinear
    mixed = resampling_for(("red", "swir22"), 30.0)
    assert mixed == {"red": Resampling.average, "swir22": Resampling.bilinear}


@pytest.fixture(scope="module", params=RESOLUTIONS, ids=lambda r: f"{int(r)}m")
def best(request, world, served, tmp_path_factory):
    res = request.param
    path = tmp_path_factory.mktemp("bands") / f"best{int(res)}.tif"
    result = build_mosaic(mosaic_params(world, served, path, bands=SIX, resolution=res,
                                        source_band=True))
    data, names, transform, _, tags = read_mosaic(path)
    assert abs(transform.a - res) < 1e-6
    truth = truth_for(world, result, SIX, radius=_radius(res))
    return res, result, data, names, tags, truth


def test_six_band_best_pixel_matches_the_truth_of_its_source_pass(best, world):
    res, _, data, names, tags, truth = best
    assert names[: len(SIX)] == SIX
    sources = {int(k): v for k, v in json.loads(tags["CLEARSKY_SOURCES"]).items()}
    passes = _pass_of(world)
    source = data[names.index("source")]
    assert (source > 0).mean() > 0.5
    for b, band in enumerate(SIX):
        expected = np.full(source.shape, np.nan, "float32")
        for code in np.unique(source[source > 0]):
            here = source == code
            expected[here] = truth.reflectance[band][passes[sources[int(code)]]][here]
        err = _errors(data[b] / 10000.0, expected, data[b] > 0)
        _check(err, (res, band))
        print(f"best {int(res)} m {band}: p99 error {np.percentile(err, 99):.5f}, "
              f"within 0.01: {(err <= 0.01).mean():.4%}")


@pytest.mark.parametrize("res", RESOLUTIONS, ids=lambda r: f"{int(r)}m")
def test_six_band_median_matches_the_truth(world, served, tmp_path, res):
    path = tmp_path / f"median{int(res)}.tif"
    result = build_mosaic(mosaic_params(world, served, path, bands=SIX, resolution=res,
                                        method=Method.MEDIAN))
    data, names, *_ = read_mosaic(path)
    assert names[: len(SIX)] == SIX
    truth = truth_for(world, result, SIX, radius=_radius(res))
    filled = data[0] > 0
    assert not (filled & ~truth.possible()).any()
    for b, band in enumerate(SIX):
        stack = np.array(truth.reflectance[band], dtype="float32")
        with np.errstate(all="ignore"):
            expected = nan_percentile(np.where(np.array(truth.strict), stack, np.nan), 50.0)
        err = _errors(data[b] / 10000.0, expected, filled)
        _check(err, (res, band))
        print(f"median {int(res)} m {band}: p99 error {np.percentile(err, 99):.5f}, "
              f"within 0.01: {(err <= 0.01).mean():.4%}")


# ------------------------------------------------------------------ which level is read
def _scene(archive: Path, served, item_id: str):
    items = json.loads((archive / "stac" / "items" / f"{C1}.json").read_text())["features"]
    d = next(f for f in items if f["id"] == item_id)
    d = json.loads(json.dumps(d).replace("__ASSET_BASE__", served.assets.url.rstrip("/")))
    return scene_from_item(d), d


def test_a_30m_grid_reads_10m_bands_from_the_overview_and_scl_at_full_resolution(
        world, archive, served, monkeypatch):
    """In process: which dataset (and overview level) each read opens, and the pixels."""
    t = world.tile("33UUU")
    p = next(i for i, q in enumerate(world.passes) if not q.swath_edge)
    item_id = next(i.id for i in world.items(C1) if i.tile == t.id and i.pass_index == p)
    scene, _ = _scene(archive, served, item_id)
    # a 30 m grid on the tile's origin, inside the tile
    tr = t.transform10 * Affine.scale(3)
    grid = Grid(t.crs, tr, t.width10 // 3 - 2, t.height10 // 3 - 2)
    opened = []
    real_open = io._open

    def spy(path, overview_level=None):
        opened.append((path.rsplit("/", 1)[-1], overview_level))
        return real_open(path, overview_level)

    monkeypatch.setattr(io, "_open", spy)
    io.close_datasets()
    reader = SceneReader(("red", "swir16"), MaskRule(), grid)
    usable, covered = reader.usable_and_covered(scene, grid)
    refl, valid = reader.reflectance(scene, grid, usable)
    levels = {}
    for name, level in opened:
        levels.setdefault(name, set()).add(level)
    assert levels["scl.tif"] == {None}  # never an SCL overview
    assert 0 in levels["red.tif"]  # 10 m band: its 20 m overview
    assert levels["swir16.tif"] == {None}  # 20 m band: full resolution (40 m is too coarse)
    # The SCL is nearest from the full-resolution 20 m raster: exactly the truth's 20 m
    # classes at the 20 m pixel holding each 30 m centre.
    scl = io.read_to_grid(scene.assets["scl"], grid, resampling=Resampling.nearest,
                          use_overviews=False)
    scl20 = world.scl(p, t.crs, t.transform20, (t.height20, t.width20))
    rows = (np.arange(grid.height) * 30 + 15) // 20
    cols = (np.arange(grid.width) * 30 + 15) // 20
    assert np.array_equal(scl, scl20[rows][:, cols])
    for i, band in enumerate(("red", "swir16")):
        truth = world.reflectance(band, p, t.crs, tr, grid.shape)
        err = np.abs(refl[i] - truth)[valid]
        assert valid.mean() > 0.3
        assert np.percentile(err, 99) <= 0.005 and (err <= 0.01).mean() >= 0.99, band


def _tile_ranges(path: Path, level=None):
    """(offset, end) byte ranges of every tile of a COG's full resolution or overview."""
    out = []
    kwargs = {} if level is None else {"overview_level": level}
    with rasterio.open(path, **kwargs) as src:
        bh, bw = src.block_shapes[0]
        for r in range(-(-src.height // bh)):
            for c in range(-(-src.width // bw)):
                off = src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1)
                size = src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)
                if off and size and int(size):
                    out.append((int(off), int(off) + int(size)))
    return out


def _overlap(a, b) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def test_a_30m_mosaic_fetches_the_overview_tiles_of_10m_bands(world, served, archive, assets,
                                                               tmp_path):
    """The range server's log: the byte ranges fetched from red.tif are the 20 m overview's
    tiles (and the header); at most a read-ahead chunk strays into full-resolution tiles,
    far below reading the full resolution."""
    path = tmp_path / "thirty.tif"
    result = build_mosaic(mosaic_params(world, served, path, bands=("red", "swir16"),
                                        resolution=30.0, count_band=False))
    assert result.filled_fraction > 0.5
    per_file = {}
    for r in assets.requests():
        if not r["path"].endswith("/red.tif") or not r.get("range"):
            continue
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", r["range"])
        assert m, r["range"]
        per_file.setdefault(r["path"], []).append((int(m[1]), int(m[2]) + 1))
    assert per_file
    full_total = overview_read = full_read = 0
    for url_path, ranges in per_file.items():
        local = archive / url_path.lstrip("/")
        full = _tile_ranges(local)
        overview = _tile_ranges(local, 0)
        full_total += sum(e - s for s, e in full)
        overview_read += sum(_overlap(r, o) for r in ranges for o in overview)
        full_read += sum(_overlap(r, f) for r in ranges for f in full)
    print(per_file)
    assert overview_read > 0
    print(f"red.tif: {overview_read} B of overview tiles, {full_read} B of full-resolution "
          f"tiles fetched (full resolution holds {full_total} B)")
    assert full_read <= 0.25 * full_total


# ------------------------------------------------- red edge, nir08 and the 60 m bands
# rededge1-3 and nir08 are 20 m bands, coastal and nir09 60 m ones. Mosaics of all six on
# a 10 m grid (every band upsampled), a 20 m grid (the 20 m bands at their own pixels) and
# a 60 m grid (the 20 m bands averaged, the 60 m bands at their own pixels), by best pixel
# (truth of the pass the source band names) and by the median of the clear passes.
RED_EDGE_60 = ("rededge1", "rededge2", "rededge3", "nir08", "coastal", "nir09")
RE_RESOLUTIONS = (10.0, 20.0, 60.0)


@pytest.fixture(scope="module", params=RE_RESOLUTIONS, ids=lambda r: f"{int(r)}m")
def red_edge_best(request, world, served, tmp_path_factory):
    res = request.param
    path = tmp_path_factory.mktemp("rededge") / f"best{int(res)}.tif"
    result = build_mosaic(mosaic_params(world, served, path, bands=RED_EDGE_60, resolution=res,
                                        source_band=True))
    data, names, transform, _, tags = read_mosaic(path)
    assert abs(transform.a - res) < 1e-6
    truth = truth_for(world, result, RED_EDGE_60, radius=_radius(res))
    return res, data, names, tags, truth


def test_red_edge_and_60m_best_pixel_match_the_truth_of_their_source_pass(red_edge_best,
                                                                          world):
    res, data, names, tags, truth = red_edge_best
    native = {b: 20.0 for b in RED_EDGE_60[:4]} | {"coastal": 60.0, "nir09": 60.0}
    assert names == (*RED_EDGE_60, "count", "source")
    sources = {int(k): v for k, v in json.loads(tags["CLEARSKY_SOURCES"]).items()}
    passes = _pass_of(world)
    source = data[names.index("source")]
    assert (source > 0).mean() > 0.5
    assert not ((data[0] > 0) & ~truth.possible()).any()  # nothing filled from a cloud
    for b, band in enumerate(RED_EDGE_60):
        expected = np.full(source.shape, np.nan, "float32")
        for code in np.unique(source[source > 0]):
            here = source == code
            expected[here] = truth.reflectance[band][passes[sources[int(code)]]][here]
        assert np.array_equal(data[b] > 0, source > 0), band  # every band from that pass
        err = _errors(data[b] / 10000.0, expected, data[b] > 0)
        _check(err, (res, band))
        if native[band] == res:  # at its own pixels: the archive's DNs to 1 DN (rounding),
            # but for the other UTM zone's tile, reprojected (bilinear)
            assert np.percentile(err, 99) <= 1.01e-4, (res, band, np.percentile(err, 99))
        print(f"best {int(res)} m {band}: p99 error {np.percentile(err, 99):.5f}, "
              f"within 0.01: {(err <= 0.01).mean():.4%}")


@pytest.mark.parametrize("res", RE_RESOLUTIONS, ids=lambda r: f"{int(r)}m")
def test_red_edge_and_60m_median_match_the_truth(world, served, tmp_path, res):
    path = tmp_path / f"median{int(res)}.tif"
    result = build_mosaic(mosaic_params(world, served, path, bands=RED_EDGE_60, resolution=res,
                                        method=Method.MEDIAN))
    data, names, *_ = read_mosaic(path)
    assert names == (*RED_EDGE_60, "count")
    truth = truth_for(world, result, RED_EDGE_60, radius=_radius(res))
    filled = data[0] > 0
    assert filled.mean() > 0.5
    assert not (filled & ~truth.possible()).any()
    for b, band in enumerate(RED_EDGE_60):
        stack = np.array(truth.reflectance[band], dtype="float32")
        with np.errstate(all="ignore"):
            expected = nan_percentile(np.where(np.array(truth.strict), stack, np.nan), 50.0)
        err = _errors(data[b] / 10000.0, expected, filled)
        _check(err, (res, band))
        print(f"median {int(res)} m {band}: p99 error {np.percentile(err, 99):.5f}, "
              f"within 0.01: {(err <= 0.01).mean():.4%}")
