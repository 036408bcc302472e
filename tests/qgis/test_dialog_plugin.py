"""The toolbar action / Raster menu entry opens the Clearsky dialog: non-modal, one instance."""

from __future__ import annotations

import sys
import uuid

import pytest
from qgis.core import QgsSettings
from qgis.PyQt.QtWidgets import QApplication

import clearsky
from clearsky.ui import dialog as dialog_module
from clearsky.ui import settings


@pytest.fixture(autouse=True)
def private_settings(monkeypatch):
    group = f"ClearskyTest/{uuid.uuid4().hex}"
    monkeypatch.setattr(settings, "GROUP", group)
    yield
    QgsSettings().remove(group)


def shown_dialogs():
    return [w for w in QApplication.topLevelWidgets()
            if isinstance(w, dialog_module.ClearskyDialog) and w.isVisible()]


def test_action_opens_one_non_modal_dialog(iface_with_menus, monkeypatch):
    iface, menus = iface_with_menus
    errors = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: errors.append(exc))
    plugin = clearsky.classFactory(iface)
    plugin.initGui()
    try:
        menus.raster_menu.actions()[0].menu().actions()[0].trigger()  # Raster > Clearsky >
        first = shown_dialogs()
        assert len(first) == 1 and not first[0].isModal()
        assert first[0].windowTitle() == "Clearsky: cloud-free Sentinel-2 mosaic"
        first[0].close()
        menus.toolbar.actions()[0].trigger()  # the toolbar button brings back the same one
        assert shown_dialogs() == first
    finally:
        dialog_module.close_dialog()
        plugin.unload()
    assert shown_dialogs() == [] and errors == []
