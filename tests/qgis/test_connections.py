"""STAC API connections: New / Edit / Remove / Test, auth from the QGIS auth manager."""

from __future__ import annotations

import base64

import pytest
from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsSettings

from clearsky.core.options import EARTH_SEARCH
from clearsky.ui import connections, settings
from world.qt import wait

pytestmark = pytest.mark.usefixtures("private_settings")




def test_a_connection_needs_a_name_and_a_stac_api_url(qgis_iface):
    d = connections.ConnectionsDialog()
    d.new()
    d.nameEdit.setText("typo")
    d.urlEdit.setText("earth-search")
    assert not d.apply()
    assert "starts with http:// or https://" in d.status.text()
    assert [c.url for c in connections.load()] == [EARTH_SEARCH]


def test_new_edit_remove_and_earth_search_stays(qgis_iface, served):
    d = connections.ConnectionsDialog()
    d.new()
    d.nameEdit.setText("Offline archive")
    d.urlEdit.setText(served.stac_url)
    assert d.apply()
    assert [(c.name, c.url) for c in connections.load()][-1] == ("Offline archive",
                                                                served.stac_url)
    d.nameEdit.setText("Archive on loopback")  # edit the selected one in place
    assert d.apply()
    names = [c.name for c in connections.load()]
    assert "Archive on loopback" in names and "Offline archive" not in names
    again = connections.ConnectionsDialog(current=served.stac_url)
    assert again.urlEdit.text() == served.stac_url
    again.remove()
    assert [c.url for c in connections.load()] == [EARTH_SEARCH]
    again.listWidget.setCurrentRow(0)
    assert not again.removeButton.isEnabled()
    again.remove()
    assert [c.url for c in connections.load()] == [EARTH_SEARCH]


def test_test_lists_the_collections_or_says_why_not(qgis_iface, served):
    d = connections.ConnectionsDialog()
    d.new()
    d.nameEdit.setText("archive")
    d.urlEdit.setText(served.stac_url)
    assert d.test() is not None
    wait(d)
    assert {"sentinel-2-c1-l2a", "sentinel-2-l2a"} <= set(d.collections)
    assert "collection(s) offered" in d.status.text()
    d.urlEdit.setText("http://127.0.0.1:9/v1")  # nothing listens there
    d.test()
    wait(d)
    assert d.collections == [] and d.collectionList.count() == 0
    assert "127.0.0.1:9" in d.status.text()


@pytest.fixture
def dlg_factory(qgis_iface):
    from clearsky.ui import dialog as dialog_module

    made = []

    def make():
        made.append(dialog_module.ClearskyDialog(qgis_iface))
        return made[-1]

    yield make
    for d in made:
        d.close()
        d.canvas.scene().removeItem(d.band)
        d.deleteLater()


def test_auth_configuration_becomes_headers_and_is_never_stored(qgis_iface, dlg_factory,
                                                               served, tmp_path):
    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        assert manager.setMasterPassword("clearsky-test", True)
    config = QgsAuthMethodConfig("Basic")
    config.setName("stac")
    config.setConfig("username", "alice")
    config.setConfig("password", "s3cr3t")
    stored = manager.storeAuthenticationConfig(config)
    assert stored[0] if isinstance(stored, tuple) else stored
    authcfg = config.id()
    headers = connections.auth_headers(authcfg, served.stac_url)
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cr3t").decode()
    connections.save(connections.load() + [
        connections.Connection("private", served.stac_url, authcfg)])
    dlg = dlg_factory()
    dlg._fill_catalogs(served.stac_url)
    dlg.aoiText.setPlainText("13.5,52.33,13.52,52.35")
    dlg.use_text()
    dlg.outputWidget.setFilePath(str(tmp_path / "m.tif"))
    params = dlg.mosaic_params()
    assert params.catalog_headers["Authorization"] == headers["Authorization"]
    assert "s3cr3t" not in repr(params)
    dlg.save_settings()
    everything = " ".join(str(QgsSettings().value(k)) for k in QgsSettings().allKeys()
                          if k.startswith(settings.GROUP))
    assert authcfg in everything and "s3cr3t" not in everything and "alice" not in everything
