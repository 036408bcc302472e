"""clearsky:buildmosaic - a cloud-free composite of an AOI as a Cloud-Optimized GeoTIFF."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from qgis.core import (
    QgsApplication,
    QgsFeatureSource,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterDestination,
)

from ..core.params import MosaicParams
from ..ui.geometry import aoi_from_geometries
from ..ui.proxy import proxy_fields
from . import parameters as pdefs
from .base import ClearskyAlgorithm
from .postprocessors import MosaicStyler, keep_alive


def in_desktop() -> bool:
    """True inside the QGIS desktop application (not qgis_process nor a Python script)."""
    app = QgsApplication.instance()
    return app is not None and app.platform() == "desktop"


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


def report_skipped(parameters: dict) -> bool:
    """REPORT given as None (the dialog's [Skip output], see `preprocessParameters`)."""
    return pdefs.REPORT in parameters and parameters[pdefs.REPORT] in (None, "")


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
                *pdefs.help_entries(pdefs.MOSAIC_FIELDS),
                (pdefs.OUTPUT, self.tr(
                    "The mosaic, a Cloud-Optimized GeoTIFF (.tif), with its STAC item "
                    "<name>.stac.json beside it. With PERIODS, the name pattern: one file "
                    "<name>_<period>.tif per period; OUTPUT then returns the first and "
                    "OUTPUTS all of them.")),
                (pdefs.REPORT, self.tr(
                    "Optional CSV of every scene found, with its AOI cloud share and verdict "
                    "(a JSON copy is written beside the CSV). Left as [Skip output] in the "
                    "dialog, no report is written; not given in qgis_process or a script, "
                    "<mosaic>.report.csv beside the mosaic.")),
            ],
        )

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:
        self.addParameter(pdefs.aoi_parameter(self.tr("Area of interest (polygons)")))
        for p in pdefs.definitions(pdefs.MOSAIC_FIELDS):
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterRasterDestination(
            pdefs.OUTPUT, self.tr("Cloud-free mosaic (COG)")
        ))
        self.addParameter(QgsProcessingParameterFileDestination(
            pdefs.REPORT, self.tr("Scene report (CSV)"), self.tr("CSV files (*.csv)"), None, True,
            False,
        ))
        self.addOutput(QgsProcessingOutputMultipleLayers(
            pdefs.OUTPUTS, self.tr("Mosaics, one per period")))

    def preprocessParameters(self, parameters: dict) -> dict:
        """The Processing dialog (and batch dialog) call this with what the user entered.

        A destination left as [Skip output] is simply missing from those parameters in QGIS
        3.22 (ParametersPanel drops a falsy destination value), the same as REPORT not given
        on a qgis_process command line, which keeps its default report beside the mosaic.
        So the dialog's skip is made explicit here: REPORT = None means "no report"."""
        out = dict(parameters)
        if out.get(pdefs.REPORT) in (None, ""):
            out[pdefs.REPORT] = None
        return out

    def engine_params(
        self, parameters: dict, context: QgsProcessingContext, for_run: bool
    ) -> MosaicParams:
        values = pdefs.read_options(self, parameters, context, pdefs.MOSAIC_FIELDS)
        output = Path("check.tif")
        report: Optional[Path] = None
        if for_run:
            output = Path(self.parameterAsOutputLayer(parameters, pdefs.OUTPUT, context))
            report_text = self.parameterAsFileOutput(parameters, pdefs.REPORT, context)
            report = Path(report_text) if report_text else None
        aoi = read_aoi(self, parameters, context)
        params = MosaicParams(
            aoi=aoi, output=output, report_csv=report, write_report=not report_skipped(parameters),
            overwrite=True,  # Processing convention: the destination chosen is replaced
            gui=in_desktop(),  # no worker processes inside the QGIS desktop
            **proxy_fields(),  # the QGIS proxy, for STAC requests and GDAL reads
            **values,
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
            if result.estimate is not None:
                feedback.pushInfo(result.estimate.text())
        output = str(result.output)
        outputs = [str(o.output) for o in result.outputs] or [output]
        loading = context.willLoadLayerOnCompletion(str(params.output))
        # With PERIODS the destination is a name pattern, no file (even for one period,
        # written as <stem>_<period>.tif): load each period's file instead.
        if params.periods and loading:
            details = context.layerToLoadOnCompletionDetails(str(params.output))
            context.setLayersToLoadOnCompletion({})
            for out, path in zip(result.outputs, outputs):
                context.addLayerToLoadOnCompletion(path, QgsProcessingContext.LayerDetails(
                    f"{Path(details.name or params.output.stem).stem} {out.name}",
                    context.project(), details.outputName))
        for key in {*outputs, str(params.output)}:
            if context.willLoadLayerOnCompletion(key):
                styler = keep_alive(MosaicStyler(result.band_names, params.output_type.value))
                context.layerToLoadOnCompletionDetails(key).setPostProcessor(styler)
        values: Dict[str, Any] = {pdefs.OUTPUT: output}
        if params.periods:  # single-period runs return what they always did
            values[pdefs.OUTPUTS] = outputs
        if result.report_csv is not None:  # skipped: no REPORT output at all
            values[pdefs.REPORT] = str(result.report_csv)
        return values
