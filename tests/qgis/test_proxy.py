"""The QGIS proxy settings reach the engine: STAC requests and GDAL reads go through it.

A tiny forward proxy for plain http:// URLs (no CONNECT) runs on 127.0.0.1, asks for a user
and password, and logs what it forwards. With the proxy enabled in QGIS's settings, a
search and a small mosaic from the dialog reach the served archive only through it; with
the proxy disabled nothing goes to it. The QGIS proxy settings are restored afterwards.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import urllib.parse
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsProject,
    QgsRectangle,
    QgsSettings,
)

from clearsky.core import io
from clearsky.core.aoi import Aoi
from clearsky.core.output import params_summary
from clearsky.ui import dialog as dialog_module
from clearsky.ui import proxy as ui_proxy
from world.qt import wait

JUNE = (date(2024, 6, 1), date(2024, 6, 30))
USER, PASSWORD = "alice", "s3cr:t@pw"
HOP = {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te",
       "trailers", "transfer-encoding", "upgrade"}
KEYS = ("proxyEnabled", "proxyType", "proxyHost", "proxyPort", "proxyUser", "proxyPassword",
        "proxyExcludedUrls", "noProxyUrls")


class ForwardProxy(ThreadingHTTPServer):
    """Forwards absolute-URI http:// requests; 407 without the right Basic credentials."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.log: list = []
        self.lock = threading.Lock()
        self.expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops talking ends its handler thread

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    def _forward(self) -> None:
        server: ForwardProxy = self.server  # type: ignore[assignment]
        url = urllib.parse.urlsplit(self.path)
        authorised = self.headers.get("Proxy-Authorization") == server.expected
        with server.lock:
            server.log.append({"method": self.command, "url": self.path,
                               "authorised": authorised})
        if url.scheme != "http" or not url.hostname:
            self._reply(400, {}, b"absolute http:// URLs only\n")
            return
        if not authorised:
            self._reply(407, {"Proxy-Authenticate": 'Basic realm="test"'}, b"who are you\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            target = url.path + (f"?{url.query}" if url.query else "")
            conn.request(self.command, target or "/", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            head = self.command == "HEAD"  # keeps the size the server announced
            drop = HOP if head else HOP | {"content-length"}
            out = {k: v for k, v in resp.getheaders() if k.lower() not in drop}
            self._reply(resp.status, out, data, head=head)
        finally:
            conn.close()

    def _reply(self, status: int, headers: dict, data: bytes, head: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if not head:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    do_GET = do_POST = do_HEAD = _forward


@pytest.fixture
def forward_proxy():
    server = ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def qgis_proxy_settings():
    """QGIS's proxy settings, restored (or removed) after the test."""
    s = QgsSettings()
    saved = {k: (s.contains(f"proxy/{k}"), s.value(f"proxy/{k}")) for k in KEYS}
    yield s
    for k, (had, value) in saved.items():
        if had:
            s.setValue(f"proxy/{k}", value)
        else:
            s.remove(f"proxy/{k}")


def use_proxy(s: QgsSettings, proxy: ForwardProxy, enabled: bool = True,
              excluded=()) -> None:
    host, port = proxy.url.split(":")
    s.setValue("proxy/proxyEnabled", enabled)
    s.setValue("proxy/proxyType", "HttpProxy")
    s.setValue("proxy/proxyHost", host)
    s.setValue("proxy/proxyPort", port)
    s.setValue("proxy/proxyUser", USER)
    s.setValue("proxy/proxyPassword", PASSWORD)
    s.setValue("proxy/proxyExcludedUrls", list(excluded))
    s.setValue("proxy/noProxyUrls", [])


pytestmark = pytest.mark.usefixtures("private_settings")


@pytest.fixture
def dlg(qgis_iface, world):
    canvas = qgis_iface.mapCanvas()
    crs = QgsCoordinateReferenceSystem("EPSG:3857")
    QgsProject.instance().setCrs(crs)
    canvas.setDestinationCrs(crs)
    canvas.setExtent(QgsRectangle(*Aoi(world.region).to_crs("EPSG:3857").bounds))
    before = set(QgsProject.instance().mapLayers())
    d = dialog_module.ClearskyDialog(qgis_iface)
    yield d
    if d.task is not None:
        d.cancel()
        wait(d)
    d.close()
    canvas.scene().removeItem(d.band)
    added = set(QgsProject.instance().mapLayers()) - before
    QgsProject.instance().removeMapLayers(list(added))
    d.deleteLater()




def search_in(d, served, world) -> None:
    d.aoiMode.setCurrentIndex(dialog_module.TEXT)
    d.aoiText.setPlainText(world.known_aois["clear_under_cloudy"].geometry_wgs84.wkt)
    d.useTextButton.click()
    d.add_catalog_url(served.stac_url)
    d.startDate.setDate(JUNE[0])
    d.endDate.setDate(JUNE[1])
    d.maxSceneCloud.setValue(80.0)
    assert d.search() is not None
    wait(d)
    assert d.sceneTable.rowCount() > 0, d.scenesSummary.text()
    verdicts = [d.sceneTable.item(r, 6).text() for r in range(d.sceneTable.rowCount())]
    assert "kept" in verdicts, verdicts


def test_the_qgis_proxy_settings_become_plain_engine_fields(qgis_proxy_settings, forward_proxy):
    s = qgis_proxy_settings
    use_proxy(s, forward_proxy, excluded=["https://intranet.example/stac", "files.local"])
    url, no_proxy = ui_proxy.qgis_proxy()
    assert url == f"http://alice:s3cr%3At%40pw@{forward_proxy.url}"
    assert no_proxy == "intranet.example,files.local"
    options = io.proxy_options(url, no_proxy)
    assert options["GDAL_HTTP_PROXY"] == forward_proxy.url
    assert options["GDAL_HTTP_PROXYUSERPWD"] == f"{USER}:{PASSWORD}"
    s.setValue("proxy/proxyType", "DefaultProxy")  # the system's: left to the environment
    assert ui_proxy.qgis_proxy() == ("", "")
    s.setValue("proxy/proxyType", "HttpProxy")
    s.setValue("proxy/proxyEnabled", False)
    assert ui_proxy.qgis_proxy() == ("", "") and io.proxy_options("") == {}


def test_search_and_mosaic_go_through_the_qgis_proxy(dlg, served, world, assets, tmp_path,
                                                    qgis_proxy_settings, forward_proxy):
    use_proxy(qgis_proxy_settings, forward_proxy)
    search_in(dlg, served, world)
    stac = [e for e in forward_proxy.log if e["url"].startswith(served.stac_url)]
    assert stac and all(e["authorised"] for e in stac)  # the STAC requests, with credentials
    params = dlg.mosaic_params()
    assert PASSWORD not in repr(params) and params.proxy  # in memory, never shown
    assert PASSWORD not in json.dumps(params_summary(params))

    forward_proxy.log.clear()
    assets.reset()
    out = tmp_path / "through-proxy.tif"
    dlg.utmCheck.setChecked(True)
    dlg.outputWidget.setFilePath(str(out))
    assert dlg.build() is not None, dlg.iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    wait(dlg)
    assert out.exists(), dlg.scenesSummary.text()
    cogs = [e for e in forward_proxy.log if e["url"].startswith(served.assets.url)]
    assert cogs and all(e["authorised"] for e in cogs)
    assert any(e["url"].endswith(".tif") for e in cogs)
    # every request the archive answered came through the proxy
    served_requests = assets.requests()
    assert served_requests and len(served_requests) == len(cogs)
    report = out.with_suffix(".report.json").read_text()
    assert PASSWORD not in report and "alice" not in report


def test_no_request_goes_to_a_disabled_proxy(dlg, served, world, assets, tmp_path,
                                             qgis_proxy_settings, forward_proxy):
    use_proxy(qgis_proxy_settings, forward_proxy, enabled=False)
    search_in(dlg, served, world)
    out = tmp_path / "direct.tif"
    dlg.utmCheck.setChecked(True)
    dlg.outputWidget.setFilePath(str(out))
    assert dlg.build() is not None, dlg.iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    wait(dlg)
    assert out.exists()
    assert assets.requests()  # the archive was read ...
    assert forward_proxy.log == []  # ... directly


def test_excluded_hosts_bypass_the_proxy(dlg, served, world, assets, tmp_path,
                                         qgis_proxy_settings, forward_proxy):
    use_proxy(qgis_proxy_settings, forward_proxy, excluded=["http://127.0.0.1"])
    search_in(dlg, served, world)
    out = tmp_path / "excluded.tif"
    dlg.utmCheck.setChecked(True)
    dlg.outputWidget.setFilePath(str(out))
    assert dlg.build() is not None, dlg.iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    wait(dlg)
    assert out.exists() and assets.requests()
    assert forward_proxy.log == []


def test_processing_algorithms_take_the_qgis_proxy(provider, qgis_proxy_settings,
                                                   forward_proxy, tmp_path):
    from qgis.core import (
        QgsFeature,
        QgsGeometry,
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsVectorLayer,
    )

    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "aoi", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromWkt(
        "POLYGON((13.40 52.50, 13.42 52.50, 13.42 52.52, 13.40 52.52, 13.40 52.50))"))
    layer.dataProvider().addFeatures([feature])
    ctx = QgsProcessingContext()
    ctx.setProject(QgsProject.instance())
    ctx.setFeedback(QgsProcessingFeedback())
    values = {"AOI": layer, "START_DATE": "2024-06-01", "END_DATE": "2024-06-30",
              "CATALOG": "http://127.0.0.1:9/stac", "OUTPUT": str(tmp_path / "m.tif")}
    registry = QgsApplication.processingRegistry()
    use_proxy(qgis_proxy_settings, forward_proxy, excluded=["intranet.example"])
    for alg_id in ("clearsky:searchscenes", "clearsky:buildmosaic"):
        params = registry.createAlgorithmById(alg_id).engine_params(values, ctx, False)
        assert params.proxy.endswith("@" + forward_proxy.url), alg_id
        assert params.no_proxy == "intranet.example"
    qgis_proxy_settings.setValue("proxy/proxyEnabled", False)
    params = registry.createAlgorithmById("clearsky:searchscenes").engine_params(values, ctx,
                                                                                 False)
    assert params.proxy == "" and params.no_proxy == ""
