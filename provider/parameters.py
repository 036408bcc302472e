"""Parameter names, definitions and readers shared by the three Clearsky algorithms.

The names are a public contract (models, batch files and qgis_process command lines
use them): never rename one. The options shared with the engine are built and read from
its options table (core/options.py): keys, labels, defaults, ranges and help live there.
"""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from datetime import date, timedelta
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeatureRequest,
    QgsFeatureSource,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameters,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication, QDate, QDateTime

from ..core import options as opts
from ..core.errors import InvalidParameterError
from ..core.options import Option
from ..core.params import SearchParams
from ..ui.geometry import crs_text
from .compat import DATE_ONLY, FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER, SOURCE_POLYGON

# Keys of the options table (core/options.py) and of the algorithms' own parameters.
START_DATE = opts.option("start").key
END_DATE = opts.option("end").key
CATALOG = opts.option("catalog_url").key
COLLECTION = opts.option("collection").key
MAX_SCENE_CLOUD = opts.option("max_scene_cloud").key
MAX_AOI_CLOUD = opts.option("max_aoi_cloud").key
METHOD = opts.option("method").key
PERCENTILE = opts.option("percentile").key
BANDS = opts.option("bands").key
OUTPUT_TYPE = opts.option("output_type").key
COUNT_BAND = opts.option("count_band").key
TARGET_CRS = opts.option("target_crs").key
RESOLUTION = opts.option("resolution").key
CLIP_TO_AOI = opts.option("clip_to_aoi").key
AOI = "AOI"
NAME_FIELD = "NAME_FIELD"
OUTPUT = "OUTPUT"
REPORT = "REPORT"
OUTPUT_FOLDER = "OUTPUT_FOLDER"
OUTPUTS = "OUTPUTS"  # the files of a multi-period run
CSV = "CSV"

# The options of each algorithm, in the table's order (the order of their dialogs): every
# option for the mosaic, those of the search parameters for the search and the clips.
_SEARCH = {f.name for f in dataclass_fields(SearchParams)}
MOSAIC_FIELDS = tuple(o.field for o in opts.OPTIONS)
SEARCH_FIELDS = tuple(f for f in MOSAIC_FIELDS if f in _SEARCH)
CLIPS_FIELDS = SEARCH_FIELDS + ("bands",)


def tr(text: str) -> str:
    return QCoreApplication.translate("Clearsky", text)


def aoi_parameter(description: str) -> QgsProcessingParameterFeatureSource:
    return QgsProcessingParameterFeatureSource(AOI, description, [SOURCE_POLYGON])


def _recent_days() -> Dict[str, date]:
    today = date.today()
    return {"start": today - timedelta(days=30), "end": today}


def definition(option: Option, default: Any = None) -> QgsProcessingParameterDefinition:
    """The Processing parameter of one option of the table (`default` overrides it)."""
    value = option.default if default is None else default
    label = tr(option.label)
    kind = option.kind
    p: QgsProcessingParameterDefinition
    if kind == opts.DATE:
        # The search dates default to the last 30 days, as in the dialog, computed when the
        # algorithm is initialised; other dates (TARGET_DATE) keep no default.
        day = value if value is not None else _recent_days().get(option.field)
        p = QgsProcessingParameterDateTime(
            option.key, label, DATE_ONLY,
            QDate(day.year, day.month, day.day) if day is not None else None, option.optional)
    elif kind == opts.NUMBER:
        p = QgsProcessingParameterNumber(option.key, label, NUMBER_DOUBLE, value,
                                         option.optional, option.minimum, option.maximum)
        # percentages (0..100) show as "80", not "80.000000"; other numbers with 2 decimals
        percent = (option.minimum, option.maximum) == (0, 100)
        p.setMetadata({"widget_wrapper": {"decimals": 0 if percent else 2}})
    elif kind == opts.INTEGER:
        p = QgsProcessingParameterNumber(option.key, label, NUMBER_INTEGER, value,
                                         option.optional, option.minimum, option.maximum)
    elif kind == opts.BOOL:
        p = QgsProcessingParameterBoolean(option.key, label, value, option.optional)
    elif kind == opts.CHOICE:
        assert option.choices is not None
        members = list(option.choices)
        p = QgsProcessingParameterEnum(option.key, label, [tr(m.label) for m in members],
                                       False, members.index(value), option.optional)
    elif kind == opts.CRS:
        p = QgsProcessingParameterCrs(option.key, label, None, True)
    else:  # TEXT, BANDS, CLASSES: typed as text
        p = QgsProcessingParameterString(option.key, label, option.text(value), False,
                                         option.optional)
    if option.advanced:
        p.setFlags(p.flags() | FLAG_ADVANCED)
    if hasattr(p, "setHelp"):
        p.setHelp(tr(option.help))
    return p


