"""PERCENTILES and PERIODS in a graphical model and in the batch dialog, headless.

- The model `seasonal_mosaic.model3` (made by `build_model()`, rewrite it with
  CLEARSKY_WRITE_MODEL=1): one clearsky:buildmosaic child whose PERCENTILES and PERIODS
  come from model inputs, its OUTPUT and OUTPUTS exposed. It runs through
  `qgis_process.bin run seasonal_mosaic.model3 -- ...` and in process; a variant with
  the two as static values is saved to a .model3 and loaded again before it runs.
- The batch: QGIS's own batch dialog (processing.gui.BatchAlgorithmDialog, offscreen),
  two rows filled through its widgets as a user would, saved as a batch .json by the
  panel's Save, loaded into a new dialog by its Open and run with its Run button.

Every COG is compared pixel by pixel with the truth of the passes of its period
(world.period_truth).
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterString,
    QgsProject,
)
from qgis.PyQt.QtCore import QPointF

from clearsky.core.clouds import MaskRule
from clearsky.core.params import DEFAULT_COLLECTION, EARTH_SEARCH
from clearsky.provider.compat import DATE_ONLY, SOURCE_POLYGON
from world.period_truth import check_statistics_cog, passes_between

pytestmark = pytest.mark.usefixtures("private_settings")

MODEL = Path(__file__).resolve().parent / "seasonal_mosaic.model3"
HALVES = "2024-06-01/2024-06-15,2024-06-16/2024-06-30"
HALF_NAMES = ("2024-06-01_2024-06-15", "2024-06-16_2024-06-30")
INPUTS = {"AOI": "aoi", "START_DATE": "start", "END_DATE": "end", "CATALOG": "catalog",
          "PERCENTILES": "percentiles", "PERIODS": "periods"}
STATIC = {"COLLECTION": DEFAULT_COLLECTION, "MAX_SCENE_CLOUD": 100.0, "MAX_AOI_CLOUD": 100.0,
          "BANDS": "red,nir", "OUTPUT_TYPE": 0, "COUNT_BAND": True, "RESOLUTION": 10.0,
          "CLIP_TO_AOI": True,
          # pixels are checked against the truth of each pass: no seam blending (as in
          # test_mosaic), which would move them towards their neighbours
          "NORMALISE": False, "FEATHER_M": 0.0}
RADIUS = MaskRule().radius_px(10.0)
# 2.2 km x 1.6 km in the middle of the archive: two UTM zones, every pass.
BOX = [[13.505, 52.333], [13.537, 52.333], [13.537, 52.347], [13.505, 52.347],
       [13.505, 52.333]]


def build_model(static_statistics: str = "", static_periods: str = ""
                ) -> QgsProcessingModelAlgorithm:
    """aoi/start/end/catalog (and PERCENTILES/PERIODS unless given static) are model inputs.

    The Clearsky provider must be registered (the child resolves its algorithm)."""
    model = QgsProcessingModelAlgorithm("Seasonal percentile mosaics", "Clearsky", "")
    model.setName("seasonal_mosaic")
    inputs = [
        QgsProcessingParameterFeatureSource("aoi", "Area of interest", [SOURCE_POLYGON]),
        QgsProcessingParameterDateTime("start", "Start date", DATE_ONLY),
        QgsProcessingParameterDateTime("end", "End date", DATE_ONLY),
        QgsProcessingParameterString("catalog", "STAC catalog URL", EARTH_SEARCH),
        QgsProcessingParameterString("percentiles", "Percentiles", "25,50,75", False, True),
        QgsProcessingParameterString("periods", "Periods (month, season or date ranges)",
                                     "season", False, True),
    ]
    statics = dict(STATIC)
    if static_statistics:
        statics["PERCENTILES"] = static_statistics
    if static_periods:
        statics["PERIODS"] = static_periods
    child = QgsProcessingModelChildAlgorithm("clearsky:buildmosaic")
    child.setChildId("build")
    child.setDescription("Percentile mosaic per period")
    child.setPosition(QPointF(420, 200))
    row = 0
    for definition in inputs:
        param = next(k for k, v in INPUTS.items() if v == definition.name())
        if param in statics:
            continue
        component = QgsProcessingModelParameter(definition.name())
        component.setPosition(QPointF(120, 50 + 70 * row))
        model.addModelParameter(definition, component)
        child.addParameterSources(
            param, [QgsProcessingModelChildParameterSource.fromModelParameter(definition.name())])
        row += 1
    for param, value in statics.items():
        child.addParameterSources(
            param, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    outputs = {}
    for name, child_output, title, y in (("mosaic", "OUTPUT", "First period's mosaic", 150),
                                         ("mosaics", "OUTPUTS", "Mosaics, one per period", 250)):
        out = QgsProcessingModelOutput(name, title)
        out.setChildId("build")
        out.setChildOutputName(child_output)
        out.setPosition(QPointF(650, y))
        outputs[name] = out
    child.setModelOutputs(outputs)
    model.addChildAlgorithm(child)
    model.updateDestinationParameters()
    model.setHelpContent({"ALG_DESC": (
        "One search, then one cloud-free composite per period (month, season or date "
        "ranges), each with one band per band and percentile (<band>_p25, ...).")})
    return model


@pytest.fixture
def model(provider) -> QgsProcessingModelAlgorithm:
    if os.environ.get("CLEARSKY_WRITE_MODEL"):
        assert build_model().toFile(str(MODEL))
    loaded = QgsProcessingModelAlgorithm()
    assert loaded.fromFile(str(MODEL))
    return loaded


@pytest.fixture(scope="module")
def box_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("aoi") / "box.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                           "coordinates": [BOX]}}]}))
    return path


def _sources(model) -> dict:
    out = {}
    for cid, c in model.childAlgorithms().items():
        out[cid] = (c.algorithmId(), {
            p: [(s.source(), s.parameterName(), s.staticValue()) for s in srcs]
            for p, srcs in c.parameterSources().items()}, sorted(c.modelOutputs()))
    return out


def check_halves(world, paths, bands=("red", "nir"), stats=("p25", "p50", "p75")):
    """Each file is its half of June: its name, bands, tags, STAC item and pixels."""
    assert [Path(p).name for p in paths] == [f"m_{n}.tif" for n in HALF_NAMES]
    for path, name in zip(paths, HALF_NAMES):
        first, last = (date.fromisoformat(d) for d in name.split("_"))
        with rasterio.open(path) as src:
            assert src.descriptions == tuple(f"{b}_{s}" for s in stats for b in bands) + (
                "count",)
            assert src.tags()["CLEARSKY_PERIOD"] == f"{name}: {first}/{last}"
        item = json.loads(Path(path).with_name(Path(path).stem + ".stac.json").read_text())
        assert item["properties"]["start_datetime"][:10] == str(first)
        assert item["properties"]["end_datetime"][:10] == str(last)
        check_statistics_cog(world, path, passes_between(world, first, last), RADIUS)


def test_saved_model_is_what_the_builder_makes(model, provider):
    fresh = build_model()
    (child,) = model.childAlgorithms().values()
    assert _sources(model) == _sources(fresh)
    assert sorted(p.name() for p in model.parameterDefinitions()) == [
        "aoi", "build:mosaic", "catalog", "end", "percentiles", "periods", "start"]
    # QGIS 3.22 declares only destination outputs as the model's outputs, but a run still
    # returns every model output of a child, so build:mosaics (the list OUTPUTS) comes back
    assert [o.name() for o in model.outputDefinitions()] == ["build:mosaic"]
    assert sorted(child.modelOutputs()) == ["mosaic", "mosaics"]
    defaults = {p.name(): p.defaultValue() for p in model.parameterDefinitions()}
    assert defaults["percentiles"] == "25,50,75" and defaults["periods"] == "season"
    assert child.algorithm() is not None  # clearsky:buildmosaic resolved


def test_model_through_qgis_process_gives_one_cog_per_period(qgis_process, qgis_process_env,
                                                              world, served, box_file,
                                                              tmp_path):
    out = tmp_path / "m.tif"
    args = ["--json", "run", str(MODEL), "--", f"aoi={box_file}", "start=2024-06-01",
            "end=2024-06-30", f"catalog={served.stac_url}", "percentiles=25,50,75",
            f"periods={HALVES}", f"build:mosaic={out}"]
    done = qgis_process(args, qgis_process_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    paths = [Path(p) for p in results["build:mosaics"]]
    assert Path(results["build:mosaic"]) == paths[0]
    check_halves(world, paths)


def test_model_in_process_with_model_inputs_and_with_static_values(model, provider, world,
                                                                   served, box_file,
                                                                   tmp_path):
    import processing

    common = {"aoi": str(box_file), "start": "2024-06-01", "end": "2024-06-30",
              "catalog": served.stac_url}
    first = tmp_path / "inputs"
    first.mkdir()
    results = processing.run(model, {**common, "percentiles": "25,50,75", "periods": HALVES,
                                     "build:mosaic": str(first / "m.tif")})
    check_halves(world, results["build:mosaics"])

    # PERCENTILES and PERIODS fixed in the model: no such inputs, the child's values used
    static = build_model(static_statistics="10,90", static_periods="month")
    saved = tmp_path / "static.model3"
    assert static.toFile(str(saved))
    loaded = QgsProcessingModelAlgorithm()
    assert loaded.fromFile(str(saved))
    assert {p.name() for p in loaded.parameterDefinitions()} == {
        "aoi", "start", "end", "catalog", "build:mosaic"}
    second = tmp_path / "static"
    second.mkdir()
    results = processing.run(loaded, {**common, "build:mosaic": str(second / "m.tif")})
    (path,) = (Path(p) for p in results["build:mosaics"])
    assert path.name == "m_2024-06.tif"
    with rasterio.open(path) as src:
        assert src.descriptions == ("red_p10", "nir_p10", "red_p90", "nir_p90", "count")
    check_statistics_cog(world, path, passes_between(world, date(2024, 6, 1),
                                                     date(2024, 6, 30)), RADIUS)


# ------------------------------------------------------------------------------ batch


ROWS = (  # what the user types into the two rows of the batch table
    {"PERCENTILES": "25,50,75", "PERIODS": HALVES, "BANDS": "red,nir", "COUNT_BAND": True,
     "NORMALISE": False, "FEATHER_M": 0.0},
    {"PERCENTILES": "10,90", "PERIODS": "month", "BANDS": "red,green,blue,nir",
     "NORMALISE": False, "FEATHER_M": 0.0},
)


def _set(panel, row: int, name: str, value) -> None:
    from processing.tools import dataobjects

    wrapper = panel.wrappers[row][panel.parameter_to_column[name]]
    wrapper.setParameterValue(value, dataobjects.createContext())


def _set_output(panel, row: int, name: str, path: Path) -> None:
    panel.tblParameters.cellWidget(row + 1, panel.parameter_to_column[name]).setValue(str(path))


def test_batch_dialog_two_rows_with_other_percentiles_and_periods(
        provider, iface_with_menus, world, served, box_file, tmp_path, monkeypatch):
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from qgis.PyQt.QtWidgets import QPushButton

    parent = iface_with_menus[0].mainWindow()
    registry = QgsApplication.processingRegistry()
    batch_file = tmp_path / "seasonal.json"
    outs = [tmp_path / "row1" / "m.tif", tmp_path / "row2" / "b.tif"]
    for out in outs:
        out.parent.mkdir()

    # 1. fill two rows through the dialog's widgets and save them with the panel's Save
    # a new algorithm per dialog: the dialog takes ownership and deletes it with itself
    dialog = BatchAlgorithmDialog(registry.createAlgorithmById("clearsky:buildmosaic"), parent)
    panel = dialog.mainWidget()
    panel.addRow()
    assert panel.batchRowCount() == 2
    for row, values in enumerate(ROWS):
        for name, value in {"AOI": str(box_file), "START_DATE": "2024-06-01",
                            "END_DATE": "2024-06-30", "CATALOG": served.stac_url,
                            "MAX_SCENE_CLOUD": 100, "MAX_AOI_CLOUD": 100, **values}.items():
            _set(panel, row, name, value)
        _set_output(panel, row, "OUTPUT", outs[row])
        _set_output(panel, row, "REPORT", outs[row].with_suffix(".csv"))
    monkeypatch.setattr("processing.gui.BatchPanel.QFileDialog.getSaveFileName",
                        lambda *a, **k: (str(batch_file), ""))
    panel.save()
    dialog.deleteLater()
    saved = json.loads(batch_file.read_text())
    assert [r["PARAMETERS"]["PERCENTILES"] for r in saved] == ["'25,50,75'", "'10,90'"]
    assert [r["PARAMETERS"]["PERIODS"] for r in saved] == [f"'{HALVES}'", "'month'"]
    assert [r["OUTPUTS"]["OUTPUT"] for r in saved] == [str(o) for o in outs]

    # 2. a new dialog opens the file (Open) and runs it (Run), loading the results
    dialog = BatchAlgorithmDialog(registry.createAlgorithmById("clearsky:buildmosaic"), parent)
    panel = dialog.mainWidget()
    monkeypatch.setattr("processing.gui.BatchPanel.QFileDialog.getOpenFileName",
                        lambda *a, **k: (str(batch_file), ""))
    panel.btnOpen.click()
    assert panel.batchRowCount() == 2
    for row, values in enumerate(ROWS):
        for name, value in values.items():
            assert panel.valueForParameter(row, name) == value, (row, name)
    panel.checkLoadLayersOnCompletion.setChecked(True)  # "Load layers on completion"
    project = QgsProject.instance()
    before = set(project.mapLayers())
    run_button = next(b for b in dialog.findChildren(QPushButton) if b.text() == "Run")
    try:
        run_button.click()  # BatchAlgorithmDialog.runAlgorithm: the rows run one by one
        dialog.saveLogToFile(str(tmp_path / "log.txt"), dialog.FormatPlainText)  # its Save Log
        log = (tmp_path / "log.txt").read_text()
        loaded = {lyr.id(): lyr for lyr in project.mapLayers().values()
                  if lyr.id() not in before}
        names = sorted(Path(lyr.source()).name for lyr in loaded.values())
    finally:
        project.removeMapLayers([i for i in project.mapLayers() if i not in before])
        dialog.deleteLater()
    assert "executions failed" not in log and log.count("correctly executed") == 2, log[-3000:]
    row1 = [outs[0].with_name(f"m_{n}.tif") for n in HALF_NAMES]
    row2 = outs[1].with_name("b_2024-06.tif")
    # one layer per period file; row 2's single month too (its OUTPUT b.tif is a pattern)
    assert names == sorted([p.name for p in row1] + [row2.name])
    check_halves(world, row1)
    with rasterio.open(row2) as src:
        assert src.descriptions == tuple(f"{b}_{s}" for s in ("p10", "p90")
                                         for b in ("red", "green", "blue", "nir"))
    check_statistics_cog(world, row2, passes_between(world, date(2024, 6, 1),
                                                     date(2024, 6, 30)), RADIUS)
    assert outs[0].with_suffix(".csv").exists() and outs[1].with_suffix(".csv").exists()
