"""Shared fixtures for the QGIS tests (pytest-qgis provides qgis_app, qgis_iface, qgis_canvas).

`qgis_process_env` / `qgis_process` run qgis_process.bin with Clearsky enabled in a
throw-away profile (see tests/world/qgis_process_env.py for how). The helper module is also
importable as `import qgis_process_env` from test files in this folder.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest
from qgis.core import QgsApplication
from qgis.gui import QgsBrowserGuiModel
from qgis.PyQt.QtWidgets import QMenu, QToolBar

from world import paths
from world.servers import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REAL_STAC = paths.REAL_STAC / "rustac-es-v1-c1-13TDE"
RUSTAC = REPO / ".venv" / "bin" / "rustac"


def _load_helper():
    """Load qgis_process_env.py by path: `tests/qgis` cannot be a package (it would shadow qgis)."""
    if "qgis_process_env" not in sys.modules:
        path = REPO / "tests" / "world" / "qgis_process_env.py"
        spec = importlib.util.spec_from_file_location("qgis_process_env", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["qgis_process_env"] = module
        spec.loader.exec_module(module)
    return sys.modules["qgis_process_env"]


qpe = _load_helper()


@pytest.fixture
def qgis_process_env(tmp_path: Path) -> Callable[..., Dict[str, str]]:
    """Factory: `qgis_process_env(plugin_path=..., venv=...)` -> env dict for qgis_process.bin."""

    def make(**kwargs) -> Dict[str, str]:
        return qpe.qgis_process_env(tmp_path / "qgis-config", **kwargs)

    return make


@pytest.fixture
def qgis_process() -> Callable[..., subprocess.CompletedProcess]:
    """`qgis_process(["list"], env)` runs qgis_process.bin and returns the CompletedProcess."""
    return qpe.run_qgis_process


class RealMenus:
    """Gives the pytest-qgis iface QGIS's own toolbar and Raster menu behaviour.

    The pytest-qgis stub only records these calls; QgisApp adds the action to the Plugins
    toolbar and to a sub-menu of the Raster menu (created on demand, deleted once empty).
    Modelled here with real Qt widgets so tests can look at what a user would see.
    """

    def __init__(self, iface) -> None:
        window = iface.mainWindow()
        self.toolbar = QToolBar("Plugins Toolbar", window)
        self.raster_menu = window.menuBar().addMenu("&Raster")

    def submenu(self, name: str):
        for action in self.raster_menu.actions():
            if action.menu() is not None and action.text() == name:
                return action.menu()
        return None

    def add_toolbar_icon(self, action) -> None:
        self.toolbar.addAction(action)

    def remove_toolbar_icon(self, action) -> None:
        self.toolbar.removeAction(action)

    def add_to_raster_menu(self, name: str, action) -> None:
        menu = self.submenu(name)
        if menu is None:
            menu = QMenu(name, self.raster_menu)
            self.raster_menu.addMenu(menu)
        menu.addAction(action)

    def remove_from_raster_menu(self, name: str, action) -> None:
        menu = self.submenu(name)
        if menu is None:
            return
        menu.removeAction(action)
        if not menu.actions():
            self.raster_menu.removeAction(menu.menuAction())
            menu.deleteLater()

    def toolbar_texts(self) -> List[str]:
        return [a.text() for a in self.toolbar.actions()]

    def raster_entries(self) -> Dict[str, List[str]]:
        return {
            a.text(): [sub.text() for sub in a.menu().actions()]
            for a in self.raster_menu.actions()
            if a.menu() is not None
        }


@pytest.fixture
def iface_with_menus(qgis_iface, monkeypatch) -> Iterator[tuple]:
    """(iface, menus): the pytest-qgis iface whose toolbar/Raster-menu calls hit real widgets."""
    menus = RealMenus(qgis_iface)
    monkeypatch.setattr(qgis_iface, "addToolBarIcon", menus.add_toolbar_icon, raising=False)
    monkeypatch.setattr(qgis_iface, "removeToolBarIcon", menus.remove_toolbar_icon, raising=False)
    monkeypatch.setattr(qgis_iface, "addPluginToRasterMenu", menus.add_to_raster_menu,
                        raising=False)
    monkeypatch.setattr(qgis_iface, "removePluginRasterMenu", menus.remove_from_raster_menu,
                        raising=False)
    # Processing dialogs ask iface for the browser model, which the stub answers with a MagicMock.
    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)
    qgis_iface.messageBar().clear_messages()
    yield qgis_iface, menus
    qgis_iface.mainWindow().menuBar().removeAction(menus.raster_menu.menuAction())
    menus.toolbar.deleteLater()


@pytest.fixture
def stac_api() -> Iterator[str]:
    """A real STAC API (rustac serve) on 127.0.0.1 over 10 Earth Search items of tile 13TDE."""
    port = free_port()
    files = [str(REAL_STAC / "collection.json"), str(REAL_STAC / "item-collection.json")]
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a full pipe would block it
        server = subprocess.Popen(
            [str(RUSTAC), "serve", "--addr", f"127.0.0.1:{port}", *files],
            stdout=subprocess.DEVNULL, stderr=errors,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/collections", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        errors.seek(0)
                        raise RuntimeError(
                            f"rustac serve did not start: {errors.read().decode()}"
                        ) from None
                    time.sleep(0.1)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=10)


@pytest.fixture(scope="module")
def provider(qgis_processing):
    """The Clearsky provider in the registry (left as found afterwards)."""
    from clearsky.provider.provider import ClearskyProvider

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("clearsky")
    if existing is not None:
        yield existing
        return
    added = ClearskyProvider()
    assert registry.addProvider(added)
    yield added
    registry.removeProvider(added)


@pytest.fixture
def private_settings(monkeypatch):
    """The plugin's QgsSettings group for this test only, removed afterwards (a user's
    settings are never touched). Modules that need it for every test mark themselves with
    `pytestmark = pytest.mark.usefixtures("private_settings")`."""
    import uuid

    from qgis.core import QgsSettings

    from clearsky.ui import settings

    group = f"ClearskyTest/{uuid.uuid4().hex}"
    monkeypatch.setattr(settings, "GROUP", group)
    yield group
    QgsSettings().remove(group)