def definitions(fields: Sequence[str], **overrides: Any) -> List[QgsProcessingParameterDefinition]:
    """The parameters of these options, in order; keyword arguments override defaults."""
    return [definition(opts.option(f), overrides.get(f)) for f in fields]


def help_text(option: Option, default: Any = None) -> str:
    """The option's help plus its default, as the algorithm's help lists it."""
    value = option.default if default is None else default
    if option.kind == opts.CHOICE and option.choices is not None:
        shown = str(list(option.choices).index(value))
    else:
        shown = option.text(value)
    return tr(option.help) + (tr(" Default {}.").format(shown) if shown else "")


def help_entries(fields: Sequence[str], **overrides: Any) -> List[Tuple[str, str]]:
    return [(opts.option(f).key, help_text(opts.option(f), overrides.get(f))) for f in fields]


def help_html(intro: str, entries: List[Tuple[str, str]]) -> str:
    """A short help: what the algorithm does, then one line per parameter."""
    rows = "".join(f"<li><b>{name}</b>: {text}</li>" for name, text in entries)
    return f"<p>{intro}</p><ul>{rows}</ul>"


# ---------------------------------------------------------------------------- readers


def read_option(alg: Any, parameters: dict, context: Any, option: Option) -> Any:
    """The engine value of one option from the algorithm's parameters."""
    key, kind = option.key, option.kind
    try:
        if kind == opts.DATE:
            return read_date(alg, parameters, key, context, optional=option.optional)
        if kind == opts.NUMBER:
            return alg.parameterAsDouble(parameters, key, context)
        if kind == opts.INTEGER:
            return alg.parameterAsInt(parameters, key, context)
        if kind == opts.BOOL:
            return alg.parameterAsBoolean(parameters, key, context)
        if kind == opts.CHOICE:
            assert option.choices is not None
            return list(option.choices)[alg.parameterAsEnum(parameters, key, context)]
        if kind == opts.CRS:
            crs = alg.parameterAsCrs(parameters, key, context)
            return crs_string(crs) if crs.isValid() else None
        text = alg.parameterAsString(parameters, key, context).strip()
        return option.parse(text) if kind in (opts.BANDS, opts.CLASSES, opts.STATISTICS) \
            else text
    except InvalidParameterError as err:
        raise QgsProcessingException(str(err)) from err


def read_options(alg: Any, parameters: dict, context: Any, fields: Sequence[str]
                 ) -> Dict[str, Any]:
    """{engine field: value} for these options: the keyword arguments of the params object."""
    return {f: read_option(alg, parameters, context, opts.option(f)) for f in fields}


def read_date(alg: Any, parameters: dict, name: str, context: Any, optional: bool = False
              ) -> Optional[date]:
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
    elif optional and (value is None or value == ""):
        return None
    label = {START_DATE: "start", END_DATE: "end"}.get(name, name.lower().replace("_", " "))
    raise QgsProcessingException(
        tr("Give a valid {label} date ({name}), e.g. 2024-06-01; got {value!r}.").format(
            label=label, name=name, value=value
        )
    )


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
