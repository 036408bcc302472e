"""Issue 10, items 3, 5, 6 and 7 on the STAC side: bounded waits, cancel while a request is
stalled, malformed items, no secrets in messages, no socket left open.

The catalog is `world.stacserver.ScriptedStac` on 127.0.0.1 (rustac refuses to load the
malformed items) serving real Earth Search `sentinel-2-c1-l2a` items.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from datetime import date

import pytest

from clearsky.core import catalog
from clearsky.core.aoi import parse_aoi
from clearsky.core.catalog import search
from clearsky.core.deps import pystac_client
from clearsky.core.errors import CancelledError, CatalogError
from clearsky.core.params import SearchParams
from clearsky.core.progress import NullProgress
from world.paths import REAL_STAC
from world.stacserver import ScriptedStac

REAL = REAL_STAC / "rustac-es-v1-c1-13TDE"
AOI = "-105.2,40.1,-105.0,40.2"  # inside MGRS 13TDE (Colorado)
QUICK = {"timeout": (2.0, 2.0), "deadline": 4.0}  # short limits: the tests stay fast
WAITS: dict = {}  # measured stall-to-error and cancel-to-stop times, printed at the end


def collection() -> dict:
    return json.loads((REAL / "collection.json").read_text())


def real_items() -> list:
    return json.loads((REAL / "item-collection.json").read_text())["features"]


def params(url: str) -> SearchParams:
    return SearchParams(aoi=parse_aoi(AOI), start=date(2024, 3, 31), end=date(2024, 4, 22),
                        catalog_url=url, collection="sentinel-2-c1-l2a", max_scene_cloud=100)


def variant(name: str, base: dict):
    """(id, item) of one malformed variant of `base`; None items stand for JSON null."""
    item = copy.deepcopy(base)
    item["id"] = f"BAD-{name}"
    props, assets = item["properties"], item["assets"]
    # its own acquisition time, so that a sound variant is no duplicate of `base`
    props["datetime"] = f"2024-04-10T10:{NAMES.index(name):02d}:00Z"
    props.pop("s2:datastrip_id", None)
    first = next(iter(assets))
    changes = {
        "epsg-abc": lambda: props.update({"proj:epsg": "abc"}),
        "epsg-float": lambda: props.update({"proj:epsg": 326.5}),
        "epsg-list": lambda: props.update({"proj:epsg": [32613]}),
        "epsg-bool": lambda: props.update({"proj:epsg": True}),
        "epsg-huge": lambda: props.update({"proj:epsg": 10 ** 30}),
        "code-dict": lambda: (props.pop("proj:epsg"), props.update({"proj:code": {"a": 1}})),
        "datetime-garbage": lambda: props.update({"datetime": "not a date"}),
        "datetime-number": lambda: props.update({"datetime": 12345}),
        "datetime-year-0": lambda: props.update({"datetime": "0000-01-01T00:00:00Z"}),
        "datetime-null": lambda: props.update({"datetime": None}),
        "cloud-string": lambda: props.update({"eo:cloud_cover": "cloudy"}),
        "cloud-nan": lambda: props.update({"eo:cloud_cover": "NaN"}),
        "cloud-dict": lambda: props.update({"eo:cloud_cover": {"v": 3}}),
        "no-geometry": lambda: (item.pop("geometry"), item.pop("bbox", None)),
        "geometry-string": lambda: item.update({"geometry": "POLYGON"}),
        "geometry-bad-coords": lambda: item.update(
            {"geometry": {"type": "Polygon", "coordinates": [["a", "b"]]}}),
        "geometry-point": lambda: item.update(
            {"geometry": {"type": "Point", "coordinates": [-105.1, 40.15]}}),
        "geometry-nan": lambda: item.update({"geometry": {
            "type": "Polygon", "coordinates": [[[0, 0], [1, float("nan")], [1, 1], [0, 0]]]}}),
        "assets-list": lambda: item.update({"assets": [1, 2]}),
        "assets-null": lambda: item.update({"assets": None}),
        "asset-null": lambda: assets.update({first: None}),
        "asset-href-number": lambda: assets["scl"].update({"href": 42}),
        "eo-bands-string": lambda: assets["red"].update({"eo:bands": "red"}),
        "raster-bands-dict": lambda: assets["red"].update({"raster:bands": {"scale": "x"}}),
        "raster-scale-string": lambda: assets["red"].update(
            {"raster:bands": [{"scale": "abc", "offset": "x"}]}),
        "properties-list": lambda: item.update({"properties": [1]}),
        "properties-null": lambda: item.update({"properties": None}),
        "platform-number": lambda: props.update({"platform": 2}),
        "orbit-string": lambda: props.update({"sat:relative_orbit": "abc"}),
        "mgrs-garbage": lambda: props.update({"mgrs:utm_zone": "x", "mgrs:latitude_band": 1}),
        "links-garbage": lambda: item.update({"links": "nope"}),
        "id-dict": lambda: item.update({"id": {"nested": 1}}),
    }
    changes[name]()
    return item


NAMES = ["epsg-abc", "epsg-float", "epsg-list", "epsg-bool", "epsg-huge", "code-dict",
         "datetime-garbage", "datetime-number", "datetime-year-0", "datetime-null",
         "cloud-string", "cloud-nan", "cloud-dict", "no-geometry", "geometry-string",
         "geometry-bad-coords", "geometry-point", "geometry-nan", "assets-list", "assets-null",
         "asset-null", "asset-href-number", "eo-bands-string", "raster-bands-dict",
         "raster-scale-string", "properties-list", "properties-null", "platform-number",
         "orbit-string", "mgrs-garbage", "links-garbage", "id-dict"]


def test_malformed_items_are_skipped_with_a_reason_and_the_others_used():
    good = real_items()
    bad = [variant(name, good[0]) for name in NAMES]
    features = [None, "a string", 7] + bad[:16] + good + bad[16:]
    progress = NullProgress()
    with ScriptedStac(collection(), features, page_size=7) as stac:
        candidates, rejected, notes = search(params(stac.url), progress, **QUICK)
    kept = {s.id for s in candidates} | {s.id for s, _ in rejected}
    assert {i["id"] for i in good} <= {s.id for s in candidates}  # every good item used
    noted = " | ".join(notes)
    for name in NAMES:  # each variant is either a sound Scene or a note naming it
        if f"BAD-{name}" not in kept and name != "id-dict":
            assert f"BAD-{name}" in noted, name
    assert "BAD-epsg-huge has an unknown CRS (EPSG:1000000000000000000000000000000)" in noted
    assert sum("Not a STAC item" in n for n in notes) == 3  # null, a string, a number
    skipped = [n for n in notes if n.startswith("Skipped item")]
    assert all(": " in n and len(n) < 400 for n in skipped)
    # which ones still make a usable Scene: numbers that read as numbers, unknown cloud
    assert {"BAD-cloud-string", "BAD-cloud-nan", "BAD-cloud-dict", "BAD-orbit-string",
            "BAD-mgrs-garbage", "BAD-links-garbage"} <= kept
    by_id = {s.id: s for s in candidates}
    assert by_id["BAD-cloud-string"].cloud_cover is None
    print(f"\n{len(NAMES) + 3} malformed variants: {len(skipped)} skipped with a note, "
          f"{len(kept & {f'BAD-{n}' for n in NAMES})} still sound Scenes, search survived")


def test_custom_stac_io_keeps_its_time_outs_through_client_open():
    """pystac-client's Client.open(stac_io=...) calls update(timeout=None): ours stays."""
    with ScriptedStac(collection(), real_items()) as stac:
        io = catalog._stac_io(pystac_client, None, (3.0, 7.0), 9.0)
        try:
            client = pystac_client.Client.open(stac.url, stac_io=io)
            assert client._stac_io is io and io.timeout == (3.0, 7.0)
        finally:
            io.close()
    default = catalog._stac_io(pystac_client, None)
    assert default.timeout == (catalog.CONNECT_TIMEOUT, catalog.TIMEOUT)
    assert default.deadline == catalog.DEADLINE
    default.close()


