"""Real STAC items from Earth Search v0/v1 and Planetary Computer -> Scene, radiometry, dedupe."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from clearsky.core.catalog import dedupe, resolve_radiometry, scene_from_item
from clearsky.core.errors import CatalogError
from clearsky.core.scene import BAND_RESOLUTION
from world.paths import REAL_STAC

REAL = REAL_STAC
C1 = REAL / "rustac-es-v1-c1-13TDE"
MAPCHETE = REAL / "mapchete-eo-es-v1-33TWN-items"
PC = REAL / "odc-stac-pc-s2l2a-items"
PAGES = REAL / "pystac-client-es-v1-search-responses"

def load(path: Path) -> list:
    data = json.loads(path.read_text())
    return data["features"] if data.get("type") == "FeatureCollection" else [data]


def item(path: Path, item_id: str) -> dict:
    found = [d for d in load(path) if d["id"] == item_id]
    assert found, item_id
    return found[0]


def es(name: str) -> dict:
    return load(MAPCHETE / name)[0]


def all_real_items():
    for path in sorted(REAL.rglob("*")):
        if path.is_file() and path.suffix not in (".md",) and path.name != "MANIFEST.json":
            data = json.loads(path.read_text())
            if data.get("type") in ("Feature", "FeatureCollection"):
                for d in load(path):
                    yield path, d


# --------------------------------------------------------------------------- parsing


def test_every_real_sentinel2_l2a_item_parses_and_others_are_refused():
    parsed, refused = [], {}
    for _path, d in all_real_items():
        try:
            s = scene_from_item(d)
        except CatalogError as exc:
            refused[d["id"]] = str(exc)
            continue
        parsed.append(s)
        assert {"scl", "visual", "red", "green", "blue", "nir"} <= set(s.assets), s.id
        assert set(s.assets) <= set(BAND_RESOLUTION) | {"scl", "visual", "cloud", "snow",
                                                             "thumbnail"}
        if s.collection == "sentinel-2-c1-l2a":  # probability COGs and the sun's angles
            assert {"cloud", "snow"} <= set(s.assets), s.id
            assert s.assets["cloud"].endswith("CLD_20m.tif"), s.id
            assert 0 < s.sun_elevation < 90 and 0 <= s.sun_azimuth <= 360, s.id
        else:  # JPEG2000 probability layers (requester-pays bucket) are left alone
            assert not {"cloud", "snow"} & set(s.assets), s.id
        assert s.crs.startswith("EPSG:32"), s.id
        assert len(s.tile) == 5 and s.tile[:2].isdigit(), (s.id, s.tile)
        assert s.platform in ("sentinel-2a", "sentinel-2b"), s.id
        assert s.datetime.tzinfo is not None
        assert s.footprint.is_valid and s.footprint.area > 0
        assert not any(h.endswith(".jp2") for k, h in s.assets.items()) or s.collection == (
            "sentinel-s2-l2a"  # Sinergise's JP2-only archive: no COG to prefer
        )
    # mapchete 17 Earth Search + 1 Sinergise; odc-stac 1 v0 + 1+9+13 PC; rustac 10 c1 + 2 PC;
    # pystac-client pages 5 + 7 + 1 Earth Search v1 and 1 v0
    assert len(parsed) == 68
    l1c = [i for i in refused if i.endswith("_L1C")]
    assert len(l1c) == 5 and all("not a Sentinel-2 L2A" in refused[i] for i in l1c)
    assert all("SCL" in refused[i] for i in l1c)
    landsat = refused["LC08_L2SP_033032_20231008_02_T1"]
    assert "not a Sentinel-2 item (platform landsat-8)" in landsat
    assert sum("sentinel-1a" in r for r in refused.values()) == 3


def test_earth_search_c1_item_hrefs_crs_tile_and_radiometry():
    d = item(C1 / "item-collection.json", "S2A_T13TDE_20240422T174753_L2A")
    s = scene_from_item(d)
    base = ("https://e84-earth-search-sentinel-data.s3.us-west-2.amazonaws.com/"
            "sentinel-2-c1-l2a/13/T/DE/2024/4/S2A_T13TDE_20240422T174753_L2A/")
    assert s.assets["red"] == base + "B04.tif"
    assert s.assets["scl"] == base + "SCL.tif"
    assert s.assets["nir08"] == base + "B8A.tif"
    assert s.assets["rededge1"] == base + "B05.tif"
    assert s.assets["visual"] == base + "TCI.tif"
    assert s.assets["thumbnail"] == base + "L2A_PVI.jpg"  # role thumbnail: the quicklook
    assert (s.crs, s.tile, s.relative_orbit, s.processing_baseline) == (
        "EPSG:32613", "13TDE", 98, "05.10")
    assert s.collection == "sentinel-2-c1-l2a" and s.cloud_cover == pytest.approx(81.344962)
    assert (s.radiometry.scale, s.radiometry.offset) == (0.0001, -0.1)
    # raw DN 1000 is reflectance 0, DN 2500 is 0.15
    assert s.radiometry.reflectance(np.array([1000, 2500])) == pytest.approx([0, 0.15], abs=1e-6)


def test_earth_search_l2a_prefers_cog_over_jp2_and_reads_mgrs_properties():
    s = scene_from_item(es("S2B_33TWN_20220226_0_L2A"))
    base = ("https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/"
            "33/T/WN/2022/2/S2B_33TWN_20220226_0_L2A/")
    assert s.assets["red"] == base + "B04.tif"  # not s3://sentinel-s2-l2a/.../B04.jp2
    assert s.assets["scl"] == base + "SCL.tif"
    assert s.assets["visual"] == base + "TCI.tif"
    assert s.assets["rededge2"] == base + "B06.tif"
    assert (s.crs, s.tile, s.relative_orbit, s.sequence) == ("EPSG:32633", "33TWN", 79, 0)
    assert s.datetime == datetime(2022, 2, 26, 9, 57, 32, 883000, tzinfo=timezone.utc)


def test_planetary_computer_band_number_keys_map_by_eo_bands():
    d = item(PC / "site2-2020_jun_jul-35MNM.geojson",
             "S2A_MSIL2A_20200731T080611_R078_T35MNM_20200818T062751")
    s = scene_from_item(d)
    granule = ("https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/35/M/NM/2020/07/31/"
               "S2A_MSIL2A_20200731T080611_N0212_R078_T35MNM_20200818T062751.SAFE/GRANULE/"
               "L2A_T35MNM_A026673_20200731T081835/IMG_DATA/")
    assert s.assets["red"] == granule + "R10m/T35MNM_20200731T080611_B04_10m.tif"
    assert s.assets["scl"] == granule + "R20m/T35MNM_20200731T080611_SCL_20m.tif"
    # PC calls B05-B07 *and* B8A "rededge": the band number decides
    assert s.assets["nir08"] == granule + "R20m/T35MNM_20200731T080611_B8A_20m.tif"
    assert s.assets["rededge1"] == granule + "R20m/T35MNM_20200731T080611_B05_20m.tif"
    assert s.assets["nir09"].endswith("_B09_60m.tif")  # B09 has no common name at PC
    assert (s.crs, s.tile, s.relative_orbit, s.platform) == (
        "EPSG:32735", "35MNM", 78, "sentinel-2a")


def test_planetary_computer_item_without_eo_bands_uses_collection_item_assets():
    d = copy.deepcopy(item(C1 / "two-sentinel-2-items.json",
                           "S2B_MSIL2A_20240825T173909_R098_T13TDE_20240825T215747"))
    for asset in d["assets"].values():
        asset.pop("eo:bands", None)
    item_assets = json.loads((PC / "sentinel-2-l2a.collection.json").read_text())["item_assets"]
    s = scene_from_item(d, item_assets=item_assets)
    assert s.assets["nir08"].endswith("_B8A_20m.tif")
    assert s.assets["swir16"].endswith("_B11_20m.tif")
    assert s.assets["scl"].endswith("_SCL_20m.tif")
    assert s.crs == "EPSG:32613" and s.tile == "13TDE"


def test_earth_search_v0_item_upper_case_keys_and_sentinel_properties():
    s = scene_from_item(load(PC / "S2A_28QCH_20200714_0_L2A.json")[0])
    base = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/2020/S2A_28QCH_20200714_0_L2A/"
    assert s.assets["red"] == base + "B04.tif"
    assert s.assets["scl"] == base + "SCL.tif"
    assert s.assets["nir08"] == base + "B8A.tif"
    assert s.assets["visual"] == base + "TCI.tif"
    # no s2:* properties: tile from the id, orbit and baseline from sentinel:product_id
    assert (s.tile, s.crs, s.relative_orbit, s.processing_baseline) == (
        "28QCH", "EPSG:32628", 123, "02.14")
    assert s.collection == "sentinel-s2-l2a-cogs"


def test_relative_asset_hrefs_resolve_against_the_canonical_link():
    d = load(MAPCHETE / "S2A_12RWT_20240106_0_L2A" / "S2A_12RWT_20240106_0_L2A.json")[0]
    assert d["assets"]["red"]["href"] == "./B04.tif"
    s = scene_from_item(d)
    assert s.assets["red"] == ("s3://sentinel-cogs/sentinel-s2-l2a-cogs/12/R/WT/2024/1/"
                               "S2A_12RWT_20240106_0_L2A/B04.tif")
    assert s.assets["scl"].endswith("/S2A_12RWT_20240106_0_L2A/SCL.tif")
    explicit = scene_from_item(d, base_href="https://example.test/x/item.json")
    assert explicit.assets["red"] == "https://example.test/x/B04.tif"


def test_pystac_item_gives_the_same_scene_as_its_dict():
    from clearsky.core.deps import pystac

    d = item(C1 / "item-collection.json", "S2B_T13TDE_20240407T174209_L2A")
    a, b = scene_from_item(d), scene_from_item(pystac.Item.from_dict(copy.deepcopy(d)))
    assert (a.id, a.crs, a.tile, dict(a.assets), a.radiometry) == (
        b.id, b.crs, b.tile, dict(b.assets), b.radiometry)


def test_proj_code_at_asset_level_is_enough_and_missing_crs_names_the_item():
    d = copy.deepcopy(es("S2A_33TWN_20210629_0_L2A"))
    del d["properties"]["proj:epsg"]
    for asset in d["assets"].values():
        asset["proj:code"] = "EPSG:32633"
    assert scene_from_item(d).crs == "EPSG:32633"
    for asset in d["assets"].values():
        del asset["proj:code"]
    with pytest.raises(CatalogError, match="S2A_33TWN_20210629_0_L2A has no CRS"):
        scene_from_item(d)


def test_l1c_item_is_refused_with_a_reason():
    d = item(PAGES / "test_filter.page1.json", "S2B_24MUV_20250731_0_L1C")
    with pytest.raises(CatalogError, match="S2B_24MUV_20250731_0_L1C is not a Sentinel-2 L2A"):
        scene_from_item(d)
    d = copy.deepcopy(d)
    del d["properties"]["s2:product_type"]  # even unlabelled: no SCL, no cloud mask
    with pytest.raises(CatalogError, match="no SCL asset"):
        scene_from_item(d)


# --------------------------------------------------------------------------- radiometry


@pytest.mark.parametrize(
    ("source", "item_id", "offset"),
    [
        # c1: raw DNs, raster:bands right
        (C1 / "item-collection.json", "S2B_T13TDE_20240331T175111_L2A", -0.1),
        (PAGES / "test_filter.page1.json", "S2B_T24MUV_20250731T130245_L2A", -0.1),
        # sentinel-2-l2a before 04.00: raster:bands offset 0
        (MAPCHETE / "S2A_33TWN_20161202_0_L2A", "S2A_33TWN_20161202_0_L2A", 0.0),
        (MAPCHETE / "S2A_33TWN_20220122_0_L2A", "S2A_33TWN_20220122_0_L2A", 0.0),
        # sentinel-2-l2a 04.00, boa_offset_applied false: raster:bands -0.1 is right
        (MAPCHETE / "S2B_33TWN_20220226_0_L2A", "S2B_33TWN_20220226_0_L2A", -0.1),
        # boa_offset_applied true: pixels already offset-free although raster:bands says -0.1
        (MAPCHETE / "S2B_33TWN_20220130_0_L2A", "S2B_33TWN_20220130_0_L2A", 0.0),
        (PAGES / "test_filter.page2.json", "S2B_24MVV_20250731_0_L2A", 0.0),
        (PAGES / "test_multiple_collections.page1.json", "S2A_13TDE_20231008_0_L2A", 0.0),
        # Earth Search v0: 2020 (baseline 02.14 from the product id), 2025 flagged
        (PC / "S2A_28QCH_20200714_0_L2A.json", "S2A_28QCH_20200714_0_L2A", 0.0),
        (PAGES / "test_non_conformant_can_be_fixed.page1.json", "S2B_20EPT_20250731_0_L2A", 0.0),
        # Planetary Computer: no raster:bands scale/offset, baseline rule
        (PC / "site2-2020_jun_jul-35MNM.geojson",
         "S2A_MSIL2A_20200601T080611_R078_T35MNM_20201027T072253", 0.0),
        (C1 / "two-sentinel-2-items.json",
         "S2A_MSIL2A_20240823T174901_R141_T13TDE_20240824T013055", -0.1),
        # Sinergise JP2 archive: raw DNs, raster:bands -0.1
        (MAPCHETE / "S2A_OPER_MSI_L2A_TL_2APS_20230602T025701_A041483_T01WCR.json",
         "S2A_OPER_MSI_L2A_TL_2APS_20230602T025701_A041483_T01WCR", -0.1),
    ],
)
def test_radiometry_of_real_items(source, item_id, offset):
    r = resolve_radiometry(item(source, item_id))
    assert r.scale == pytest.approx(0.0001)
    assert r.offset == pytest.approx(offset, abs=1e-12)
    assert scene_from_item(item(source, item_id)).radiometry == r


def test_radiometry_without_baseline_falls_back_to_the_date():
    d = copy.deepcopy(item(C1 / "two-sentinel-2-items.json",
                           "S2A_MSIL2A_20240823T174901_R141_T13TDE_20240824T013055"))
    del d["properties"]["s2:processing_baseline"]
    d["properties"].pop("s2:product_uri", None)
    d["id"] = "no-baseline-here"
    assert resolve_radiometry(d).offset == pytest.approx(-0.1)
    d["properties"]["datetime"] = "2021-12-31T10:00:00Z"
    assert resolve_radiometry(d).offset == 0.0


def test_radiometry_v0_collection_after_04_without_flag_is_offset_free():
    d = copy.deepcopy(load(PAGES / "test_non_conformant_can_be_fixed.page1.json")[0])
    del d["properties"]["sentinel:boa_offset_applied"]
    assert resolve_radiometry(d).offset == 0.0  # v0 republished 04.00+ with the offset removed
    d["collection"] = "some-other-raw-collection"
    assert resolve_radiometry(d).offset == pytest.approx(-0.1)


def test_radiometry_turns_dns_into_reflectance_for_both_earth_search_regimes():
    c1 = scene_from_item(item(PAGES / "test_filter.page1.json", "S2B_T24MUV_20250731T130245_L2A"))
    l2a = scene_from_item(item(PAGES / "test_filter.page1.json", "S2B_24MUV_20250731_0_L2A"))
    # the same ground reflectance 0.2 is DN 3000 in c1 and DN 2000 in the harmonised l2a
    assert c1.radiometry.reflectance(np.array([3000]))[0] == pytest.approx(0.2, abs=1e-6)
    assert l2a.radiometry.reflectance(np.array([2000]))[0] == pytest.approx(0.2, abs=1e-6)


# --------------------------------------------------------------------------- dedupe


def zero_twin(d: dict, baseline: str, updated: str) -> dict:
    """The `_0_` processing of a real `_1_` item (upstream kept only the `_1_` one)."""
    t = copy.deepcopy(d)
    t["id"] = d["id"].replace("_1_L2A", "_0_L2A")
    p = t["properties"]
    p["s2:sequence"] = "0"
    p["s2:processing_baseline"] = baseline
    p["updated"] = updated
    p["s2:datastrip_id"] = p["s2:datastrip_id"].rsplit("_N", 1)[0] + f"_N{baseline}"
    return t


def test_dedupe_keeps_the_reprocessed_version_of_the_real_sequence_pairs():
    one_a = es("S2B_33TWN_20180521_1_L2A")
    one_b = es("S2A_33TWN_20190707_1_L2A")
    zero_a = zero_twin(one_a, "02.06", "2022-11-01T00:00:00Z")
    zero_b = zero_twin(one_b, "02.12", "2022-11-01T00:00:00Z")  # same baseline: sequence wins
    others = [es("S2B_33TWN_20180806_0_L2A"), es("S2B_33TWN_20181005_0_L2A")]
    scenes = [scene_from_item(d) for d in [zero_a, others[0], one_a, one_b, zero_b, others[1]]]
    kept, dropped = dedupe(scenes)
    assert [s.id for s in kept] == [
        "S2B_33TWN_20180806_0_L2A", "S2B_33TWN_20180521_1_L2A", "S2A_33TWN_20190707_1_L2A",
        "S2B_33TWN_20181005_0_L2A"]
    assert sorted((s.id, why) for s, why in dropped) == [
        ("S2A_33TWN_20190707_0_L2A", "reprocessed duplicate of S2A_33TWN_20190707_1_L2A"),
        ("S2B_33TWN_20180521_0_L2A", "reprocessed duplicate of S2B_33TWN_20180521_1_L2A"),
    ]


def test_dedupe_baseline_beats_sequence_and_datastrip_links_shifted_times():
    one = es("S2B_33TWN_20180521_1_L2A")
    zero = zero_twin(one, "02.09", "2022-10-01T00:00:00Z")  # a newer baseline in the _0_
    zero["properties"]["datetime"] = "2018-05-21T10:07:24.100000Z"  # sensing time re-derived
    kept, dropped = dedupe([scene_from_item(one), scene_from_item(zero)])
    assert [s.id for s in kept] == ["S2B_33TWN_20180521_0_L2A"]
    assert dropped[0][1] == "reprocessed duplicate of S2B_33TWN_20180521_0_L2A"


def test_dedupe_leaves_tiles_of_one_pass_and_other_collections_alone():
    strip = [scene_from_item(d) for d in load(PC / "site1-20200606-tall-strip-africa.geojson")]
    page = [scene_from_item(d) for d in load(PAGES / "test_filter.page2.json")
            if d["id"].endswith("_L2A")]
    kept, dropped = dedupe(strip + page)
    assert len(kept) == 9 + len(page) and dropped == []
    assert len({s.pass_id for s in strip}) == 1  # 9 tiles, one observation per pixel


def test_dedupe_drops_an_item_listed_twice():
    series = [scene_from_item(d) for d in load(PC / "site2-2020_jun_jul-35MNM.geojson")]
    strip = [scene_from_item(d) for d in load(PC / "site1-20200606-tall-strip-africa.geojson")]
    kept, dropped = dedupe(series + strip)
    assert len(kept) == 13 + 8
    assert [(s.id, why) for s, why in dropped] == [(
        "S2B_MSIL2A_20200606T080609_R078_T35MNM_20200826T094900",
        "listed twice by the catalog (S2B_MSIL2A_20200606T080609_R078_T35MNM_20200826T094900)",
    )]
