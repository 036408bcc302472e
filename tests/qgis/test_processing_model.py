"""The saved graphical model search_and_build.model3: searchscenes, then buildmosaic.

`build_model()` makes the model with the QGIS model API; the saved file is its `toFile()`
output (rewrite it with `CLEARSKY_WRITE_MODEL=1` set when running this module). The
tests check the file still matches the builder, then load it as a user would and run it
headless, in process and through qgis_process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import rasterio
from qgis.core import (
    Qgis,
    QgsGeometry,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildDependency,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QPointF
from shapely.geometry import mapping

from clearsky.core.params import DEFAULT_COLLECTION, EARTH_SEARCH
from clearsky.provider.compat import DATE_ONLY, NUMBER_DOUBLE, SOURCE_POLYGON

MODEL = Path(__file__).resolve().parent / "search_and_build.model3"
SHARED = {"AOI": "aoi", "START_DATE": "start", "END_DATE": "end", "CATALOG": "catalog",
          "MAX_AOI_CLOUD": "max_aoi_cloud"}


BUILD_STATIC = {
    "COLLECTION": DEFAULT_COLLECTION, "MAX_SCENE_CLOUD": 80.0, "METHOD": 0, "PERCENTILE": 25.0,
    "BANDS": "red,green,blue", "OUTPUT_TYPE": 0, "COUNT_BAND": False, "RESOLUTION": 10.0,
    "CLIP_TO_AOI": True,
}


def build_model() -> QgsProcessingModelAlgorithm:
    """Model inputs feed both children; buildmosaic runs after searchscenes.

    The Clearsky provider must be registered (the children resolve their algorithms).
    """
    model = QgsProcessingModelAlgorithm("Search scenes, then build a mosaic", "Clearsky", "")
    model.setName("search_and_build")
    inputs = [
        QgsProcessingParameterFeatureSource("aoi", "Area of interest", [SOURCE_POLYGON]),
        QgsProcessingParameterDateTime("start", "Start date", DATE_ONLY),
        QgsProcessingParameterDateTime("end", "End date", DATE_ONLY),
        QgsProcessingParameterString("catalog", "STAC catalog URL", EARTH_SEARCH),
        QgsProcessingParameterNumber("max_aoi_cloud", "Maximum cloud over the AOI (%)",
                                     NUMBER_DOUBLE, 50.0, False, 0, 100),
    ]
    for row, definition in enumerate(inputs):
        component = QgsProcessingModelParameter(definition.name())
        component.setPosition(QPointF(120, 50 + 70 * row))
        model.addModelParameter(definition, component)

    def child(alg_id, child_id, title, y, statics, output):
        c = QgsProcessingModelChildAlgorithm(alg_id)
        c.setChildId(child_id)
        c.setDescription(title)
        c.setPosition(QPointF(420, y))
        for param, model_input in SHARED.items():
            c.addParameterSources(
                param, [QgsProcessingModelChildParameterSource.fromModelParameter(model_input)])
        for param, value in statics.items():
            c.addParameterSources(
                param, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
        name, title = output
        out = QgsProcessingModelOutput(name, title)
        out.setChildId(child_id)
        out.setChildOutputName("OUTPUT")
        out.setPosition(QPointF(620, y))
        c.setModelOutputs({name: out})
        return c

    search = child("clearsky:searchscenes", "search", "Search scenes and check AOI clouds", 120,
                   {k: BUILD_STATIC[k] for k in ("COLLECTION", "MAX_SCENE_CLOUD")},
                   ("footprints", "Scene footprints"))
    build = child("clearsky:buildmosaic", "build", "Build cloud-free mosaic", 300, BUILD_STATIC,
                  ("mosaic", "Cloud-free mosaic"))
    build.setDependencies([QgsProcessingModelChildDependency("search")])
    model.addChildAlgorithm(search)
    model.addChildAlgorithm(build)
    model.updateDestinationParameters()
    model.setHelpContent({"ALG_DESC": (
        "Lists the scenes over the AOI with their AOI cloud share (footprints), then builds "
        "the cloud-free mosaic from the same filters.")})
    return model


@pytest.fixture
def model(provider) -> QgsProcessingModelAlgorithm:
    loaded = QgsProcessingModelAlgorithm()
    assert loaded.fromFile(str(MODEL))
    return loaded


def aoi_file(world, tmp_path) -> Path:
    path = tmp_path / "aoi.geojson"
    geom = world.known_aois["clear_under_cloudy"].geometry_wgs84
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": mapping(geom)}]}))
    return path


def _children(model) -> dict:
    """Each child's algorithm, sources (as text) and dependencies: what the model does."""
    out = {}
    for cid, c in model.childAlgorithms().items():
        sources = {p: [(s.source(), s.parameterName(), s.staticValue()) for s in srcs]
                   for p, srcs in c.parameterSources().items()}
        out[cid] = (c.algorithmId(), sources, [d.childId for d in c.dependencies()],
                    sorted(c.modelOutputs()))
    return out


