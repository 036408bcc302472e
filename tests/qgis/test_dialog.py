"""The Clearsky dialog: every AOI input mode, search, build, cancel and bad input.

Driven like a user would: buttons clicked, map tools fed synthetic QgsMapMouseEvents on
pytest-qgis's real QgsMapCanvas, engine calls run as QgsTasks against the offline archive.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsMultiBandColorRenderer,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QKeyEvent
from shapely.geometry import Polygon, box, mapping

from clearsky.core.aoi import Aoi
from clearsky.core.mosaic import search_scenes
from clearsky.core.params import SearchParams
from clearsky.ui import dialog as dialog_module
from clearsky.ui import scenes
from world.qt import wait

CANVAS_CRS = "EPSG:3857"  # a projected project CRS: AOIs drawn on the map come in it
JUNE = (date(2024, 6, 1), date(2024, 6, 30))


pytestmark = pytest.mark.usefixtures("private_settings")


@pytest.fixture
def canvas(qgis_iface, world):
    canvas = qgis_iface.mapCanvas()
    crs = QgsCoordinateReferenceSystem(CANVAS_CRS)
    QgsProject.instance().setCrs(crs)
    canvas.setDestinationCrs(crs)
    aoi = Aoi(world.region)
    canvas.setExtent(QgsRectangle(*aoi.to_crs(CANVAS_CRS).bounds))
    canvas.refresh()
    return canvas


@pytest.fixture
def dlg(qgis_iface, canvas):
    qgis_iface.messageBar().clear_messages()
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




def pixel(canvas, x: float, y: float) -> QPoint:
    p = canvas.getCoordinateTransform().transform(QgsPointXY(x, y))
    return QPoint(round(p.x()), round(p.y()))


def mouse(canvas, kind, point: QPoint, button=Qt.MouseButton.LeftButton):
    buttons = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
    return QgsMapMouseEvent(canvas, kind, point, button, buttons, Qt.KeyboardModifier.NoModifier)


def esc():
    return QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Escape, Qt.KeyboardModifier.NoModifier)


def messages(iface, level) -> list:
    return iface.messageBar().get_messages(level)


def known_wkt(world, name="clear_under_cloudy") -> str:
    return world.known_aois[name].geometry_wgs84.wkt


def set_text_aoi(d, wkt: str) -> None:
    d.aoiMode.setCurrentIndex(dialog_module.TEXT)
    d.aoiText.setPlainText(wkt)
    d.useTextButton.click()


def set_search(d, served, start=JUNE[0], end=JUNE[1], scene_cloud=80.0) -> None:
    d.add_catalog_url(served.stac_url)
    d.startDate.setDate(start)
    d.endDate.setDate(end)
    d.maxSceneCloud.setValue(scene_cloud)


def centre(canvas) -> QgsPointXY:
    return canvas.extent().center()


# ------------------------------------------------------------------------------ AOI modes


def test_rectangle_drawn_on_the_map_becomes_the_aoi_and_esc_cancels(dlg, canvas):
    c = centre(canvas)
    x0, y0, x1, y1 = c.x() - 1500, c.y() - 1000, c.x() + 1500, c.y() + 1000
    dlg.aoiMode.setCurrentIndex(dialog_module.RECTANGLE)
    dlg.drawRectangleButton.click()
    tool = canvas.mapTool()
    assert tool is dlg.rectangle_tool
    a, b = pixel(canvas, x0, y1), pixel(canvas, x1, y0)
    tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, a))
    tool.canvasMoveEvent(mouse(canvas, QEvent.Type.MouseMove, b))
    tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, b))
    assert dlg.aoi is not None and dlg.aoi.crs == CANVAS_CRS
    units = canvas.mapUnitsPerPixel()
    assert dlg.aoi.geometry.bounds == pytest.approx((x0, y0, x1, y1), abs=2 * units)
    assert f"{dlg.aoi.area_km2:,.2f} km²" in dlg.aoiLabel.text()
    assert 2.0 < dlg.aoi.area_km2 < 3.0  # 3 x 2 km in web mercator at 52.3° N: x cos² 0.37
    band = dlg.band.asGeometry()
    assert band.boundingBox().toRectF().isValid() and band.area() == pytest.approx(
        dlg.aoi.geometry.area, rel=1e-6)
    assert canvas.mapTool() is not tool  # the previous tool is back

    first = dlg.aoi
    dlg.drawRectangleButton.click()
    tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, pixel(canvas, x0, y0)))
    tool.keyPressEvent(esc())
    tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, pixel(canvas, c.x(),
                                                                                   c.y())))
    assert dlg.aoi is first  # cancelled: nothing changed
    assert canvas.mapTool() is not tool


def test_polygon_clicks_right_click_finishes_esc_cancels(dlg, canvas):
    c = centre(canvas)
    corners = [(c.x() - 1000, c.y() - 1000), (c.x() + 1200, c.y() - 800),
               (c.x() + 900, c.y() + 1100), (c.x() - 800, c.y() + 700)]
    dlg.aoiMode.setCurrentIndex(dialog_module.POLYGON)
    dlg.drawPolygonButton.click()
    tool = canvas.mapTool()
    assert tool is dlg.polygon_tool
    # Esc halfway through: no AOI, no vertices left over
    for x, y in corners[:2]:
        tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, pixel(canvas, x, y)))
    tool.keyPressEvent(esc())
    assert dlg.aoi is None and tool.points == []
    assert canvas.mapTool() is not tool

    dlg.drawPolygonButton.click()
    for x, y in corners:
        tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, pixel(canvas, x, y)))
    right = mouse(canvas, QEvent.Type.MouseButtonRelease, pixel(canvas, *corners[0]),
                  Qt.MouseButton.RightButton)
    tool.canvasReleaseEvent(right)
    assert dlg.aoi is not None and dlg.aoi.crs == CANVAS_CRS
    drawn = dlg.aoi.geometry
    assert len(drawn.exterior.coords) == 5  # four vertices, closed
    units = canvas.mapUnitsPerPixel()
    assert drawn.symmetric_difference(Polygon(corners)).area < 2 * units * drawn.length
    assert f"{dlg.aoi.area_km2:,.2f} km²" in dlg.aoiLabel.text()


def test_current_map_extent(dlg, canvas):
    canvas.setExtent(QgsRectangle(1503000, 6860000, 1506000, 6862500))
    dlg.aoiMode.setCurrentIndex(dialog_module.EXTENT)
    dlg.useExtentButton.click()
    extent = canvas.extent()
    assert dlg.aoi.geometry.bounds == pytest.approx(
        (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()))
    assert dlg.aoi.crs == CANVAS_CRS


def polygon_layer(crs: str, polygons) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"Polygon?crs={crs}&field=name:string", "fields", "memory")
    features = []
    for i, p in enumerate(polygons):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromWkt(p.wkt))
        f.setAttributes([f"p{i}"])
        features.append(f)
    assert layer.dataProvider().addFeatures(features)[0]
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_polygon_layer_all_or_selected_features_in_the_layer_crs(dlg):
    a, b = box(400000, 5800000, 402000, 5801000), box(405000, 5800000, 406000, 5803000)
    layer = polygon_layer("EPSG:25833", [a, b])
    points = QgsVectorLayer("Point?crs=EPSG:4326", "points", "memory")
    QgsProject.instance().addMapLayer(points)
    dlg.aoiMode.setCurrentIndex(dialog_module.LAYER)
    names = [dlg.layerCombo.itemText(i) for i in range(dlg.layerCombo.count())]
    assert "fields" in names and "points" not in names  # polygon layers only
    dlg.layerCombo.setLayer(layer)

    dlg.selectedOnly.setChecked(True)
    dlg.useLayerButton.click()
    assert dlg.aoi is None  # nothing selected: a message, no AOI
    assert "No feature" in messages(dlg.iface, Qgis.MessageLevel.Critical)[-1]

    layer.selectByIds([f.id() for f in layer.getFeatures() if f["name"] == "p1"])
    dlg.useLayerButton.click()
    assert dlg.aoi.crs == "EPSG:25833"
    assert dlg.aoi.geometry.equals(b)
    assert dlg.aoi.area_km2 == pytest.approx(3.0, rel=0.01)

    dlg.selectedOnly.setChecked(False)
    dlg.useLayerButton.click()
    assert dlg.aoi.geometry.area == pytest.approx(a.area + b.area)
    assert "5.00 km²" in dlg.aoiLabel.text()


def test_wkt_and_geojson_text(dlg, world):
    set_text_aoi(dlg, known_wkt(world))
    assert dlg.aoi.crs == "EPSG:4326"
    assert dlg.aoi.geometry.equals_exact(world.known_aois["clear_under_cloudy"].geometry, 1e-9)
    geojson = json.dumps(mapping(box(13.5, 52.33, 13.52, 52.35)))
    set_text_aoi(dlg, geojson)
    assert dlg.aoi.geometry.bounds == pytest.approx((13.5, 52.33, 13.52, 52.35))
    before = dlg.aoi
    set_text_aoi(dlg, "POLYGON ((1 1, 2 2")
    assert dlg.aoi is before  # unreadable text: the engine's message, the AOI unchanged
    assert "Could not read the area of interest" in messages(
        dlg.iface, Qgis.MessageLevel.Critical)[-1]


class FakeNominatim(BaseHTTPRequestHandler):
    places = [
        ("Treptow-Köpenick, Berlin, Deutschland", box(13.45, 52.32, 13.60, 52.40)),
        ("Köpenick, Berlin, Deutschland", box(13.55, 52.41, 13.60, 52.45)),
    ]
    queries: list = []

    def do_GET(self):  # noqa: N802
        FakeNominatim.queries.append(self.path)
        body = json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"display_name": n, "category": "boundary",
                                               "type": "administrative"},
             "geometry": mapping(g)} for n, g in self.places]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def nominatim(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeNominatim)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(dialog_module, "NOMINATIM_URL", url)
    FakeNominatim.queries = []
    yield url
    server.shutdown()
    server.server_close()


def test_place_name_geocoded_in_a_task(dlg, nominatim):
    dlg.aoiMode.setCurrentIndex(dialog_module.PLACE)
    dlg.placeEdit.setText("Köpenick")
    dlg.findPlaceButton.click()
    assert dlg.task is not None  # geocoding runs in the task manager, not in the GUI thread
    wait(dlg, 30)
    assert len(FakeNominatim.queries) == 1 and "/search?" in FakeNominatim.queries[0]
    assert [dlg.placeResults.itemText(i) for i in range(dlg.placeResults.count())] == [
        f"{n} (boundary/administrative)" for n, _ in FakeNominatim.places]
    assert dlg.aoi.geometry.equals(FakeNominatim.places[0][1])
    assert "Treptow-Köpenick" in dlg.aoiLabel.text()
    dlg.placeResults.setCurrentIndex(1)
    dlg.placeResults.activated.emit(1)
    assert dlg.aoi.geometry.equals(FakeNominatim.places[1][1])


# ------------------------------------------------------------------------------ search/build


def engine_search(served, world):
    return search_scenes(SearchParams(
        aoi=Aoi(world.known_aois["clear_under_cloudy"].geometry), start=JUNE[0], end=JUNE[1],
        catalog_url=served.stac_url))


def test_search_fills_a_sortable_table_and_a_footprints_layer(dlg, served, world):
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    task = dlg.search()
    assert task is not None
    wait(dlg)
    expected = engine_search(served, world)
    table = dlg.sceneTable
    assert table.rowCount() == len(expected.reports) > 0
    rows = {}
    for r in range(table.rowCount()):
        first = table.item(r, 0)
        rows[first.data(scenes.ID_ROLE)] = (first.checkState() == Qt.CheckState.Checked,
                                           table.item(r, 6).text())
    assert set(rows) == {rep.scene.id for rep in expected.reports}
    for rep in expected.reports:
        ticked, verdict = rows[rep.scene.id]
        assert ticked == rep.kept
        assert verdict == ("kept" if rep.kept else rep.reason)
    assert dlg.scenesSummary.text().startswith(
        f"{len(expected.reports)} scenes found, {len(expected.kept)} kept.")

    # numeric sort on "Scene cloud %" (as text, "20.7" would come before "3.0")
    table.sortItems(3, Qt.SortOrder.AscendingOrder)
    values = [float(table.item(r, 3).text()) for r in range(table.rowCount())]
    assert values == sorted(values)

    layer = dlg.footprints()
    assert layer is not None and layer.featureCount() == len(expected.reports)
    kept = {f["id"]: f["kept"] for f in layer.getFeatures()}
    assert kept == {rep.scene.id: rep.kept for rep in expected.reports}
    assert layer.crs().authid() == "EPSG:4326"
    # a second search replaces the layer instead of piling up copies
    name = layer.name()
    dlg.search()
    wait(dlg)
    names = [lyr.name() for lyr in QgsProject.instance().mapLayers().values()]
    assert names.count(name) == 1


def test_build_loads_a_styled_layer_over_the_aoi(dlg, served, world, tmp_path):
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    dlg.search()
    wait(dlg)
    # untick every scene but those of the 18 June pass: only they may be used
    keep_day = "2024-06-18"
    table = dlg.sceneTable
    for r in range(table.rowCount()):
        item = table.item(r, 0)
        ticked = item.text().startswith(keep_day)
        item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
    chosen = scenes.checked_ids(table)
    assert len(chosen) == 2
    out = tmp_path / "mosaic.tif"
    dlg.utmCheck.setChecked(True)
    dlg.outputWidget.setFilePath(str(out))
    task = dlg.build()
    assert task is not None and task in QgsApplication.taskManager().tasks()
    wait(dlg)
    assert out.exists()
    layers = [lyr for lyr in QgsProject.instance().mapLayers().values()
              if Path(lyr.source()) == out]
    assert len(layers) == 1
    layer = layers[0]
    renderer = layer.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3)
    assert layer.crs().authid() == "EPSG:32633"
    aoi_bounds = dlg.aoi.to_crs("EPSG:32633").bounds
    ext = layer.extent()
    got = (ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum())
    assert got == pytest.approx(aoi_bounds, abs=10.0)  # snapped to the 10 m grid
    success = messages(dlg.iface, Qgis.MessageLevel.Success)[-1]
    assert str(out) in success and "mosaic.report.csv" in success
    report = json.loads(out.with_suffix(".report.json").read_text())
    used = {r["id"] for r in report["scenes"] if r["kept"]}
    assert used and used <= chosen
    by_user = {r["id"] for r in report["scenes"] if r["reason"] == "left out by the user"}
    would_keep = {rep.scene.id for rep in engine_search(served, world).kept}
    assert by_user == would_keep - chosen


def test_cancel_a_running_build_leaves_no_file(dlg, served, world, assets, tmp_path):
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    assets.configure(delay_ms=400)
    out = tmp_path / "cancelled.tif"
    dlg.utmCheck.setChecked(True)
    dlg.outputWidget.setFilePath(str(out))
    task = dlg.build()
    assert task is not None and dlg.cancelButton.isEnabled()
    assert not dlg.buildButton.isEnabled() and not dlg.searchButton.isEnabled()
    deadline = time.monotonic() + 20
    while task.status() != task.TaskStatus.Running and time.monotonic() < deadline:
        QgsApplication.processEvents()
    assert task in QgsApplication.taskManager().activeTasks()
    dlg.cancelButton.click()
    wait(dlg)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert not [lyr for lyr in QgsProject.instance().mapLayers().values()
                if Path(lyr.source()) == out]
    warning = messages(dlg.iface, Qgis.MessageLevel.Warning)[-1]
    assert "Cancelled" in warning and "no output was written" in warning
    assert dlg.buildButton.isEnabled() and not dlg.cancelButton.isEnabled()


def started_nothing(dlg, result) -> bool:
    return result is None and dlg.task is None and not dlg.cancelButton.isEnabled()


def test_bad_input_shows_a_message_and_starts_nothing(dlg, served, world, tmp_path, monkeypatch):
    bar = dlg.iface.messageBar()
    set_search(dlg, served)
    dlg.outputWidget.setFilePath(str(tmp_path / "x.tif"))
    assert started_nothing(dlg, dlg.build())  # no AOI
    assert "area of interest" in messages(dlg.iface, Qgis.MessageLevel.Critical)[-1]
    assert started_nothing(dlg, dlg.search())

    set_text_aoi(dlg, known_wkt(world))
    dlg.startDate.setDate(date(2024, 6, 30))
    dlg.endDate.setDate(date(2024, 6, 1))
    assert started_nothing(dlg, dlg.search())
    assert "before the start date" in messages(dlg.iface, Qgis.MessageLevel.Critical)[-1]
    set_search(dlg, served)

    dlg.outputWidget.setFilePath(str(tmp_path / "missing-folder" / "x.tif"))
    assert started_nothing(dlg, dlg.build())
    assert "does not exist" in messages(dlg.iface, Qgis.MessageLevel.Critical)[-1]
    a_file = tmp_path / "plain-file"
    a_file.write_text("not a folder")
    dlg.outputWidget.setFilePath(str(a_file / "x.tif"))
    assert started_nothing(dlg, dlg.build())

    existing = tmp_path / "existing.tif"
    existing.write_bytes(b"old")
    dlg.outputWidget.setFilePath(str(existing))
    asked = []
    monkeypatch.setattr(dlg, "confirm_overwrite", lambda path: asked.append(path) or False)
    assert started_nothing(dlg, dlg.build())
    assert asked == [existing] and existing.read_bytes() == b"old"
    assert "already exists" in messages(dlg.iface, Qgis.MessageLevel.Warning)[-1]
    assert bar is dlg.iface.messageBar()

    dlg.methodCombo.setCurrentIndex(0)
    dlg.bandsCombo.setCurrentIndex(3)
    dlg.customBands.setText("red, chartreuse")
    dlg.outputWidget.setFilePath(str(tmp_path / "y.tif"))
    assert started_nothing(dlg, dlg.build())
    assert "Unknown band name(s) chartreuse" in messages(dlg.iface, Qgis.MessageLevel.Critical)[-1]


def test_overwrite_after_confirmation(dlg, served, world, tmp_path, monkeypatch):
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    existing = tmp_path / "again.tif"
    existing.write_bytes(b"old")
    dlg.outputWidget.setFilePath(str(existing))
    dlg.outputTypeCombo.setCurrentIndex(1)  # 8-bit true colour
    dlg.utmCheck.setChecked(True)
    monkeypatch.setattr(dlg, "confirm_overwrite", lambda path: True)
    assert dlg.build() is not None
    wait(dlg)
    assert existing.read_bytes()[:4] in (b"II*\x00", b"MM\x00*")  # a real GeoTIFF now
    layer = [lyr for lyr in QgsProject.instance().mapLayers().values()
             if Path(lyr.source()) == existing][0]
    ce = layer.renderer().redContrastEnhancement()
    assert (ce.minimumValue(), ce.maximumValue()) == (1.0, 255.0)


def test_choices_and_custom_catalogs_persist(qgis_iface, canvas, dlg, tmp_path):
    dlg.add_catalog_url("http://127.0.0.1:9/stac")
    dlg.collectionCombo.setCurrentText("sentinel-2-l2a")
    dlg.maxAoiCloud.setValue(5)
    dlg.methodCombo.setCurrentIndex(2)
    dlg.percentileSpin.setValue(75)
    dlg.bandsCombo.setCurrentIndex(1)
    dlg.utmCheck.setChecked(False)  # on by default: the AOI's UTM zone
    dlg.crsWidget.setCrs(QgsCoordinateReferenceSystem("EPSG:25833"))
    dlg.resolutionSpin.setValue(20)
    dlg.clipCheck.setChecked(False)
    dlg.countBand.setChecked(True)
    dlg.outputWidget.setFilePath(str(tmp_path / "m.tif"))
    set_text_aoi(dlg, "13.5,52.33,13.52,52.35")
    dlg.close()

    again = dialog_module.ClearskyDialog(qgis_iface)
    try:
        catalogs = [again.catalogCombo.itemText(i) for i in range(again.catalogCombo.count())]
        assert catalogs == ["https://earth-search.aws.element84.com/v1", "http://127.0.0.1:9/stac"]
        assert again.catalogCombo.currentText() == "http://127.0.0.1:9/stac"
        assert again.collectionCombo.currentText() == "sentinel-2-l2a"
        assert again.maxAoiCloud.value() == 5 and again.maxSceneCloud.value() == 80
        params = again.mosaic_params()
        assert params.method.value == "percentile" and params.percentile == 75
        assert params.bands == ("nir", "red", "green")
        assert params.target_crs == "EPSG:25833" and params.resolution == 20
        assert params.clip_to_aoi is False and params.count_band is True
        assert params.output == tmp_path / "m.tif"
        assert params.aoi.geometry.bounds == pytest.approx((13.5, 52.33, 13.52, 52.35))
        assert again.aoiMode.currentIndex() == dialog_module.TEXT
    finally:
        again.close()
        canvas.scene().removeItem(again.band)
        again.deleteLater()


def test_help_points_at_the_shipped_help_page(dlg):
    url = dlg.help_url()
    page = Path(url.toLocalFile())
    assert url.isLocalFile() and page.name == "index.html" and page.is_file()
    assert url.fragment() == "dialog" and 'id="dialog"' in page.read_text(encoding="utf-8")


def test_advanced_options_follow_the_options_table_and_persist(qgis_iface, canvas, dlg, tmp_path):
    from qgis.PyQt.QtCore import QDate

    from clearsky.core.options import BY_FIELD, Method

    # ranges, tooltips and combo items come from the table
    assert dlg.dilationSpin.maximum() == BY_FIELD["dilation"].maximum == 50
    assert dlg.dilationSpin.value() == 2 and dlg.invalidScl.text() == "0,1,3,8,9,10"
    assert "halos" in dlg.dilationSpin.toolTip()
    assert [dlg.methodCombo.itemData(i) for i in range(dlg.methodCombo.count())] == [
        m.value for m in Method]
    assert not dlg.targetDate.isEnabled()
    set_text_aoi(dlg, "13.5,52.33,13.52,52.35")
    dlg.outputWidget.setFilePath(str(tmp_path / "m.tif"))
    dlg.invalidScl.setText("0, 1, 3, 8, 9, 10, 11")
    dlg.dilationSpin.setValue(0)
    dlg.targetDateCheck.setChecked(True)
    dlg.targetDate.setDate(QDate(2024, 6, 12))
    dlg.sourceBand.setChecked(True)
    params = dlg.mosaic_params()
    assert params.invalid_scl == frozenset({0, 1, 3, 8, 9, 10, 11}) and params.dilation == 0
    assert params.target_date == date(2024, 6, 12) and params.source_band is True
    assert dlg.search_params().dilation == 0  # the AOI check uses the mosaic's rule
    dlg.close()

    again = dialog_module.ClearskyDialog(qgis_iface)
    try:
        restored = again.mosaic_params()
        assert restored.invalid_scl == params.invalid_scl and restored.dilation == 0
        assert restored.target_date == date(2024, 6, 12) and restored.source_band
        again.invalidScl.setText("3, cloud")
        assert again.build() is None
        assert "INVALID_SCL takes SCL class numbers" in messages(
            qgis_iface, Qgis.MessageLevel.Critical)[-1]
    finally:
        again.close()
        canvas.scene().removeItem(again.band)
        again.deleteLater()


def test_cloud_mask_choice_and_probability_reach_the_engine(dlg, tmp_path, monkeypatch):
    from clearsky.core import mlmask
    from clearsky.core.options import CloudMask

    assert [dlg.cloudMaskCombo.itemData(i) for i in range(dlg.cloudMaskCombo.count())] == [
        m.value for m in CloudMask]
    assert dlg.cloudMaskCombo.currentData() == "scl" and dlg.cloudProbSpin.value() == 40
    assert dlg.cloudProbSpin.maximum() == 100 and "CLOUD_PROB" in dlg.cloudMaskCombo.toolTip()
    set_text_aoi(dlg, "13.5,52.33,13.52,52.35")
    dlg.outputWidget.setFilePath(str(tmp_path / "m.tif"))
    dlg.cloudMaskCombo.setCurrentIndex(dlg.cloudMaskCombo.findData("scl+prob+shadow"))
    dlg.cloudProbSpin.setValue(60)
    params = dlg.mosaic_params()
    assert params.cloud_mask == CloudMask.SHADOW and params.cloud_prob == 60
    assert dlg.search_params().cloud_mask == CloudMask.SHADOW  # the AOI check's rule too
    # without its packages the ML choice is greyed out and says how to install them
    monkeypatch.setattr(mlmask, "missing", lambda: ("onnxruntime",))
    dlg._offer_ml_mask_only_when_installed()
    item = dlg.cloudMaskCombo.model().item(dlg.cloudMaskCombo.findData("ml"))
    assert not item.isEnabled() and "pip install" in item.toolTip()


def test_resolution_is_metres_for_a_geographic_target_crs(dlg, tmp_path):
    """The dialog and Processing pass the same RESOLUTION: metres on the ground."""
    set_text_aoi(dlg, "13.5,52.33,13.52,52.35")
    dlg.outputWidget.setFilePath(str(tmp_path / "m.tif"))
    dlg.utmCheck.setChecked(False)
    dlg.crsWidget.setCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    dlg.resolutionSpin.setValue(20)
    params = dlg.mosaic_params()
    assert params.target_crs == "EPSG:4326" and params.resolution == 20


def test_worker_processes_are_refused_in_the_dialog_with_what_to_do(qgis_iface, dlg, tmp_path):
    """EXECUTOR=local:N would start QGIS itself again: the dialog says to start a cluster."""
    set_text_aoi(dlg, "13.5,52.33,13.52,52.35")
    dlg.outputWidget.setFilePath(str(tmp_path / "m.tif"))
    dlg.executorEdit.setText("local:2")
    assert dlg.build() is None
    text = messages(qgis_iface, Qgis.MessageLevel.Critical)[-1]
    assert "dask scheduler" in text and "tcp://" in text
    assert dlg.task is None and list(tmp_path.iterdir()) == []
    dlg.executorEdit.setText("tcp://127.0.0.1:8786")
    assert dlg.mosaic_params().executor == "tcp://127.0.0.1:8786"


def test_a_selected_row_is_highlighted_zoomed_and_can_be_added_as_a_layer(dlg, served, world,
                                                                          canvas):
    from qgis.core import QgsCoordinateTransform, QgsRasterLayer

    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    dlg.search()
    wait(dlg)
    assert "The kept scenes cover 100 % of the AOI." in dlg.scenesSummary.text()
    row = next(r for r in range(dlg.sceneTable.rowCount())
               if dlg.sceneTable.item(r, 6).text() == "kept")
    dlg.sceneTable.selectRow(row)
    sid = dlg.sceneTable.item(row, 0).data(scenes.ID_ROLE)
    report = dlg.reports_by_id[sid]
    assert dlg.highlight.isVisible() and dlg.addSceneButton.isEnabled()
    to_canvas = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"),
                                       canvas.mapSettings().destinationCrs(),
                                       QgsProject.instance())
    footprint = to_canvas.transformBoundingBox(
        QgsGeometry.fromWkt(report.scene.footprint.wkt).boundingBox())
    assert canvas.extent().contains(footprint)
    assert dlg.highlight.asGeometry().boundingBox().intersects(footprint)
    layer = dlg.add_selected_scene()
    assert isinstance(layer, QgsRasterLayer) and layer.isValid()
    assert layer.source().startswith("/vsicurl/http://127.0.0.1:")
    assert layer.bandCount() == 3 and QgsProject.instance().mapLayer(layer.id()) is layer
    dlg.sceneTable.clearSelection()
    assert not dlg.highlight.isVisible() and not dlg.addSceneButton.isEnabled()


def test_the_aoi_can_be_kept_as_a_layer(dlg):
    assert not dlg.aoiLayerButton.isEnabled()
    set_text_aoi(dlg, "13.5,52.33,13.52,52.35")
    assert dlg.aoiLayerButton.isEnabled()
    layer = dlg.add_aoi_layer()
    assert layer.isValid() and layer.featureCount() == 1
    assert layer.crs().authid() == "EPSG:4326"
    feature = next(layer.getFeatures())
    assert feature.geometry().boundingBox().toRectF().getCoords() == pytest.approx(
        (13.5, 52.33, 13.52, 52.35))
    assert feature["area_km2"] == pytest.approx(dlg.aoi.area_km2, rel=1e-3)
    assert dlg.sceneTable.horizontalHeaderItem(0).text() == "Date (UTC)"


def test_periods_load_as_a_temporal_stack_in_one_group(dlg, served, world, tmp_path):
    """Two half-month composites with p25/p50 from one search: one group, one layer per
    period, each with its period as a fixed temporal range."""
    from qgis.core import QgsDateTimeRange

    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served, scene_cloud=100.0)
    dlg.statisticsEdit.setText("25, 50")
    dlg.periodsEdit.setText("2024-06-01/2024-06-15,2024-06-16/2024-06-30")
    dlg.maxAoiCloud.setValue(100)
    out = tmp_path / "halves.tif"
    dlg.outputWidget.setFilePath(str(out))
    params = dlg.mosaic_params()
    assert params.statistics == ("p25", "p50") and params.periods.startswith("2024-06-01/")
    assert dlg.build() is not None
    wait(dlg)
    files = sorted(p.name for p in tmp_path.glob("*.tif"))
    assert len(files) == 2 and all(f.startswith("halves_") for f in files)
    group = QgsProject.instance().layerTreeRoot().findGroup("Clearsky periods: halves")
    assert group is not None
    layers = [node.layer() for node in group.findLayers()]
    assert sorted(Path(lyr.source()).name for lyr in layers) == files
    ranges = sorted((lyr.temporalProperties().fixedTemporalRange().begin().date().toPyDate(),
                     lyr.temporalProperties().fixedTemporalRange().end().date().toPyDate())
                    for lyr in layers)
    assert ranges == [(date(2024, 6, 1), date(2024, 6, 15)), (date(2024, 6, 16),
                                                              date(2024, 6, 30))]
    assert all(lyr.temporalProperties().isActive() for lyr in layers)
    assert isinstance(layers[0].temporalProperties().fixedTemporalRange(), QgsDateTimeRange)
    import rasterio

    with rasterio.open(tmp_path / files[0]) as src:
        assert src.descriptions == ("red_p25", "green_p25", "blue_p25", "red_p50",
                                    "green_p50", "blue_p50")
    QgsProject.instance().layerTreeRoot().removeChildNode(group)


def test_the_estimate_is_shown_before_any_pixel_is_read(dlg, served, world, assets, tmp_path):
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    dlg.outputWidget.setFilePath(str(tmp_path / "m.tif"))
    assert dlg.estimate() is not None
    wait(dlg)
    text = dlg.estimateLabel.text()
    assert text.startswith("Estimate: output ") and " MB to read in about " in text
    assert not (tmp_path / "m.tif").exists()
    bands = [e for e in assets.requests() if e["path"].endswith(("/red.tif", "/green.tif"))]
    assert all(int(e.get("bytes", 0)) <= 65536 for e in bands)  # headers only, no pixels
    dlg.maxReadSpin.setValue(0.0001)  # 100 kB
    dlg.estimate()
    wait(dlg)
    assert "over the limit of 0.0001 GB" in dlg.estimateLabel.text()
    assert "raise MAX_READ_GB" in dlg.estimateLabel.text()


# ------------------------------------------------------------------------ previews, passes


def wait_for_quicklook(d, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while d.quicklook.task is not None or d.quicklook.reply is not None:
        assert time.monotonic() < deadline, "the quicklook did not come in time"
        QgsApplication.processEvents()
        time.sleep(0.01)
    QgsApplication.processEvents()


def label_image(d):
    pixmap = d.quicklookLabel.pixmap()
    assert pixmap is not None and not pixmap.isNull(), d.quicklookLabel.text()
    return pixmap.toImage()


def test_a_selected_row_shows_a_quicklook_of_its_true_colour_cog(dlg, served, world, assets):
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling

    from clearsky.ui import quicklook

    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    dlg.search()
    wait(dlg)
    assets.reset()
    row = next(r for r in range(dlg.sceneTable.rowCount())
               if dlg.sceneTable.item(r, 6).text() == "kept")
    dlg.sceneTable.selectRow(row)
    report = dlg.reports_by_id[dlg.sceneTable.item(row, 0).data(scenes.ID_ROLE)]
    assert "thumbnail" not in report.scene.assets  # the offline archive has none
    wait_for_quicklook(dlg)
    image = label_image(dlg)
    assert dlg.quicklook.source == "visual"
    assert 0 < max(image.width(), image.height()) <= quicklook.SIDE
    href = report.scene.assets["visual"]
    assert any(e["path"].endswith("/visual.tif") for e in assets.requests())
    # the colours are those of the served COG's coarsest overview, read independently
    with rasterio.open("/vsicurl/" + href) as ds:
        level = len(ds.overviews(1)) - 1
    with rasterio.open("/vsicurl/" + href, overview_level=level) as ds:
        want = ds.read([1, 2, 3], out_shape=(3, image.height(), image.width()),
                       resampling=Resampling.nearest)
    got = np.array([[[image.pixelColor(x, y).red(), image.pixelColor(x, y).green(),
                      image.pixelColor(x, y).blue()] for x in range(image.width())]
                    for y in range(image.height())], dtype=np.uint8)
    assert got.std() > 0 and got.max() > 0  # a picture, not a blank
    assert np.array_equal(got, np.moveaxis(want, 0, -1))
    dlg.sceneTable.clearSelection()
    assert dlg.quicklookLabel.pixmap() is None or dlg.quicklookLabel.pixmap().isNull()


def test_the_thumbnail_asset_is_preferred_when_the_item_has_one(dlg, served, world):
    import dataclasses

    from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice
    from qgis.PyQt.QtGui import QColor, QImage

    png = QImage(40, 30, QImage.Format.Format_RGB32)
    png.fill(QColor(200, 30, 90))
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    png.save(buffer, "PNG")
    body = bytes(data)
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        set_text_aoi(dlg, known_wkt(world))
        set_search(dlg, served)
        dlg.search()
        wait(dlg)
        sid = dlg.sceneTable.item(0, 0).data(scenes.ID_ROLE)
        report = dlg.reports_by_id[sid]
        url = f"http://127.0.0.1:{server.server_address[1]}/thumb.png"
        scene = dataclasses.replace(report.scene, assets={**report.scene.assets,
                                                          "thumbnail": url})
        dlg.reports_by_id[sid] = dataclasses.replace(report, scene=scene)
        dlg.sceneTable.selectRow(0)
        wait_for_quicklook(dlg)
        image = label_image(dlg)
        assert dlg.quicklook.source == "thumbnail" and seen == ["/thumb.png"]
        assert (image.width(), image.height()) == (40, 30)
        assert image.pixelColor(5, 5).getRgb()[:3] == (200, 30, 90)
    finally:
        server.shutdown()
        server.server_close()


def test_the_tiles_of_one_acquisition_are_grouped(dlg, served, world):
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    dlg.search()
    wait(dlg)
    table = dlg.sceneTable

    def groups():
        keys = [table.item(r, 0).data(scenes.PASS_ROLE) for r in range(table.rowCount())]
        runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
        return keys, runs

    keys, runs = groups()
    assert len(runs) == len(set(runs)) < len(keys)  # each pass once, some with several tiles
    for r in range(table.rowCount()):  # the first row of a pass is bold, the others not
        assert table.item(r, 0).font().bold() == (r == 0 or keys[r - 1] != keys[r])
    shade = [table.item(r, 3).background().color().name() for r in range(table.rowCount())]
    for r in range(1, table.rowCount()):
        assert (shade[r] == shade[r - 1]) == (keys[r] == keys[r - 1])
    several = next(k for k in runs if keys.count(k) > 1)
    tiles = [table.item(r, 2).text() for r in range(table.rowCount()) if keys[r] == several]
    assert tiles == sorted(tiles)
    # sorted by cloud, then by date again: the passes come back together
    table.sortItems(3, Qt.SortOrder.AscendingOrder)
    table.sortItems(0, Qt.SortOrder.DescendingOrder)
    keys, runs = groups()
    assert len(runs) == len(set(runs))
    assert table.item(0, 0).font().bold()


def test_add_scene_refuses_a_vrt_behind_the_visual_href(dlg, served, world, assets, qgis_iface):
    """QGIS's GDAL provider would open a VRT (which can name local files): the engine's
    GeoTIFF-only check runs first and nothing is added."""
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    dlg.search()
    wait(dlg)
    dlg.sceneTable.selectRow(0)
    wait_for_quicklook(dlg)  # its read must not refill GDAL's cache after the clear below
    vrt = ('<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Byte" '
           'band="1"><SimpleSource><SourceFilename>/etc/passwd</SourceFilename>'
           '</SimpleSource></VRTRasterBand></VRTDataset>')
    from osgeo import gdal

    gdal.VSICurlClearCache()
    assets.configure(faults=[{"path": "*/visual.tif", "kind": "body", "body": vrt}])
    before = set(QgsProject.instance().mapLayers())
    assert dlg.add_selected_scene() is None
    assert set(QgsProject.instance().mapLayers()) == before
    assert "No quicklook from" in messages(qgis_iface, Qgis.MessageLevel.Critical)[-1]
