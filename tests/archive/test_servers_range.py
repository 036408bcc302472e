"""The range server: exact bytes for every Range form, the request log, delays, faults."""

from __future__ import annotations

import email.parser
import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from rasterio.windows import Window

from world.servers import RANGESERVER, RangeServer, pid_alive

PAYLOAD = bytes((i * 7 + 3) % 256 for i in range(50_000))
COG_SIZE = 1024


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A served root with a known binary file and a real COG; a secret file beside it."""
    base = tmp_path_factory.mktemp("store")
    root = base / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "payload.bin").write_bytes(PAYLOAD)
    (base / "secret.txt").write_text("outside the root")
    rng = np.random.default_rng(7)
    arr = (rng.integers(1, 4000, (COG_SIZE, COG_SIZE))).astype("uint16")
    profile = {"driver": "COG", "width": COG_SIZE, "height": COG_SIZE, "count": 1,
               "dtype": "uint16", "crs": "EPSG:32633", "nodata": 0, "blocksize": 256,
               "compress": "DEFLATE", "predictor": 2, "overview_resampling": "average",
               "transform": rasterio.transform.from_origin(300000, 5900040, 10, 10)}
    with rasterio.open(root / "data" / "band.tif", "w", **profile) as dst:
        dst.write(arr, 1)
    np.save(base / "band.npy", arr)
    return root


@pytest.fixture(scope="module")
def server(store):
    with RangeServer(store) as rs:
        yield rs


@pytest.fixture
def rs(server):
    server.reset()
    yield server
    server.reset()


def get(rs: RangeServer, path: str, rng: str | None = None, **kw) -> requests.Response:
    headers = {"Range": rng} if rng else {}
    return requests.get(rs.url + path, headers=headers, timeout=kw.pop("timeout", 10), **kw)


def only_entry(rs: RangeServer) -> dict:
    entries = rs.requests()
    assert len(entries) == 1, entries
    return entries[0]


def test_single_range_returns_exactly_those_bytes_and_logs_them(rs):
    r = get(rs, "/data/payload.bin", "bytes=100-1099")
    assert r.status_code == 206
    assert r.content == PAYLOAD[100:1100]
    assert r.headers["Content-Range"] == f"bytes 100-1099/{len(PAYLOAD)}"
    assert r.headers["Content-Length"] == "1000"
    assert r.headers["Accept-Ranges"] == "bytes"
    e = only_entry(rs)
    assert (e["method"], e["path"], e["range"], e["status"], e["bytes"], e["fault"]) == (
        "GET", "/data/payload.bin", "bytes=100-1099", 206, 1000, None)
    assert e["duration_ms"] >= 0 and e["time"] > 0


def test_open_ended_and_suffix_ranges(rs):
    r = get(rs, "/data/payload.bin", "bytes=49000-")
    assert r.status_code == 206 and r.content == PAYLOAD[49000:]
    r = get(rs, "/data/payload.bin", "bytes=-300")
    assert r.status_code == 206 and r.content == PAYLOAD[-300:]
    assert r.headers["Content-Range"] == f"bytes 49700-49999/{len(PAYLOAD)}"
    r = get(rs, "/data/payload.bin", "bytes=49990-70000")  # end clipped to the file
    assert r.status_code == 206 and r.content == PAYLOAD[49990:]
    assert [e["bytes"] for e in rs.requests()] == [1000, 300, 10]


def test_multi_range_is_multipart_with_each_part_exact(rs):
    r = get(rs, "/data/payload.bin", "bytes=0-9, 2000-2499, -5")
    assert r.status_code == 206
    ctype = r.headers["Content-Type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    assert int(r.headers["Content-Length"]) == len(r.content)
    msg = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + r.content)
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in msg.get_payload()]
    n = len(PAYLOAD)
    assert parts == [(f"bytes 0-9/{n}", PAYLOAD[0:10]),
                     (f"bytes 2000-2499/{n}", PAYLOAD[2000:2500]),
                     (f"bytes 49995-49999/{n}", PAYLOAD[-5:])]
    assert only_entry(rs)["bytes"] == len(r.content)


def test_unsatisfiable_range_is_416_and_malformed_range_is_ignored(rs):
    r = get(rs, "/data/payload.bin", f"bytes={len(PAYLOAD)}-")
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(PAYLOAD)}"
    r = get(rs, "/data/payload.bin", "bytes=500-100")  # malformed: whole file, 200
    assert r.status_code == 200 and r.content == PAYLOAD
    assert [(e["status"], e["range"]) for e in rs.requests()] == [
        (416, f"bytes={len(PAYLOAD)}-"), (200, "bytes=500-100")]


def test_head_and_full_get_carry_validators(rs):
    h = requests.head(rs.url + "/data/payload.bin", timeout=10)
    assert h.status_code == 200 and h.content == b""
    assert h.headers["Content-Length"] == str(len(PAYLOAD))
    assert h.headers["Accept-Ranges"] == "bytes"
    assert h.headers["Last-Modified"].endswith("GMT") and h.headers["ETag"].startswith('"')
    g = get(rs, "/data/payload.bin")
    assert g.status_code == 200 and g.content == PAYLOAD
    assert g.headers["ETag"] == h.headers["ETag"]
    assert [(e["method"], e["status"], e["bytes"]) for e in rs.requests()] == [
        ("HEAD", 200, 0), ("GET", 200, len(PAYLOAD))]


def test_keep_alive_serves_several_requests_on_one_connection(rs):
    conn = http.client.HTTPConnection("127.0.0.1", int(rs.url.rsplit(":", 1)[1]), timeout=10)
    try:
        for start in (0, 10, 20):
            conn.request("GET", "/data/payload.bin", headers={"Range": f"bytes={start}-{start+4}"})
            resp = conn.getresponse()
            assert resp.status == 206 and resp.read() == PAYLOAD[start:start + 5]
            assert resp.getheader("Connection") != "close"
    finally:
        conn.close()
    assert len(rs.requests()) == 3


@pytest.mark.parametrize("path", ["/../secret.txt", "/data/../../secret.txt",
                                  "/%2e%2e/secret.txt", "/data/%2E%2E/%2E%2E/secret.txt"])
def test_paths_escaping_the_root_are_refused(rs, path):
    conn = http.client.HTTPConnection("127.0.0.1", int(rs.url.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", path)  # http.client sends the path as is (no normalising)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 403
    assert b"outside the root" not in body
    assert only_entry(rs)["status"] == 403


def test_missing_file_is_404_and_control_requests_are_not_logged(rs):
    assert get(rs, "/data/nope.tif").status_code == 404
    rs.requests()
    rs.configure(delay_ms=0)
    assert [(e["path"], e["status"]) for e in rs.requests()] == [("/data/nope.tif", 404)]


def test_log_file_holds_one_json_line_per_request(rs):
    get(rs, "/data/payload.bin", "bytes=0-99")
    get(rs, "/data/payload.bin", "bytes=100-149")
    lines = rs.log_path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == rs.requests()
    assert rs.bytes_served("/data/") == 150 and rs.bytes_served("/other") == 0
    rs.clear_log()
    assert rs.requests() == [] and rs.log_path.read_text() == ""


def test_delay_applies_to_every_data_request_until_reset(rs):
    rs.configure(delay_ms=300)
    t0 = time.monotonic()
    get(rs, "/data/payload.bin", "bytes=0-0")
    get(rs, "/data/payload.bin", "bytes=1-1")
    assert time.monotonic() - t0 >= 0.6
    assert all(e["duration_ms"] >= 300 for e in rs.requests())
    rs.reset()
    t0 = time.monotonic()
    get(rs, "/data/payload.bin", "bytes=0-0")
    assert time.monotonic() - t0 < 0.25


def test_503_burst_of_n_then_success(rs):
    rs.configure(faults=[{"path": "/data/*.bin", "kind": "503", "count": 2}])
    statuses = [get(rs, "/data/payload.bin", "bytes=0-9").status_code for _ in range(3)]
    assert statuses == [503, 503, 206]
    assert get(rs, "/data/band.tif", "bytes=0-9").status_code == 206  # glob does not match
    assert [(e["status"], e["fault"]) for e in rs.requests()] == [
        (503, "503"), (503, "503"), (206, None), (206, None)]


def test_permanent_500_only_for_matching_paths(rs):
    rs.configure(faults=[{"path": "*/payload.bin", "kind": "500", "count": None}])
    assert [get(rs, "/data/payload.bin", "bytes=0-9").status_code for _ in range(4)] == [500] * 4
    assert get(rs, "/data/band.tif", "bytes=0-9").status_code == 206
    assert [e["fault"] for e in rs.requests()] == ["500"] * 4 + [None]


def test_timeout_fault_holds_the_connection_past_the_client_timeout(rs):
    rs.configure(faults=[{"path": "/data/payload.bin", "kind": "timeout", "count": 1}])
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(rs, "/data/payload.bin", "bytes=0-9", timeout=0.5)
    assert 0.45 <= time.monotonic() - t0 < 5
    r = get(rs, "/data/payload.bin", "bytes=0-9")  # count 1: the retry succeeds
    assert r.status_code == 206 and r.content == PAYLOAD[:10]
    first, second = rs.requests()
    assert (first["fault"], first["status"], first["bytes"]) == ("timeout", None, 0)
    assert first["duration_ms"] >= 450
    assert (second["fault"], second["status"]) == (None, 206)


def test_timeout_hold_is_bounded_then_the_connection_closes(rs):
    rs.configure(faults=[{"path": "*", "kind": "timeout", "count": 1, "hold_s": 0.5}])
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):
        get(rs, "/data/payload.bin", "bytes=0-9", timeout=10)
    assert 0.45 <= time.monotonic() - t0 < 5  # closed after the hold, long before 10 s


def test_truncated_body_announces_the_full_length_and_closes_early(rs):
    rs.configure(faults=[{"path": "/data/payload.bin", "kind": "truncate", "count": 2}])
    conn = http.client.HTTPConnection("127.0.0.1", int(rs.url.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", "/data/payload.bin", headers={"Range": "bytes=0-9999"})
        resp = conn.getresponse()
        assert resp.status == 206 and resp.getheader("Content-Length") == "10000"
        with pytest.raises(http.client.IncompleteRead) as err:
            resp.read()
    finally:
        conn.close()
    assert err.value.partial == PAYLOAD[:5000]
    # Debian's urllib3 1.26 does not enforce Content-Length: requests hands back the short
    # body without an error, so a client must compare the length itself.
    short = requests.get(rs.url + "/data/payload.bin", timeout=10)
    assert int(short.headers["Content-Length"]) == len(PAYLOAD)
    assert short.content == PAYLOAD[: len(PAYLOAD) // 2]
    assert get(rs, "/data/payload.bin").content == PAYLOAD  # the burst of 2 is over
    assert [(e["fault"], e["status"], e["bytes"]) for e in rs.requests()] == [
        ("truncate", 206, 5000), ("truncate", 200, len(PAYLOAD) // 2), (None, 200, len(PAYLOAD))]


def test_rasterio_reads_a_cog_window_over_vsicurl_with_range_requests(rs, store):
    expected = np.load(store.parent / "band.npy")[300:400, 500:600]
    url = f"/vsicurl/{rs.url}/data/band.tif"
    env = rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", VSI_CACHE=False,
                       CPL_VSIL_CURL_NON_CACHED=f"/vsicurl/{rs.url}/")
    with env, rasterio.open(url) as src:
        assert src.profile["blockxsize"] == 256 and src.overviews(1)
        got = src.read(1, window=Window(500, 300, 100, 100))
    np.testing.assert_array_equal(got, expected)
    entries = [e for e in rs.requests() if e["path"] == "/data/band.tif"]
    gets = [e for e in entries if e["method"] == "GET"]
    assert gets and all(e["range"] and e["status"] == 206 for e in gets)
    size = (store / "data" / "band.tif").stat().st_size
    assert sum(e["bytes"] for e in entries) < size / 2


def _vsicurl_read(rs: RangeServer, tag: str, **options) -> np.ndarray:
    """Read a window with GDAL; `tag` (a query string) keeps GDAL's per-URL cache apart."""
    env = rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", **options)
    with env, rasterio.open(f"/vsicurl/{rs.url}/data/band.tif?{tag}") as src:
        return src.read(1, window=Window(0, 0, 64, 64))


