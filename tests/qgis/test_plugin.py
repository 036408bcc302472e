"""The plugin shell inside QGIS: metadata, toolbar action, Raster menu, provider, unload."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

from qgis.core import QgsApplication

import clearsky
from clearsky import plugin as plugin_module

REPO = Path(__file__).resolve().parents[2]
# What plugins.qgis.org refuses an upload without (qgis/QGIS-Django plugins/validator.py).
HUB_REQUIRED = ("name", "description", "version", "qgisMinimumVersion", "author", "email",
                "about", "tracker", "repository")


def registry():
    return QgsApplication.processingRegistry()


def metadata() -> configparser.SectionProxy:
    parser = configparser.ConfigParser()  # the parser QGIS itself uses (qgis.utils.findPlugins)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    return parser["general"]


def test_metadata_is_complete_and_honest():
    meta = metadata()
    assert [k for k in HUB_REQUIRED if k not in meta] == []
    assert meta["name"] == "Clearsky"
    assert meta["qgisMinimumVersion"] == "3.22" and meta["qgisMaximumVersion"] == "4.99"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert meta["category"] == "Raster"
    assert meta.getboolean("experimental") is True and meta.getboolean("deprecated") is False
    assert meta["hasProcessingProvider"] == "yes" and meta.getboolean("supportsQt6") is True
    assert (REPO / meta["icon"]).is_file()
    assert "\n" not in meta["description"]
    for command in ("apt install python3-rasterio", "python3-rasterio",
                    "conda install -c conda-forge rasterio"):
        assert command in meta["about"]
    # Not published: no invented links; the about text says so plainly.
    assert (meta["homepage"], meta["tracker"], meta["repository"]) == ("", "", "")
    assert "Not published yet" in meta["about"] and meta["email"] == "not published yet"


def test_qgis_reads_the_metadata():
    from qgis import utils

    found = dict(utils.findPlugins(str(REPO / ".build" / "importroot")))
    assert found["clearsky"].get("general", "hasProcessingProvider") == "yes"


def test_package_imports_without_qgis():
    """QGIS-free Python can import the package and the dependency check (core relies on it)."""
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('qgis', 'PyQt5', 'PyQt6', 'sip'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import clearsky, clearsky.dependencies as d\n"
        "print(callable(clearsky.classFactory), d.missing_dependencies())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True []"


def test_load_unload_load_again_with_iface(iface_with_menus, monkeypatch):
    iface, menus = iface_with_menus
    monkeypatch.setattr(iface, "rasterMenu", lambda: menus.raster_menu, raising=False)
    for _ in range(2):  # loading after an unload must work too
        plugin = clearsky.classFactory(iface)
        plugin.initGui()
        assert menus.toolbar_texts() == ["Cloud-free Mosaic…"]
        # one entry with a verb and an ellipsis, not Raster > Clearsky > Clearsky
        assert [a.text() for a in menus.raster_menu.actions()] == ["Cloud-free Mosaic…"]
        assert menus.raster_entries() == {}
        action = menus.toolbar.actions()[0]
        assert not action.icon().isNull()
        assert action.icon().pixmap(32, 32).toImage().pixelColor(16, 16).alpha() == 255
        provider = registry().providerById("clearsky")
        assert provider is not None and provider is plugin.provider
        assert registry().algorithmById("clearsky:buildmosaic") is not None
        assert iface.messageBar().get_messages(plugin_module.Qgis.MessageLevel.Warning) == []

        plugin.unload()
        assert menus.toolbar_texts() == []
        assert menus.raster_menu.actions() == []
        assert registry().providerById("clearsky") is None
        assert registry().algorithmById("clearsky:buildmosaic") is None


def test_without_a_raster_menu_the_entry_goes_into_a_submenu(iface_with_menus):
    iface, menus = iface_with_menus  # the stub iface answers rasterMenu() with a mock
    plugin = clearsky.classFactory(iface)
    plugin.initGui()
    assert menus.raster_entries() == {"Clearsky": ["Cloud-free Mosaic…"]}
    plugin.unload()
    assert menus.raster_entries() == {}


def test_headless_load_registers_only_the_provider(qgis_iface):
    plugin = clearsky.classFactory(None)
    plugin.initProcessing()
    plugin.initGui()  # QGIS desktop calls this; with no iface it must only keep the provider
    assert plugin.action is None
    assert registry().providerById("clearsky") is plugin.provider
    plugin.initProcessing()  # a second call does not register a second provider
    assert [p.id() for p in registry().providers()].count("clearsky") == 1
    plugin.unload()
    assert registry().providerById("clearsky") is None


RASTERIO_MISSING = r"""
import sys

class BlockRasterio:
    def find_spec(self, name, path=None, target=None):
        if name == "rasterio" or name.startswith("rasterio."):
            raise ImportError("No module named 'rasterio' (blocked by the test)")

sys.meta_path.insert(0, BlockRasterio())

from qgis.core import QgsApplication
app = QgsApplication([], True)
app.initQgis()
log = []
QgsApplication.messageLog().messageReceived.connect(
    lambda message, tag, level: log.append((tag, message)))

from qgis import utils
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtWidgets import QMainWindow, QMenu, QToolBar


class Iface:
    # The parts of QgisInterface the plugin uses, with a real message bar.
    def __init__(self):
        self.window, self.bar = QMainWindow(), QgsMessageBar()
        self.toolbar, self.menu = QToolBar(), QMenu()
    def mainWindow(self): return self.window
    def messageBar(self): return self.bar
    def addToolBarIcon(self, action): self.toolbar.addAction(action)
    def removeToolBarIcon(self, action): self.toolbar.removeAction(action)
    def addPluginToRasterMenu(self, name, action): self.menu.addAction(action)
    def removePluginRasterMenu(self, name, action): self.menu.removeAction(action)


iface = utils.iface = Iface()
assert utils.loadPlugin("clearsky"), "loadPlugin failed"
started = utils.startPlugin("clearsky")          # QGIS's own loader: classFactory + initGui
plugin = utils.plugins["clearsky"]
print("STARTED", started)
print("ACTION", plugin.action is not None)
if plugin.action is not None:
    iface.bar.clearWidgets()
    plugin.action.trigger()                    # the toolbar action, with rasterio missing
for item in iface.bar.items():
    print("BAR", int(item.level()), item.title(), item.text().replace("\n", " | "))
for tag, message in log:
    print("LOG", tag, message.replace("\n", " | "))
utils.unloadPlugin("clearsky")
app.exitQgis()
"""


def test_missing_rasterio_is_explained_not_a_traceback(tmp_path):
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen",
           "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", RASTERIO_MISSING], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "STARTED True" in lines and "ACTION True" in lines
    bar = [line for line in lines if line.startswith("BAR ")]
    logs = [line for line in lines if line.startswith("LOG ")]
    hint = "sudo apt install python3-rasterio"
    assert bar and all(line.startswith("BAR 1 Clearsky ") for line in bar)  # warnings only
    assert any(hint in line and "conda install -c conda-forge rasterio" in line for line in bar)
    assert any(line.startswith("LOG Clearsky ") and hint in line for line in logs)
    assert "Traceback" not in out.stdout + out.stderr
    assert not [line for line in logs if "Python" in line.split()[1]]  # no "Python error" tab
