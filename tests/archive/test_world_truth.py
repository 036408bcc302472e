"""The truth API of the test world: geography, calendar, landscape, clouds, known AOIs."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer
from scipy import ndimage
from shapely.geometry import Point
from shapely.ops import transform as shp_transform

from world import COLLECTIONS, World
from world.geography import REAL_TILES, TILE_SIZE_M, Grid, points
from world.landscape import ALL_BANDS

EXTENT = 6.0
RANGES = {"blue": (0.02, 0.12), "green": (0.04, 0.15), "red": (0.03, 0.18), "nir": (0.15, 0.45),
          "coastal": (0.015, 0.11), "rededge1": (0.06, 0.21), "rededge2": (0.15, 0.29),
          "rededge3": (0.17, 0.37), "nir08": (0.18, 0.43), "nir09": (0.18, 0.38),
          "swir16": (0.15, 0.35), "swir22": (0.06, 0.30)}


@pytest.fixture(scope="module")
def w() -> World:
    return World(extent_km=EXTENT, seed=2024)


def region_grid(w: World, crs: str = "EPSG:32633", res: float = 20.0):
    """A grid covering the region (in `crs`), and a mask of its pixels inside the region."""
    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    minx, miny, maxx, maxy = shp_transform(tr.transform, w.region).bounds
    transform = Affine(res, 0, np.floor(minx / res) * res, 0, -res, np.ceil(maxy / res) * res)
    shape = (int(np.ceil((transform.f - miny) / res)), int(np.ceil((maxx - transform.c) / res)))
    pts = points(Grid.of(crs, transform, shape))
    xmin, ymin, xmax, ymax = w.bounds_m
    inside = (pts.x >= xmin) & (pts.x <= xmax) & (pts.y >= ymin) & (pts.y <= ymax)
    return crs, transform, shape, inside


@pytest.mark.parametrize("extent", [5.0, 6.0, 12.0])
def test_four_real_tiles_on_their_origins_reach_the_region(extent):
    w = World(extent_km=extent)
    origins = {tid: (epsg, ulx, uly) for tid, epsg, ulx, uly in REAL_TILES}
    assert sorted(t.id for t in w.tiles) == sorted(origins)
    assert {t.epsg for t in w.tiles} == {32632, 32633}  # two UTM zones
    for t in w.tiles:
        epsg, ulx, uly = origins[t.id]
        xmin, ymin, xmax, ymax = t.bounds
        assert t.epsg == epsg and t.crs == f"EPSG:{epsg}"
        for v, o in ((xmin, ulx), (xmax, ulx), (ymin, uly), (ymax, uly)):
            assert (v - o) % 60 == 0  # 10/20/60 m grids share the real origin
        assert ulx <= xmin < xmax <= ulx + TILE_SIZE_M
        assert uly - TILE_SIZE_M <= ymin < ymax <= uly
        assert t.width10 % 6 == 0 and t.height10 % 6 == 0
        assert t.footprint_wgs84().intersection(w.region).area > 0.1 * w.region.area
    # The four overlap near lon 13.53-13.55, lat 52.25-52.34 (and the region centre is in 33UUU).
    common = w.tiles[0].footprint_wgs84()
    for t in w.tiles[1:]:
        common = common.intersection(t.footprint_wgs84())
    assert common.intersects(Point(13.54, 52.33))
    assert w.tile("33UUU").footprint_wgs84().contains(w.region.centroid)
    assert abs(w.tile("33UUT").footprint_wgs84().bounds[3] - 52.343) < 0.005


def test_calendar_is_june_2024_two_orbits_alternating_platforms(w):
    ps = w.passes
    assert len(ps) >= 8 and [p.index for p in ps] == list(range(len(ps)))
    assert all(p.datetime.utcoffset() == timedelta(0) for p in ps)
    assert all(p.datetime.year == 2024 and p.datetime.month == 6 for p in ps)
    span = ps[-1].datetime - ps[0].datetime
    assert timedelta(days=20) <= span <= timedelta(days=28)
    assert {p.relative_orbit for p in ps} == {65, 22}
    assert {p.platform for p in ps} == {"sentinel-2a", "sentinel-2b"}
    assert all(p.swath_edge == (p.relative_orbit == 22) for p in ps)
    for a in ps:  # a satellite repeats an orbit every 10 days; S2A and S2B are 5 days apart
        for b in ps:
            if a.relative_orbit == b.relative_orbit and a.index < b.index:
                days = (b.datetime - a.datetime).days
                assert days % 5 == 0
                assert (days % 10 == 0) == (a.platform == b.platform)


def test_reflectance_is_realistic_smooth_and_varies_a_little_by_date(w):
    crs, tr, shape, inside = region_grid(w, res=10.0)
    for band in ALL_BANDS:  # the 20 m and 60 m bands too (the truth is a function of position)
        lo, hi = RANGES[band]
        r0 = w.reflectance(band, 0, crs, tr, shape)[inside]  # pass 0 has no snow
        assert r0.dtype == np.float32 and np.isfinite(r0).all()
        assert lo <= r0.min() and r0.max() <= hi, band
        assert r0.max() - r0.min() > 0.3 * (hi - lo)  # a landscape, not a flat field
        dn = r0.astype(np.float64) * 10000  # quantised to the DN step: DN = round(r * 1e4)
        assert np.abs(dn - np.rint(dn)).max() < 1e-3
        r6 = w.reflectance(band, 6, crs, tr, shape)[inside]
        rel = np.abs(r6 - r0) / r0
        assert 0.005 < rel.max() < 0.08, band  # a few % from date to date
    # Features are no finer than ~300 m: bilinear interpolation from a grid shifted by half a
    # pixel reproduces the truth within 0.005.
    half = tr * Affine.translation(0.5, 0.5)
    a = w.reflectance("nir", 3, crs, tr, shape)
    b = w.reflectance("nir", 3, crs, half, shape)
    interp = (a[:-1, :-1] + a[1:, :-1] + a[:-1, 1:] + a[1:, 1:]) / 4
    diff = np.abs(interp - b[:-1, :-1])
    assert np.nanmax(diff) < 0.005


def test_same_seed_same_world_other_seed_other_world(w):
    t = w.tile("33UVU")
    shape = (t.height20, t.width20)
    again = World(extent_km=EXTENT, seed=2024)
    other = World(extent_km=EXTENT, seed=7)
    for i in (1, 4):
        assert np.array_equal(w.scl(i, t.crs, t.transform20, shape),
                              again.scl(i, t.crs, t.transform20, shape))
        assert not np.array_equal(w.scl(i, t.crs, t.transform20, shape),
                                  other.scl(i, t.crs, t.transform20, shape))
    r = w.reflectance("red", 2, t.crs, t.transform20, shape)
    assert np.array_equal(r, again.reflectance("red", 2, t.crs, t.transform20, shape))
    assert not np.array_equal(r, other.reflectance("red", 2, t.crs, t.transform20, shape))


def test_observed_equals_truth_where_clear_and_not_under_clouds(w):
    crs, tr, shape, inside = region_grid(w, crs="EPSG:25833", res=10.0)
    for i in range(len(w.passes)):
        scl = w.scl(i, crs, tr, shape)
        missed = w.missed(i, crs, tr, shape)  # haze and shadows SCL calls clear
        clear = w.clear(i, crs, tr, shape) & ~missed
        truth = w.reflectance("red", i, crs, tr, shape)
        seen = w.observed("red", i, crs, tr, shape)
        assert np.array_equal(np.isnan(truth), scl == 0)
        assert np.array_equal(seen[clear], truth[clear])
        if missed.any():  # they change the pixels: brighter haze, darker shadow
            assert np.isin(scl[missed], (4, 5, 7)).all()
            assert (np.abs(seen[missed] - truth[missed]) > 0.005).mean() > 0.9
        core = scl == 9
        if core.any():
            assert seen[core].min() >= 0.4 and seen[core].max() <= 0.8  # bright cloud cores
        shadow = scl == 3
        if shadow.sum() > 1000:  # shadows darken the surface down to x 0.3 in their core
            ratio = w.observed("nir", i, crs, tr, shape)[shadow] / w.reflectance(
                "nir", i, crs, tr, shape)[shadow]
            assert ratio.min() < 0.45 and np.median(ratio) < 0.9
            assert ratio.min() > 0.3 - 0.002
    assert {1, 3, 8, 9, 10, 11} <= set(np.unique(np.concatenate(
        [w.scl(i, crs, tr, shape)[inside] for i in range(len(w.passes))])))


def test_scl_flags_every_changed_10m_pixel_from_the_20m_centres(w):
    """Where the 20 m SCL (nearest) says clear, the 10 m observation is exactly the truth."""
    for t in w.tiles:
        for i in (1, 2, 3, 5):
            scl20 = w.scl(i, t.crs, t.transform20, (t.height20, t.width20))
            clear10 = ~np.isin(np.repeat(np.repeat(scl20, 2, 0), 2, 1), [0, 1, 3, 8, 9, 10])
            shape10 = (t.height10, t.width10)
            for band in ("blue", "nir"):
                truth = w.reflectance(band, i, t.crs, t.transform10, shape10)
                seen = w.observed(band, i, t.crs, t.transform10, shape10)
                ok = clear10 & np.isfinite(truth)
                assert np.array_equal(seen[ok], truth[ok]), (t.id, i, band)


def test_every_region_pixel_has_two_clear_passes_and_clouds_vary(w):
    crs, tr, shape, inside = region_grid(w)
    count = w.clear_count(crs, tr, shape)
    assert count[inside].min() >= 2
    assert count[inside].max() >= 7
    covers = [w.cloud_cover(i, "33UUU") for i in range(len(w.passes))]
    assert min(covers) < 2 and max(covers) > 75
    for lo, hi in ((0, 10), (10, 40), (40, 70), (70, 100)):
        assert any(lo <= c < hi for c in covers)


def test_swath_edge_wedge_is_nodata_west_of_a_slanted_line(w):
    crs, tr, shape, inside = region_grid(w, crs="EPSG:4326", res=0.001)
    for p in w.passes:
        scl = w.scl(p.index, crs, tr, shape)
        nodata = (scl == 0) & inside
        if not p.swath_edge:
            assert not nodata.any()
            continue
        frac = nodata.sum() / inside.sum()
        assert 0.1 < frac < 0.5  # the edge crosses the region
        # west of the line: nothing; nodata only in the west
        pts = points(Grid.of(crs, tr, shape))
        west = pts.x < w.swath_edge_x(pts.y)
        assert np.array_equal(nodata, west & inside)
        assert np.isnan(w.reflectance("green", p.index, crs, tr, shape)[west]).all()
        rows = np.where(nodata.any(axis=1))[0]
        first_valid = [np.argmax(~nodata[r] & inside[r]) for r in rows]
        assert first_valid[0] != first_valid[-1]  # slanted, not a meridian


def test_nan_outside_every_tile(w):
    t = w.tile("33UVU")
    far_east = t.transform10 * Affine.translation(t.width10 + 100, 0)
    assert np.isnan(w.reflectance("red", 0, t.crs, far_east, (50, 50))).all()
    assert not w.scl(0, t.crs, far_east, (50, 50)).any()


def test_a_tile_entirely_in_the_wedge_gets_no_item():
    class FarEdgeWorld(World):
        swath_edge = (0.45, 0.0)  # a meridian east of 32UQD's window

    far = FarEdgeWorld(extent_km=EXTENT)
    for p in far.passes:
        tiles = {t.id for t in far.pass_tiles(p.index)}
        assert tiles == ({"33UUU", "33UVU", "33UUT"} if p.swath_edge else
                         {"32UQD", "33UUU", "33UVU", "33UUT"})
    ids = {i.id for i in far.items("sentinel-2-c1-l2a")}
    assert "S2A_T32UQD_20240610T101031_L2A" not in ids
    assert "S2A_T32UQD_20240613T102021_L2A" in ids


@pytest.mark.parametrize("extent", [5.0, 6.0, 12.0])
def test_known_aois_keep_their_promises(extent):
    w = World(extent_km=extent)
    cuc, cuc_pass = w.known_aois["clear_under_cloudy"], w.known_aois["cloudy_under_clear"]
    for aoi in (cuc, cuc_pass):
        assert aoi.tile == "33UUU" and w.region.contains(aoi.geometry)
        assert w.tile("33UUU").footprint_wgs84().contains(aoi.geometry)
        minx, miny, maxx, maxy = aoi.geometry.bounds
        across_km = (maxx - minx) * 111.32 * np.cos(np.radians(52.34))
        assert 0.5 <= across_km <= 1.0
        assert aoi.geometry_wgs84 is aoi.geometry
    assert cuc.pass_index != cuc_pass.pass_index
    assert w.cloud_cover(cuc.pass_index, "33UUU") >= 60
    assert w.cloud_cover(cuc_pass.pass_index, "33UUU") <= 10
    for res in (10, 20):
        scl = w.aoi_scl(cuc.geometry, cuc.pass_index, resolution=res)
        assert scl.size > 100 and not np.isin(scl, [0, 1, 3, 8, 9, 10]).any()
        assert w.aoi_cloud_percent("cloudy_under_clear", resolution=res) >= 60
    # Still clear after the engine's default dilation of the invalid mask by 2 SCL pixels.
    t = w.tile("33UUU")
    scl = w.scl(cuc.pass_index, t.crs, t.transform20, (t.height20, t.width20))
    grown = ndimage.binary_dilation(np.isin(scl, [1, 3, 8, 9, 10]), iterations=2)
    from rasterio.features import geometry_mask

    to_utm = Transformer.from_crs("EPSG:4326", t.crs, always_xy=True)
    inside = ~geometry_mask([shp_transform(to_utm.transform, cuc.geometry)], scl.shape,
                            t.transform20)
    assert inside.sum() > 100 and not grown[inside].any()


def test_items_describe_both_collections_with_one_reprocessed_duplicate(w):
    c1, l2a = (w.items(c) for c in COLLECTIONS)
    assert len(c1) == len(w.passes) * 4 and len(l2a) == len(c1) + 1
    assert c1[0].id == "S2A_T33UUU_20240603T102021_L2A" or any(
        i.id == "S2A_T33UUU_20240603T102021_L2A" for i in c1)
    dup = [i for i in l2a if i.id.startswith("S2A_33UUU_20240603_")]
    assert [i.id for i in dup] == ["S2A_33UUU_20240603_0_L2A", "S2A_33UUU_20240603_1_L2A"]
    old, new = dup
    assert old.superseded_by == new.id and new.superseded_by is None
    assert new.processing_baseline > old.processing_baseline and old.calibration != 1.0
    assert len({i.id for i in c1 + l2a}) == len(c1) + len(l2a)
    for i in c1 + l2a:
        p = w.passes[i.pass_index]
        assert timedelta(0) < i.datetime - p.datetime < timedelta(minutes=1)
    with pytest.raises(ValueError):
        w.items("sentinel-2-l1c")


def test_every_band_has_a_plausible_spectrum_and_unknown_bands_raise(w):
    """Vegetation: red edge climbs from red to NIR, SWIR 2.2 below SWIR 1.6; bare soil is
    brighter than vegetation in SWIR; snow is dark in SWIR."""
    crs, tr, shape, inside = region_grid(w, res=20.0)
    r = {b: w.reflectance(b, 0, crs, tr, shape)[inside] for b in ALL_BANDS}
    veg = (r["nir"] - r["red"]) / (r["nir"] + r["red"]) > 0.6
    bare = (r["nir"] - r["red"]) / (r["nir"] + r["red"]) < 0.3
    assert veg.sum() > 100 and bare.sum() > 100
    m = {b: float(np.median(v[veg])) for b, v in r.items()}
    assert m["red"] < m["rededge1"] < m["rededge2"] < m["rededge3"] < m["nir08"]
    assert m["swir22"] < m["swir16"] < m["nir08"]
    assert np.median(r["swir16"][bare]) > np.median(r["swir16"][veg])
    with pytest.raises(ValueError, match="unknown band"):
        w.reflectance("B8A", 0, crs, tr, shape)


def test_swir_clouds_are_their_own_darker_than_nir_and_snow_stays_dark(w):
    """Opaque cloud (SCL 9) is about as bright in NIR as in the visible but darker at
    1.6 um and darker still at 2.2 um (weather.CLOUD_TOP), not NIR's brightness copied;
    snow is dark in the SWIR, so the SWIR tells snow from cloud; thin cirrus (SCL 10)
    adds less in the SWIR than in NIR."""
    crs, tr, shape, inside = region_grid(w, res=20.0)
    cloudy = max(range(len(w.passes)), key=lambda i: int(
        ((w.scl(i, crs, tr, shape) == 9) & inside).sum()))
    scl = w.scl(cloudy, crs, tr, shape)
    core = (scl == 9) & inside
    assert core.sum() > 1000
    obs = {b: w.observed(b, cloudy, crs, tr, shape)[core] for b in ("red", "nir", "swir16",
                                                                    "swir22")}
    med = {b: float(np.median(v)) for b, v in obs.items()}
    assert 0.5 <= med["nir"] <= 0.7 and abs(med["red"] - med["nir"]) < 0.05
    assert 0.37 <= med["swir16"] <= 0.55 and 0.25 <= med["swir22"] <= 0.40, med
    assert 0.7 <= med["swir16"] / med["nir"] <= 0.9 and med["swir22"] < med["swir16"], med
    for i in range(len(w.passes)):
        s = w.scl(i, crs, tr, shape)
        snow = (s == 11) & inside
        if snow.sum() > 50:
            for b in ("swir16", "swir22"):
                assert np.median(w.observed(b, i, crs, tr, shape)[snow]) < 0.2, (i, b)
            assert np.median(w.observed("swir16", i, crs, tr, shape)[snow]) < 0.5 * np.median(
                w.observed("swir16", cloudy, crs, tr, shape)[core])
            break
    else:
        pytest.fail("no pass with snow")
    cirrus_pass = next(i for i in range(len(w.passes))
                       if ((w.scl(i, crs, tr, shape) == 10) & inside).sum() > 200)
    s = w.scl(cirrus_pass, crs, tr, shape)
    thin = (s == 10) & inside
    gain = {b: float(np.median((w.observed(b, cirrus_pass, crs, tr, shape)
                                - w.reflectance(b, cirrus_pass, crs, tr, shape))[thin]))
            for b in ("nir", "swir16", "swir22")}
    assert 0 < gain["swir22"] < gain["swir16"] < gain["nir"], gain
