"""clearsky:searchscenes - every scene over the AOI with its AOI cloud share and verdict."""

from __future__ import annotations

from typing import Any, Dict, Optional

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterFeatureSink,
)

from ..core.params import SearchParams
from ..ui.proxy import proxy_fields
from . import parameters as pdefs
from .base import ClearskyAlgorithm
from .build_mosaic import read_aoi
from .compat import FIELD_BOOL, FIELD_DOUBLE, FIELD_STRING, SOURCE_POLYGON, WKB_MULTIPOLYGON
from .postprocessors import FootprintStyler, keep_alive

FOOTPRINT_FIELDS = (
    ("id", FIELD_STRING), ("datetime", FIELD_STRING), ("platform", FIELD_STRING),
    ("tile", FIELD_STRING), ("scene_cloud", FIELD_DOUBLE), ("aoi_coverage", FIELD_DOUBLE),
    ("aoi_cloud", FIELD_DOUBLE), ("kept", FIELD_BOOL), ("reason", FIELD_STRING),
)


def footprint_fields() -> QgsFields:
    fields = QgsFields()
    for name, kind in FOOTPRINT_FIELDS:
        fields.append(QgsField(name, kind))
    return fields


class SearchScenesAlgorithm(ClearskyAlgorithm):
    def name(self) -> str:
        return "searchscenes"

    def displayName(self) -> str:
        return self.tr("Search scenes and check AOI clouds")

    def shortHelpString(self) -> str:
        return pdefs.help_html(
            self.tr(
                "Searches the STAC catalog for Sentinel-2 L2A scenes over the AOI and reads "
                "only the AOI's part of each scene's classification (SCL) to measure the cloud "
                "share inside the AOI. Writes the scene footprints (EPSG:4326) with fields id, "
                "datetime, platform, tile, scene_cloud, aoi_coverage, aoi_cloud, kept, reason: "
                "use it to choose dates before building a mosaic."
            ),
            [
                (pdefs.AOI, self.tr(
                    "Polygon layer; all features (or only the selected ones) are dissolved "
                    "into one area of interest.")),
                *pdefs.help_entries(pdefs.SEARCH_FIELDS),
                (pdefs.OUTPUT, self.tr(
                    "Footprints of every scene found, kept or not; 'reason' says why a scene "
                    "was left out.")),
            ],
        )

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:
        self.addParameter(pdefs.aoi_parameter(self.tr("Area of interest (polygons)")))
        for p in pdefs.definitions(pdefs.SEARCH_FIELDS):
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFeatureSink(
            pdefs.OUTPUT, self.tr("Scene footprints"), SOURCE_POLYGON
        ))

    def engine_params(
        self, parameters: dict, context: QgsProcessingContext, for_run: bool
    ) -> SearchParams:
        values = pdefs.read_options(self, parameters, context, pdefs.SEARCH_FIELDS)
        params = SearchParams(aoi=read_aoi(self, parameters, context), **proxy_fields(), **values)
        self.build(params.validate)
        return params

    def processAlgorithm(
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> Dict[str, Any]:
        from ..core.api import search_scenes

        params = self.engine_params(parameters, context, for_run=True)
        result = self.run_engine(feedback, lambda progress: search_scenes(params, progress))
        sink, dest_id = self.parameterAsSink(
            parameters, pdefs.OUTPUT, context, footprint_fields(), WKB_MULTIPOLYGON,
            QgsCoordinateReferenceSystem("EPSG:4326"),
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, pdefs.OUTPUT))
        names = [name for name, _kind in FOOTPRINT_FIELDS]
        for report in result.reports:
            row = report.row()
            feature = QgsFeature(footprint_fields())
            geometry = QgsGeometry.fromWkt(report.scene.footprint.wkt)
            geometry.convertToMultiType()
            feature.setGeometry(geometry)
            feature.setAttributes([row.get(name) for name in names])
            if not sink.addFeature(feature):
                raise QgsProcessingException(self.writeFeatureError(sink, parameters, pdefs.OUTPUT))
        kept = len(result.kept)
        if feedback is not None:
            feedback.pushInfo(self.tr("{kept} of {found} scene(s) kept over the AOI.").format(
                kept=kept, found=len(result.reports)))
            for note in result.notes:
                feedback.pushInfo(note)
        if context.willLoadLayerOnCompletion(dest_id):
            context.layerToLoadOnCompletionDetails(dest_id).setPostProcessor(
                keep_alive(FootprintStyler())
            )
        return {pdefs.OUTPUT: dest_id}