def test_saved_model_is_what_the_builder_makes(model, provider):
    fresh = build_model()
    if os.environ.get("CLEARSKY_WRITE_MODEL"):
        assert fresh.toFile(str(MODEL))
        model = QgsProcessingModelAlgorithm()
        assert model.fromFile(str(MODEL))
    assert _children(model) == _children(fresh)
    assert sorted(p.name() for p in model.parameterDefinitions()) == sorted(
        p.name() for p in fresh.parameterDefinitions())


def test_model_chains_search_then_build_on_shared_inputs(model):
    children = model.childAlgorithms()
    assert {cid: c.algorithmId() for cid, c in children.items()} == {
        "search": "clearsky:searchscenes", "build": "clearsky:buildmosaic",
    }
    assert all(c.algorithm() is not None for c in children.values())
    assert [d.childId for d in children["build"].dependencies()] == ["search"]
    new_enum = getattr(Qgis, "ProcessingModelChildParameterSource", None)  # QGIS >= 3.34
    from_model = (new_enum.ModelParameter if new_enum is not None
                  else QgsProcessingModelChildParameterSource.Source.ModelParameter)
    for child in children.values():
        sources = child.parameterSources()
        for param, model_input in SHARED.items():
            (source,) = sources[param]
            assert source.source() == from_model
            assert source.parameterName() == model_input
    assert sorted(p.name() for p in model.parameterDefinitions()) == sorted(
        [*SHARED.values(), "build:mosaic", "search:footprints"])
    assert sorted(o.name() for o in model.outputDefinitions()) == [
        "build:mosaic", "search:footprints"]


def test_model_runs_headless_and_the_mosaic_uses_only_kept_scenes(model, world, served,
                                                                 tmp_path):
    import processing

    k = world.known_aois["clear_under_cloudy"]
    mosaic = tmp_path / "model.tif"
    results = processing.run(model, {
        "aoi": str(aoi_file(world, tmp_path)), "start": "2024-06-01", "end": "2024-06-30",
        "catalog": served.stac_url, "max_aoi_cloud": 50,
        "build:mosaic": str(mosaic), "search:footprints": str(tmp_path / "footprints.gpkg"),
    })
    footprints = QgsVectorLayer(str(results["search:footprints"]), "f", "ogr")
    assert footprints.isValid() and footprints.featureCount() > 0
    kept = {f["id"]: f.geometry() for f in footprints.getFeatures() if f["kept"]}
    with rasterio.open(results["build:mosaic"]) as src:
        used = set(src.tags()["CLEARSKY_SCENES"].split(","))
        assert (src.read(1) > 0).any()
    assert used and used <= set(kept)  # the mosaic drew only on scenes the search kept
    aoi = QgsGeometry.fromWkt(k.geometry_wgs84.wkt)
    assert all(kept[scene_id].intersects(aoi) for scene_id in used)


def test_model_runs_through_qgis_process(qgis_process, qgis_process_env, world, served,
                                         tmp_path):
    mosaic, footprints = tmp_path / "qp.tif", tmp_path / "qp.gpkg"
    args = ["--json", "run", str(MODEL), "--", f"aoi={aoi_file(world, tmp_path)}",
            "start=2024-06-01", "end=2024-06-30", f"catalog={served.stac_url}",
            "max_aoi_cloud=50", f"build:mosaic={mosaic}", f"search:footprints={footprints}"]
    done = qgis_process(args, qgis_process_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    assert Path(results["build:mosaic"]) == mosaic
    with rasterio.open(mosaic) as src:
        assert src.descriptions == ("red", "green", "blue") and (src.read(1) > 0).any()
    assert QgsVectorLayer(str(footprints), "f", "ogr").featureCount() > 0
