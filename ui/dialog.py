"""The Clearsky dialog: widgets -> `MosaicParams`, engine calls in QgsTasks, results -> layers.

No mosaic logic here: validation is the engine's (`params.validate()`,
`core.io.check_output_path`), and every message shown is the engine's own text.
"""

from __future__ import annotations

import contextlib
from datetime import date, timedelta
from pathlib import Path
from typing import Any, List, Optional

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsMapLayerProxyModel,
    QgsMessageLog,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsFileWidget, QgsMessageBar, QgsProjectionSelectionWidget
from qgis.PyQt import uic
from qgis.PyQt.QtCore import QUrl, pyqtSlot
from qgis.PyQt.QtGui import QDesktopServices, QIcon
from qgis.PyQt.QtWidgets import QDialogButtonBox, QInputDialog, QMessageBox, QSizePolicy

from ..core import aoi as core_aoi
from ..core.aoi import Aoi, geocode, parse_aoi
from ..core.errors import ClearskyError, InvalidParameterError, OutputError
from ..core.io import check_output_path
from ..core.mosaic import build_mosaic, search_scenes
from ..core.options import DEFAULT_COLLECTION, EARTH_SEARCH, Method
from ..core.params import MosaicParams, SearchParams
from . import option_widgets, scenes, settings, tasks
from .aoi_tools import (
    PolygonMapTool,
    RectangleMapTool,
    aoi_from_geometry,
    aoi_from_layer,
    aoi_from_rectangle,
    aoi_rubber_band,
    aoi_to_geometry,
)
from .layers import style_mosaic_layer

HERE = Path(__file__).resolve().parent
PLUGIN_DIR = HERE.parent
ICON = PLUGIN_DIR / "resources" / "icon.svg"
HELP = PLUGIN_DIR / "resources" / "help" / "index.html"  # shipped in the plugin zip
HELP_ANCHOR = "dialog"
LOG_TAG = "Clearsky"
NOMINATIM_URL = core_aoi.NOMINATIM_URL  # tests (and the setting Clearsky/nominatim_url) override
COLLECTIONS = ("sentinel-2-c1-l2a", "sentinel-2-l2a")
BAND_PRESETS = (("red", "green", "blue"), ("nir", "red", "green"), ("blue", "green", "red", "nir"))

FORM, BASE = uic.loadUiType(str(HERE / "dialog.ui"))

# AOI input modes, in the order of the combo box and of the stacked pages
RECTANGLE, POLYGON, EXTENT, LAYER, PLACE, TEXT = range(6)

_POLYGON_FILTER = getattr(getattr(Qgis, "LayerFilter", None), "PolygonLayer", None) or getattr(
    QgsMapLayerProxyModel, "PolygonLayer", None)


def nominatim_url() -> str:
    return settings.value("nominatim_url", NOMINATIM_URL)


def log(message: str, level: Any = Qgis.MessageLevel.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)


