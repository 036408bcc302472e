"""The dialog for daily use (issue 16): never a stale build, unload during a build, the size
guard, default output and CRS, live phase text, messages once, layers replaced in place,
the dialog stepping aside while a map tool draws, its size remembered.

Reuses the fixtures and helpers of test_dialog.py (loaded by path: tests/qgis is no package).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication, QgsCoordinateReferenceSystem, QgsProject
from qgis.PyQt.QtCore import QEvent, Qt

from clearsky.core.aoi import Aoi
from clearsky.core.mosaic import search_scenes
from clearsky.core.params import SearchParams
from clearsky.ui import dialog as dialog_module
from clearsky.ui import scenes, tasks

_spec = importlib.util.spec_from_file_location(
    "clearsky_test_dialog_helpers", Path(__file__).with_name("test_dialog.py"))
td = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(td)
canvas, dlg = td.canvas, td.dlg  # fixtures
pytestmark = pytest.mark.usefixtures("private_settings")
wait, messages, known_wkt, set_text_aoi, set_search = (
    td.wait, td.messages, td.known_wkt, td.set_text_aoi, td.set_search)
JUNE = td.JUNE
SEARCHED_END = date(2024, 6, 12)
HUGE_BBOX = "-10,35,30,60"  # 8 million km²: issue 16, bug 4


def engine_kept(served, world, **over) -> set:
    params = dict(aoi=Aoi(world.known_aois["clear_under_cloudy"].geometry), start=JUNE[0],
                  end=JUNE[1], catalog_url=served.stac_url)
    params.update(over)
    return {r.scene.id for r in search_scenes(SearchParams(**params)).kept}


def report_of(out: Path) -> list:
    return json.loads(out.with_suffix(".report.json").read_text())["scenes"]


@pytest.fixture
def log_lines():
    """(message, tag, level) of every QGIS log message while the test runs."""
    got = []

    def keep(message, tag, level):
        got.append((message, tag, level))

    QgsApplication.messageLog().messageReceived.connect(keep)
    yield got
    QgsApplication.messageLog().messageReceived.disconnect(keep)


# ------------------------------------------------------------------ bug 1: stale results


def searched(dlg, served, world, **search):
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served, **search)
    assert dlg.search() is not None
    wait(dlg)
    assert dlg.sceneTable.rowCount() > 0 and dlg.table_is_current()
    assert dlg.sceneTable.isEnabled()


CHANGES = {
    # name: (what the user changes after the search, the engine search it now means)
    "collection": (lambda d: d.collectionCombo.setCurrentText("sentinel-2-l2a"),
                   {"collection": "sentinel-2-l2a"}),
    "dates": (lambda d: d.endDate.setDate(JUNE[1]), {"end": JUNE[1]}),  # was 1-12 June
    "aoi cloud limit": (lambda d: d.maxAoiCloud.setValue(100), {"max_aoi_cloud": 100}),
    "mask classes": (lambda d: d.invalidScl.setText("0,1,3,8,9,10,11"),
                     {"invalid_scl": frozenset({0, 1, 3, 8, 9, 10, 11})}),
    "dilation": (lambda d: d.dilationSpin.setValue(0), {"dilation": 0}),
    "cloud mask": (lambda d: d.cloudMaskCombo.setCurrentIndex(1), {"cloud_mask": "scl+prob"}),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_changed_search_input_marks_the_table_stale_and_build_uses_a_new_search(
        dlg, served, world, tmp_path, change):
    searched(dlg, served, world, end=SEARCHED_END)
    # the user unticks one kept scene: this choice belongs to the old search only
    first_kept = next(r for r in range(dlg.sceneTable.rowCount())
                      if dlg.sceneTable.item(r, 0).checkState() == Qt.CheckState.Checked)
    dlg.sceneTable.item(first_kept, 0).setCheckState(Qt.CheckState.Unchecked)
    edit, meaning = CHANGES[change]
    edit(dlg)
    assert not dlg.table_is_current()
    assert not dlg.sceneTable.isEnabled()
    assert "search inputs changed" in dlg.scenesSummary.text()

    out = tmp_path / "fresh.tif"
    dlg.outputWidget.setFilePath(str(out))
    assert dlg.build() is not None
    assert "searches again" in messages(dlg.iface, Qgis.MessageLevel.Info)[-1]
    wait(dlg)
    assert out.exists(), messages(dlg.iface, Qgis.MessageLevel.Critical)
    rows = report_of(out)
    assert not [r for r in rows if r["reason"] == "left out by the user"]
    expected = engine_kept(served, world, **{"end": SEARCHED_END, **meaning})
    assert {r["id"] for r in rows if r["kept"]} == expected  # not narrower: all that pass


def test_unchanged_or_restored_inputs_build_exactly_the_ticked_scenes(dlg, served, world,
                                                                      tmp_path):
    searched(dlg, served, world)
    table = dlg.sceneTable
    for r in range(table.rowCount()):
        item = table.item(r, 0)
        item.setCheckState(Qt.CheckState.Checked if item.text().startswith("2024-06-18")
                           else Qt.CheckState.Unchecked)
    chosen = scenes.checked_ids(table)
    url = served.stac_url
    dlg.add_catalog_url(url + "/")  # another catalog: stale ...
    assert not dlg.table_is_current() and "changed" in dlg.scenesSummary.text()
    dlg.catalogCombo.setCurrentText(url)  # ... and back: the table is current again
    assert dlg.table_is_current() and dlg.sceneTable.isEnabled()
    assert dlg.scenesSummary.text().startswith(f"{table.rowCount()} scenes found")
    out = tmp_path / "ticked.tif"
    dlg.outputWidget.setFilePath(str(out))
    assert dlg.build() is not None
    wait(dlg)
    rows = report_of(out)
    assert {r["id"] for r in rows if r["kept"]} <= chosen
    assert {r["id"] for r in rows if r["reason"] == "left out by the user"} == (
        engine_kept(served, world) - chosen)


# ------------------------------------------------------------------ bug 2: unload


def test_unload_during_a_build_cancels_it_quietly_and_a_reload_keeps_one_footprints_layer(
        iface_with_menus, canvas, served, world, assets, tmp_path, monkeypatch, log_lines):
    import clearsky

    iface, _menus = iface_with_menus
    errors = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: errors.append(exc))
    before = set(QgsProject.instance().mapLayers())
    plugin = clearsky.classFactory(iface)
    plugin.initGui()
    try:
        plugin.action.trigger()
        d = dialog_module._INSTANCE
        set_text_aoi(d, known_wkt(world))
        set_search(d, served)
        assert d.search() is not None
        wait(d)
        assert len(scenes.find_footprints(QgsProject.instance())) == 1

        assets.configure(delay_ms=400)
        out = tmp_path / "unloaded.tif"
        d.outputWidget.setFilePath(str(out))
        task = d.build()
        deadline = time.monotonic() + 20
        while task.status() != task.TaskStatus.Running and time.monotonic() < deadline:
            QgsApplication.processEvents()
        plugin.unload()  # the dialog is deleted while its task runs
        deadline = time.monotonic() + 60
        while task in tasks.RUNNING or QgsApplication.taskManager().countActiveTasks():
            assert time.monotonic() < deadline, "the cancelled task did not end"
            QgsApplication.processEvents()
            time.sleep(0.01)
        QgsApplication.processEvents()
        assert errors == []
        assert not [m for m, tag, level in log_lines
                    if level == Qgis.MessageLevel.Critical or "deleted" in m]
        assert not out.exists()
        assets.configure(delay_ms=0)

        # enabled again: a new dialog refills the same footprints layer
        plugin = clearsky.classFactory(iface)
        plugin.initGui()
        plugin.action.trigger()
        again = dialog_module._INSTANCE
        assert again is not d
        set_text_aoi(again, known_wkt(world))
        set_search(again, served)
        again.search()
        wait(again)
        layers = scenes.find_footprints(QgsProject.instance())
        assert len(layers) == 1 and layers[0].featureCount() == again.sceneTable.rowCount()
        names = [lyr.name() for lyr in QgsProject.instance().mapLayers().values()]
        assert names.count("Clearsky scene footprints (temporary)") == 1
    finally:
        dialog_module.close_dialog()
        plugin.unload()
        added = set(QgsProject.instance().mapLayers()) - before
        QgsProject.instance().removeMapLayers(list(added))
    assert errors == []


# ------------------------------------------------------------------ bug 4: size guard


def test_a_huge_area_is_refused_or_confirmed_before_any_work(dlg, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(dlg, "confirm_large", lambda text: asked.append(text) or False)
    set_text_aoi(dlg, HUGE_BBOX)
    assert dlg.aoi is not None and dlg.aoi.area_km2 > 8e6
    dlg.outputWidget.setFilePath(str(tmp_path / "europe.tif"))

    # at 10 m: the question names the grid, its size and the area; declined, nothing starts
    assert dlg.build() is None and dlg.task is None
    question = asked[-1]
    assert "367,502 x 296,526 pixels" in question and "EPSG:32632 at 10 m" in question
    assert "GiB" in question and "8,101,686 km²" in question and "Continue?" in question
    assert "Not started" in messages(dlg.iface, Qgis.MessageLevel.Info)[-1]

    # a search asks too (it reads every scene over the area), naming the area
    assert dlg.search() is None and dlg.task is None
    assert len(asked) == 2 and "8,101,686 km²" in asked[-1] and "pixels" not in asked[-1]

    # a grid the engine refuses is refused with its message, before any question
    dlg.resolutionSpin.setValue(0.01)
    assert dlg.build() is None and dlg.task is None and len(asked) == 2
    refused = messages(dlg.iface, Qgis.MessageLevel.Critical)[-1]
    assert "pixels of 0.01 m" in refused and "coarser resolution" in refused
    assert not list(tmp_path.iterdir())


def test_a_small_area_is_not_asked_about(dlg, world, tmp_path, monkeypatch):
    monkeypatch.setattr(dlg, "confirm_large", lambda text: pytest.fail(text))
    set_text_aoi(dlg, known_wkt(world))
    params = dlg.mosaic_params()
    params.validate()
    assert dlg.size_is_acceptable(params, with_grid=True)


# ------------------------------------------------------------------ item 9: defaults


def test_default_output_name_and_utm_zone_shown(qgis_iface, canvas, dlg, served, world,
                                                tmp_path, monkeypatch):
    from clearsky.ui import settings

    assert dlg.utmCheck.isChecked() and not dlg.crsWidget.isEnabled()
    set_text_aoi(dlg, known_wkt(world))
    assert dlg.crsWidget.crs().authid() == "EPSG:32633"  # the zone that will be used
    dlg.utmCheck.setChecked(False)
    dlg.crsWidget.setCrs(QgsCoordinateReferenceSystem("EPSG:25833"))
    assert dlg.mosaic_params().target_crs == "EPSG:25833"
    dlg.utmCheck.setChecked(True)
    assert dlg.crsWidget.crs().authid() == "EPSG:32633" and dlg.mosaic_params().target_crs is None
    dlg.utmCheck.setChecked(False)
    assert dlg.crsWidget.crs().authid() == "EPSG:25833"  # the user's choice is back
    dlg.utmCheck.setChecked(True)

    settings.set_value("output_folder", str(tmp_path))
    set_search(dlg, served)
    dlg.outputWidget.setFilePath("")
    expected = tmp_path / "clearsky_2024-06-01_2024-06-30_best.tif"
    assert dlg.default_output() == expected
    assert str(expected) in dlg.outputWidget.lineEdit().placeholderText()
    assert dlg.build() is not None
    assert dlg.outputWidget.filePath() == str(expected)  # shown where it goes
    wait(dlg)
    assert expected.exists()
    layer = [lyr for lyr in QgsProject.instance().mapLayers().values()
             if Path(lyr.source()) == expected][0]
    assert layer.crs().authid() == "EPSG:32633"
    # the next default never overwrites: a suffix; a place name goes into the name
    dlg.aoi_name = "Treptow-Köpenick"
    dlg.methodCombo.setCurrentIndex(2)
    dlg.percentileSpin.setValue(40)
    assert dlg.default_output().name == "clearsky_treptow-k-penick_2024-06-01_2024-06-30_p40.tif"
    dlg.aoi_name = ""
    dlg.methodCombo.setCurrentIndex(0)
    assert dlg.default_output().name == "clearsky_2024-06-01_2024-06-30_best_2.tif"


# ------------------------------------------------------------------ item 10: progress, messages


def test_phase_text_is_live_and_each_message_is_shown_and_logged_once(
        dlg, served, world, assets, tmp_path, log_lines):
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    assets.configure(delay_ms=60)
    out = tmp_path / "live.tif"
    dlg.outputWidget.setFilePath(str(out))
    task = dlg.build()
    seen = []
    deadline = time.monotonic() + 90
    while dlg.task is not None:  # what the label says while the task still runs
        assert time.monotonic() < deadline
        QgsApplication.processEvents()
        if dlg.task is not None and dlg.statusLabel.text() not in seen:
            seen.append(dlg.statusLabel.text())
        time.sleep(0.01)
    # engine phases shown while the task still ran (several may arrive between two polls)
    live = [s for s in seen if s in task.messages]
    assert len(live) >= 2 and any(s.startswith("Compositing") for s in live), seen
    assert task.messages and dlg.statusLabel.text() == "Done: live.tif"
    logged = [m for m, tag, _level in log_lines if tag == "Clearsky"]
    for text in task.messages:
        assert logged.count(text) == 1, text
    # the dialog is hidden: the success goes to QGIS's bar, once, with a time-out
    bar = dlg.iface.messageBar()
    success = [m for m in messages(dlg.iface, Qgis.MessageLevel.Success) if str(out) in m]
    assert len(success) == 1
    # shown: the next message goes to the dialog's own bar only
    dlg.show()
    before = len(messages(dlg.iface, Qgis.MessageLevel.Success))
    dlg.message("shown once", Qgis.MessageLevel.Success)
    assert len(messages(dlg.iface, Qgis.MessageLevel.Success)) == before
    items = dlg.bar.items()
    assert [i.text() for i in items] == ["shown once"] and items[0].duration() > 0
    assert bar is dlg.iface.messageBar()


def test_handled_error_is_a_warning_in_the_log_without_traceback(dlg, world, tmp_path,
                                                                 log_lines):
    set_text_aoi(dlg, known_wkt(world))
    dlg.add_catalog_url("http://127.0.0.1:9/stac")
    dlg.outputWidget.setFilePath(str(tmp_path / "never.tif"))
    assert dlg.build() is not None
    wait(dlg)
    shown = messages(dlg.iface, Qgis.MessageLevel.Critical)[-1]
    assert "Could not reach the STAC API" in shown
    text = shown.split(":", 1)[1]  # the stub bar records "title:text"
    entries = [(m, level) for m, tag, level in log_lines if tag == "Clearsky" and m == text]
    assert entries == [(text, Qgis.MessageLevel.Warning)]
    assert not [m for m, tag, _l in log_lines if "Traceback" in m]
    assert dlg.statusLabel.text().startswith("Stopped")


def test_cancel_shows_as_cancelled(dlg, served, world, assets, tmp_path):
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    assets.configure(delay_ms=400)
    task = dlg.search()
    deadline = time.monotonic() + 20
    while task.status() != task.TaskStatus.Running and time.monotonic() < deadline:
        QgsApplication.processEvents()
    dlg.cancel()
    wait(dlg)
    assert dlg.statusLabel.text() == "Cancelled"
    assert "Cancelled" in messages(dlg.iface, Qgis.MessageLevel.Warning)[-1]
    assert not [m for m in messages(dlg.iface, Qgis.MessageLevel.Critical) if "Cancel" in m]


# ------------------------------------------------------------------ item 8: layers


def test_an_overwritten_output_replaces_its_layer(dlg, served, world, tmp_path, monkeypatch):
    set_text_aoi(dlg, known_wkt(world))
    set_search(dlg, served)
    out = tmp_path / "same.tif"
    dlg.outputWidget.setFilePath(str(out))
    monkeypatch.setattr(dlg, "confirm_overwrite", lambda path: True)
    dlg.build()
    wait(dlg)

    def layers():
        return [lyr for lyr in QgsProject.instance().mapLayers().values()
                if Path(lyr.source()) == out]

    first = layers()
    assert len(first) == 1 and first[0].bandCount() == 3
    dlg.outputTypeCombo.setCurrentIndex(1)  # 8-bit true colour this time
    dlg.countBand.setChecked(True)
    dlg.build()
    wait(dlg)
    again = layers()
    assert [lyr.id() for lyr in again] == [first[0].id()]  # the same layer, refreshed
    assert again[0].bandCount() == 4
    ce = again[0].renderer().redContrastEnhancement()
    assert (ce.minimumValue(), ce.maximumValue()) == (1.0, 255.0)


# ------------------------------------------------------------------ item 5: layout


def test_the_dialog_steps_aside_while_a_map_tool_draws(dlg, canvas):
    dlg.show()
    dlg.aoiMode.setCurrentIndex(dialog_module.RECTANGLE)
    dlg.drawRectangleButton.click()
    assert canvas.mapTool() is dlg.rectangle_tool and not dlg.isVisible()
    c = td.centre(canvas)
    a = td.pixel(canvas, c.x() - 1000, c.y() + 800)
    b = td.pixel(canvas, c.x() + 1000, c.y() - 800)
    tool = dlg.rectangle_tool
    tool.canvasPressEvent(td.mouse(canvas, QEvent.Type.MouseButtonPress, a))
    tool.canvasReleaseEvent(td.mouse(canvas, QEvent.Type.MouseButtonRelease, b))
    assert dlg.aoi is not None and dlg.isVisible()  # drawn: back
    dlg.drawPolygonButton.click()
    assert not dlg.isVisible()
    dlg.polygon_tool.keyPressEvent(td.esc())
    assert dlg.isVisible()  # cancelled: back
    dlg.drawPolygonButton.click()
    canvas.unsetMapTool(dlg.polygon_tool)  # another tool taken: back too
    assert dlg.isVisible()


def test_size_and_splitter_are_remembered(qgis_iface, canvas, dlg):
    dlg.show()
    dlg.resize(900, 640)
    dlg.splitter.setSizes([500, 400])
    sizes = dlg.splitter.sizes()
    dlg.close()
    again = dialog_module.ClearskyDialog(qgis_iface)
    try:
        again.show()
        assert (again.width(), again.height()) == (900, 640)
        assert again.splitter.sizes() == sizes
    finally:
        again.close()
        canvas.scene().removeItem(again.band)
        again.deleteLater()
