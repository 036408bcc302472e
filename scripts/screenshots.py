"""`make screenshots`: the dialog with search results, its stale state, the size warning, and
QGIS with a finished mosaic.

Serves the offline archive on 127.0.0.1, starts the real QGIS desktop under Xvfb with a
throw-away profile that enables Clearsky from this checkout, drives the dialog from a
`--code` script (AOI, Search, Build through the same buttons' methods a click calls) and
saves docs/images/dialog.png and docs/images/mosaic.png.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from shapely import affinity

REPO = Path(__file__).resolve().parents[1]
IMPORT_ROOT = REPO / ".build" / "importroot"
IMAGES = REPO / "docs" / "images"
sys.path[:0] = [str(IMPORT_ROOT), str(REPO / "tests")]

from world import World  # noqa: E402 - needs the paths above
from world.cache import cached_archive  # noqa: E402
from world.servers import ServedArchive  # noqa: E402

# Runs inside QGIS (qgis --code). Placeholders are filled in with repr() values.
INSIDE = r'''
import os
import time
from qgis.core import QgsApplication, QgsCoordinateReferenceSystem, QgsProject
from qgis.PyQt.QtCore import QDate, QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

LOG = open(LOG_PATH, "w")

def say(*a):
    print(*a, file=LOG, flush=True)

def pump(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QgsApplication.processEvents()
        time.sleep(0.02)

def wait_task(dlg, limit=180):
    end = time.monotonic() + limit
    while dlg.task is not None:
        if time.monotonic() > end:
            raise RuntimeError("task did not finish")
        QgsApplication.processEvents()
        time.sleep(0.02)
    pump(0.5)

def main():
    try:
        from clearsky.ui import dialog as dialog_module
        iface.mainWindow().resize(1500, 950)
        iface.mainWindow().showNormal()
        project = QgsProject.instance()
        project.setCrs(QgsCoordinateReferenceSystem("EPSG:32633"))
        plugins["clearsky"].action.trigger()
        pump(1)
        dlg = dialog_module._INSTANCE
        dlg.resize(1580, 900)
        dlg.move(20, 20)
        dlg.splitter.setSizes([470, 1110])
        dlg.aoiMode.setCurrentIndex(dialog_module.TEXT)
        dlg.aoiText.setPlainText(AOI_WKT)
        dlg.useTextButton.click()
        dlg.add_catalog_url(STAC_URL)
        dlg.startDate.setDate(QDate(2024, 6, 1))
        dlg.endDate.setDate(QDate(2024, 6, 30))
        dlg.utmCheck.setChecked(True)
        dlg.outputWidget.setFilePath(OUTPUT)
        iface.mapCanvas().setExtent(dlg.band.asGeometry().boundingBox().buffered(1500))
        dlg.search()
        wait_task(dlg)
        say("rows", dlg.sceneTable.rowCount(), dlg.scenesSummary.text())
        dlg.sceneTable.sortItems(0)
        dlg.sceneTable.resizeColumnsToContents()
        kept = [r for r in range(dlg.sceneTable.rowCount())
                if dlg.sceneTable.item(r, 6).text() == "kept"]
        dlg.sceneTable.selectRow(kept[0])  # highlighted and zoomed on the map
        dlg.estimate()
        wait_task(dlg)
        say("estimate", dlg.estimateLabel.text())
        iface.mapCanvas().setExtent(dlg.band.asGeometry().boundingBox().buffered(1500))
        pump(1)
        dlg.grab().save(DIALOG_PNG)
        # drawing on the map: the dialog steps aside while the rectangle tool is active
        dlg.aoiMode.setCurrentIndex(dialog_module.RECTANGLE)
        dlg.drawRectangleButton.click()
        pump(1)
        say("hidden while drawing", not dlg.isVisible())
        iface.mainWindow().grab().save(DRAWING_PNG)
        dlg._restore_tool()
        dlg.aoiMode.setCurrentIndex(dialog_module.TEXT)
        pump(1)
        # the STAC API connections: a connection to the served archive, tested
        from clearsky.ui.connections import ConnectionsDialog
        manager = ConnectionsDialog(dlg, STAC_URL)
        manager.resize(640, 560)
        manager.show()
        manager.nameEdit.setText("Offline archive (loopback)")
        manager.apply()
        manager.test()
        while manager.task is not None:
            pump(0.1)
        pump(0.5)
        manager.grab().save(CONNECTIONS_PNG)
        manager.close()
        # a search input changed: the table is marked stale (issue 16, bug 1)
        dlg.maxAoiCloud.setValue(20)
        pump(0.5)
        dlg.grab().save(STALE_PNG)
        dlg.maxAoiCloud.setValue(50)
        # the size guard's question for a continent-sized AOI, shown and captured
        from qgis.PyQt.QtWidgets import QMessageBox
        big = dialog_module.parse_aoi("-10,35,30,60")
        params = dlg.mosaic_params()
        params.aoi = big
        shots = []
        def grab_box():
            for w in QApplication.topLevelWidgets():
                if isinstance(w, QMessageBox) and w.isVisible():
                    w.grab().save(SIZE_PNG)
                    shots.append(w)
                    w.reject()
        QTimer.singleShot(800, grab_box)
        say("size ok", dlg.size_is_acceptable(params, with_grid=True), len(shots))
        pump(0.5)
        dlg.build()
        wait_task(dlg)
        say("bar", [dlg.bar.items()[i].text() for i in range(len(dlg.bar.items()))])
        dlg.close()
        canvas = iface.mapCanvas()
        layers = [l for l in project.mapLayers().values() if l.source() == OUTPUT]
        say("layers", [l.name() for l in layers])
        project.setCrs(layers[0].crs())
        canvas.setDestinationCrs(layers[0].crs())
        canvas.setExtent(layers[0].extent().buffered(600))
        canvas.refresh()
        pump(3)
        while canvas.isDrawing():
            pump(0.2)
        pump(1)
        iface.mainWindow().grab().save(MOSAIC_PNG)
        say("done")
    except Exception:
        import traceback
        say(traceback.format_exc())
    finally:
        QgsProject.instance().setDirty(False)
        LOG.close()
        os._exit(0)  # a screenshot run: no exit prompts, nothing to save

QTimer.singleShot(2000, main)
'''


def profile(root: Path) -> dict:
    """A throw-away QGIS profile with Clearsky enabled from this checkout."""
    ini = root / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text("[PythonPlugins]\nclearsky=true\n\n[qgis]\nshowTips=false\n"
                   "checkVersion=false\n")
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)  # the desktop needs the (virtual) X display
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(root)
    env["QGIS_PLUGINPATH"] = str(IMPORT_ROOT)
    site = next((REPO / ".venv" / "lib").glob("python3*/site-packages"), None)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=IMAGES)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    world = World(extent_km=6.0, seed=2024)  # the test archive: usually cached already
    root = cached_archive(world, 512)
    aoi = affinity.scale(world.region, 0.7, 0.7)
    with ServedArchive(root) as served, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        values = {
            "AOI_WKT": aoi.wkt, "STAC_URL": served.stac_url,
            "OUTPUT": str(tmp / "treptow_june_2024.tif"), "LOG_PATH": str(tmp / "log.txt"),
            "DIALOG_PNG": str(args.out / "dialog.png"),
            "MOSAIC_PNG": str(args.out / "mosaic.png"),
            "STALE_PNG": str(args.out / "dialog_stale.png"),
            "SIZE_PNG": str(args.out / "size_warning.png"),
            "CONNECTIONS_PNG": str(args.out / "connections.png"),
            "DRAWING_PNG": str(args.out / "drawing.png"),
        }
        script = tmp / "shoot.py"
        script.write_text("".join(f"{k} = {v!r}\n" for k, v in values.items()) + INSIDE)
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--profiles-path",
               str(tmp / "qgis"), "--nologo", "--noversioncheck", "--code", str(script)]
        env = profile(tmp / "qgis")
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        log = (tmp / "log.txt").read_text() if (tmp / "log.txt").exists() else ""
        print(log)
        if "done" not in log.splitlines():
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            return 1
    for name in ("dialog.png", "dialog_stale.png", "size_warning.png", "connections.png",
                 "drawing.png", "mosaic.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