def test_gdal_retries_through_a_503_burst(rs, store):
    rs.configure(faults=[{"path": "/data/band.tif", "kind": "503", "count": 2}])
    got = _vsicurl_read(rs, "retry", GDAL_HTTP_MAX_RETRY=3, GDAL_HTTP_RETRY_DELAY=0.05)
    np.testing.assert_array_equal(got, np.load(store.parent / "band.npy")[:64, :64])
    assert [e["status"] for e in rs.requests()][:2] == [503, 503]


def test_gdal_reports_a_truncated_body_as_an_error(rs):
    rs.configure(faults=[{"path": "/data/band.tif", "kind": "truncate", "count": None}])
    with pytest.raises(rasterio.errors.RasterioIOError):
        _vsicurl_read(rs, "truncated", GDAL_HTTP_MAX_RETRY=0)
    assert any(e["fault"] == "truncate" for e in rs.requests())


def test_non_loopback_hosts_are_refused(tmp_path):
    for host in ("0.0.0.0", "192.168.1.10", "example.org"):
        done = subprocess.run(
            [sys.executable, str(RANGESERVER), "--root", str(tmp_path), "--host", host,
             "--port", "0"], capture_output=True, text=True, timeout=30)
        assert done.returncode != 0
        assert "refusing to bind non-loopback host" in done.stderr


def test_stop_leaves_no_process(store):
    server = RangeServer(store)
    pid = server.pid
    assert pid_alive(pid)
    server.stop()
    assert not pid_alive(pid)
    assert server.pid is not None and server.proc.returncode is not None


def test_server_exits_when_its_parent_dies(store, tmp_path):
    """A test run killed with SIGKILL runs no atexit: the server must notice by itself."""
    script = (
        "import sys, time\n"
        "from world.servers import RangeServer\n"
        f"rs = RangeServer({str(store)!r})\n"
        "print(rs.pid, rs.workdir, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, workdir = parent.stdout.readline().split(maxsplit=1)
        child = int(pid)
        assert pid_alive(child)
    finally:
        parent.kill()
        parent.wait(10)
        parent.stdout.close()
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(child)
    shutil.rmtree(workdir.strip())  # the killed parent could not clean up
