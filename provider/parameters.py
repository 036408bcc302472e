"""Parameter names, definitions and readers shared by the three Clearsky algorithms.

The names are a public contract (models, batch files and qgis_process command lines
use them): never rename one.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Callable, Dict, List, Tuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeatureRequest,
    QgsFeatureSource,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameters,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication, QDate, QDateTime

from ..core.params import DEFAULT_COLLECTION, EARTH_SEARCH
from ..core.scene import BAND_RESOLUTION
from ..ui.geometry import crs_text
from .compat import DATE_ONLY, NUMBER_DOUBLE, SOURCE_POLYGON

AOI = "AOI"
NAME_FIELD = "NAME_FIELD"
START_DATE = "START_DATE"
END_DATE = "END_DATE"
CATALOG = "CATALOG"
COLLECTION = "COLLECTION"
MAX_SCENE_CLOUD = "MAX_SCENE_CLOUD"
MAX_AOI_CLOUD = "MAX_AOI_CLOUD"
METHOD = "METHOD"
PERCENTILE = "PERCENTILE"
BANDS = "BANDS"
OUTPUT_TYPE = "OUTPUT_TYPE"
COUNT_BAND = "COUNT_BAND"
TARGET_CRS = "TARGET_CRS"
RESOLUTION = "RESOLUTION"
CLIP_TO_AOI = "CLIP_TO_AOI"
OUTPUT = "OUTPUT"
REPORT = "REPORT"
OUTPUT_FOLDER = "OUTPUT_FOLDER"
CSV = "CSV"

DEFAULT_BANDS = "red,green,blue"


def tr(text: str) -> str:
    return QCoreApplication.translate("Clearsky", text)


# One help text per shared parameter: the tooltips and every algorithm's help use these.
HELP: Dict[str, str] = {
    START_DATE: tr("First day of the search, inclusive (YYYY-MM-DD in qgis_process)."),
    END_DATE: tr("Last day of the search, inclusive; must not be before the start date."),
    CATALOG: tr(
        "URL of a STAC API with Sentinel-2 L2A items. Default: Earth Search v1 "
        "(Element 84, free, no account)."
    ),
    COLLECTION: tr(
        "STAC collection id. sentinel-2-c1-l2a (default) is the reprocessed Collection 1; "
        "sentinel-2-l2a the older one. Radiometric offsets are handled for both."
    ),
    MAX_SCENE_CLOUD: tr(
        "Lenient first filter on the whole-scene eo:cloud_cover of each ~110 km tile, in %. "
        "Keep it high: a cloudy scene can be clear over a small area."
    ),
    MAX_AOI_CLOUD: tr(
        "Strict filter: the share of cloud, cloud shadow, cirrus and defective pixels of the "
        "scene classification (SCL) inside the AOI, in %. Scenes above it are left out."
    ),
    BANDS: tr(
        "Comma-separated Sentinel-2 common band names, in output order. Known names: "
        + ", ".join(BAND_RESOLUTION)
        + "."
    ),
}


def aoi_parameter(description: str) -> QgsProcessingParameterFeatureSource:
    return QgsProcessingParameterFeatureSource(AOI, description, [SOURCE_POLYGON])


def search_parameters(max_aoi_cloud: float) -> List[QgsProcessingParameterDefinition]:
    """START_DATE .. MAX_AOI_CLOUD, in dialog order, with the algorithm's AOI cloud default."""
    params: List[QgsProcessingParameterDefinition] = [
        QgsProcessingParameterDateTime(START_DATE, tr("Start date"), DATE_ONLY),
        QgsProcessingParameterDateTime(END_DATE, tr("End date"), DATE_ONLY),
        QgsProcessingParameterString(CATALOG, tr("STAC catalog URL"), EARTH_SEARCH),
        QgsProcessingParameterString(COLLECTION, tr("Collection"), DEFAULT_COLLECTION),
        QgsProcessingParameterNumber(
            MAX_SCENE_CLOUD, tr("Maximum scene cloud cover (%)"), NUMBER_DOUBLE, 80.0, False, 0, 100
        ),
        QgsProcessingParameterNumber(
            MAX_AOI_CLOUD, tr("Maximum cloud over the AOI (%)"), NUMBER_DOUBLE, max_aoi_cloud,
            False, 0, 100,
        ),
    ]
    for p in params:
        _set_help(p)
    return params


