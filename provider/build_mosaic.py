"""clearsky:buildmosaic - a cloud-free composite of an AOI as a Cloud-Optimized GeoTIFF."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from qgis.core import (
    QgsFeatureSource,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from ..core.params import Method, MosaicParams, OutputType
from ..ui.geometry import aoi_from_geometries
from . import parameters as pdefs
from .base import ClearskyAlgorithm
from .compat import NUMBER_DOUBLE
from .postprocessors import MosaicStyler, keep_alive

METHODS = (Method.BEST, Method.MEDIAN, Method.PERCENTILE)
OUTPUT_TYPES = (OutputType.REFLECTANCE, OutputType.VISUAL)


def read_aoi(alg: Any, parameters: dict, context: QgsProcessingContext):
    """All AOI features (or the selected ones) dissolved into one engine Aoi."""
    source: Optional[QgsFeatureSource] = alg.parameterAsSource(parameters, pdefs.AOI, context)
    if source is None:
        raise QgsProcessingException(alg.invalidSourceError(parameters, pdefs.AOI))
    feedback = context.feedback()
    cancelled = feedback.isCanceled if feedback is not None else (lambda: False)
    geometries = [g for _f, g in pdefs.source_geometries(source, cancelled)]
    if not geometries:
        raise pdefs.no_aoi_features_error()
    return alg.build(lambda: aoi_from_geometries(geometries, source.sourceCrs()))


class BuildMosaicAlgorithm(ClearskyAlgorithm):
    def name(self) -> str:
        return "buildmosaic"

    def displayName(self) -> str:
        return self.tr("Build cloud-free mosaic")

    def shortHelpString(self) -> str:
        return pdefs.help_html(
            self.tr(
                "Searches Sentinel-2 L2A scenes over the AOI, keeps those whose scene "
                "classification (SCL) is clear enough inside the AOI, masks clouds per pixel "
                "and composites the rest into one Cloud-Optimized GeoTIFF, plus a CSV report "
                "of every scene found and why it was kept or left out."
            ),
            [
                (pdefs.AOI, self.tr(
                    "Polygon layer; all features (or only the selected ones) are dissolved "
                    "into one area of interest.")),
                *pdefs.search_help(self.tr("Default 50.")),
                (pdefs.METHOD, self.tr(
                    "0 = best available pixel (the clearest scene nearest the middle of the "
                    "dates fills each pixel first), 1 = median, 2 = percentile of the clear "
                    "observations of each pixel.")),
                (pdefs.PERCENTILE, self.tr("Percentile (0-100) for method 2. Default 25.")),
                (pdefs.BANDS, pdefs.HELP[pdefs.BANDS] + self.tr(" Default red,green,blue.")),
                (pdefs.OUTPUT_TYPE, self.tr(
                    "0 = reflectance (uint16, reflectance x 10000, 0 = nodata), 1 = 8-bit true "
                    "colour (needs bands red,green,blue; reflectance 0-0.3 stretched to 1-255).")),
                (pdefs.COUNT_BAND, self.tr(
                    "Add a last band with the number of clear observations per pixel.")),
                (pdefs.TARGET_CRS, self.tr(
                    "CRS of the output; empty = the UTM zone of the AOI's centre.")),
                (pdefs.RESOLUTION, self.tr("Pixel size in units of the target CRS. Default 10.")),
                (pdefs.CLIP_TO_AOI, self.tr(
                    "Pixels outside the AOI polygon are nodata; off = the whole bounding "
                    "rectangle is filled.")),
                (pdefs.OUTPUT, self.tr("The mosaic, a Cloud-Optimized GeoTIFF (.tif).")),
                (pdefs.REPORT, self.tr(
                    "Optional CSV of every scene found, with its AOI cloud share and verdict; "
                    "default: <mosaic>.report.csv beside the mosaic (a JSON copy is written "
                    "beside the CSV).")),
            ],
        )

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:
        self.addParameter(pdefs.aoi_parameter(self.tr("Area of interest (polygons)")))
        for p in pdefs.search_parameters(max_aoi_cloud=50.0):
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterEnum(
            pdefs.METHOD, self.tr("Compositing method"),
            [self.tr("Best available pixel"), self.tr("Median"), self.tr("Percentile")],
            False, 0,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            pdefs.PERCENTILE, self.tr("Percentile (method Percentile)"), NUMBER_DOUBLE, 25.0,
            False, 0, 100,
        ))
        self.addParameter(pdefs.bands_parameter())
        self.addParameter(QgsProcessingParameterEnum(
            pdefs.OUTPUT_TYPE, self.tr("Output type"),
            [self.tr("Reflectance (uint16, x 10000)"), self.tr("True colour (8-bit RGB)")],
            False, 0,
        ))
        self.addParameter(QgsProcessingParameterBoolean(
            pdefs.COUNT_BAND, self.tr("Add a band counting clear observations"), False
        ))
        self.addParameter(QgsProcessingParameterCrs(
            pdefs.TARGET_CRS, self.tr("Target CRS (empty: UTM zone of the AOI)"), None, True
        ))
        self.addParameter(QgsProcessingParameterNumber(
            pdefs.RESOLUTION, self.tr("Resolution (target CRS units)"), NUMBER_DOUBLE, 10.0,
            False, 0.0,
        ))
        self.addParameter(QgsProcessingParameterBoolean(
            pdefs.CLIP_TO_AOI, self.tr("Clip to the AOI polygon"), True
        ))
        self.addParameter(QgsProcessingParameterRasterDestination(
            pdefs.OUTPUT, self.tr("Cloud-free mosaic (COG)")
        ))
        self.addParameter(QgsProcessingParameterFileDestination(
            pdefs.REPORT, self.tr("Scene report (CSV)"), self.tr("CSV files (*.csv)"), None, True,
            False,
        ))

    def engine_params(
        self, parameters: dict, context: QgsProcessingContext, for_run: bool
    ) -> MosaicParams:
        start = pdefs.read_date(self, parameters, pdefs.START_DATE, context)
        end = pdefs.read_date(self, parameters, pdefs.END_DATE, context)
        bands = pdefs.read_bands(self.parameterAsString(parameters, pdefs.BANDS, context))
        crs = self.parameterAsCrs(parameters, pdefs.TARGET_CRS, context)
        output = Path("check.tif")
        report: Optional[Path] = None
        if for_run:
            output = Path(self.parameterAsOutputLayer(parameters, pdefs.OUTPUT, context))
            report_text = self.parameterAsFileOutput(parameters, pdefs.REPORT, context)
            report = Path(report_text) if report_text else None
        aoi = read_aoi(self, parameters, context)
        params = MosaicParams(
            aoi=aoi,
            start=start,
            end=end,
            catalog_url=self.parameterAsString(parameters, pdefs.CATALOG, context).strip(),
            collection=self.parameterAsString(parameters, pdefs.COLLECTION, context).strip(),
            max_scene_cloud=self.parameterAsDouble(parameters, pdefs.MAX_SCENE_CLOUD, context),
            max_aoi_cloud=self.parameterAsDouble(parameters, pdefs.MAX_AOI_CLOUD, context),
            output=output,
            report_csv=report,
            bands=bands,
            method=METHODS[self.parameterAsEnum(parameters, pdefs.METHOD, context)],
            percentile=self.parameterAsDouble(parameters, pdefs.PERCENTILE, context),
            count_band=self.parameterAsBoolean(parameters, pdefs.COUNT_BAND, context),
            target_crs=pdefs.crs_string(crs) if crs.isValid() else None,
            resolution=self.parameterAsDouble(parameters, pdefs.RESOLUTION, context),
            clip_to_aoi=self.parameterAsBoolean(parameters, pdefs.CLIP_TO_AOI, context),
            output_type=OUTPUT_TYPES[self.parameterAsEnum(parameters, pdefs.OUTPUT_TYPE, context)],
            overwrite=True,  # Processing convention: the destination chosen is replaced
        )
        self.build(params.validate)
        return params

    def processAlgorithm(
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> Dict[str, Any]:
        from ..core.api import build_mosaic

        params = self.engine_params(parameters, context, for_run=True)
        result = self.run_engine(feedback, lambda progress: build_mosaic(params, progress))
        kept = sum(1 for r in result.reports if r.kept)
        if feedback is not None:
            feedback.pushInfo(self.tr(
                "{kept} of {found} scene(s) kept; {filled:.1f} % of the AOI filled; "
                "{w} x {h} pixels in {crs}."
            ).format(
                kept=kept, found=len(result.reports), filled=100 * result.filled_fraction,
                w=result.shape[1], h=result.shape[0], crs=result.crs,
            ))
        output = str(result.output)
        for key in {output, str(params.output)}:
            if context.willLoadLayerOnCompletion(key):
                styler = keep_alive(MosaicStyler(result.band_names, params.output_type.value))
                context.layerToLoadOnCompletionDetails(key).setPostProcessor(styler)
        return {pdefs.OUTPUT: output, pdefs.REPORT: str(result.report_csv)}
