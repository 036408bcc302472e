"""The STAC API (rustac serve) over an archive: search semantics, asset hrefs, clean stop.

Most tests use a stand-in archive made of real Earth Search items (../shared/real-stac)
so the expected ids are computed from real footprints and dates; the last ones run the
session `served` fixture over the generated archive.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from pystac_client import Client
from shapely.geometry import box, mapping, shape

from world.paths import REAL_STAC
from world.servers import ServedArchive, StacServer, children_of, pid_alive
from world.stacserver import PLACEHOLDER

REAL = REAL_STAC
C1, L2A = "sentinel-2-c1-l2a", "sentinel-2-l2a"
FILTER_CONFORMANCE = "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter"


def _placeholder_hrefs(item: dict) -> dict:
    for key, asset in item["assets"].items():
        asset["href"] = f"{PLACEHOLDER}/data/{item['collection']}/{item['id']}/{key}.tif"
    return item


def _l2a_items() -> list[dict]:
    items = []
    for path in sorted((REAL / "mapchete-eo-es-v1-33TWN-items").rglob("*")):
        if path.is_file() and not path.name.endswith(".md"):
            item = json.loads(path.read_text())
            if item.get("collection") == L2A:
                items.append(item)
    return items


def _collection(cid: str, items: list[dict]) -> dict:
    dts = sorted(i["properties"]["datetime"] for i in items)
    return {"type": "Collection", "id": cid, "stac_version": "1.0.0", "license": "proprietary",
            "description": f"stand-in {cid}", "links": [],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [[dts[0], dts[-1]]]}}}


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> tuple[Path, dict]:
    """An archive-shaped folder: two collections of real items and one real COG asset."""
    root = tmp_path_factory.mktemp("standin")
    c1 = json.loads((REAL / "rustac-es-v1-c1-13TDE" / "item-collection.json").read_text())
    items = {C1: [_placeholder_hrefs(i) for i in c1["features"]],
             L2A: [_placeholder_hrefs(i) for i in _l2a_items()]}
    for sub in ("collections", "items"):
        (root / "stac" / sub).mkdir(parents=True)
    for cid, its in items.items():
        (root / "stac" / "collections" / f"{cid}.json").write_text(
            json.dumps(_collection(cid, its)))
        (root / "stac" / "items" / f"{cid}.json").write_text(
            json.dumps({"type": "FeatureCollection", "features": its}))
    first = items[C1][0]["id"]
    scl_dir = root / "data" / C1 / first
    scl_dir.mkdir(parents=True)
    scl = (np.arange(256 * 256, dtype="uint32") % 12).astype("uint8").reshape(256, 256)
    with rasterio.open(scl_dir / "scl.tif", "w", driver="COG", width=256, height=256,
                       count=1, dtype="uint8", crs="EPSG:32613", nodata=0,
                       transform=rasterio.transform.from_origin(399960, 4500000, 20, 20)) as dst:
        dst.write(scl, 1)
    return root, items


@pytest.fixture(scope="module")
def standin_served(standin):
    with ServedArchive(standin[0]) as both:
        yield both


def _dt(item: dict) -> datetime:
    return datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))


def _ids(search) -> set[str]:
    return {item.id for item in search.items()}


def test_api_advertises_item_search_but_not_filter(standin_served):
    conf = requests.get(standin_served.stac_url + "/conformance", timeout=10).json()["conformsTo"]
    assert "https://api.stacspec.org/v1.0.0/item-search" in conf
    assert not any("filter" in c or "query" in c for c in conf)
    cols = requests.get(standin_served.stac_url + "/collections", timeout=10).json()
    assert sorted(c["id"] for c in cols["collections"]) == [C1, L2A]


def test_collection_search_returns_every_item_of_that_collection(standin_served, standin):
    client = Client.open(standin_served.stac_url)
    for cid, items in standin[1].items():
        assert _ids(client.search(collections=[cid], max_items=None)) == {i["id"] for i in items}


def test_datetime_range_selects_exactly_the_items_inside(standin_served, standin):
    client = Client.open(standin_served.stac_url)
    lo = datetime(2024, 4, 10, tzinfo=timezone.utc)
    hi = datetime(2024, 4, 16, 23, 59, 59, 999999, tzinfo=timezone.utc)
    expected = {i["id"] for i in standin[1][C1] if lo <= _dt(i) <= hi}
    assert expected == {"S2A_T13TDE_20240415T180048_L2A", "S2A_T13TDE_20240412T175055_L2A",
                        "S2B_T13TDE_20240410T175332_L2A"}
    assert _ids(client.search(collections=[C1], datetime="2024-04-10/2024-04-16")) == expected


def test_bbox_and_intersects_follow_the_item_footprints(standin_served, standin):
    client = Client.open(standin_served.stac_url)
    west_strip = box(15.02, 47.2, 15.1, 47.3)  # only scenes whose footprint reaches x=15.0
    expected = {i["id"] for i in standin[1][L2A] if shape(i["geometry"]).intersects(west_strip)}
    assert 0 < len(expected) < len(standin[1][L2A])
    assert _ids(client.search(collections=[L2A], bbox=west_strip.bounds)) == expected
    assert _ids(client.search(collections=[L2A], intersects=mapping(west_strip))) == expected
    far_away = box(-30, -30, -29, -29)
    assert _ids(client.search(bbox=far_away.bounds)) == set()


def test_bbox_datetime_and_collection_combined(standin_served, standin):
    client = Client.open(standin_served.stac_url)
    aoi = box(15.5, 47.2, 15.6, 47.3)
    lo = datetime(2018, 1, 1, tzinfo=timezone.utc)
    hi = datetime(2019, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    expected = {i["id"] for i in standin[1][L2A]
                if lo <= _dt(i) <= hi and shape(i["geometry"]).intersects(aoi)}
    assert len(expected) >= 3
    got = _ids(client.search(collections=[L2A, C1], bbox=aoi.bounds, datetime="2018/2019"))
    assert got == expected


def test_paging_with_limit_follows_next_links_to_every_item(standin_served, standin):
    client = Client.open(standin_served.stac_url)
    search = client.search(collections=[C1], limit=3)
    pages = [[item.id for item in page.items] for page in search.pages()]
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    flat = [i for p in pages for i in p]
    assert len(set(flat)) == 10 and set(flat) == {i["id"] for i in standin[1][C1]}
    raw = requests.post(standin_served.stac_url + "/search",
                        json={"collections": [C1], "limit": 4}, timeout=10).json()
    assert raw["numberReturned"] == 4
    (nxt,) = [link for link in raw["links"] if link["rel"] == "next"]
    assert nxt["method"] == "POST" and nxt["body"]["limit"] == 4
    rest = requests.post(nxt["href"], json=nxt["body"], timeout=10).json()
    assert {f["id"] for f in rest["features"]}.isdisjoint(f["id"] for f in raw["features"])


def test_asset_hrefs_point_at_the_range_server_and_read(standin_served, standin):
    client = Client.open(standin_served.stac_url)
    first = standin[1][C1][0]["id"]
    item = next(iter(client.search(ids=[first]).items()))
    base = standin_served.assets.url
    assert all(a.href.startswith(f"{base}/data/{C1}/{first}/") for a in item.assets.values())
    standin_served.assets.clear_log()
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), \
            rasterio.open("/vsicurl/" + item.assets["scl"].href) as src:
        scl = src.read(1)
    assert scl.shape == (256, 256) and int(scl[0, 5]) == 5
    assert standin_served.assets.bytes_served(f"/data/{C1}/{first}/scl.tif") > 0


def test_rustac_limitations_clients_must_live_with(standin_served):
    """rustac 0.9.18 evaluates neither CQL2 filter nor query (so the engine filters
    eo:cloud_cover itself) and fails GET /search mixing limit with bbox or collections
    (so clients search with POST, as pystac-client does)."""
    url = standin_served.stac_url + "/search"
    r = requests.get(url, params={"collections": C1, "limit": 4}, timeout=10)
    assert r.status_code == 500 and r.text == "unsupported value"
    r = requests.get(url, params={"bbox": "-106,39,-104,41", "limit": 4}, timeout=10)
    assert r.status_code == 500
    assert len(requests.get(url, params={"collections": C1}, timeout=10).json()["features"]) == 10
    everything = {"op": ">=", "args": [{"property": "eo:cloud_cover"}, 0]}
    r = requests.post(url, json={"collections": [C1], "filter": everything,
                                 "filter-lang": "cql2-json"}, timeout=10)
    assert r.status_code == 200 and r.json()["features"] == []
    r = requests.get(url, params={"filter": "eo:cloud_cover >= 0", "filter-lang": "cql2-text"},
                     timeout=10)
    assert r.status_code == 200 and r.json()["features"] == []
    r = requests.post(url, json={"collections": [C1], "query": {"eo:cloud_cover": {"gte": 0}}},
                      timeout=10)
    assert r.status_code == 200 and r.json()["features"] == []
    r = requests.post(url, json={"collections": [C1], "limit": 100}, timeout=10)
    assert len(r.json()["features"]) == 10


def test_stopping_leaves_no_child_process(standin):
    before = set(children_of(os.getpid()))
    served = ServedArchive(standin[0]).start()
    pids = [served.assets.pid, served.stac.pid]
    assert all(pid_alive(p) for p in pids)
    assert set(pids) <= set(children_of(os.getpid()))
    served.stop()
    assert not any(pid_alive(p) for p in pids)
    assert set(children_of(os.getpid())) <= before


def test_stac_server_refuses_a_folder_without_stac(tmp_path):
    with pytest.raises(FileNotFoundError):
        StacServer(tmp_path, "http://127.0.0.1:1")
    assert not list(tmp_path.iterdir())


# -- the session archive --------------------------------------------------------------


def test_served_archive_lists_every_generated_item(served):
    client = Client.open(served.stac_url)
    for path in sorted((served.root / "stac" / "items").glob("*.json")):
        features = json.loads(path.read_text())["features"]
        cid = features[0]["collection"]
        assert _ids(client.search(collections=[cid], max_items=None)) == {
            f["id"] for f in features}


def test_served_assets_read_through_the_range_server(served, assets):
    client = Client.open(served.stac_url)
    item = next(iter(client.search(collections=[C1], max_items=1).items()))
    href = item.assets["scl"].href
    assert href.startswith(assets.url + "/data/") and PLACEHOLDER not in href
    rel = href[len(assets.url) + 1:]
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), \
            rasterio.open("/vsicurl/" + href) as remote, rasterio.open(served.root / rel) as local:
        np.testing.assert_array_equal(remote.read(1, out_shape=(1, 32, 32)),
                                      local.read(1, out_shape=(1, 32, 32)))
    gets = [e for e in assets.requests() if e["method"] == "GET"]
    assert gets and all(e["status"] == 206 for e in gets)


def test_served_search_finds_the_known_aoi_scene_on_its_pass(served, world):
    aoi = world.known_aois["clear_under_cloudy"]
    day = next(i.datetime for i in world.items(C1) if i.pass_index == aoi.pass_index)
    on_disk = json.loads((served.root / "stac" / "items" / f"{C1}.json").read_text())["features"]
    expected = {f["id"] for f in on_disk
                if _dt(f).date() == day.date() and shape(f["geometry"]).intersects(aoi.geometry)}
    wanted = {i.id for i in world.items(C1)
              if i.pass_index == aoi.pass_index and i.tile == aoi.tile}
    assert wanted and wanted <= expected
    client = Client.open(served.stac_url)
    got = _ids(client.search(collections=[C1], intersects=mapping(aoi.geometry),
                             datetime=day.strftime("%Y-%m-%d")))
    assert got == expected