def bands_parameter() -> QgsProcessingParameterString:
    return _set_help(QgsProcessingParameterString(BANDS, tr("Bands"), DEFAULT_BANDS))


def _set_help(p: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    if p.name() in HELP and hasattr(p, "setHelp"):
        p.setHelp(HELP[p.name()])
    return p


def search_help(aoi_cloud_default: str) -> List[Tuple[str, str]]:
    """Help lines for START_DATE .. MAX_AOI_CLOUD, shared by the three algorithms."""
    return [
        (START_DATE, HELP[START_DATE]),
        (END_DATE, HELP[END_DATE]),
        (CATALOG, HELP[CATALOG]),
        (COLLECTION, HELP[COLLECTION]),
        (MAX_SCENE_CLOUD, HELP[MAX_SCENE_CLOUD] + tr(" Default 80.")),
        (MAX_AOI_CLOUD, HELP[MAX_AOI_CLOUD] + " " + aoi_cloud_default),
    ]


def help_html(intro: str, entries: List[Tuple[str, str]]) -> str:
    """A short help: what the algorithm does, then one line per parameter."""
    rows = "".join(f"<li><b>{name}</b>: {text}</li>" for name, text in entries)
    return f"<p>{intro}</p><ul>{rows}</ul>"


# ---------------------------------------------------------------------------- readers


def read_date(alg: Any, parameters: dict, name: str, context: Any) -> date:
    """A Date parameter as a Python date; accepts QDate, QDateTime and 'YYYY-MM-DD'."""
    value = parameters.get(name)
    qdate = QgsProcessingParameters.parameterAsDate(alg.parameterDefinition(name), parameters,
                                                    context)
    if isinstance(qdate, QDate) and qdate.isValid():
        return qdate.toPyDate()
    if isinstance(value, QDateTime) and value.isValid():
        return value.date().toPyDate()
    if isinstance(value, str) and value.strip():
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    label = "start" if name == START_DATE else "end"
    raise QgsProcessingException(
        tr("Give a valid {label} date ({name}), e.g. 2024-06-01; got {value!r}.").format(
            label=label, name=name, value=value
        )
    )


def read_bands(text: str) -> Tuple[str, ...]:
    """'Red, NIR' -> ('red', 'nir'); unknown or missing names give a message listing known ones."""
    bands = tuple(b.strip().lower() for b in (text or "").split(",") if b.strip())
    if not bands:
        raise QgsProcessingException(
            tr("Give at least one band name in BANDS, e.g. red,green,blue.")
        )
    unknown = [b for b in bands if b not in BAND_RESOLUTION]
    if unknown:
        raise QgsProcessingException(
            tr("Unknown band name(s) in BANDS: {unknown}. Use Sentinel-2 common names: {known}.")
            .format(unknown=", ".join(unknown), known=", ".join(BAND_RESOLUTION))
        )
    if len(set(bands)) != len(bands):
        raise QgsProcessingException(tr("A band is listed twice in BANDS: {}.").format(text))
    return bands


def crs_string(crs: QgsCoordinateReferenceSystem) -> str:
    """'EPSG:xxxx' when the CRS has an authority id, else its WKT (pyproj reads both)."""
    if not crs.isValid():
        raise QgsProcessingException(
            tr("The AOI layer has no valid coordinate reference system: set one on the layer.")
        )
    return crs_text(crs)


def source_geometries(
    source: QgsFeatureSource, is_cancelled: Callable[[], bool]
) -> List[Tuple[Any, QgsGeometry]]:
    """(feature, geometry) for every feature with a non-empty geometry."""
    out = []
    request = QgsFeatureRequest()
    for feature in source.getFeatures(request):
        if is_cancelled():
            break
        geom = feature.geometry()
        if geom is None or geom.isNull() or geom.isEmpty():
            continue
        out.append((feature, geom))
    return out


def no_aoi_features_error() -> QgsProcessingException:
    return QgsProcessingException(
        tr(
            "The AOI layer has no polygon feature to use (it is empty, or 'Selected features "
            "only' is ticked with nothing selected): add or select a polygon."
        )
    )
