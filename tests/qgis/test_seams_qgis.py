"""NORMALISE and FEATHER_M in the dialog (advanced options) and in Processing."""

from __future__ import annotations

import pytest

from clearsky.core.options import BY_KEY
from clearsky.ui import dialog as dialog_module
from clearsky.ui import option_widgets

pytestmark = pytest.mark.usefixtures("private_settings")


def test_dialog_shows_normalise_and_feather_and_hands_them_to_the_engine(qgis_iface):
    d = dialog_module.ClearskyDialog(qgis_iface)
    try:
        assert d.option_widgets["normalise"] is d.normaliseCheck
        assert d.option_widgets["feather_m"] is d.featherSpin
        # the table's defaults, range and help
        assert d.normaliseCheck.isChecked() is True
        assert d.featherSpin.value() == 200.0 and d.featherSpin.maximum() == 5000.0
        assert "coarse grid" in d.normaliseCheck.toolTip()
        d.normaliseCheck.setChecked(False)
        d.featherSpin.setValue(0.0)
        values = option_widgets.values(d.option_widgets)
        assert values["normalise"] is False and values["feather_m"] == 0.0
        assert d.featherSpin.specialValueText() == "hard edges"
    finally:
        d.close()
        d.deleteLater()


def test_processing_offers_normalise_and_feather_as_advanced_parameters(provider, tmp_path):
    from qgis.core import (
        QgsApplication,
        QgsFeature,
        QgsGeometry,
        QgsProcessingContext,
        QgsProcessingParameterDefinition,
        QgsProject,
        QgsVectorLayer,
    )

    alg = QgsApplication.processingRegistry().createAlgorithmById("clearsky:buildmosaic")
    assert alg is not None
    for key in ("NORMALISE", "FEATHER_M"):
        p = alg.parameterDefinition(key)
        assert p is not None, key
        assert p.flags() & QgsProcessingParameterDefinition.FlagAdvanced
        assert p.defaultValue() == BY_KEY[key].default
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "aoi", "memory")
    f = QgsFeature(layer.fields())
    f.setGeometry(QgsGeometry.fromWkt(
        "POLYGON((13.50 52.30, 13.52 52.30, 13.52 52.32, 13.50 52.32, 13.50 52.30))"))
    assert layer.dataProvider().addFeatures([f])[0]
    ctx = QgsProcessingContext()
    ctx.setProject(QgsProject.instance())
    base = {"AOI": layer, "START_DATE": "2024-06-01", "END_DATE": "2024-06-30",
            "CATALOG": "http://127.0.0.1:9/stac", "OUTPUT": str(tmp_path / "m.tif")}
    default = alg.engine_params(base, ctx, for_run=False)
    assert default.normalise is True and default.feather_m == 200.0
    chosen = alg.engine_params({**base, "NORMALISE": False, "FEATHER_M": 50}, ctx,
                               for_run=False)
    assert chosen.normalise is False and chosen.feather_m == 50.0
