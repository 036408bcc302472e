"""The Processing provider without the archive: registration, parameters, validation, styling."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsMultiBandColorRenderer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRuleBasedRenderer,
    QgsSingleBandGrayRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QTime
from rasterio.transform import from_origin

from clearsky.core.params import DEFAULT_COLLECTION, EARTH_SEARCH
from clearsky.provider.clear_clips import unique_names
from clearsky.provider.compat import (
    ALG_CAN_CANCEL,
    ALG_SUPPORTS_BATCH,
    DATE_ONLY,
    FLAG_OPTIONAL,
    SOURCE_POLYGON,
)
from clearsky.provider.postprocessors import MosaicStyler
from clearsky.ui.layers import rgb_band_numbers, style_footprints_layer, style_mosaic_layer

BUILD = [
    "AOI", "START_DATE", "END_DATE", "CATALOG", "COLLECTION", "MAX_SCENE_CLOUD", "MAX_AOI_CLOUD",
    "INVALID_SCL", "DILATION", "CLOUD_MASK", "CLOUD_PROB", "METHOD", "PERCENTILE", "PERCENTILES",
    "BANDS", "OUTPUT_TYPE", "COUNT_BAND", "SOURCE_BAND", "NORMALISE", "FEATHER_M", "TARGET_DATE",
    "TARGET_CRS", "RESOLUTION", "CLIP_TO_AOI", "PERIODS", "MAX_READ_GB", "MAX_OUTPUT_GIB",
    "MEMORY_MB", "EXECUTOR", "RESUME", "OUTPUT", "REPORT",
]
SEARCH = ["AOI", "START_DATE", "END_DATE", "CATALOG", "COLLECTION", "MAX_SCENE_CLOUD",
          "MAX_AOI_CLOUD", "INVALID_SCL", "DILATION", "CLOUD_MASK", "CLOUD_PROB", "MEMORY_MB",
          "OUTPUT"]
CLIPS = ["AOI", "NAME_FIELD", "START_DATE", "END_DATE", "CATALOG", "COLLECTION",
         "MAX_SCENE_CLOUD", "MAX_AOI_CLOUD", "INVALID_SCL", "DILATION", "CLOUD_MASK", "CLOUD_PROB",
         "MEMORY_MB", "BANDS", "OUTPUT_FOLDER", "OUTPUT"]
BERLIN = "POLYGON((13.50 52.30, 13.52 52.30, 13.52 52.32, 13.50 52.32, 13.50 52.30))"


@pytest.fixture
def run(provider):
    import processing

    def call(alg_id: str, params: dict, **kwargs):
        return processing.run(alg_id, params, **kwargs)

    return call


def polygon_layer(wkts, crs="EPSG:4326", names=None) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"Polygon?crs={crs}&field=name:string", "aoi", "memory")
    features = []
    for i, wkt in enumerate(wkts):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromWkt(wkt))
        f.setAttributes([names[i] if names else None])
        features.append(f)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer


def base_params(tmp_path, **over) -> dict:
    params = {
        "AOI": polygon_layer([BERLIN]), "START_DATE": "2024-06-01", "END_DATE": "2024-06-30",
        "CATALOG": "http://127.0.0.1:9/stac", "OUTPUT": str(tmp_path / "mosaic.tif"),
    }
    params.update(over)
    return params


def algorithm(alg_id: str) -> QgsProcessingAlgorithm:
    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    assert alg is not None, alg_id
    return alg


def context() -> QgsProcessingContext:
    ctx = QgsProcessingContext()
    ctx.setProject(QgsProject.instance())
    ctx.setFeedback(QgsProcessingFeedback())
    return ctx


# ------------------------------------------------------------------ registration, contract


def test_provider_is_registered_with_id_name_and_icon(provider):
    registered = QgsApplication.processingRegistry().providerById("clearsky")
    assert registered is not None
    assert registered.name() == "Clearsky"
    assert not registered.icon().isNull()
    assert registered.svgIconPath().endswith("resources/icon.svg")
    assert sorted(a.id() for a in registered.algorithms()) == [
        "clearsky:buildmosaic", "clearsky:clearclips", "clearsky:searchscenes",
    ]
    assert registered.supportedOutputRasterLayerExtensions() == ["tif"]


@pytest.mark.parametrize(
    "alg_id,names,outputs,title",
    [
        ("clearsky:buildmosaic", BUILD, ["OUTPUT", "REPORT", "OUTPUTS"],
         "Build cloud-free mosaic"),
        ("clearsky:searchscenes", SEARCH, ["OUTPUT"], "Search scenes and check AOI clouds"),
        ("clearsky:clearclips", CLIPS, ["OUTPUT_FOLDER", "OUTPUT", "CSV"],
         "Download clear AOI clips"),
    ],
)
def test_algorithms_have_exactly_the_public_parameter_names(provider, alg_id, names, outputs,
                                                            title):
    alg = algorithm(alg_id)
    assert [p.name() for p in alg.parameterDefinitions()] == names
    assert [o.name() for o in alg.outputDefinitions()] == outputs
    assert alg.displayName() == title
    assert alg.name() == alg_id.split(":")[1]
    help_text = alg.shortHelpString()
    for name in names:
        assert f"<b>{name}</b>" in help_text, name
    clone = alg.createInstance()
    assert type(clone) is type(alg) and clone is not alg
    assert alg.flags() & ALG_CAN_CANCEL
    assert alg.flags() & ALG_SUPPORTS_BATCH


def test_build_mosaic_defaults(provider):
    alg = algorithm("clearsky:buildmosaic")
    d = {p.name(): p for p in alg.parameterDefinitions()}
    assert d["CATALOG"].defaultValue() == EARTH_SEARCH
    assert d["COLLECTION"].defaultValue() == DEFAULT_COLLECTION == "sentinel-2-c1-l2a"
    assert d["MAX_SCENE_CLOUD"].defaultValue() == 80
    assert d["MAX_AOI_CLOUD"].defaultValue() == 50
    assert d["PERCENTILE"].defaultValue() == 25
    assert d["BANDS"].defaultValue() == "red,green,blue"
    assert d["RESOLUTION"].defaultValue() == 10
    assert d["CLIP_TO_AOI"].defaultValue() is True
    assert d["COUNT_BAND"].defaultValue() is False
    assert d["METHOD"].options() == ["Best available pixel", "Median", "Percentile"]
    assert d["METHOD"].defaultValue() == 0
    assert len(d["OUTPUT_TYPE"].options()) == 2 and d["OUTPUT_TYPE"].defaultValue() == 0
    assert d["START_DATE"].dataType() == DATE_ONLY
    assert d["TARGET_CRS"].flags() & FLAG_OPTIONAL
    assert d["REPORT"].flags() & FLAG_OPTIONAL
    assert d["REPORT"].type() == "fileDestination" and "*.csv" in d["REPORT"].fileFilter()
    assert d["OUTPUT"].type() == "rasterDestination"
    assert d["AOI"].dataTypes() == [SOURCE_POLYGON]


def test_clear_clips_and_search_defaults(provider):
    clips_alg = algorithm("clearsky:clearclips")
    clips = {p.name(): p for p in clips_alg.parameterDefinitions()}
    assert clips["MAX_AOI_CLOUD"].defaultValue() == 2
    assert clips["NAME_FIELD"].parentLayerParameterName() == "AOI"
    assert clips["NAME_FIELD"].flags() & FLAG_OPTIONAL
    assert clips["OUTPUT_FOLDER"].type() == "folderDestination"
    search_alg = algorithm("clearsky:searchscenes")
    search = {p.name(): p for p in search_alg.parameterDefinitions()}
    assert search["MAX_AOI_CLOUD"].defaultValue() == 50
    assert search["OUTPUT"].type() == "sink"


# ------------------------------------------------------------------ validation messages


def _error(run, alg_id, params) -> str:
    with pytest.raises(QgsProcessingException) as info:
        run(alg_id, params)
    return str(info.value)


@pytest.mark.parametrize("alg_id", ["clearsky:buildmosaic", "clearsky:searchscenes",
                                    "clearsky:clearclips"])
def test_no_aoi_feature_is_refused_with_a_plain_message(run, tmp_path, alg_id):
    params = base_params(tmp_path, AOI=polygon_layer([]), OUTPUT_FOLDER=str(tmp_path / "c"))
    if alg_id != "clearsky:buildmosaic":
        params["OUTPUT"] = "TEMPORARY_OUTPUT"
    message = _error(run, alg_id, params)
    assert "The AOI layer has no polygon feature" in message


def test_selected_features_only_with_nothing_selected_is_refused(run, tmp_path):
    layer = polygon_layer([BERLIN])
    QgsProject.instance().addMapLayer(layer)
    try:
        source = QgsProcessingFeatureSourceDefinition(layer.id(), True)
        message = _error(run, "clearsky:buildmosaic", base_params(tmp_path, AOI=source))
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    assert "Selected features only" in message


def test_end_before_start_is_refused(run, tmp_path):
    message = _error(run, "clearsky:buildmosaic", base_params(tmp_path, END_DATE="2024-05-01"))
    assert "The end date 2024-05-01 is before the start date 2024-06-01" in message


def test_unknown_band_is_refused_listing_the_known_names(run, tmp_path):
    message = _error(run, "clearsky:buildmosaic", base_params(tmp_path, BANDS="red, purple"))
    assert "Unknown band name(s) in BANDS: purple" in message
    assert "nir" in message and "swir16" in message


def test_unknown_band_is_refused_for_clear_clips(run, tmp_path):
    params = base_params(tmp_path, BANDS="B04", OUTPUT_FOLDER=str(tmp_path / "c"),
                         OUTPUT="TEMPORARY_OUTPUT")
    assert "Unknown band name(s) in BANDS: b04" in _error(run, "clearsky:clearclips", params)


def test_visual_output_needs_red_green_blue(run, tmp_path):
    params = base_params(tmp_path, BANDS="nir,red,green", OUTPUT_TYPE=1)
    assert "needs the bands red, green, blue" in _error(run, "clearsky:buildmosaic", params)


def test_catalog_must_be_a_url(run, tmp_path):
    params = base_params(tmp_path, CATALOG="earth-search")
    message = _error(run, "clearsky:searchscenes", {**params, "OUTPUT": "TEMPORARY_OUTPUT"})
    assert "must be a STAC API URL starting with http(s)://" in message


def test_garbage_date_is_refused(run, tmp_path):
    message = _error(run, "clearsky:buildmosaic", base_params(tmp_path, START_DATE="June"))
    assert "START_DATE" in message


def test_unreachable_catalog_gives_a_clear_message_and_no_output(run, tmp_path):
    params = base_params(tmp_path)
    message = _error(run, "clearsky:buildmosaic", params)
    assert "Could not reach the STAC API at http://127.0.0.1:9" in message
    assert "Traceback" not in message
    assert list(tmp_path.iterdir()) == []


def test_output_must_be_a_geotiff(run, tmp_path):
    params = base_params(tmp_path, OUTPUT=str(tmp_path / "mosaic.vrt"))
    message = _error(run, "clearsky:buildmosaic", params)
    assert "must be a GeoTIFF ending in .tif" in message
    assert not (tmp_path / "mosaic.vrt").exists()


# ------------------------------------------------------------------ how parameters are read


def test_dates_accept_qdate_qdatetime_and_iso_text(provider, tmp_path):
    alg = algorithm("clearsky:buildmosaic")
    values = [
        ("2024-06-01", "2024-06-30"),
        (QDate(2024, 6, 1), QDate(2024, 6, 30)),
        (QDateTime(QDate(2024, 6, 1), QTime(0, 0)), QDateTime(QDate(2024, 6, 30), QTime(12, 0))),
    ]
    for start, end in values:
        params = alg.engine_params(base_params(tmp_path, START_DATE=start, END_DATE=end),
                                   context(), for_run=False)
        assert (params.start, params.end) == (date(2024, 6, 1), date(2024, 6, 30))


def test_all_features_are_dissolved_in_the_layer_crs(provider, tmp_path):
    west = "POLYGON((390000 5800000, 391000 5800000, 391000 5801000, 390000 5801000, 390000 5800000))"  # noqa: E501
    east = "POLYGON((391000 5800000, 392000 5800000, 392000 5801000, 391000 5801000, 391000 5800000))"  # noqa: E501
    layer = polygon_layer([west, east], crs="EPSG:25833")
    params = algorithm("clearsky:buildmosaic").engine_params(
        base_params(tmp_path, AOI=layer, TARGET_CRS="EPSG:3035", RESOLUTION=20, METHOD=2,
                    PERCENTILE=75, BANDS="NIR, red", COUNT_BAND=True, CLIP_TO_AOI=False),
        context(), for_run=False,
    )
    assert params.aoi.crs == "EPSG:25833"
    assert params.aoi.geometry.geom_type == "Polygon"  # two touching squares, one AOI
    assert params.aoi.geometry.area == pytest.approx(2_000_000)
    assert params.target_crs == "EPSG:3035" and params.resolution == 20
    assert params.method.value == "percentile" and params.percentile == 75
    assert params.bands == ("nir", "red") and params.count_band and not params.clip_to_aoi


def test_selected_features_only_uses_just_the_selection(provider, tmp_path):
    far = "POLYGON((13.60 52.30, 13.61 52.30, 13.61 52.31, 13.60 52.31, 13.60 52.30))"
    layer = polygon_layer([BERLIN, far])
    QgsProject.instance().addMapLayer(layer)
    try:
        layer.selectByIds([next(layer.getFeatures()).id()])
        source = QgsProcessingFeatureSourceDefinition(layer.id(), True)
        params = algorithm("clearsky:searchscenes").engine_params(
            base_params(tmp_path, AOI=source), context(), for_run=False
        )
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    minx, miny, maxx, maxy = params.aoi.geometry.bounds
    assert (minx, miny, maxx, maxy) == pytest.approx((13.50, 52.30, 13.52, 52.32))


def test_clear_clips_names_come_from_the_field_or_the_feature_id(provider, tmp_path):
    other = "POLYGON((13.60 52.30, 13.61 52.30, 13.61 52.31, 13.60 52.31, 13.60 52.30))"
    layer = polygon_layer([BERLIN, other, other], names=["park", None, "park"])
    alg = algorithm("clearsky:clearclips")
    ids = [f.id() for f in layer.getFeatures()]
    _, aois, bands = alg.engine_params(
        base_params(tmp_path, AOI=layer, NAME_FIELD="name", BANDS="red,nir"), context(), False
    )
    assert [name for name, _ in aois] == [f"park_{ids[0]}", str(ids[1]), f"park_{ids[2]}"]
    assert bands == ("red", "nir")
    _, by_id, _ = alg.engine_params(base_params(tmp_path, AOI=layer), context(), False)
    assert [name for name, _ in by_id] == [str(i) for i in ids]


def test_unique_names_never_collide():
    assert unique_names([("a", 1), ("a", 2), ("a_2", 9)]) == ["a_1", "a_2_1", "a_2"]
    assert unique_names([("x", 1), ("y", 2)]) == ["x", "y"]


# ------------------------------------------------------------------ styling (ui/layers.py)


def write_tif(path, count, dtype, scale=None, names=None):
    data = np.full((count, 8, 8), 1500 if dtype == "uint16" else 100, dtype)
    data[:, 0, :] = 0
    with rasterio.open(
        path, "w", driver="GTiff", width=8, height=8, count=count, dtype=dtype, nodata=0,
        crs="EPSG:32633", transform=from_origin(400000, 5800000, 10, 10),
    ) as dst:
        dst.write(data)
        if scale is not None:
            dst.scales = (scale,) * count
        if names:
            dst.descriptions = tuple(names)
    return str(path)


def _ranges(renderer):
    return [
        (ce.minimumValue(), ce.maximumValue())
        for ce in (renderer.redContrastEnhancement(), renderer.greenContrastEnhancement(),
                   renderer.blueContrastEnhancement())
    ]


def test_reflectance_mosaic_gets_rgb_renderer_and_0_to_0_3_stretch(qgis_app, tmp_path):
    bands = ("blue", "green", "red", "nir", "count")
    layer = QgsRasterLayer(write_tif(tmp_path / "r.tif", 5, "uint16", 0.0001, bands), "r")
    style_mosaic_layer(layer, bands, "reflectance")
    renderer = layer.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (3, 2, 1)
    assert _ranges(renderer) == [pytest.approx((0.0, 0.3))] * 3


def test_unscaled_reflectance_stretches_0_to_3000(qgis_app, tmp_path):
    layer = QgsRasterLayer(write_tif(tmp_path / "u.tif", 3, "uint16"), "u")
    style_mosaic_layer(layer, ("red", "green", "blue"), "reflectance")
    assert _ranges(layer.renderer()) == [pytest.approx((0.0, 3000.0))] * 3


def test_visual_mosaic_stretches_1_to_255(qgis_app, tmp_path):
    layer = QgsRasterLayer(write_tif(tmp_path / "v.tif", 3, "uint8"), "v")
    MosaicStyler(("red", "green", "blue"), "visual").postProcessLayer(layer, None, None)
    renderer = layer.renderer()
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3)
    assert _ranges(renderer) == [pytest.approx((1.0, 255.0))] * 3


def test_fewer_than_three_bands_get_a_grey_renderer(qgis_app, tmp_path):
    layer = QgsRasterLayer(write_tif(tmp_path / "g.tif", 2, "uint16", 0.0001), "g")
    style_mosaic_layer(layer, ("nir", "count"), "reflectance")
    assert isinstance(layer.renderer(), QgsSingleBandGrayRenderer)
    assert layer.renderer().grayBand() == 1
    assert rgb_band_numbers(("nir", "swir16", "red", "count")) == (1, 2, 3)


def test_footprints_style_separates_kept_from_rejected(qgis_app):
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=kept:boolean", "f", "memory")
    style_footprints_layer(layer)
    renderer = layer.renderer()
    assert isinstance(renderer, QgsRuleBasedRenderer)
    rules = renderer.rootRule().children()
    assert [r.filterExpression() for r in rules] == ['"kept"', "ELSE"]
    assert layer.crs() == QgsCoordinateReferenceSystem("EPSG:4326")


# ------------------------------------------------------------------ the options table


@pytest.mark.parametrize("alg_id", ["clearsky:buildmosaic", "clearsky:searchscenes",
                                    "clearsky:clearclips"])
def test_every_processing_default_is_the_engine_default(provider, tmp_path, alg_id):
    """Parameters left at their defaults give exactly the engine's default parameter object:
    no default is written twice (clear clips keep their own stricter AOI cloud limit)."""
    from dataclasses import fields

    from clearsky.core.clips import MAX_AOI_CLOUD as CLIPS_LIMIT
    from clearsky.core.params import MosaicParams, SearchParams

    alg = algorithm(alg_id)
    given = base_params(tmp_path, OUTPUT_FOLDER=str(tmp_path / "clips"))
    got = alg.engine_params(given, context(), for_run=False)
    if alg_id == "clearsky:clearclips":
        got, _aois, bands = got
        assert bands == MosaicParams.__dataclass_fields__["bands"].default
    cls = MosaicParams if alg_id == "clearsky:buildmosaic" else SearchParams
    expected = cls(aoi=got.aoi, start=date(2024, 6, 1), end=date(2024, 6, 30),
                   catalog_url="http://127.0.0.1:9/stac")
    if alg_id == "clearsky:clearclips":
        expected.max_aoi_cloud = CLIPS_LIMIT
    skip = {"output", "report_csv", "overwrite"}
    for f in fields(cls):
        if f.name not in skip:
            assert getattr(got, f.name) == getattr(expected, f.name), f.name


def test_advanced_options_are_flagged_and_read(provider, tmp_path):
    from clearsky.provider.compat import FLAG_ADVANCED

    alg = algorithm("clearsky:buildmosaic")
    d = {p.name(): p for p in alg.parameterDefinitions()}
    advanced = {n for n, p in d.items() if p.flags() & FLAG_ADVANCED}
    assert advanced == {"INVALID_SCL", "DILATION", "CLOUD_MASK", "CLOUD_PROB", "TARGET_DATE",
                        "SOURCE_BAND", "EXECUTOR", "RESUME", "MAX_READ_GB", "MAX_OUTPUT_GIB",
                        "MEMORY_MB", "NORMALISE", "FEATHER_M"}
    assert d["MEMORY_MB"].defaultValue() == 1024 and d["MEMORY_MB"].minimum() == 128
    assert d["CLOUD_MASK"].defaultValue() == 0 and d["CLOUD_PROB"].defaultValue() == 40
    assert len(d["CLOUD_MASK"].options()) == 4
    assert d["INVALID_SCL"].defaultValue() == "0,1,3,8,9,10"
    assert d["DILATION"].defaultValue() == 2 and d["DILATION"].maximum() == 50
    assert d["TARGET_DATE"].flags() & FLAG_OPTIONAL
    params = alg.engine_params(
        base_params(tmp_path, INVALID_SCL="0, 1, 3, 8, 9, 10, 11", DILATION=0,
                    TARGET_DATE="2024-06-10", SOURCE_BAND=True, CLOUD_MASK=2,
                    CLOUD_PROB=55),
        context(), for_run=False,
    )
    assert params.invalid_scl == frozenset({0, 1, 3, 8, 9, 10, 11})
    assert params.dilation == 0 and params.target_date == date(2024, 6, 10)
    assert params.source_band is True
    assert params.cloud_mask == "scl+prob+shadow" and params.cloud_prob == 55
    assert "INVALID_SCL" in alg.shortHelpString() and "Default 0,1,3,8,9,10." in \
        alg.shortHelpString()


def test_bad_advanced_options_are_refused_with_what_to_type(run, tmp_path):
    message = _error(run, "clearsky:buildmosaic", base_params(tmp_path, INVALID_SCL="3,12"))
    assert "SCL classes run from 0 to 11; [12] is not one" in message
    message = _error(run, "clearsky:buildmosaic", base_params(tmp_path, INVALID_SCL="cloud"))
    assert "INVALID_SCL takes SCL class numbers" in message
    message = _error(run, "clearsky:buildmosaic",
                     base_params(tmp_path, SOURCE_BAND=True, METHOD=1))
    assert "source band exists only for best available pixel" in message


def test_resolution_is_metres_in_processing_as_in_the_engine(provider, tmp_path):
    """RESOLUTION=10 with EPSG:4326 is 10 m on the ground, not 10 degrees."""
    from clearsky.core.grid import output_grid

    alg = algorithm("clearsky:buildmosaic")
    params = alg.engine_params(base_params(tmp_path, TARGET_CRS="EPSG:4326", RESOLUTION=10),
                               context(), for_run=False)
    assert params.resolution == 10
    grid = output_grid(params.aoi, params.target_crs, params.resolution)
    xdeg, ydeg = grid.res
    assert ydeg == pytest.approx(10 / 111_260, rel=0.01)  # a degree of latitude at 52.3 N
    assert xdeg == pytest.approx(10 / (111_320 * np.cos(np.radians(52.31))), rel=0.01)
    assert "metres on the ground" in alg.parameterDefinition("RESOLUTION").help()


@pytest.mark.parametrize("alg_id", ["clearsky:buildmosaic", "clearsky:searchscenes",
                                    "clearsky:clearclips"])
def test_help_url_opens_the_shipped_help_page_at_the_algorithm(provider, alg_id):
    from pathlib import Path

    from qgis.PyQt.QtCore import QUrl

    url = QUrl(algorithm(alg_id).helpUrl())
    page = Path(url.toLocalFile())
    assert page.is_file() and url.fragment() == alg_id.split(":")[1]
    text = page.read_text(encoding="utf-8")
    assert f'id="{url.fragment()}"' in text
    for key in ("INVALID_SCL", "DILATION"):
        assert f"<code>{key}</code>" in text


# ------------------------------------------------------------------ issue 16, item 11


def test_search_dates_default_to_the_last_30_days_target_date_to_none(provider):
    from datetime import timedelta

    today = date.today()
    for alg_id in ("clearsky:buildmosaic", "clearsky:searchscenes", "clearsky:clearclips"):
        alg = algorithm(alg_id)  # kept: its parameters die with it
        d = {p.name(): p for p in alg.parameterDefinitions()}
        assert d["START_DATE"].defaultValue() == QDate(*(today - timedelta(days=30)).timetuple()
                                                       [:3]), alg_id
        assert d["END_DATE"].defaultValue() == QDate(today.year, today.month, today.day)
    alg = algorithm("clearsky:buildmosaic")
    d = {p.name(): p for p in alg.parameterDefinitions()}
    assert d["TARGET_DATE"].defaultValue() is None
    # with no dates given, the algorithm reads exactly those 30 days
    given = base_params(Path("/tmp"))
    del given["START_DATE"], given["END_DATE"]
    params = alg.engine_params(given, context(), for_run=False)
    assert (params.start, params.end) == (today - timedelta(days=30), today)


def test_numbers_show_whole_percentages_and_two_decimals_for_the_resolution(provider):
    alg = algorithm("clearsky:buildmosaic")
    d = {p.name(): p for p in alg.parameterDefinitions()}
    for name in ("MAX_SCENE_CLOUD", "MAX_AOI_CLOUD", "PERCENTILE"):
        assert d[name].metadata()["widget_wrapper"]["decimals"] == 0, name
    assert d["RESOLUTION"].metadata()["widget_wrapper"]["decimals"] == 2


def test_report_left_as_skip_output_in_the_dialog_writes_no_report(
        provider, iface_with_menus, served, world, tmp_path):
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    k = world.known_aois["clear_under_cloudy"]
    layer = polygon_layer([k.geometry_wgs84.wkt])
    QgsProject.instance().addMapLayer(layer)  # the dialog's AOI box picks it
    alg = algorithm("clearsky:buildmosaic")
    dialog = AlgorithmDialog(alg, False, iface_with_menus[0].mainWindow())
    try:
        panel = dialog.mainWidget()
        report = panel.wrappers["REPORT"]
        assert not report.parameterValue()  # the dialog shows [Skip output] by default
        entered = dialog.createProcessingParameters()  # what Run hands to the algorithm
    finally:
        dialog.deleteLater()
    assert "REPORT" in entered and entered["REPORT"] is None

    import processing

    out = tmp_path / "skipped.tif"
    result = processing.run("clearsky:buildmosaic", {
        "AOI": layer, "START_DATE": "2024-06-01", "END_DATE": "2024-06-30",
        "CATALOG": served.stac_url, "OUTPUT": str(out), "REPORT": entered["REPORT"]})
    assert result == {"OUTPUT": str(out)}
    # no report; the COG's STAC item is part of the output, not of the report
    assert out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "skipped.stac.json", "skipped.tif"]
    QgsProject.instance().removeMapLayer(layer.id())
