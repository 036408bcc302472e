"""catalog.search against a real STAC API (rustac serve) on 127.0.0.1 over real item JSON."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clearsky.core.aoi import parse_aoi
from clearsky.core.catalog import _cloud_filter, search
from clearsky.core.deps import pystac_client
from clearsky.core.errors import CancelledError, CatalogError
from clearsky.core.params import MosaicParams, SearchParams
from clearsky.core.progress import NullProgress
from world.paths import REAL_STAC
from world.servers import free_port

REAL = REAL_STAC
RUSTAC = Path(sys.executable).parent / "rustac"
TWN_AOI = "15.6,47.2,15.9,47.5"  # inside MGRS 33TWN (Austria)
TDE_AOI = "-105.2,40.1,-105.0,40.2"  # inside MGRS 13TDE (Colorado)


def mapchete(name: str) -> dict:
    return json.loads((REAL / "mapchete-eo-es-v1-33TWN-items" / name).read_text())


def l2a_items() -> list:
    """Real Earth Search sentinel-2-l2a items plus three derived ones, each testing a rule."""
    names = [p.name for p in (REAL / "mapchete-eo-es-v1-33TWN-items").glob("S2?_33TWN_*")]
    items = [mapchete(n) for n in sorted(names) if n != "S2A_33TWN_20161202_0_L2A"]
    items.append(mapchete("S2A_12RWT_20240106_0_L2A/S2A_12RWT_20240106_0_L2A.json"))
    # the `_0_` processing of a real `_1_` item: an older baseline, reprocessed later
    zero = copy.deepcopy(mapchete("S2B_33TWN_20180521_1_L2A"))
    zero["id"] = "S2B_33TWN_20180521_0_L2A"
    zero["properties"].update({"s2:sequence": "0", "s2:processing_baseline": "02.06",
                               "updated": "2022-11-01T00:00:00Z"})
    items.append(zero)
    # an item whose assets point at local files: a remote catalog must not make us read them
    local = copy.deepcopy(mapchete("S2A_32TMS_20221207_0_L2A"))
    for asset in local["assets"].values():
        asset["href"] = "file:///data/" + asset["href"].rsplit("/", 1)[-1]
    items.append(local)
    # an item without any CRS cannot be parsed: skipped with a note
    broken = copy.deepcopy(mapchete("S2A_33TWN_20161202_0_L2A"))
    del broken["properties"]["proj:epsg"]
    items.append(broken)
    return items


@pytest.fixture(scope="module")
def stac_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stac")
    c1 = REAL / "rustac-es-v1-c1-13TDE"
    (folder / "c1-collection.json").write_text((c1 / "collection.json").read_text())
    (folder / "c1-items.json").write_text((c1 / "item-collection.json").read_text())
    fc = {"type": "FeatureCollection", "features": l2a_items()}
    (folder / "l2a-items.json").write_text(json.dumps(fc))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(RUSTAC), "serve", "--addr", f"127.0.0.1:{port}", "--create-collections",
         "c1-collection.json", "c1-items.json", "l2a-items.json"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # at most ~20 s
            try:
                with urllib.request.urlopen(url + "/conformance", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("rustac serve did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def params(url, aoi=TWN_AOI, start=date(2018, 1, 1), end=date(2018, 12, 31),
           collection="sentinel-2-l2a", max_cloud=80.0, cls=SearchParams, **kw):
    return cls(aoi=parse_aoi(aoi), start=start, end=end, catalog_url=url,
               collection=collection, max_scene_cloud=max_cloud, **kw)


def test_search_returns_the_scenes_of_the_aoi_and_dates_with_reasons(stac_url):
    progress = NullProgress()
    candidates, rejected, notes = search(params(stac_url), progress)
    assert sorted(s.id for s in candidates) == [
        "S2B_33TWN_20180521_1_L2A", "S2B_33TWN_20180806_0_L2A", "S2B_33TWN_20181005_0_L2A"]
    assert sorted((s.id, why) for s, why in rejected) == [
        ("S2A_33TWN_20181119_0_L2A", "scene cloud 85.5 % > 80 %"),
        ("S2B_33TWN_20180521_0_L2A", "reprocessed duplicate of S2B_33TWN_20180521_1_L2A"),
        ("S2B_33TWN_20181104_0_L2A", "scene cloud 91.9 % > 80 %"),
    ]
    assert notes == []
    assert all(s.collection == "sentinel-2-l2a" and s.tile == "33TWN" for s in candidates)
    assert progress.percent == 100


def test_search_end_date_is_inclusive_and_whole_days(stac_url):
    one_day = params(stac_url, start=date(2018, 10, 5), end=date(2018, 10, 5))
    candidates, rejected, _ = search(one_day, NullProgress())
    assert [s.id for s in candidates] == ["S2B_33TWN_20181005_0_L2A"] and rejected == []


def test_search_elsewhere_finds_nothing(stac_url):
    berlin = params(stac_url, aoi="13.3,52.4,13.5,52.6")
    assert search(berlin, NullProgress()) == ([], [], [])


def test_search_pages_through_every_result(stac_url):
    p = params(stac_url, aoi=TDE_AOI, start=date(2024, 3, 31), end=date(2024, 4, 22),
               collection="sentinel-2-c1-l2a", max_cloud=100)
    candidates, rejected, notes = search(p, NullProgress(), page_size=3)
    assert len(candidates) == 10 and rejected == [] and notes == []
    assert len({s.id for s in candidates}) == 10
    assert {s.radiometry.offset for s in candidates} == {-0.1}


def test_search_stops_at_the_item_bound_with_a_note(stac_url):
    p = params(stac_url, aoi=TDE_AOI, start=date(2024, 3, 31), end=date(2024, 4, 22),
               collection="sentinel-2-c1-l2a", max_cloud=100)
    candidates, rejected, notes = search(p, NullProgress(), page_size=3, max_items=4)
    assert len(candidates) + len(rejected) == 4
    assert notes == ["The search stopped at 4 items: shorten the dates or shrink the area to "
                     "see the rest."]


def test_search_is_cancelled_between_pages(stac_url):
    class CancelAfterFirstPage(NullProgress):
        calls = 0

        def is_cancelled(self) -> bool:
            self.calls += 1
            return self.calls > 1

    p = params(stac_url, aoi=TDE_AOI, start=date(2024, 3, 31), end=date(2024, 4, 22),
               collection="sentinel-2-c1-l2a", max_cloud=100)
    with pytest.raises(CancelledError):
        search(p, CancelAfterFirstPage(), page_size=3)


def test_local_asset_hrefs_from_a_remote_catalog_are_rejected(stac_url):
    p = params(stac_url, aoi="8.2,46.3,8.6,46.6", start=date(2022, 12, 1), end=date(2022, 12, 31))
    candidates, rejected, _ = search(p, NullProgress())
    assert candidates == []
    [(scene, why)] = rejected
    assert scene.id == "S2A_32TMS_20221207_0_L2A"
    assert why.startswith("asset scl is not on the web (file:///data/SCL.tif)")


def test_relative_hrefs_become_s3_and_are_kept(stac_url):
    p = params(stac_url, aoi="-110.5,29.0,-110.2,29.3", start=date(2024, 1, 6),
               end=date(2024, 1, 6))
    [scene], rejected, _ = search(p, NullProgress())
    assert rejected == []
    assert scene.assets["scl"] == ("s3://sentinel-cogs/sentinel-s2-l2a-cogs/12/R/WT/2024/1/"
                                   "S2A_12RWT_20240106_0_L2A/SCL.tif")


def test_unparseable_items_are_skipped_with_a_note(stac_url):
    p = params(stac_url, start=date(2016, 12, 1), end=date(2016, 12, 31))
    candidates, rejected, notes = search(p, NullProgress())
    assert candidates == [] and rejected == []
    assert notes == ["Skipped item S2A_33TWN_20161202_0_L2A: S2A_33TWN_20161202_0_L2A has no CRS "
                     "(neither proj:epsg nor proj:code)."]


def test_mosaic_bands_missing_from_an_item_reject_it(stac_url):
    p = params(stac_url, start=date(2018, 10, 5), end=date(2018, 10, 5), cls=MosaicParams,
               bands=("red", "nir"))
    [scene], [], _ = search(p, NullProgress())
    assert scene.id == "S2B_33TWN_20181005_0_L2A"
    p.bands = ("red", "cirrus")  # L2A has no B10: a plain reason, not a crash
    [], [(scene, why)], _ = search(p, NullProgress())
    assert why == "no asset for band(s) cirrus"


def test_unknown_collection_lists_what_the_api_offers(stac_url):
    with pytest.raises(CatalogError) as err:
        search(params(stac_url, collection="sentinel-2-l1c"), NullProgress())
    assert str(err.value) == (
        f"The STAC API at {stac_url} has no collection 'sentinel-2-l1c'. It offers: "
        "sentinel-2-c1-l2a, sentinel-2-l2a.")


def test_unreachable_url_names_the_url_and_what_to_check():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(CatalogError) as err:
        search(params(url), NullProgress())
    message = str(err.value)
    assert message.startswith(f"Could not reach the STAC API at {url} (connection refused)")
    assert "Check the URL" in message
    assert time.monotonic() - t0 < 15


class _Html(BaseHTTPRequestHandler):
    agents: list = []

    def do_GET(self):  # noqa: N802 - http.server API
        self.agents.append(self.headers.get("User-Agent"))
        status = 404 if self.path.startswith("/missing") else 200
        body = b"<html><body>Not a STAC API</body></html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def html_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_web_page_that_is_not_stac_says_so(html_server):
    with pytest.raises(CatalogError, match=r"does not look like a STAC API \(its answer is not"):
        search(params(html_server), NullProgress())
    with pytest.raises(CatalogError, match=r"is not a STAC API: it answered HTTP 404"):
        search(params(html_server + "/missing"), NullProgress())
    assert _Html.agents and all(a.startswith("Clearsky/") for a in _Html.agents)


def test_server_side_cloud_filter_follows_conformance(stac_url):
    client = pystac_client.Client.open(stac_url)
    assert _cloud_filter(client, pystac_client, 80) == {}  # rustac: neither Query nor Filter
    client.add_conforms_to("FILTER")
    assert _cloud_filter(client, pystac_client, 80) == {
        "filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 80]},
        "filter_lang": "cql2-json"}
    client.add_conforms_to("QUERY")
    assert _cloud_filter(client, pystac_client, 80) == {"query": {"eo:cloud_cover": {"lte": 80}}}
    assert _cloud_filter(client, pystac_client, 100) == {}  # no limit: keep cloud-less items