class ClearskyDialog(BASE, FORM):
    """Non-modal; one instance per QGIS session (see `show_dialog`)."""

    def __init__(self, iface: Any, parent: Any = None) -> None:
        super().__init__(parent)
        self.setupUi(self)
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.setWindowIcon(QIcon(str(ICON)))
        self.bar = QgsMessageBar(self)
        self.bar.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        self.mainLayout.insertWidget(0, self.bar)
        self.aoi: Optional[Aoi] = None
        self.task: Optional[tasks.EngineTask] = None
        self.places: List[core_aoi.Place] = []
        self.footprints_id: Optional[str] = None
        self.band = aoi_rubber_band(self.canvas)
        self.rectangle_tool = RectangleMapTool(self.canvas)
        self.polygon_tool = PolygonMapTool(self.canvas)
        self._previous_tool = None
        # One widget per engine option: values, ranges, tooltips and settings follow the
        # options table (bands and the target CRS have widgets of their own, below).
        self.option_widgets = {
            "catalog_url": self.catalogCombo, "collection": self.collectionCombo,
            "start": self.startDate, "end": self.endDate,
            "max_scene_cloud": self.maxSceneCloud, "max_aoi_cloud": self.maxAoiCloud,
            "invalid_scl": self.invalidScl, "dilation": self.dilationSpin,
            "method": self.methodCombo, "percentile": self.percentileSpin,
            "output_type": self.outputTypeCombo, "count_band": self.countBand,
            "source_band": self.sourceBand, "target_date": (self.targetDateCheck, self.targetDate),
            "resolution": self.resolutionSpin, "clip_to_aoi": self.clipCheck,
        }
        self._setup_widgets()
        self._connect()
        self.restore_settings()

    # -- set-up ------------------------------------------------------------------------------
    def _setup_widgets(self) -> None:
        if _POLYGON_FILTER is not None:
            self.layerCombo.setFilters(_POLYGON_FILTER)
        self.collectionCombo.addItems(COLLECTIONS)
        option_widgets.setup(self.option_widgets, self.tr)
        for i, preset in enumerate(BAND_PRESETS):  # the last item, Custom, has no preset
            self.bandsCombo.setItemData(i, ",".join(preset))
        self.outputWidget.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.outputWidget.setFilter(self.tr("GeoTIFF (*.tif *.tiff)"))
        self.outputWidget.setConfirmOverwrite(False)  # asked once, when building
        self.crsWidget.setOptionVisible(QgsProjectionSelectionWidget.CrsOption.ProjectCrs, True)
        scenes.setup_table(self.sceneTable)
        self.buttonBox.button(QDialogButtonBox.StandardButton.Close).setText(self.tr("Close"))

    def _connect(self) -> None:
        self.aoiMode.currentIndexChanged.connect(self.aoiPages.setCurrentIndex)
        self.drawRectangleButton.clicked.connect(lambda: self._activate(self.rectangle_tool))
        self.drawPolygonButton.clicked.connect(lambda: self._activate(self.polygon_tool))
        for tool in (self.rectangle_tool, self.polygon_tool):
            tool.drawn.connect(self._drawn)
            tool.cancelled.connect(self._restore_tool)
        self.useExtentButton.clicked.connect(self.use_extent)
        self.useLayerButton.clicked.connect(self.use_layer)
        self.findPlaceButton.clicked.connect(self.find_place)
        self.placeEdit.returnPressed.connect(self.find_place)
        self.placeResults.activated.connect(self.use_place)
        self.useTextButton.clicked.connect(self.use_text)
        self.addCatalogButton.clicked.connect(self.add_catalog)
        self.methodCombo.currentIndexChanged.connect(self._update_enabled)
        self.bandsCombo.currentIndexChanged.connect(self._update_enabled)
        self.utmCheck.toggled.connect(self._update_enabled)
        self.crsWidget.crsChanged.connect(self._update_enabled)
        self.searchButton.clicked.connect(self.search)
        self.buildButton.clicked.connect(self.build)
        self.cancelButton.clicked.connect(self.cancel)
        self.buttonBox.rejected.connect(self.close)
        self.buttonBox.helpRequested.connect(self.show_help)

    def _update_enabled(self, *_: Any) -> None:
        method = Method(self.methodCombo.currentData())
        self.percentileSpin.setEnabled(method is Method.PERCENTILE)
        self.sourceBand.setEnabled(method is Method.BEST)
        self.customBands.setEnabled(not self.bandsCombo.currentData())
        self.crsWidget.setEnabled(not self.utmCheck.isChecked())
        self.resolutionSpin.setSuffix(" m")
        busy = self.task is not None
        self.searchButton.setEnabled(not busy)
        self.buildButton.setEnabled(not busy)
        self.cancelButton.setEnabled(busy)

    # -- messages ----------------------------------------------------------------------------
    def message(self, text: str, level: Any = Qgis.MessageLevel.Info, duration: int = 10) -> None:
        """In the dialog's bar and in QGIS's message bar, so it is seen where the user looks."""
        self.bar.pushMessage("Clearsky", text, level, duration)
        self.iface.messageBar().pushMessage("Clearsky", text, level, duration)

    def error(self, text: str, details: str = "") -> None:
        self.message(text, Qgis.MessageLevel.Critical, 0)
        log(text + (f"\n{details}" if details else ""), Qgis.MessageLevel.Critical)

    # -- area of interest --------------------------------------------------------------------
    def set_aoi(self, aoi: Aoi, source: str) -> None:
        """Show the AOI on the canvas with its area; a new AOI voids the previous search."""
        self.aoi = aoi
        canvas_crs = self.canvas.mapSettings().destinationCrs()
        self.band.setToGeometry(aoi_to_geometry(aoi, canvas_crs), None)
        self.band.show()
        self.aoiLabel.setText(self.tr("AOI: {area} km² ({source}, {crs})").format(
            area=f"{aoi.area_km2:,.2f}", source=source, crs=aoi.crs if len(aoi.crs) < 40
            else "custom CRS"))
        settings.set_value("aoi_wkt", aoi.geometry.wkt)
        settings.set_value("aoi_crs", aoi.crs)
        self.sceneTable.setRowCount(0)
        self.scenesSummary.setText(self.tr("Search to list the scenes over the area."))

    def _try_aoi(self, make, source: str) -> bool:
        try:
            aoi = make()
        except ClearskyError as exc:
            self.error(str(exc))
            return False
        self.set_aoi(aoi, source)
        return True

    def _activate(self, tool) -> None:
        current = self.canvas.mapTool()
        if current not in (self.rectangle_tool, self.polygon_tool):
            self._previous_tool = current
        self.canvas.setMapTool(tool)
        self.canvas.setFocus()

    def _restore_tool(self) -> None:
        if self.canvas.mapTool() in (self.rectangle_tool, self.polygon_tool):
            if self._previous_tool is not None:
                self.canvas.setMapTool(self._previous_tool)
            else:
                self.canvas.unsetMapTool(self.canvas.mapTool())

    def _drawn(self, geometry) -> None:
        crs = self.canvas.mapSettings().destinationCrs()
        source = (self.tr("rectangle") if self.sender() is self.rectangle_tool
                  else self.tr("polygon"))
        self._try_aoi(lambda: aoi_from_geometry(geometry, crs), source)
        self._restore_tool()

    def use_extent(self) -> None:
        crs = self.canvas.mapSettings().destinationCrs()
        self._try_aoi(lambda: aoi_from_rectangle(self.canvas.extent(), crs),
                      self.tr("map extent"))

    def use_layer(self) -> None:
        layer = self.layerCombo.currentLayer()
        selected = self.selectedOnly.isChecked()
        name = layer.name() if layer is not None else ""
        self._try_aoi(lambda: aoi_from_layer(layer, selected), name)

    def use_text(self) -> None:
        text = self.aoiText.toPlainText()
        if self._try_aoi(lambda: parse_aoi(text), self.tr("text")):
            settings.set_value("aoi_text", text)

    def find_place(self) -> None:
        """Geocode in a task (network); the results fill the combo, the first becomes the AOI."""
        name = self.placeEdit.text().strip()
        if not name:
            self.error(self.tr("Type a place name to search for."))
            return
        if self.task is not None:
            return
        settings.set_value("place", name)
        url = nominatim_url()
        self._start(tasks.EngineTask(
            self.tr("Clearsky: find {name}").format(name=name),
            lambda progress: geocode(name, url=url), self._places_found))

    def _places_found(self, task: tasks.EngineTask) -> None:
        self._finish(task)
        if task.error is not None or task.cancelled:
            self.error(task.message, task.details)
            return
        self.places = list(task.result or [])
        self.placeResults.clear()
        for place in self.places:
            self.placeResults.addItem(f"{place.name} ({place.kind})" if place.kind else place.name)
        if not self.places:
            self.error(self.tr("No place called {name!r} was found.").format(
                name=self.placeEdit.text().strip()))
            return
        self.use_place(0)

    def use_place(self, index: int) -> None:
        if 0 <= index < len(self.places):
            place = self.places[index]
            self.set_aoi(place.aoi, place.name.split(",")[0])

    # -- catalog -----------------------------------------------------------------------------
    def add_catalog(self) -> None:
        url, ok = QInputDialog.getText(self, self.tr("Add a STAC API"),
                                       self.tr("STAC API URL (https://...)"))
        if ok and url.strip():
            self.add_catalog_url(url.strip())

    def add_catalog_url(self, url: str) -> None:
        """Add (and remember) a custom STAC API URL and select it."""
        known = [self.catalogCombo.itemText(i) for i in range(self.catalogCombo.count())]
        if url not in known:
            self.catalogCombo.addItem(url)
            custom = [u for u in settings.string_list("catalogs") if u != url] + [url]
            settings.set_value("catalogs", custom)
        self.catalogCombo.setCurrentText(url)

    # -- parameters --------------------------------------------------------------------------
    def bands(self) -> tuple:
        preset = self.bandsCombo.currentData()
        if preset:
            return tuple(preset.split(","))
        text = self.customBands.text().replace(";", ",").replace(" ", ",")
        return tuple(b.strip().lower() for b in text.split(",") if b.strip())

    def target_crs(self) -> Optional[str]:
        """None means the UTM zone of the AOI (the engine picks it)."""
        crs = self.crsWidget.crs()
        if self.utmCheck.isChecked() or not crs.isValid():
            return None
        return crs.authid() or crs.toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT2_2019)

    def mosaic_params(self) -> MosaicParams:
        """Everything the widgets say, as the engine's parameter object (not validated yet)."""
        if self.aoi is None:
            raise InvalidParameterError(
                self.tr("Choose an area of interest first: draw it, pick a layer or a place, "
                        "or paste WKT/GeoJSON."))
        output = self.outputWidget.filePath().strip()
        values = option_widgets.values(self.option_widgets)
        values["collection"] = values["collection"] or DEFAULT_COLLECTION
        return MosaicParams(
            aoi=self.aoi,
            output=Path(output) if output else None,
            bands=self.bands(),
            target_crs=self.target_crs(),
            **values,
        )

    def search_params(self) -> SearchParams:
        """The search part of the parameters: a search needs no output file yet."""
        return self.mosaic_params().search_only()

    # -- search ------------------------------------------------------------------------------
    def search(self) -> Optional[tasks.EngineTask]:
        """Validate, then search in a task; nothing starts when the input is bad."""
        if self.task is not None:
            return None
        self.save_settings()
        try:
            params = self.search_params()
            params.validate()
        except ClearskyError as exc:
            self.error(str(exc))
            return None
        self.scenesSummary.setText(self.tr("Searching…"))
        return self._start(tasks.EngineTask(
            self.tr("Clearsky: search scenes"),
            lambda progress: search_scenes(params, progress), self._searched, log))

    def _searched(self, task: tasks.EngineTask) -> None:
        self._finish(task)
        if task.error is not None or task.cancelled:
            self.scenesSummary.setText(task.message)
            if task.cancelled:
                self.message(task.message, Qgis.MessageLevel.Info)
            else:
                self.error(task.message, task.details)
            return
        result = task.result
        scenes.fill_table(self.sceneTable, result.reports)
        self.scenesSummary.setText(self.tr("{n} scenes found, {k} kept.").format(
            n=len(result.reports), k=len(result.kept)) + "".join(f" {n}" for n in result.notes))
        self._show_footprints(result.reports)

    def _show_footprints(self, reports) -> None:
        project = QgsProject.instance()
        if self.footprints_id and project.mapLayer(self.footprints_id) is not None:
            project.removeMapLayer(self.footprints_id)
        layer = scenes.footprints_layer(reports, self.tr("Clearsky scene footprints"))
        project.addMapLayer(layer)
        self.footprints_id = layer.id()

    def footprints(self):
        return QgsProject.instance().mapLayer(self.footprints_id) if self.footprints_id else None

    # -- build -------------------------------------------------------------------------------
    def build(self) -> Optional[tasks.EngineTask]:
        """Validate (engine rules), confirm overwriting, then build in a task."""
        if self.task is not None:
            return None
        self.save_settings()
        try:
            params = self.mosaic_params()
            params.validate()
            if self.sceneTable.rowCount():
                params.scene_ids = scenes.checked_ids(self.sceneTable)
                if not params.scene_ids:
                    raise InvalidParameterError(
                        self.tr("Every scene is unticked: tick at least one, or search again."))
            try:
                check_output_path(params.output, overwrite=False)
            except OutputError:
                if not params.output.is_file():
                    raise
                if not self.confirm_overwrite(params.output):
                    self.message(self.tr("Not built: {path} already exists.").format(
                        path=params.output), Qgis.MessageLevel.Warning)
                    return None
                params.overwrite = True
                check_output_path(params.output, overwrite=True)
        except ClearskyError as exc:
            self.error(str(exc))
            return None
        task = tasks.EngineTask(
            self.tr("Clearsky: build mosaic {name}").format(name=params.output.name),
            lambda progress: build_mosaic(params, progress), self._built, log)
        task.params = params
        return self._start(task)

    def confirm_overwrite(self, path: Path) -> bool:
        answer = QMessageBox.question(
            self, self.tr("Overwrite?"), self.tr("{path} exists. Replace it?").format(path=path),
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _built(self, task: tasks.EngineTask) -> None:
        self._finish(task)
        if task.cancelled:
            self.message(task.message, Qgis.MessageLevel.Warning)
            return
        if task.error is not None:
            self.error(task.message, task.details)
            return
        result = task.result
        layer = QgsRasterLayer(str(result.output), result.output.stem)
        if not layer.isValid():
            self.error(self.tr("QGIS cannot open the mosaic {path}.").format(path=result.output))
            return
        style_mosaic_layer(layer, result.band_names, task.params.output_type)
        QgsProject.instance().addMapLayer(layer)
        self.message(self.tr("Mosaic written to {out}; scene report {csv} (and {json}).").format(
            out=result.output, csv=result.report_csv, json=result.report_json.name),
            Qgis.MessageLevel.Success, 0)

    # -- tasks -------------------------------------------------------------------------------
    def _start(self, task: tasks.EngineTask) -> tasks.EngineTask:
        self.task = task
        self.progressBar.setValue(0)
        task.progressChanged.connect(self._on_progress)
        tasks.start(task)
        self._update_enabled()
        return task

    @pyqtSlot(float)
    def _on_progress(self, value: float) -> None:
        self.progressBar.setValue(int(value))

    def _finish(self, task: tasks.EngineTask) -> None:
        if self.task is task:
            self.task = None
        self.progressBar.setValue(0 if task.error is not None or task.cancelled else 100)
        self._update_enabled()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    # -- help, settings, closing -------------------------------------------------------------
    def help_url(self) -> QUrl:
        url = QUrl.fromLocalFile(str(HELP))
        url.setFragment(HELP_ANCHOR)
        return url

    def show_help(self) -> None:
        QDesktopServices.openUrl(self.help_url())

    def save_settings(self) -> None:
        option_widgets.save(self.option_widgets)
        s = settings.set_value
        s("aoi_mode", self.aoiMode.currentIndex())
        s("bands_preset", self.bandsCombo.currentIndex())
        s("custom_bands", self.customBands.text())
        s("utm", self.utmCheck.isChecked())
        s("crs", self.target_crs() or "")
        s("output", self.outputWidget.filePath())
        s("selected_only", self.selectedOnly.isChecked())

    def restore_settings(self) -> None:
        v = settings.value
        self.catalogCombo.addItem(EARTH_SEARCH)
        for url in settings.string_list("catalogs"):
            if url != EARTH_SEARCH:
                self.catalogCombo.addItem(url)
        today = date.today()
        option_widgets.restore(self.option_widgets, {
            "start": today - timedelta(days=30), "end": today, "target_date": None})
        self.bandsCombo.setCurrentIndex(v("bands_preset", 0, int))
        self.customBands.setText(v("custom_bands", ""))
        self.utmCheck.setChecked(v("utm", False, bool))
        crs = QgsCoordinateReferenceSystem(v("crs", ""))
        self.crsWidget.setCrs(crs if crs.isValid() else QgsProject.instance().crs())
        self.outputWidget.setFilePath(v("output", ""))
        self.selectedOnly.setChecked(v("selected_only", False, bool))
        self.aoiText.setPlainText(v("aoi_text", ""))
        self.placeEdit.setText(v("place", ""))
        mode = v("aoi_mode", 0, int)
        self.aoiMode.setCurrentIndex(mode)
        self.aoiPages.setCurrentIndex(mode)
        wkt, crs_text = v("aoi_wkt", ""), v("aoi_crs", "")
        if wkt and crs_text:
            with contextlib.suppress(ClearskyError):  # a broken stored AOI is not restored
                self.set_aoi(parse_aoi(wkt, crs_text), self.tr("last session"))
        self._update_enabled()

    def showEvent(self, event) -> None:
        if self.aoi is not None:
            self.band.show()
        super().showEvent(event)

    def closeEvent(self, event) -> None:
        self.save_settings()
        self._restore_tool()
        self.band.hide()
        super().closeEvent(event)


_INSTANCE: Optional[ClearskyDialog] = None


def show_dialog(iface: Any) -> ClearskyDialog:
    """Show (creating once) the non-modal dialog and bring it to the front."""
    global _INSTANCE
    if _INSTANCE is None or _INSTANCE.iface is not iface:
        _INSTANCE = ClearskyDialog(iface, iface.mainWindow())
    _INSTANCE.show()
    _INSTANCE.raise_()
    _INSTANCE.activateWindow()
    return _INSTANCE


def close_dialog() -> None:
    """For plugin unload: cancel a running task, remove the AOI band, drop the dialog."""
    global _INSTANCE
    if _INSTANCE is not None:
        _INSTANCE.cancel()
        _INSTANCE.close()
        _INSTANCE.canvas.scene().removeItem(_INSTANCE.band)
        _INSTANCE.deleteLater()
        _INSTANCE = None
