"""The three algorithms end to end through processing.run on the offline archive.

Mosaics and clips are compared with the archive's truth (`world`); the search output with
the archive's own item JSON and the two engineered AOIs whose scene-level cloud cover lies.
"""

from __future__ import annotations

import csv
import json
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsMultiBandColorRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsVectorLayer,
)
from rasterio.features import geometry_mask
from shapely.geometry import mapping, shape

from clearsky.core.aoi import Aoi

COLLECTION = "sentinel-2-c1-l2a"
CLEAR_PASS_DAY = "2024-06-13"  # pass 4: clear_under_cloudy is clear, its tile >= 60 % cloudy
# That pass is too cloudy for the default scene filter (80 %): exactly the case where the
# strict AOI check matters, so these runs lift the lenient scene filter.
ANY_SCENE = 100
RGB = ("red", "green", "blue")


@pytest.fixture(scope="module")
def known(world):
    return world.known_aois


@pytest.fixture(scope="module")
def aoi_file(world, tmp_path_factory) -> Path:
    """GeoJSON with the two engineered AOIs, field `name`."""
    features = [
        {"type": "Feature", "properties": {"name": name},
         "geometry": mapping(k.geometry_wgs84)}
        for name, k in sorted(world.known_aois.items())
    ]
    path = tmp_path_factory.mktemp("aoi") / "known.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def one_aoi_layer(world, name: str) -> QgsVectorLayer:
    """A memory layer with one engineered AOI."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=name:string", name, "memory")
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromWkt(world.known_aois[name].geometry_wgs84.wkt))
    feature.setAttributes([name])
    assert layer.dataProvider().addFeatures([feature])[0]
    return layer


def run(alg_id: str, params: dict, **kwargs) -> dict:
    import processing

    return processing.run(alg_id, params, **kwargs)


def compare_with_truth(path, world, pass_index: int, aoi_wgs84, bands=RGB):
    """(share of AOI pixels filled, share of filled pixels within 0.01 of the truth)."""
    with rasterio.open(path) as src:
        data, transform, crs = src.read(), src.transform, src.crs.to_string()
        assert src.descriptions[: len(bands)] == bands
    shape_ = data.shape[1:]
    inside = ~geometry_mask([Aoi(aoi_wgs84).to_crs(crs)], shape_, transform)
    filled = data[0] > 0
    close = []
    for b, band in enumerate(bands):
        truth = world.reflectance(band, pass_index, crs, transform, shape_)
        ok = np.abs(data[b] / 10000.0 - truth) <= 0.01
        close.append(ok[filled & np.isfinite(truth)].mean())
    return filled[inside].mean(), min(close), data, filled & ~inside


def archive_items(archive: Path, aoi_wgs84, start: str, end: str):
    """Ids of the archive's items whose footprint meets the AOI in [start, end] (whole days)."""
    fc = json.loads((archive / "stac" / "items" / f"{COLLECTION}.json").read_text())
    out = set()
    for item in fc["features"]:
        day = item["properties"]["datetime"][:10]
        if start <= day <= end and shape(item["geometry"]).intersects(aoi_wgs84):
            out.add(item["id"])
    return out


# ------------------------------------------------------------------------ buildmosaic


def test_build_mosaic_matches_the_truth_of_the_clear_pass(provider, world, served, tmp_path):
    k = world.known_aois["clear_under_cloudy"]
    out, report = tmp_path / "clear.tif", tmp_path / "scenes.csv"
    result = run("clearsky:buildmosaic", {
        "AOI": one_aoi_layer(world, "clear_under_cloudy"), "START_DATE": CLEAR_PASS_DAY,
        "END_DATE": CLEAR_PASS_DAY, "CATALOG": served.stac_url, "OUTPUT": str(out),
        "REPORT": str(report), "MAX_SCENE_CLOUD": ANY_SCENE,
    })
    assert result == {"OUTPUT": str(out), "REPORT": str(report)}
    filled, close, data, outside = compare_with_truth(out, world, k.pass_index,
                                                      k.geometry_wgs84)
    assert data.dtype == np.uint16 and data.shape[0] == 3
    assert filled >= 0.9
    assert close >= 0.99
    assert not outside.any()  # clipped to the AOI
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32633 and src.res == (10.0, 10.0)
    rows = list(csv.DictReader(report.read_text().splitlines()))
    expected = archive_items(served.root, k.geometry_wgs84, CLEAR_PASS_DAY, CLEAR_PASS_DAY)
    assert {r["id"] for r in rows} == expected
    assert any(r["kept"] == "True" for r in rows)


