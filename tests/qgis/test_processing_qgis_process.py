"""The algorithms headless through `qgis_process.bin run clearsky:... --json` (a subprocess).

The environment (throw-away profile with Clearsky enabled) comes from D1's
`qgis_process_env` fixture; see tests/qgis/qgis_process_env.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.features import geometry_mask
from shapely.geometry import mapping, shape

from clearsky.core.aoi import Aoi

COLLECTION = "sentinel-2-c1-l2a"


def run_json(qgis_process, env, alg: str, **params) -> dict:
    """Run one algorithm; the parsed --json answer, or a failure showing stderr."""
    args = ["--json", "run", alg, "--", *(f"{k}={v}" for k, v in params.items())]
    done = qgis_process(args, env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.index("{"):])


def run_failing(qgis_process, env, alg: str, **params) -> str:
    args = ["run", alg, "--", *(f"{k}={v}" for k, v in params.items())]
    done = qgis_process(args, env, timeout=300)
    assert done.returncode != 0
    return done.stdout + done.stderr


@pytest.fixture
def env(qgis_process_env):
    return qgis_process_env()


@pytest.fixture
def box_aoi(tmp_path) -> Path:
    path = tmp_path / "box.geojson"
    ring = [[13.50, 52.30], [13.52, 52.30], [13.52, 52.32], [13.50, 52.32], [13.50, 52.30]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                           "coordinates": [ring]}}]}))
    return path


def known_aoi_file(world, tmp_path, names) -> Path:
    path = tmp_path / "known.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": n},
         "geometry": mapping(world.known_aois[n].geometry_wgs84)} for n in names]}))
    return path


# --------------------------------------------------------------- no archive needed


def test_help_lists_every_parameter(qgis_process, env):
    done = qgis_process(["help", "clearsky:buildmosaic"], env, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("AOI", "START_DATE", "END_DATE", "CATALOG", "COLLECTION", "MAX_SCENE_CLOUD",
                 "MAX_AOI_CLOUD", "METHOD", "PERCENTILE", "BANDS", "OUTPUT_TYPE", "COUNT_BAND",
                 "TARGET_CRS", "RESOLUTION", "CLIP_TO_AOI", "OUTPUT", "REPORT", "INVALID_SCL",
                 "DILATION", "CLOUD_MASK", "CLOUD_PROB", "TARGET_DATE", "SOURCE_BAND", "EXECUTOR",
                 "RESUME", "PERCENTILES", "PERIODS", "MAX_READ_GB", "MAX_OUTPUT_GIB"):
        assert f"{name}:" in done.stdout, name


def test_unreachable_catalog_and_bad_dates_give_plain_messages(qgis_process, env, box_aoi,
                                                               tmp_path):
    out = tmp_path / "m.tif"
    text = run_failing(qgis_process, env, "clearsky:buildmosaic", AOI=box_aoi,
                       START_DATE="2024-06-01", END_DATE="2024-06-30",
                       CATALOG="http://127.0.0.1:9/", OUTPUT=out)
    assert "Could not reach the STAC API at http://127.0.0.1:9" in text
    assert "Traceback" not in text
    text = run_failing(qgis_process, env, "clearsky:searchscenes", AOI=box_aoi,
                       START_DATE="2024-06-30", END_DATE="2024-06-01",
                       OUTPUT=tmp_path / "f.gpkg")
    assert "The end date 2024-06-01 is before the start date 2024-06-30" in text
    assert not out.exists() and not (tmp_path / "f.gpkg").exists()


# --------------------------------------------------------------- on the offline archive


def test_build_mosaic_headless_matches_truth(qgis_process, env, world, served, tmp_path):
    k = world.known_aois["clear_under_cloudy"]
    day = world.passes[k.pass_index].datetime.date().isoformat()
    out = tmp_path / "headless.tif"
    answer = run_json(qgis_process, env, "clearsky:buildmosaic",
                      AOI=known_aoi_file(world, tmp_path, ["clear_under_cloudy"]),
                      START_DATE=day, END_DATE=day, CATALOG=served.stac_url, BANDS="red,nir",
                      MAX_SCENE_CLOUD=100, OUTPUT=out)
    assert Path(answer["results"]["OUTPUT"]) == out
    assert Path(answer["results"]["REPORT"]).exists()
    with rasterio.open(out) as src:
        data, transform, crs = src.read(), src.transform, src.crs.to_string()
        assert src.descriptions == ("red", "nir")
    inside = ~geometry_mask([Aoi(k.geometry_wgs84).to_crs(crs)], data.shape[1:], transform)
    filled = data[0] > 0
    assert filled[inside].mean() >= 0.9 and not (filled & ~inside).any()
    for b, band in enumerate(("red", "nir")):
        truth = world.reflectance(band, k.pass_index, crs, transform, data.shape[1:])
        ok = np.abs(data[b] / 10000.0 - truth) <= 0.01
        assert ok[filled & np.isfinite(truth)].mean() >= 0.99, band


def test_percentiles_and_periods_headless(qgis_process, env, world, served, tmp_path):
    out = tmp_path / "halves.tif"
    answer = run_json(qgis_process, env, "clearsky:buildmosaic",
                      AOI=known_aoi_file(world, tmp_path, ["clear_under_cloudy"]),
                      START_DATE="2024-06-01", END_DATE="2024-06-30", CATALOG=served.stac_url,
                      BANDS="red,nir", MAX_SCENE_CLOUD=100, PERCENTILES="25,50,75",
                      PERIODS="2024-06-01/2024-06-15,2024-06-16/2024-06-30", OUTPUT=out)
    outputs = [Path(p) for p in answer["results"]["OUTPUTS"]]
    assert [p.name for p in outputs] == ["halves_2024-06-01_2024-06-15.tif",
                                         "halves_2024-06-16_2024-06-30.tif"]
    assert Path(answer["results"]["OUTPUT"]) == outputs[0]
    for path in outputs:
        assert path.with_name(path.stem + ".stac.json").exists()
        with rasterio.open(path) as src:
            assert src.descriptions == ("red_p25", "nir_p25", "red_p50", "nir_p50", "red_p75",
                                        "nir_p75")


def test_search_scenes_headless_writes_footprints(qgis_process, env, world, served, archive,
                                                  tmp_path):
    from qgis.core import QgsVectorLayer

    out = tmp_path / "footprints.gpkg"
    aoi = known_aoi_file(world, tmp_path, ["cloudy_under_clear"])
    answer = run_json(qgis_process, env, "clearsky:searchscenes", AOI=aoi,
                      START_DATE="2024-06-01", END_DATE="2024-06-30",
                      CATALOG=served.stac_url, OUTPUT=out)
    layer = QgsVectorLayer(answer["results"]["OUTPUT"], "f", "ogr")
    assert layer.isValid() and layer.crs().authid() == "EPSG:4326"
    fc = json.loads((archive / "stac" / "items" / f"{COLLECTION}.json").read_text())
    geom = world.known_aois["cloudy_under_clear"].geometry_wgs84
    expected = {i["id"] for i in fc["features"] if shape(i["geometry"]).intersects(geom)}
    got = {f["id"]: f for f in layer.getFeatures()}
    assert set(got) == expected
    assert any(not f["kept"] and "AOI cloud" in f["reason"] for f in got.values())


def test_clear_clips_headless(qgis_process, env, world, served, tmp_path):
    folder, table = tmp_path / "clips", tmp_path / "clips.csv"
    aoi = known_aoi_file(world, tmp_path, ["clear_under_cloudy", "cloudy_under_clear"])
    answer = run_json(qgis_process, env, "clearsky:clearclips", AOI=aoi, NAME_FIELD="name",
                      START_DATE="2024-06-01", END_DATE="2024-06-30",
                      CATALOG=served.stac_url, MAX_SCENE_CLOUD=100, OUTPUT_FOLDER=folder,
                      OUTPUT=table)
    assert Path(answer["results"]["OUTPUT_FOLDER"]) == folder
    rows = list(csv.DictReader(Path(answer["results"]["OUTPUT"]).read_text().splitlines()))
    assert rows
    assert {r["aoi_name"] for r in rows} <= {"clear_under_cloudy", "cloudy_under_clear"}
    for r in rows:
        assert float(r["aoi_cloud"]) <= 2
        with rasterio.open(r["path"]) as src:
            assert src.count == 3 and (src.read(1) > 0).any()
    k = world.known_aois["clear_under_cloudy"]
    day = world.passes[k.pass_index].datetime.date().isoformat()
    assert any(r["aoi_name"] == "clear_under_cloudy" and r["datetime"].startswith(day)
               for r in rows)


def test_build_mosaic_headless_on_a_local_dask_cluster(qgis_process, env, world, served,
                                                       tmp_path):
    """EXECUTOR=local:2 under qgis_process: two worker processes, the same bytes as threads."""
    aoi = known_aoi_file(world, tmp_path, ["clear_under_cloudy", "cloudy_under_clear"])
    common = dict(AOI=aoi, START_DATE="2024-06-01", END_DATE="2024-06-30",
                  CATALOG=served.stac_url, MAX_SCENE_CLOUD=100, METHOD=1, CLIP_TO_AOI="false")
    threads, dask = tmp_path / "threads.tif", tmp_path / "dask.tif"
    run_json(qgis_process, env, "clearsky:buildmosaic", OUTPUT=threads, **common)
    answer = run_json(qgis_process, env, "clearsky:buildmosaic", OUTPUT=dask,
                      EXECUTOR="local:2", **common)
    assert Path(answer["results"]["OUTPUT"]) == dask
    with rasterio.open(threads) as a, rasterio.open(dask) as b:
        assert (a.read(1) > 0).mean() > 0.5
        assert np.array_equal(a.read(), b.read())
