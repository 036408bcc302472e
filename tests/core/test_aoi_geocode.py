"""geocode() against a fake Nominatim on 127.0.0.1: results, User-Agent, 1 request/second."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from clearsky.core.aoi import geocode
from clearsky.core.errors import AoiError
from world.servers import free_port

KOEPENICK = {  # a district boundary (simplified) and a point result, as Nominatim answers
    "type": "FeatureCollection",
    "licence": "Data © OpenStreetMap contributors, ODbL 1.0.",
    "features": [
        {
            "type": "Feature",
            "properties": {"place_id": 1, "osm_type": "relation", "display_name":
                           "Köpenick, Treptow-Köpenick, Berlin, Deutschland",
                           "category": "boundary", "type": "administrative"},
            "bbox": [13.55, 52.38, 13.70, 52.47],
            "geometry": {"type": "Polygon", "coordinates": [[
                [13.55, 52.38], [13.70, 52.38], [13.70, 52.47], [13.55, 52.47], [13.55, 52.38]]]},
        },
        {
            "type": "Feature",
            "properties": {"place_id": 2, "osm_type": "node", "display_name":
                           "Köpenick, Bahnhofstraße, Berlin", "category": "railway",
                           "type": "station"},
            "bbox": [13.5810, 52.4581, 13.5830, 52.4591],
            "geometry": {"type": "Point", "coordinates": [13.582, 52.4586]},
        },
        {
            "type": "Feature",
            "properties": {"place_id": 3, "display_name": "Bare point", "category": "place",
                           "type": "locality"},
            "bbox": [13.6, 52.4, 13.6, 52.4],
            "geometry": {"type": "Point", "coordinates": [13.6, 52.4]},
        },
    ],
}


class FakeNominatim(BaseHTTPRequestHandler):
    requests: list = []
    status = 200

    def do_GET(self):  # noqa: N802 - http.server API
        self.requests.append({"time": time.monotonic(), "path": self.path,
                              "agent": self.headers.get("User-Agent")})
        body = json.dumps(KOEPENICK).encode() if self.status == 200 else b"busy"
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def nominatim():
    FakeNominatim.requests = []
    FakeNominatim.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeNominatim)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_places_with_outlines_and_point_bboxes(nominatim):
    places = geocode("Köpenick", url=nominatim, limit=3)
    assert [p.name for p in places] == [
        "Köpenick, Treptow-Köpenick, Berlin, Deutschland", "Köpenick, Bahnhofstraße, Berlin",
        "Bare point"]
    assert [p.kind for p in places] == [
        "boundary/administrative", "railway/station", "place/locality"]
    district, station, bare = places
    assert district.aoi.crs == "EPSG:4326"
    assert district.aoi.geometry.bounds == (13.55, 52.38, 13.70, 52.47)
    assert 100 < district.aoi.area_km2 < 104  # 0.15 deg (10.2 km) x 0.09 deg (10.0 km)
    assert station.aoi.geometry.bounds == (13.5810, 52.4581, 13.5830, 52.4591)
    assert bare.aoi.geometry.area > 0  # a bare point grows into a small box
    [request] = FakeNominatim.requests
    url = urlsplit(request["path"])
    assert url.path == "/search"
    assert parse_qs(url.query) == {"q": ["Köpenick"], "format": ["geojson"],
                                   "polygon_geojson": ["1"], "limit": ["3"]}
    assert request["agent"].startswith("Clearsky/")
    assert "python-requests" not in request["agent"]


def test_at_most_one_request_per_second_even_from_threads(nominatim):
    threads = [threading.Thread(target=geocode, args=("Berlin",), kwargs={"url": nominatim})
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    geocode("Potsdam", url=nominatim)
    times = sorted(r["time"] for r in FakeNominatim.requests)
    assert len(times) == 3
    assert all(b - a >= 0.99 for a, b in zip(times, times[1:]))


def test_http_errors_and_unreachable_server_are_plain_messages(nominatim):
    FakeNominatim.status = 429
    with pytest.raises(AoiError, match="answered HTTP 429 .too many requests"):
        geocode("Berlin", url=nominatim)
    with pytest.raises(AoiError, match="cannot be reached"):
        geocode("Berlin", url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(AoiError, match="Type a place name"):
        geocode("  ", url=nominatim)