def test_build_mosaic_visual_with_count_in_a_chosen_crs(provider, world, served, tmp_path):
    out = tmp_path / "visual.tif"
    result = run("clearsky:buildmosaic", {
        "AOI": one_aoi_layer(world, "cloudy_under_clear"), "START_DATE": "2024-06-01",
        "END_DATE": "2024-06-30", "CATALOG": served.stac_url, "METHOD": 1,
        "OUTPUT_TYPE": 1, "COUNT_BAND": True, "TARGET_CRS": "EPSG:25833", "RESOLUTION": 20,
        "CLIP_TO_AOI": False, "OUTPUT": str(out),
    })
    assert Path(result["REPORT"]) == tmp_path / "visual.report.csv"
    assert Path(result["REPORT"]).exists()
    with rasterio.open(out) as src:
        data = src.read()
        assert src.crs.to_epsg() == 25833 and src.res == (20.0, 20.0)
        assert src.descriptions == ("red", "green", "blue", "count")
        assert src.dtypes[0] == "uint8"
    rgb, count = data[:3], data[3]
    assert (rgb[:, count > 0] >= 1).all()  # 1..255 where observed, 0 only for nodata
    assert (count[rgb[0] > 0] >= 1).all() and count.max() <= len(world.passes)
    assert (rgb[0] > 0).mean() > 0.95  # CLIP_TO_AOI off: the whole rectangle is filled


def test_loaded_mosaic_is_styled_as_true_colour(provider, world, served, tmp_path):
    import processing

    out = tmp_path / "styled.tif"
    processing.runAndLoadResults("clearsky:buildmosaic", {
        "AOI": one_aoi_layer(world, "clear_under_cloudy"), "START_DATE": CLEAR_PASS_DAY,
        "END_DATE": CLEAR_PASS_DAY, "CATALOG": served.stac_url, "OUTPUT": str(out),
        "MAX_SCENE_CLOUD": ANY_SCENE,
    })
    layers = [lyr for lyr in QgsProject.instance().mapLayers().values()
              if Path(lyr.source()) == out]
    try:
        assert len(layers) == 1
        renderer = layers[0].renderer()
        assert isinstance(renderer, QgsMultiBandColorRenderer)
        assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3)
        ce = renderer.redContrastEnhancement()
        assert (ce.minimumValue(), ce.maximumValue()) == pytest.approx((0.0, 0.3))
    finally:
        QgsProject.instance().removeMapLayers([lyr.id() for lyr in layers])


