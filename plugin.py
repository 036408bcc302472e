"""The QGIS side of Clearsky: one toolbar action, one Raster menu entry, the Processing provider.

With `iface` None (qgis_process, headless scripts) only the provider is registered.
If a compiled dependency is missing, the plugin still loads and says how to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtGui import QIcon

try:  # Qt5 (QGIS 3)
    from qgis.PyQt.QtWidgets import QAction
except ImportError:  # Qt6 (QGIS 4) moved QAction to QtGui
    from qgis.PyQt.QtGui import QAction

from .dependencies import install_hint

PLUGIN_NAME = "Clearsky"
ACTION_TEXT = "Cloud-free Mosaic…"  # one Raster menu entry: a verb-like name and an ellipsis
MENU = "Clearsky"  # the sub-menu, only where the Raster menu itself is not reachable
LOG_TAG = "Clearsky"  # the tab in the Log Messages panel
ICON = Path(__file__).resolve().parent / "resources" / "icon.svg"


def log(message: str, level: Any = Qgis.MessageLevel.Info) -> None:
    """Write to the Clearsky tab of the QGIS log."""
    QgsMessageLog.logMessage(message, LOG_TAG, level)


def open_mosaic_dialog(iface: Any) -> None:
    """What the toolbar action opens: the Clearsky dialog (non-modal, one instance)."""
    from .ui.dialog import show_dialog  # imported late: it needs rasterio (checked by run())

    show_dialog(iface)


def raster_menu(iface: Any) -> Optional[Any]:
    """QGIS's Raster menu (a QMenu), or None where iface has none (stubs, old QGIS)."""
    from qgis.PyQt.QtWidgets import QMenu

    getter = getattr(iface, "rasterMenu", None)
    try:
        menu = getter() if callable(getter) else None
    except Exception:  # noqa: BLE001 - a stub iface: fall back to the plugin sub-menu
        return None
    return menu if isinstance(menu, QMenu) else None


def cancel_running_tasks() -> None:
    """Unload: every Clearsky task still running is cancelled and calls back nothing."""
    import sys

    tasks = sys.modules.get(f"{__package__}.ui.tasks")  # imported only if a task ever ran
    if tasks is not None:
        count = tasks.cancel_all()
        if count:
            log(f"{count} running Clearsky task(s) cancelled: the plugin was unloaded.",
                Qgis.MessageLevel.Info)


class ClearskyPlugin:
    """The object QGIS creates through `classFactory`; loading and unloading repeat cleanly."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: Optional[Any] = None
        self.action: Optional[QAction] = None
        self._menu: Optional[Any] = None  # the Raster menu the action went into directly

    # -- Processing -------------------------------------------------------------------------
    def initProcessing(self) -> None:
        """Register the Processing provider (called by qgis_process and by initGui)."""
        if self.provider is not None:
            return
        hint = install_hint()
        if hint:
            log(hint, Qgis.MessageLevel.Warning)
        try:
            from .provider.provider import ClearskyProvider
        except ImportError as exc:
            if not hint:  # not a missing library: a real bug, let QGIS show it
                raise
            log(
                f"The Clearsky Processing algorithms are unavailable until then ({exc}).",
                Qgis.MessageLevel.Warning,
            )
            return
        provider = ClearskyProvider()
        if QgsApplication.processingRegistry().addProvider(provider):
            self.provider = provider
        else:
            log("A Processing provider with the id 'clearsky' is already registered; "
                "is a second copy of Clearsky installed?", Qgis.MessageLevel.Warning)

    # -- GUI --------------------------------------------------------------------------------
    def initGui(self) -> None:
        """Provider, toolbar action and Raster menu entry; a warning if a library is missing."""
        self.initProcessing()
        if self.iface is None or self.action is not None:
            return
        self.action = QAction(QIcon(str(ICON)), ACTION_TEXT, self.iface.mainWindow())
        self.action.setObjectName("clearskyAction")
        self.action.setToolTip("Clearsky: build a cloud-free Sentinel-2 mosaic of an area")
        self.action.triggered.connect(self.run)
        self.iface.addToolBarIcon(self.action)
        menu = raster_menu(self.iface)
        if menu is not None:  # Raster > Cloud-free Mosaic…, not Raster > Clearsky > Clearsky
            menu.addAction(self.action)
            self._menu = menu
        else:
            self.iface.addPluginToRasterMenu(MENU, self.action)
        hint = install_hint()
        if hint:
            self._warn(hint)

    def unload(self) -> None:
        """Remove everything initGui and initProcessing added."""
        if self.action is not None:
            from .ui.dialog import close_dialog

            close_dialog()
            if self._menu is not None:
                self._menu.removeAction(self.action)
                self._menu = None
            else:
                self.iface.removePluginRasterMenu(MENU, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.triggered.disconnect(self.run)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        cancel_running_tasks()

    def run(self) -> None:
        """The toolbar action: the mosaic dialog, or how to install a missing library."""
        hint = install_hint()
        if hint:
            log(hint, Qgis.MessageLevel.Warning)
            self._warn(hint)
            return
        open_mosaic_dialog(self.iface)

    def _warn(self, text: str) -> None:
        if self.iface is not None:
            self.iface.messageBar().pushMessage(PLUGIN_NAME, text, Qgis.MessageLevel.Warning, 0)
