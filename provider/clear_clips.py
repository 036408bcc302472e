"""clearsky:clearclips - for each AOI feature, every clear scene as a GeoTIFF clip + a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
)

from ..core.aoi import Aoi, parse_aoi
from ..core.clips import MAX_AOI_CLOUD as CLIPS_MAX_AOI_CLOUD
from ..core.params import SearchParams
from ..ui.geometry import to_shapely
from ..ui.proxy import proxy_fields
from . import parameters as pdefs
from .base import ClearskyAlgorithm
from .compat import FIELD_ANY, FIELD_DOUBLE, FIELD_STRING, SOURCE_VECTOR, WKB_NOGEOMETRY

CLIP_FIELDS = (
    ("aoi_name", FIELD_STRING), ("scene_id", FIELD_STRING), ("datetime", FIELD_STRING),
    ("aoi_cloud", FIELD_DOUBLE), ("path", FIELD_STRING),
)


def clip_fields() -> QgsFields:
    fields = QgsFields()
    for name, kind in CLIP_FIELDS:
        fields.append(QgsField(name, kind))
    return fields


def _is_null(value: Any) -> bool:
    return value is None or (hasattr(value, "isNull") and value.isNull())


def unique_names(names: List[Tuple[str, int]]) -> List[str]:
    """Names as given; a repeated name gets `_<feature id>` so clip files never collide."""
    counts: Dict[str, int] = {}
    for name, _fid in names:
        counts[name] = counts.get(name, 0) + 1
    out: List[str] = []
    taken = {name for name, n in counts.items() if n == 1}
    for name, fid in names:
        if counts[name] > 1:
            candidate, extra = f"{name}_{fid}", 1
            while candidate in taken:
                candidate, extra = f"{name}_{fid}_{extra}", extra + 1
            name = candidate
        taken.add(name)
        out.append(name)
    return out


class ClearClipsAlgorithm(ClearskyAlgorithm):
    def name(self) -> str:
        return "clearclips"

    def displayName(self) -> str:
        return self.tr("Download clear AOI clips")

    def shortHelpString(self) -> str:
        return pdefs.help_html(
            self.tr(
                "For many small areas (parks, fields): one catalog search for all of them, a "
                "strict check of the scene classification (SCL) inside EACH area, then one "
                "reflectance GeoTIFF per area and clear date (uint16, reflectance x 10000, "
                "0 = nodata, on the area's UTM grid so the clips of one area align), plus "
                "clear_clips.csv and a table of what was written."
            ),
            [
                (pdefs.AOI, self.tr("Polygon layer; each feature is one area of interest.")),
                (pdefs.NAME_FIELD, self.tr(
                    "Field naming each area in file names and the table; empty = the feature "
                    "id. Repeated names get _<feature id> appended.")),
                *pdefs.help_entries(pdefs.CLIPS_FIELDS, max_aoi_cloud=CLIPS_MAX_AOI_CLOUD),
                (pdefs.OUTPUT_FOLDER, self.tr(
                    "Folder for the clips and clear_clips.csv (created if missing; clips with "
                    "the same name are replaced).")),
                (pdefs.OUTPUT, self.tr(
                    "Table of the clips written: aoi_name, scene_id, datetime, aoi_cloud, "
                    "path.")),
            ],
        )

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:
        self.addParameter(pdefs.aoi_parameter(self.tr("Areas of interest (one per feature)")))
        self.addParameter(QgsProcessingParameterField(
            pdefs.NAME_FIELD, self.tr("Name field (empty: feature id)"), None, pdefs.AOI, FIELD_ANY,
            False, True,
        ))
        for p in pdefs.definitions(pdefs.CLIPS_FIELDS, max_aoi_cloud=CLIPS_MAX_AOI_CLOUD):
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFolderDestination(
            pdefs.OUTPUT_FOLDER, self.tr("Output folder")
        ))
        self.addParameter(QgsProcessingParameterFeatureSink(
            pdefs.OUTPUT, self.tr("Clear clips"), SOURCE_VECTOR
        ))
        self.addOutput(QgsProcessingOutputFile(pdefs.CSV, self.tr("Clear clips CSV")))

    def read_aois(self, parameters: dict, context: QgsProcessingContext) -> List[Tuple[str, Aoi]]:
        source = self.parameterAsSource(parameters, pdefs.AOI, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, pdefs.AOI))
        field = self.parameterAsString(parameters, pdefs.NAME_FIELD, context)
        if field and source.fields().lookupField(field) < 0:
            raise QgsProcessingException(
                self.tr("The AOI layer has no field {!r} (NAME_FIELD).").format(field)
            )
        feedback = context.feedback()
        cancelled = feedback.isCanceled if feedback is not None else (lambda: False)
        features = pdefs.source_geometries(source, cancelled)
        if not features:
            raise pdefs.no_aoi_features_error()
        crs = pdefs.crs_string(source.sourceCrs())
        raw = []
        for feature, _geom in features:
            value = feature[field] if field else None
            text = "" if _is_null(value) else str(value).strip()
            raw.append((text or str(feature.id()), feature.id()))
        names = unique_names(raw)
        aois = []
        for name, (_feature, geometry) in zip(names, features):
            shape = to_shapely(geometry)
            aoi = self.build(lambda s=shape: parse_aoi(s.wkt, crs))
            aois.append((name, aoi))
        return aois

    def engine_params(
        self, parameters: dict, context: QgsProcessingContext, for_run: bool
    ) -> Tuple[SearchParams, List[Tuple[str, Aoi]], Tuple[str, ...]]:
        values = pdefs.read_options(self, parameters, context, pdefs.CLIPS_FIELDS)
        bands = values.pop("bands")
        aois = self.read_aois(parameters, context)
        # the engine searches over the union of all AOIs
        params = SearchParams(aoi=aois[0][1], **proxy_fields(), **values)
        self.build(params.validate)
        return params, aois, bands

    def processAlgorithm(
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> Dict[str, Any]:
        from ..core.api import clear_clips

        params, aois, bands = self.engine_params(parameters, context, for_run=True)
        folder = Path(self.parameterAsFileOutput(parameters, pdefs.OUTPUT_FOLDER, context))
        result = self.run_engine(
            feedback,
            lambda progress: clear_clips(params, aois, folder, bands, progress, overwrite=True),
        )
        sink, dest_id = self.parameterAsSink(
            parameters, pdefs.OUTPUT, context, clip_fields(), WKB_NOGEOMETRY,
            QgsCoordinateReferenceSystem(),
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, pdefs.OUTPUT))
        for record in result.records:
            feature = QgsFeature(clip_fields())
            feature.setAttributes([
                record.aoi_name, record.scene_id, record.datetime, float(record.aoi_cloud),
                str(record.path),
            ])
            if not sink.addFeature(feature):
                raise QgsProcessingException(self.writeFeatureError(sink, parameters, pdefs.OUTPUT))
        return {pdefs.OUTPUT: dest_id, pdefs.OUTPUT_FOLDER: str(folder), pdefs.CSV: str(result.csv)}