def test_cancelled_run_raises_and_leaves_no_file(provider, world, served, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    feedback = QgsProcessingFeedback()
    # Cancel once the search is done, while blocks are about to be written.
    feedback.progressChanged.connect(lambda p: feedback.cancel() if p >= 20 else None)
    with pytest.raises(QgsProcessingException) as info:
        run("clearsky:buildmosaic", {
            "AOI": one_aoi_layer(world, "clear_under_cloudy"), "START_DATE": "2024-06-01",
            "END_DATE": "2024-06-30", "CATALOG": served.stac_url,
            "OUTPUT": str(folder / "cancelled.tif"),
        }, feedback=feedback)
    assert "Cancelled" in str(info.value) and "no output was written" in str(info.value)
    assert list(folder.iterdir()) == []


def test_batch_two_aois_by_two_date_ranges_gives_four_styled_mosaics(
    provider, world, served, tmp_path
):
    """What the batch dialog does: one context, four runs, layers loaded at the end."""
    from processing.gui.Postprocessing import handleAlgorithmResults

    project = QgsProject.instance()
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    ranges = [("2024-06-01", "2024-06-14"), ("2024-06-15", "2024-06-30")]
    outputs = {}
    alg = QgsApplication.processingRegistry().createAlgorithmById("clearsky:buildmosaic")
    for name in sorted(world.known_aois):
        for start, end in ranges:
            path = tmp_path / f"{name}_{start}.tif"
            run(alg, {
                "AOI": one_aoi_layer(world, name), "START_DATE": start, "END_DATE": end,
                "CATALOG": served.stac_url, "MAX_AOI_CLOUD": 100,
                "OUTPUT": QgsProcessingOutputLayerDefinition(str(path), project),
            }, context=context, feedback=feedback)
            outputs[(name, start)] = path
    assert len(context.layersToLoadOnCompletion()) == 4
    assert handleAlgorithmResults(alg, context, feedback) is not False
    loaded = [lyr for lyr in project.mapLayers().values()
              if Path(lyr.source()) in set(outputs.values())]
    try:
        assert len(loaded) == 4
        assert all(isinstance(lyr.renderer(), QgsMultiBandColorRenderer) for lyr in loaded)
    finally:
        project.removeMapLayers([lyr.id() for lyr in loaded])
    arrays = {key: rasterio.open(p).read() for key, p in outputs.items()}
    for name in world.known_aois:
        early, late = arrays[(name, ranges[0][0])], arrays[(name, ranges[1][0])]
        assert early.shape == late.shape
        assert (early[0] > 0).mean() > 0.5 and (late[0] > 0).mean() > 0.5
        assert not np.array_equal(early, late)  # other dates, other pixels
    bounds = {name: rasterio.open(outputs[(name, ranges[0][0])]).bounds
              for name in world.known_aois}
    assert bounds["clear_under_cloudy"] != bounds["cloudy_under_clear"]


# ------------------------------------------------------------------------ searchscenes


def _features(result) -> list:
    layer = result["OUTPUT"]
    if isinstance(layer, str):
        layer = QgsVectorLayer(layer, "out", "ogr")
    return [({f.name(): feat[f.name()] for f in layer.fields()}, feat.geometry())
            for feat in layer.getFeatures()], layer


def test_search_scenes_tells_scene_cloud_from_aoi_cloud(provider, world, served, archive):
    for name, expect_kept in (("clear_under_cloudy", True), ("cloudy_under_clear", False)):
        k = world.known_aois[name]
        day = world.passes[k.pass_index].datetime.date().isoformat()
        result = run("clearsky:searchscenes", {
            "AOI": one_aoi_layer(world, name), "START_DATE": "2024-06-01",
            "END_DATE": "2024-06-30", "CATALOG": served.stac_url, "OUTPUT": "TEMPORARY_OUTPUT",
            "MAX_SCENE_CLOUD": ANY_SCENE,
        })
        rows, layer = _features(result)
        assert layer.crs().authid() == "EPSG:4326"
        assert [f.name() for f in layer.fields()] == [
            "id", "datetime", "platform", "tile", "scene_cloud", "aoi_coverage", "aoi_cloud",
            "kept", "reason",
        ]
        expected = archive_items(archive, k.geometry_wgs84, "2024-06-01", "2024-06-30")
        assert {r["id"] for r, _ in rows} == expected
        (row, geom), = [(r, g) for r, g in rows
                        if r["tile"] == k.tile and r["datetime"].startswith(day)]
        assert datetime.fromisoformat(row["datetime"]).date() == date.fromisoformat(day)
        assert geom.intersects(geom.fromWkt(k.geometry_wgs84.wkt))
        if expect_kept:
            assert row["scene_cloud"] >= 60 and row["aoi_cloud"] <= 5 and row["kept"]
        else:
            assert row["scene_cloud"] <= 10 and row["aoi_cloud"] >= 60 and not row["kept"]
            assert "AOI cloud" in row["reason"]


# ------------------------------------------------------------------------ clearclips


def test_clear_clips_writes_only_clear_dates_per_aoi(provider, world, served, aoi_file, tmp_path):
    folder = tmp_path / "clips"
    result = run("clearsky:clearclips", {
        "AOI": str(aoi_file), "NAME_FIELD": "name", "START_DATE": "2024-06-01",
        "END_DATE": "2024-06-30", "CATALOG": served.stac_url, "BANDS": "red,green,blue",
        "OUTPUT_FOLDER": str(folder), "OUTPUT": "TEMPORARY_OUTPUT", "MAX_SCENE_CLOUD": ANY_SCENE,
    })
    rows, layer = _features(result)
    assert [f.name() for f in layer.fields()] == [
        "aoi_name", "scene_id", "datetime", "aoi_cloud", "path"]
    assert rows and all(r["aoi_cloud"] <= 2 for r, _ in rows)
    assert all(Path(r["path"]).parent == folder and Path(r["path"]).exists() for r, _ in rows)
    assert Path(result["CSV"]) == folder / "clear_clips.csv"
    assert len(list(csv.DictReader(Path(result["CSV"]).read_text().splitlines()))) == len(rows)
    clear = world.known_aois["clear_under_cloudy"]
    cloudy = world.known_aois["cloudy_under_clear"]
    clear_day = world.passes[clear.pass_index].datetime.date().isoformat()
    cloudy_day = world.passes[cloudy.pass_index].datetime.date().isoformat()
    by_aoi = {}
    for r, _ in rows:
        by_aoi.setdefault(r["aoi_name"], []).append(r)
    assert any(r["datetime"].startswith(clear_day) for r in by_aoi["clear_under_cloudy"])
    assert not any(r["datetime"].startswith(cloudy_day)
                   for r in by_aoi.get("cloudy_under_clear", []))
    (clip,) = [r for r in by_aoi["clear_under_cloudy"] if r["datetime"].startswith(clear_day)]
    filled, close, _, _ = compare_with_truth(clip["path"], world, clear.pass_index,
                                             clear.geometry_wgs84)
    assert filled >= 0.9 and close >= 0.99
