"""The generated archive: repeatable bytes, valid COGs, Earth-Search-like STAC, truthful pixels.

STAC validation is offline: `pystac.Item.from_dict` / `Collection.from_dict` plus the
structural checks below (no JSON schema download).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.warp import reproject
from scipy import ndimage
from shapely import vectorized
from shapely.geometry import shape
from shapely.ops import transform as shp_transform

from world import COLLECTIONS, World, build_archive
from world.geography import Grid, points
from world.landscape import ALL_BANDS, BANDS, BANDS_20, BANDS_60, RESOLUTION

EXTENT = 6.0
C1, L2A = COLLECTIONS
INVALID = [0, 1, 3, 8, 9, 10]


@pytest.fixture(scope="module")
def w() -> World:
    return World(extent_km=EXTENT, seed=2024)


@pytest.fixture(scope="module")
def root(w, tmp_path_factory) -> Path:
    return build_archive(tmp_path_factory.mktemp("world") / "archive", w, workers=2)


@pytest.fixture(scope="module")
def items(root):
    return {c: json.loads((root / "stac" / "items" / f"{c}.json").read_text())["features"]
            for c in COLLECTIONS}


def asset_path(root: Path, item: dict, key: str) -> Path:
    href = item["assets"][key]["href"]
    assert href == f"__ASSET_BASE__/data/{item['collection']}/{item['id']}/{key}.tif"
    return root / href.replace("__ASSET_BASE__/", "")


def read(root, item, key):
    with rasterio.open(asset_path(root, item, key)) as ds:
        return ds.read() if key == "visual" else ds.read(1)


def info_of(w: World, item: dict):
    return next(i for i in w.items(item["collection"]) if i.id == item["id"])


def sha256s(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_manifest(root, w, items):
    from world.generate import generator_hash

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest == {"extent_km": EXTENT, "seed": 2024, "block_size": 512,
                        "generator": generator_hash(), "collections": list(COLLECTIONS),
                        "items": sum(len(v) for v in items.values())}
    for c in COLLECTIONS:
        assert [f["id"] for f in items[c]] == [i.id for i in w.items(c)]
        assert sorted(p.name for p in (root / "data" / c).iterdir()) == sorted(
            f["id"] for f in items[c])
        for f in items[c]:
            probability = ["cloud", "snow"] if c == "sentinel-2-c1-l2a" else []
            assert sorted(f["assets"]) == sorted([*ALL_BANDS, "scl", "visual"] + probability)
            props = f["properties"]  # the sun that casts the archive's shadows
            assert (props["view:sun_azimuth"], props["view:sun_elevation"]) == (
                pytest.approx(124.509, abs=1e-3), pytest.approx(57.088, abs=1e-3))
            for key in f["assets"]:
                assert asset_path(root, f, key).is_file()
    assert not list(root.rglob("*.aux.xml")) and not list(root.rglob("*.part"))


def test_same_inputs_same_bytes_via_the_cli(root, tmp_path):
    """A second build (CLI, one process instead of two workers) is byte-identical."""
    out = tmp_path / "again"
    run = subprocess.run([sys.executable, "-m", "world.generate", "--out", str(out),
                          "--extent-km", str(EXTENT), "--workers", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrote 81 items" in run.stdout
    assert sha256s(out) == sha256s(root)
    with pytest.raises(FileExistsError):
        build_archive(out, World(extent_km=EXTENT))


def test_every_asset_is_a_valid_cog(root, items):
    for c in COLLECTIONS:
        for f in items[c]:
            for key in f["assets"]:
                path = asset_path(root, f, key)
                warnings, errors, _ = validate(str(path), full_check=True)
                assert not errors and not warnings, (path, errors, warnings)
                with rasterio.open(path) as ds:
                    assert ds.count == (3 if key == "visual" else 1)
                    assert ds.block_shapes[0] == (512, 512)
                    assert ds.nodatavals == (0,) * ds.count
                    assert ds.overviews(1), path
                    assert ds.dtypes[0] == ("uint16" if key in ALL_BANDS else "uint8")
                    tags = ds.tags(ns="IMAGE_STRUCTURE")
                    assert tags["COMPRESSION"] == "DEFLATE" and tags["PREDICTOR"] == "2"
                    assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_overviews_average_reflectance_and_keep_scl_classes(root, items):
    item = next(f for f in items[L2A] if f["id"] == "S2B_33UUU_20240605_0_L2A")
    with rasterio.open(asset_path(root, item, "scl")) as ds:
        full, ovr = ds.read(1), ds.read(1, out_shape=(ds.height // 2, ds.width // 2))
        assert set(np.unique(ovr)) <= set(np.unique(full))
    with rasterio.open(asset_path(root, item, "nir")) as ds:
        full = ds.read(1).astype(float)
        ovr = ds.read(1, out_shape=(ds.height // 2, ds.width // 2)).astype(float)
    h, w_ = ovr.shape
    blocks = full[: 2 * h, : 2 * w_].reshape(h, 2, w_, 2)
    complete = (blocks > 0).all(axis=(1, 3))
    assert complete.sum() > 1000
    assert np.abs(ovr - blocks.mean(axis=(1, 3)))[complete].max() <= 1.0


def test_items_are_stac_and_look_like_earth_search(root, w, items):
    for c in COLLECTIONS:
        coll = json.loads((root / "stac" / "collections" / f"{c}.json").read_text())
        collection = pystac.Collection.from_dict(coll)
        assert collection.id == c and coll["license"] and coll["extent"]
        probability = {"cloud", "snow"} if c == C1 else set()
        assert set(coll["item_assets"]) == {*ALL_BANDS, "scl", "visual"} | probability
        if c == C1:  # the trap, as Earth Search publishes it: nodata 0, yet 0 means 0 %
            assert coll["item_assets"]["cloud"]["raster:bands"][0]["nodata"] == 0
        (cx0, cy0, cx1, cy1), = coll["extent"]["spatial"]["bbox"]
        t0, t1 = coll["extent"]["temporal"]["interval"][0]
        for f in items[c]:
            item = pystac.Item.from_dict(f)
            p = f["properties"]
            info = info_of(w, f)
            tile, pas = w.tile(info.tile), w.passes[info.pass_index]
            assert item.collection_id == c and f["stac_version"] == "1.0.0"
            assert all(u.startswith("https://stac-extensions.github.io/")
                       for u in f["stac_extensions"])
            assert item.datetime == info.datetime and t0 <= p["datetime"] <= t1
            assert p["platform"] == pas.platform and p["constellation"] == "sentinel-2"
            assert p["instruments"] == ["msi"]
            assert p["proj:epsg"] == tile.epsg and p["proj:code"] == f"EPSG:{tile.epsg}"
            assert (p["mgrs:utm_zone"], p["mgrs:latitude_band"], p["mgrs:grid_square"]) == (
                int(tile.id[:2]), tile.id[2], tile.id[3:])
            assert p["grid:code"] == f"MGRS-{tile.id}"
            assert p["sat:relative_orbit"] == pas.relative_orbit
            assert p["sat:orbit_state"] == "descending"
            assert p["s2:processing_baseline"] == info.processing_baseline
            assert f"_S{pas.datetime:%Y%m%dT%H%M%S}_N" in p["s2:datastrip_id"]
            assert 0 <= p["eo:cloud_cover"] <= 100
            minx, miny, maxx, maxy = f["bbox"]
            assert cx0 <= minx < maxx <= cx1 and cy0 <= miny < maxy <= cy1
            if c == C1:
                assert re.fullmatch(r"S2[AB]_T\d\d[A-Z]{3}_\d{8}T\d{6}_L2A", f["id"])
                assert "earthsearch:boa_offset_applied" not in p
            else:
                assert re.fullmatch(r"S2[AB]_\d\d[A-Z]{3}_\d{8}_[01]_L2A", f["id"])
                assert p["earthsearch:boa_offset_applied"] is True
                assert p["s2:sequence"] == f["id"].split("_")[3]
            for key, a in f["assets"].items():
                res = 20 if key in ("scl", "cloud", "snow") else RESOLUTION.get(key, 10)
                with rasterio.open(asset_path(root, f, key)) as ds:
                    assert ds.crs.to_epsg() == tile.epsg
                    assert a["proj:shape"] == [ds.height, ds.width]
                    assert a["proj:transform"] == list(ds.transform)[:6]
                    assert a["proj:bbox"] == list(ds.bounds)
                    assert ds.res == (res, res)
                assert a["gsd"] == res
                rb = a["raster:bands"]
                assert all(b["spatial_resolution"] == res for b in rb)
                assert all(b["nodata"] == 0 for b in rb)
                if key in ALL_BANDS:
                    assert a["title"].endswith(f" - {res}m")
                    assert (rb[0]["scale"], rb[0]["offset"]) == (0.0001, -0.1)
                    assert a["eo:bands"][0]["common_name"] == key
                    assert a["roles"] == ["data", "reflectance"] and rb[0]["data_type"] == "uint16"
                if key == "visual":
                    assert [b["common_name"] for b in a["eo:bands"]] == ["red", "green", "blue"]
                if c == C1:
                    data = asset_path(root, f, key).read_bytes()
                    assert a["file:size"] == len(data)
                    assert a["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest()


def test_reprocessed_duplicate(root, items):
    old, new = (next(f for f in items[L2A] if f["id"] == f"S2A_33UUU_20240603_{s}_L2A")
                for s in (0, 1))
    po, pn = old["properties"], new["properties"]
    assert po["datetime"] == pn["datetime"] and old["geometry"] == new["geometry"]
    assert (po["s2:processing_baseline"], pn["s2:processing_baseline"]) == ("05.10", "05.11")
    assert pn["updated"] > po["updated"] and pn["s2:generation_time"] > po["s2:generation_time"]
    a, b = read(root, old, "red").astype(float), read(root, new, "red").astype(float)
    ok = (b > 0) & (read(root, new, "scl") > 0).repeat(2, 0).repeat(2, 1)
    ratio = np.median(a[ok] / b[ok])
    assert 0.96 < ratio < 0.98  # the older processing is 3 % darker: dedupe is visible


def test_pixels_are_the_truth_where_clear(root, w, items):
    scenes = {}
    for c in COLLECTIONS:
        for f in items[c]:
            info = info_of(w, f)
            scenes.setdefault((info.tile, info.pass_index), []).append((f, info))
    for (tile_id, pass_index), group in sorted(scenes.items()):
        t = w.tile(tile_id)
        shape10 = (t.height10, t.width10)
        # what SCL calls clear, less what it misses (haze, unflagged shadows: World.missed)
        missed = w.missed(pass_index, t.crs, t.transform10, shape10)
        clear = w.clear(pass_index, t.crs, t.transform10, shape10) & ~missed
        scl_truth = w.scl(pass_index, t.crs, t.transform20, (t.height20, t.width20))
        truth = {b: w.reflectance(b, pass_index, t.crs, t.transform10, shape10).astype(float)
                 for b in BANDS}
        assert clear.mean() > 0.02 or pass_index in (3, 4)
        for f, info in group:
            scl = read(root, f, "scl")
            assert np.array_equal(scl, scl_truth)
            file_clear = ~np.isin(scl.repeat(2, 0).repeat(2, 1), INVALID) & ~missed
            offset = 1000 if f["collection"] == C1 else 0
            for band in BANDS:
                dn = read(root, f, band).astype(np.int64)
                expected = np.rint(truth[band] * 10000 * info.calibration) + offset
                assert (dn[np.isnan(truth[band])] == 0).all()
                if info.calibration == 1.0:
                    assert np.array_equal(dn[clear], expected[clear]), (f["id"], band)
                    both = file_clear & (dn > 0)
                    assert np.array_equal(dn[both], expected[both]), (f["id"], band)
                else:
                    assert np.abs(dn[clear] - expected[clear]).max() <= 1
            for band in BANDS_20 + BANDS_60:  # at their own resolution, on their own grids
                dn = read(root, f, band).astype(np.int64)
                tr, shp = t.grid(RESOLUTION[band])
                assert dn.shape == shp
                truth_b = w.reflectance(band, pass_index, t.crs, tr, shp).astype(float)
                ok = (w.clear(pass_index, t.crs, tr, shp)
                      & ~w.missed(pass_index, t.crs, tr, shp))
                expected = np.rint(truth_b * 10000 * info.calibration) + offset
                assert (dn[np.isnan(truth_b)] == 0).all()
                assert ok.mean() > 0.02 or pass_index in (3, 4)
                if info.calibration == 1.0:
                    assert np.array_equal(dn[ok], expected[ok]), (f["id"], band)
                else:
                    assert np.abs(dn[ok] - expected[ok]).max() <= 1
                # the 20 m SCL pixel at the same centre says whether it is clear
                step = RESOLUTION[band] // 20
                scl_here = scl[step // 2::step, step // 2::step][: shp[0], : shp[1]]
                assert np.array_equal(scl_here, w.scl(pass_index, t.crs, tr, shp))
            dn = read(root, f, "blue").astype(np.int64)
            core = (scl == 9).repeat(2, 0).repeat(2, 1) & (dn > 0)
            assert ((read(root, f, "blue")[core] - offset) > 3500).all()  # bright cloud cores
            if f["collection"] == C1:  # the probability layers are the truth's, 0 included
                cloud = read(root, f, "cloud")
                assert np.array_equal(cloud, w.cloud_probability(
                    pass_index, t.crs, t.transform20, (t.height20, t.width20)))
                assert (cloud == 0).mean() > 0.3 or pass_index in (3, 4, 8)


def test_both_collections_hold_the_same_reflectance(root, w, items):
    current = {(f["properties"]["datetime"], f["properties"]["grid:code"]): f
               for f in items[L2A] if info_of(w, f).superseded_by is None}
    for f in items[C1]:
        g = current[(f["properties"]["datetime"], f["properties"]["grid:code"])]
        for band in ALL_BANDS:
            a, b = read(root, f, band).astype(np.int64), read(root, g, band).astype(np.int64)
            assert np.array_equal(a > 0, b > 0)
            assert np.array_equal(a[a > 0], b[b > 0] + 1000)
        assert np.array_equal(read(root, f, "scl"), read(root, g, "scl"))
        vis = read(root, f, "visual")
        rgb = [read(root, g, b) / 10000.0 for b in ("red", "green", "blue")]
        want = np.stack([np.where(x > 0, np.clip(np.rint(1 + x * 254 / 0.3), 1, 255), 0)
                         for x in rgb])
        assert np.array_equal(vis, want)


def test_cloud_cover_is_computed_from_the_scl(root, w, items):
    for c in COLLECTIONS:
        for f in items[c]:
            scl = read(root, f, "scl")
            valid = scl > 0
            cc = 100 * np.isin(scl, [8, 9, 10]).sum() / valid.sum()
            assert f["properties"]["eo:cloud_cover"] == pytest.approx(cc, abs=1e-5)
            info = info_of(w, f)
            assert cc == pytest.approx(w.cloud_cover(info.pass_index, info.tile))


def _l2a(root, w, items, pass_index, tile_id):
    f = next(f for f in items[L2A] if info_of(w, f).pass_index == pass_index
             and info_of(w, f).tile == tile_id and info_of(w, f).calibration == 1.0)
    return f


@pytest.mark.parametrize("pass_index", [0, 5, 8])
def test_overlapping_tiles_of_one_pass_agree(root, w, items, pass_index):
    target = w.tile("33UUU")
    dst_f = _l2a(root, w, items, pass_index, "33UUU")
    with rasterio.open(asset_path(root, dst_f, "nir")) as ds:
        dst_profile = ds.profile
    dst = read(root, dst_f, "nir") / 10000.0
    dst_bad = np.isin(read(root, dst_f, "scl"), INVALID).repeat(2, 0).repeat(2, 1)
    for tid in ("32UQD", "33UVU", "33UUT"):
        f = _l2a(root, w, items, pass_index, tid)
        src_tile = w.tile(tid)
        warped = np.zeros(dst.shape, np.float32)
        reproject(read(root, f, "nir").astype(np.float32), warped,
                  src_transform=src_tile.transform10, src_crs=src_tile.crs, src_nodata=0,
                  dst_transform=dst_profile["transform"], dst_crs=target.crs, dst_nodata=0,
                  resampling=Resampling.bilinear)
        src_bad = np.ones(dst.shape, np.uint8)
        reproject(np.isin(read(root, f, "scl"), INVALID).astype(np.uint8), src_bad,
                  src_transform=src_tile.transform20, src_crs=src_tile.crs,
                  dst_transform=dst_profile["transform"], dst_crs=target.crs,
                  resampling=Resampling.nearest, init_dest_nodata=False)
        bad = ndimage.binary_dilation(dst_bad | (src_bad > 0) | (warped == 0) | (dst == 0),
                                      iterations=3)
        both = ~bad
        assert both.sum() > 5000, tid
        diff = np.abs(warped / 10000.0 - dst)[both]
        assert diff.max() < 0.005, (tid, diff.max())


def test_known_aois_in_the_files(root, w, items):
    for name, want_clear in (("clear_under_cloudy", True), ("cloudy_under_clear", False)):
        aoi = w.known_aois[name]
        f = next(f for f in items[C1] if info_of(w, f).pass_index == aoi.pass_index
                 and info_of(w, f).tile == aoi.tile)
        t = w.tile(aoi.tile)
        geom = shp_transform(Transformer.from_crs("EPSG:4326", t.crs, always_xy=True).transform,
                             aoi.geometry)
        scl = read(root, f, "scl")
        inside = ~geometry_mask([geom], scl.shape, t.transform20)
        cloud = np.isin(scl[inside], [8, 9, 10]).mean() * 100
        if want_clear:
            assert f["properties"]["eo:cloud_cover"] >= 60
            assert not np.isin(scl[inside], INVALID).any()
        else:
            assert f["properties"]["eo:cloud_cover"] <= 10 and cloud >= 60


def test_swath_edge_nodata_and_footprints(root, w, items):
    edge_items = 0
    for f in items[C1]:
        info = info_of(w, f)
        p, t = w.passes[info.pass_index], w.tile(info.tile)
        poly = shape(f["geometry"])
        assert poly.is_valid and poly.exterior.is_ccw
        assert list(poly.bounds) == f["bbox"]
        scl = read(root, f, "scl")
        pts = points(Grid(t.crs, t.transform20, scl.shape))
        valid = scl > 0
        inside = vectorized.contains(poly.buffer(1e-7), pts.lon, pts.lat)
        assert inside[valid].all()  # the footprint holds every valid pixel ...
        to_utm = Transformer.from_crs("EPSG:4326", t.crs, always_xy=True)
        area = shp_transform(to_utm.transform, poly).area
        assert area == pytest.approx(valid.sum() * 400.0, rel=0.01)  # ... and little else
        if not p.swath_edge:
            assert valid.all()
            continue
        west = pts.x < w.swath_edge_x(pts.y)
        edge_items += bool(west.any())
        assert not valid[west].any() and valid[~west].all()
        near_edge = vectorized.contains(poly.exterior.buffer(2e-4), pts.lon, pts.lat)
        assert not (inside & west & ~near_edge).any()
        if west.any():  # the 10 m pixels of the wedge are nodata too (but for its edge)
            west10 = west.repeat(2, 0).repeat(2, 1)
            assert (read(root, f, "red")[west10] == 0).mean() > 0.99
            assert (read(root, f, "visual")[:, west10] == 0).mean() > 0.99
            assert (read(root, f, "swir16")[west] == 0).all()  # 20 m: the SCL's own grid
            assert (read(root, f, "swir16")[~west] > 0).all()
    assert edge_items == 5 * 3  # 33UVU lies east of the edge


def test_datetimes_follow_the_pass(items, w):
    for f in items[C1]:
        info = info_of(w, f)
        when = datetime.fromisoformat(f["properties"]["datetime"].replace("Z", "+00:00"))
        assert when == info.datetime
        assert f["id"].endswith(f"{w.passes[info.pass_index].datetime:%Y%m%dT%H%M%S}_L2A")


def test_generator_hash_covers_every_module_the_generator_runs():
    """The archive cache key must change whenever code that shapes the bytes changes."""
    from world.generate import GENERATOR_MODULES

    code = ("import sys, world.generate; "
            "print(' '.join(m for m in sys.modules if m.startswith('world.')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    used = {m.split(".")[1] + ".py" for m in run.stdout.split()} | {"__init__.py"}
    assert used <= set(GENERATOR_MODULES)