@pytest.mark.parametrize("path, kind", [("/search", "stall"), ("/search", "trickle"),
                                        ("/", "stall"), ("/collections", "stall")])
def test_a_stalled_or_trickling_catalog_fails_within_the_deadline(path, kind):
    with ScriptedStac(collection(), real_items()) as stac:
        stac.behave(path, kind, interval_s=0.2)
        t0 = time.monotonic()
        with pytest.raises(CatalogError) as err:
            search(params(stac.url), NullProgress(), **QUICK)
        took = time.monotonic() - t0
    WAITS[f"{kind} {path}"] = took
    message = str(err.value)
    assert stac.url in message
    assert "timed out" in message or "did not answer in time" in message, message
    assert took < 15, took  # deadline 4 s; generous for a loaded 2-core machine


def test_cancel_while_the_search_is_stalled_stops_within_a_second():
    progress = NullProgress()
    with ScriptedStac(collection(), real_items()) as stac:
        stac.behave("/search", "stall")
        cancelled_at = []

        def cancel():
            time.sleep(0.5)
            cancelled_at.append(time.monotonic())
            progress.cancel()

        threading.Thread(target=cancel, daemon=True).start()
        with pytest.raises(CancelledError):
            search(params(stac.url), progress, timeout=(10.0, 30.0), deadline=60.0)
        latency = time.monotonic() - cancelled_at[0]
    WAITS["cancel during a stalled /search"] = latency
    assert latency >= 0
    assert latency < 2.0, latency


def test_each_search_closes_its_sockets():
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with ScriptedStac(collection(), real_items(), page_size=4) as stac:
        search(params(stac.url), NullProgress(), **QUICK)  # warm up imports, caches
        before = fds()
        for _ in range(20):
            candidates, _, _ = search(params(stac.url), NullProgress(), **QUICK)
            assert len(candidates) == 10
        after = fds()
    assert after - before <= 1, (before, after)


def test_no_credentials_or_tokens_in_messages_and_notes():
    bad = variant("epsg-abc", real_items()[0])
    bad["id"] = "BAD-https://user:pw@host/x.tif?sig=SECRET"
    with ScriptedStac(collection(), [bad, *real_items()]) as stac:
        host = stac.url.split("://", 1)[1]
        url = f"http://alice:hunter2@{host}/?token=SECRET"
        progress = NullProgress()
        _, _, notes = search(params(url), progress, **QUICK)
        stac.behave("/search", "stall")
        with pytest.raises(CatalogError) as err:
            search(params(url), NullProgress(), **QUICK)
    written = " ".join([str(err.value), *notes, *progress.messages])
    assert "hunter2" not in written and "SECRET" not in written and "alice" not in written
    assert f"http://{host}" in str(err.value)


def test_zz_report_measured_waits():
    print("\nstall-to-error / cancel-to-stop (s):",
          {k: round(v, 3) for k, v in sorted(WAITS.items())})
