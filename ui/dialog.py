"""The Clearsky dialog: widgets -> `MosaicParams`, engine calls in QgsTasks, results -> layers.

No mosaic logic here: validation is the engine's (`params.validate()`,
`core.io.check_output_path`), and every message shown is the engine's own text.
"""

from __future__ import annotations

import contextlib
import re
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
from qgis.PyQt import sip, uic
from qgis.PyQt.QtCore import QByteArray, Qt, QUrl, pyqtSlot
from qgis.PyQt.QtGui import QDesktopServices, QIcon
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDateEdit,
    QDialogButtonBox,
    QDoubleSpinBox,
    QLineEdit,
    QMessageBox,
    QSizePolicy,
    QSpinBox,
)

from ..core import aoi as core_aoi
from ..core import mlmask
from ..core import options as opts
from ..core.aoi import Aoi, geocode, parse_aoi
from ..core.errors import ClearskyError, InvalidParameterError, OutputError
from ..core.estimate import estimate_mosaic
from ..core.grid import output_grid, utm_crs_for
from ..core.io import check_output_path, gdal_path
from ..core.mosaic import build_mosaic, search_scenes
from ..core.options import DEFAULT_COLLECTION, EARTH_SEARCH, CloudMask, Method
from ..core.params import MosaicParams, SearchParams
from ..core.quicklook import read_quicklook
from ..core.redact import redact_text
from ..core.search import kept_coverage
from . import connections, option_widgets, scenes, settings, tasks
from .aoi_tools import (
    PolygonMapTool,
    RectangleMapTool,
    aoi_from_geometry,
    aoi_from_layer,
    aoi_from_rectangle,
    aoi_memory_layer,
    aoi_rubber_band,
    aoi_to_geometry,
    scene_rubber_band,
)
from .layers import period_layers, replace_or_add_raster, style_mosaic_layer
from .proxy import proxy_fields
from .quicklook import Quicklook

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

# The inputs a scene table comes from: when one changes, the table no longer says what a
# Build would use (issue 16, bug 1).
SEARCH_FIELDS = ("catalog_url", "collection", "start", "end", "max_scene_cloud",
                 "max_aoi_cloud", "invalid_scl", "dilation", "cloud_mask", "cloud_prob")
# Above these, Search and Build ask first (issue 16, bug 4).
MAX_PIXELS = 100_000_000
MAX_AREA_KM2 = 10_000.0
SUCCESS_SECONDS = 10  # successes and notes time out; errors stay until closed

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
        # Below the form, above the buttons: a message never pushes the form under the mouse.
        self.mainLayout.insertWidget(1, self.bar)
        self.aoi: Optional[Aoi] = None
        self.task: Optional[tasks.EngineTask] = None
        self.places: List[core_aoi.Place] = []
        self.footprints_id: Optional[str] = None
        self.aoi_name = ""  # a layer or place name, for the default output file name
        self.searched_key: Optional[tuple] = None  # the inputs the scene table came from
        self.summary = ""  # what the table's summary says while it is current
        self._chosen_crs = QgsCoordinateReferenceSystem()  # the CRS picked when UTM is off
        self._hidden_for_drawing = False
        self.band = aoi_rubber_band(self.canvas)
        self.highlight = scene_rubber_band(self.canvas)  # the footprint of the selected row
        self.reports_by_id: dict = {}
        self.quicklook = Quicklook(self.quicklookLabel, proxy_fields)  # of the selected row
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
            "cloud_mask": self.cloudMaskCombo, "cloud_prob": self.cloudProbSpin,
            "method": self.methodCombo, "percentile": self.percentileSpin,
            "output_type": self.outputTypeCombo, "count_band": self.countBand,
            "source_band": self.sourceBand, "target_date": (self.targetDateCheck, self.targetDate),
            "resolution": self.resolutionSpin, "clip_to_aoi": self.clipCheck,
            "executor": self.executorEdit, "resume": self.resumeCheck,
            "statistics": self.statisticsEdit, "periods": self.periodsEdit,
            "max_read_gb": self.maxReadSpin, "max_output_gib": self.maxOutputSpin,
            "memory_mb": self.memorySpin,
            "normalise": self.normaliseCheck, "feather_m": self.featherSpin,
        }
        self._setup_widgets()
        self._connect()
        self.restore_settings()
        self._watch_search_inputs()

    # -- set-up ------------------------------------------------------------------------------
    def _setup_widgets(self) -> None:
        if _POLYGON_FILTER is not None:
            self.layerCombo.setFilters(_POLYGON_FILTER)
        self.collectionCombo.addItems(COLLECTIONS)
        option_widgets.setup(self.option_widgets, self.tr)
        self._offer_ml_mask_only_when_installed()
        for i, preset in enumerate(BAND_PRESETS):  # the last item, Custom, has no preset
            self.bandsCombo.setItemData(i, ",".join(preset))
        self.outputWidget.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.outputWidget.setFilter(self.tr("GeoTIFF (*.tif *.tiff)"))
        self.outputWidget.setConfirmOverwrite(False)  # asked once, when building
        self.crsWidget.setOptionVisible(QgsProjectionSelectionWidget.CrsOption.ProjectCrs, True)
        scenes.setup_table(self.sceneTable)
        self.scenesSummary.setWordWrap(True)  # a long note must not widen the dialog
        self.buttonBox.button(QDialogButtonBox.StandardButton.Close).setText(self.tr("Close"))

    def _offer_ml_mask_only_when_installed(self) -> None:
        """The ML cloud mask is greyed out, with how to install it, without its packages."""
        if mlmask.available():
            return
        index = self.cloudMaskCombo.findData(CloudMask.ML.value)
        item = self.cloudMaskCombo.model().item(index) if index >= 0 else None
        if item is not None:
            item.setEnabled(False)
            item.setToolTip(self.tr(mlmask.INSTALL_HINT))

    def _connect(self) -> None:
        self.aoiLayerButton.clicked.connect(self.add_aoi_layer)
        self.sceneTable.itemSelectionChanged.connect(self.show_selected_scene)
        self.addSceneButton.clicked.connect(self.add_selected_scene)
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
        self.utmCheck.toggled.connect(self._show_crs)
        self.crsWidget.crsChanged.connect(self._crs_picked)
        self.percentileSpin.valueChanged.connect(self._update_output_hint)
        self.canvas.mapToolSet.connect(self._map_tool_set)
        self.searchButton.clicked.connect(self.search)
        self.buildButton.clicked.connect(self.build)
        self.estimateButton.clicked.connect(self.estimate)
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
        self.estimateButton.setEnabled(not busy)
        self.cancelButton.setEnabled(busy)
        self._update_output_hint()

    # -- the scene table and the inputs it came from ----------------------------------------
    def _watch_search_inputs(self) -> None:
        for field in SEARCH_FIELDS:
            widget = self.option_widgets[field]
            if isinstance(widget, QComboBox):
                widget.currentTextChanged.connect(self._search_inputs_changed)
            elif isinstance(widget, QDateEdit):
                widget.dateChanged.connect(self._search_inputs_changed)
            elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
                widget.valueChanged.connect(self._search_inputs_changed)
            elif isinstance(widget, QLineEdit):
                widget.textChanged.connect(self._search_inputs_changed)

    def search_key(self) -> tuple:
        """The search inputs as the widgets show them now (unparsable text as typed)."""
        parts: List[Any] = [None if self.aoi is None else (self.aoi.geometry.wkt, self.aoi.crs)]
        for field in SEARCH_FIELDS:
            widget = self.option_widgets[field]
            try:
                parts.append(option_widgets.get(opts.option(field), widget))
            except ClearskyError:
                parts.append(("typed", widget.text() if isinstance(widget, QLineEdit) else ""))
        return tuple(parts)

    def table_is_current(self) -> bool:
        """True when the table lists what a search with the current inputs found."""
        return self.sceneTable.rowCount() > 0 and self.search_key() == self.searched_key

    def _search_inputs_changed(self, *_: Any) -> None:
        self._update_output_hint()
        self.estimateLabel.clear()  # the figures were for other inputs
        if not self.sceneTable.rowCount():
            return
        current = self.table_is_current()
        self.sceneTable.setEnabled(current)
        self.scenesSummary.setText(self.summary if current else self.tr(
            "The search inputs changed since this search: Search again to list the scenes "
            "they find. Build now searches again and uses every scene that passes."))

    def _clear_table(self, summary: str) -> None:
        self.sceneTable.setRowCount(0)
        self.sceneTable.setEnabled(True)
        self.highlight.hide()
        self.quicklook.clear()
        self.searched_key = None
        self.summary = summary
        self.scenesSummary.setText(summary)

    # -- target CRS --------------------------------------------------------------------------
    def utm_crs(self) -> Optional[str]:
        """The UTM zone the engine will use for the current AOI (None without an AOI)."""
        if self.aoi is None:
            return None
        try:
            return utm_crs_for(self.aoi)
        except Exception:  # noqa: BLE001 - only a display hint
            return None

    def _show_crs(self, *_: Any) -> None:
        """The greyed CRS box shows the UTM zone that will be used; unticked, the user's CRS."""
        utm = self.utmCheck.isChecked()
        shown = QgsCoordinateReferenceSystem(self.utm_crs() or "") if utm else self._chosen_crs
        if shown.isValid():
            self.crsWidget.blockSignals(True)
            self.crsWidget.setCrs(shown)
            self.crsWidget.blockSignals(False)
        self._update_enabled()

    def _crs_picked(self, crs: QgsCoordinateReferenceSystem) -> None:
        if not self.utmCheck.isChecked():
            self._chosen_crs = QgsCoordinateReferenceSystem(crs)
        self._update_enabled()

    # -- default output ----------------------------------------------------------------------
    def output_folder(self) -> Path:
        folder = Path(settings.value("output_folder", str(Path.home())))
        return folder if folder.is_dir() else Path.home()

    def default_output(self) -> Path:
        """A remembered folder plus a name from the AOI, the dates and the method; never an
        existing file (clearsky_<aoi>_<start>_<end>_<method>.tif, then _2, _3 ...)."""
        parts = ["clearsky"]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.aoi_name).strip("-").lower()[:40]
        if slug:
            parts.append(slug)
        parts += [self.startDate.date().toString("yyyy-MM-dd"),
                  self.endDate.date().toString("yyyy-MM-dd")]
        method = Method(self.methodCombo.currentData())
        parts.append(f"p{self.percentileSpin.value():g}" if method is Method.PERCENTILE
                     else method.value)
        folder, stem = self.output_folder(), "_".join(parts)
        path, n = folder / f"{stem}.tif", 2
        while path.exists():
            path, n = folder / f"{stem}_{n}.tif", n + 1
        return path

    def _update_output_hint(self, *_: Any) -> None:
        edit = self.outputWidget.lineEdit()
        if edit is not None:
            edit.setPlaceholderText(self.tr("Empty: {path}").format(path=self.default_output()))

    # -- messages ----------------------------------------------------------------------------
    def message(self, text: str, level: Any = Qgis.MessageLevel.Info,
                duration: Optional[int] = None) -> None:
        """Once, where the user looks: the dialog's bar while it is shown, else QGIS's.

        Errors stay until closed; everything else times out."""
        if duration is None:
            duration = 0 if level == Qgis.MessageLevel.Critical else SUCCESS_SECONDS
        bar = self.bar if self.isVisible() else self.iface.messageBar()
        bar.pushMessage("Clearsky", text, level, duration)

    def error(self, text: str, details: str = "") -> None:
        """A handled error is a warning in the log; a traceback only for unexpected ones."""
        self.message(text, Qgis.MessageLevel.Critical)
        if details:
            log(f"{text}\n{details}", Qgis.MessageLevel.Critical)
        else:
            log(text, Qgis.MessageLevel.Warning)

    # -- area of interest --------------------------------------------------------------------
    def set_aoi(self, aoi: Aoi, source: str, name: str = "") -> None:
        """Show the AOI on the canvas with its area; a new AOI voids the previous search.

        `name` (a layer or place) goes into the default output file name."""
        self.aoi = aoi
        self.aoi_name = name
        canvas_crs = self.canvas.mapSettings().destinationCrs()
        self.band.setToGeometry(aoi_to_geometry(aoi, canvas_crs), None)
        self.band.show()
        self.aoiLayerButton.setEnabled(True)
        self.aoiLabel.setText(self.tr("AOI: {area} km² ({source}, {crs})").format(
            area=f"{aoi.area_km2:,.2f}", source=source, crs=aoi.crs if len(aoi.crs) < 40
            else "custom CRS"))
        settings.set_value("aoi_wkt", aoi.geometry.wkt)
        settings.set_value("aoi_crs", aoi.crs)
        settings.set_value("aoi_name", name)
        self._clear_table(self.tr("Search to list the scenes over the area."))
        self._show_crs()

    def add_aoi_layer(self):
        """The AOI as a memory polygon layer in its own CRS, which the user can keep (save
        it with Make Permanent) and reuse in Processing."""
        if self.aoi is None:
            return None
        layer = aoi_memory_layer(self.aoi, self.tr("Clearsky AOI"))
        QgsProject.instance().addMapLayer(layer)
        return layer

    def _try_aoi(self, make, source: str, name: str = "") -> bool:
        try:
            aoi = make()
        except ClearskyError as exc:
            self.error(str(exc))
            return False
        self.set_aoi(aoi, source, name)
        return True

    def _activate(self, tool) -> None:
        """Give the canvas to a drawing tool; the dialog steps aside until drawing ends."""
        current = self.canvas.mapTool()
        if current not in (self.rectangle_tool, self.polygon_tool):
            self._previous_tool = current
        self.canvas.setMapTool(tool)
        self.canvas.setFocus()
        if self.isVisible():
            self._hidden_for_drawing = True
            self.hide()

    def _restore_tool(self) -> None:
        if self.canvas.mapTool() in (self.rectangle_tool, self.polygon_tool):
            if self._previous_tool is not None:
                self.canvas.setMapTool(self._previous_tool)
            else:
                self.canvas.unsetMapTool(self.canvas.mapTool())
        self._show_again()

    def _map_tool_set(self, new_tool, *_: Any) -> None:
        """Another tool taken from the toolbar also ends drawing: the dialog comes back."""
        if new_tool not in (self.rectangle_tool, self.polygon_tool):
            self._show_again()

    def _show_again(self) -> None:
        if self._hidden_for_drawing and not sip.isdeleted(self):
            self._hidden_for_drawing = False
            self.show()
            self.raise_()

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
        self._try_aoi(lambda: aoi_from_layer(layer, selected), name, name)

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
            lambda progress: geocode(name, url=url), self._callback(self._places_found)))

    def _places_found(self, task: tasks.EngineTask) -> None:
        self._finish(task)
        if task.cancelled:
            self.message(task.message, Qgis.MessageLevel.Warning)
            return
        if task.error is not None:
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
            short = place.name.split(",")[0]
            self.set_aoi(place.aoi, short, short)

    # -- catalog -----------------------------------------------------------------------------
    def add_catalog(self) -> None:
        """The connections manager; afterwards the combo lists the connections, and the
        collections a Test found fill the collection combo."""
        manager = connections.ConnectionsDialog(self, self.catalogCombo.currentText())
        manager.exec()
        current = manager.edited().url or self.catalogCombo.currentText()
        self._fill_catalogs(current)
        if manager.collections and manager.edited().url == self.catalogCombo.currentText():
            self.fill_collections(manager.collections)

    def _fill_catalogs(self, current: str) -> None:
        self.catalogCombo.blockSignals(True)
        self.catalogCombo.clear()
        for c in connections.load():
            self.catalogCombo.addItem(c.url)
            self.catalogCombo.setItemData(self.catalogCombo.count() - 1, c.name,
                                          Qt.ItemDataRole.ToolTipRole)
        self.catalogCombo.blockSignals(False)
        self.catalogCombo.setCurrentText(current)

    def fill_collections(self, ids: List[str]) -> None:
        current = self.collectionCombo.currentText()
        self.collectionCombo.clear()
        self.collectionCombo.addItems(ids)
        self.collectionCombo.setCurrentText(current if current in ids else ids[0])

    def add_catalog_url(self, url: str, name: str = "") -> None:
        """Add (and remember) a STAC API connection and select it."""
        known = connections.load()
        if not any(c.url == url for c in known):
            connections.save(known + [connections.Connection(name or url, url)])
        self._fill_catalogs(url)

    def catalog_headers(self, url: str) -> dict:
        """The request headers of the connection's QGIS auth configuration (never stored)."""
        found = connections.find(url)
        return connections.auth_headers(found.authcfg, url) if found else {}

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
            output=Path(output) if output else self.default_output(),
            bands=self.bands(),
            target_crs=self.target_crs(),
            gui=True,  # worker processes (EXECUTOR=local:N) would start QGIS again
            catalog_headers=self.catalog_headers(values["catalog_url"]),
            **proxy_fields(),  # the QGIS proxy, for STAC requests and GDAL reads
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
            if not self.size_is_acceptable(params, with_grid=False):
                return None
        except ClearskyError as exc:
            self.error(str(exc))
            return None
        key = self.search_key()
        self.scenesSummary.setText(self.tr("Searching…"))
        task = tasks.EngineTask(
            self.tr("Clearsky: search scenes"),
            lambda progress: search_scenes(params, progress), self._callback(self._searched))
        task.params = key
        return self._start(task)

    def estimate(self) -> Optional[tasks.EngineTask]:
        """The engine's estimate of the build (searching, reading SCL and headers only),
        shown before anything is composited, with the limit it would hit if any."""
        if self.task is not None:
            return None
        try:
            params = self.mosaic_params()
            params.validate()
            if self.table_is_current():
                params.scene_ids = scenes.checked_ids(self.sceneTable)
        except ClearskyError as exc:
            self.error(str(exc))
            return None
        self.estimateLabel.setText(self.tr("Estimating…"))
        task = tasks.EngineTask(self.tr("Clearsky: estimate"),
                                lambda progress: estimate_mosaic(params, progress),
                                self._callback(self._estimated))
        task.params = params
        return self._start(task)

    def _estimated(self, task: tasks.EngineTask) -> None:
        self._finish(task)
        if task.error is not None or task.cancelled:
            self.estimateLabel.setText(task.message)
            return
        figures = task.result
        refusal = figures.refusal(task.params)
        self.estimateLabel.setText(figures.text() + (f" {refusal}" if refusal else ""))

    def _searched(self, task: tasks.EngineTask) -> None:
        self._finish(task)
        if task.error is not None or task.cancelled:
            self._clear_table(task.message)
            if task.cancelled:
                self.message(task.message, Qgis.MessageLevel.Warning)
            else:
                self.error(task.message, task.details)
            return
        result = task.result
        scenes.fill_table(self.sceneTable, result.reports)
        self.reports_by_id = {r.scene.id: r for r in result.reports}
        self.searched_key = task.params
        summary = self.tr("{n} scenes found, {k} kept.").format(
            n=len(result.reports), k=len(result.kept))
        if result.kept and self.aoi is not None:
            summary += " " + self.tr("The kept scenes cover {p:.0f} % of the AOI.").format(
                p=kept_coverage(result.reports, self.aoi))
        summary += "".join(f" {n}" for n in result.notes)
        if not result.reports:
            summary += " " + self.tr(
                "Nothing found: widen the dates, check the collection and the catalog, or "
                "draw the area where Sentinel-2 has data.")
        elif not result.kept:
            summary += " " + self.tr(
                "None is clear enough: raise the maximum AOI cloud or scene cloud, or widen "
                "the dates.")
        self.summary = summary
        self.scenesSummary.setText(summary)
        self._search_inputs_changed()  # inputs edited while the search ran: stale at once
        self._show_footprints(result.reports)

    def selected_report(self):
        rows = {i.row() for i in self.sceneTable.selectedIndexes()}
        if len(rows) != 1:
            return None
        item = self.sceneTable.item(rows.pop(), 0)
        return self.reports_by_id.get(item.data(scenes.ID_ROLE)) if item else None

    def show_selected_scene(self) -> None:
        """Highlight the selected scene's footprint, zoom the map to it, show its quicklook."""
        report = self.selected_report()
        self.quicklook.show(report.scene if report is not None else None)
        self.addSceneButton.setEnabled(report is not None and bool(
            report.scene.assets.get("visual")))
        if report is None:
            self.highlight.hide()
            return
        canvas_crs = self.canvas.mapSettings().destinationCrs()
        geometry = aoi_to_geometry(Aoi(report.scene.footprint), canvas_crs)
        self.highlight.setToGeometry(geometry, None)
        self.highlight.show()
        extent = geometry.boundingBox()
        extent.scale(1.1)
        self.canvas.setExtent(extent)
        self.canvas.refresh()

    def add_selected_scene(self):
        """The selected scene's true-colour COG as a layer, read over HTTP by GDAL."""
        report = self.selected_report()
        href = report.scene.assets.get("visual") if report is not None else None
        if not href:
            return None
        try:
            path = gdal_path(href)  # http(s) and s3 only: a catalog cannot point at files
            # QGIS's GDAL provider tries every driver: open it through the engine's GeoTIFF
            # allow-list first, so a VRT behind the URL (which may name local files) is refused.
            read_quicklook(href, 8, **proxy_fields())
        except ClearskyError as exc:
            self.error(str(exc))
            return None
        layer = QgsRasterLayer(path, f"{report.scene.id} (true colour)", "gdal")
        if not layer.isValid():
            self.error(self.tr("QGIS cannot open {href}.").format(href=redact_text(href)))
            return None
        QgsProject.instance().addMapLayer(layer)
        return layer

    def _show_footprints(self, reports) -> None:
        """One footprints layer per project, found by its tag and refilled in place (even one
        a previous session of the plugin made), so reloads and searches never stack copies."""
        layer = scenes.update_footprints(QgsProject.instance(), reports,
                                         self.tr("Clearsky scene footprints (temporary)"))
        self.footprints_id = layer.id()

    def footprints(self):
        return QgsProject.instance().mapLayer(self.footprints_id) if self.footprints_id else None

    # -- build -------------------------------------------------------------------------------
    def build(self) -> Optional[tasks.EngineTask]:
        """Validate (engine rules), confirm overwriting, then build in a task."""
        if self.task is not None:
            return None
        self.save_settings()
        typed_output = self.outputWidget.filePath().strip()
        try:
            params = self.mosaic_params()
            params.validate()
            if not self.size_is_acceptable(params, with_grid=True):
                return None
            if self.table_is_current():  # exactly the scenes the user sees and ticked
                params.scene_ids = scenes.checked_ids(self.sceneTable)
                if not params.scene_ids:
                    raise InvalidParameterError(
                        self.tr("Every scene is unticked: tick at least one, or search again."))
            elif self.sceneTable.rowCount():
                self.message(self.tr(
                    "The search inputs changed since the scene table was filled: Build searches "
                    "again and uses every scene that passes the filters."),
                    Qgis.MessageLevel.Info)
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
        if not typed_output:  # the default name: shown in the field, its folder remembered
            self.outputWidget.setFilePath(str(params.output))
        settings.set_value("output_folder", str(params.output.parent))
        task = tasks.EngineTask(
            self.tr("Clearsky: build mosaic {name}").format(name=params.output.name),
            lambda progress: build_mosaic(params, progress), self._callback(self._built))
        task.params = params
        return self._start(task)

    def size_is_acceptable(self, params: SearchParams, with_grid: bool) -> bool:
        """Refuse an output grid the engine refuses; ask before a very large AOI or output.

        Runs before any work starts; the figures are in the question."""
        figures = []
        if with_grid and isinstance(params, MosaicParams):
            grid = output_grid(params.aoi, params.target_crs, params.resolution)  # may refuse
            pixels = grid.width * grid.height
            if pixels > MAX_PIXELS:
                per_pixel = len(params.bands) * (1 if params.output_type.value == "visual" else 2)
                figures.append(self.tr(
                    "{w:,} x {h:,} pixels ({mp:,.0f} million) in {crs} at {res:g} m, about "
                    "{gib:,.1f} GiB before compression").format(
                        w=grid.width, h=grid.height, mp=pixels / 1e6, crs=grid.crs,
                        res=params.resolution, gib=pixels * per_pixel / 2**30))
        area = params.aoi.area_km2
        if area > MAX_AREA_KM2:
            figures.append(self.tr("an area of interest of {area:,.0f} km²").format(area=area))
        if not figures:
            return True
        text = self.tr(
            "This is a very large job: {figures}. Every scene over it is searched and read, "
            "which can take hours and a lot of disk. Continue?").format(
                figures="; ".join(figures))
        if self.confirm_large(text):
            return True
        self.message(self.tr("Not started: the area or output is very large. Draw a smaller "
                             "area or choose a coarser resolution."), Qgis.MessageLevel.Info)
        return False

    def confirm_large(self, text: str) -> bool:
        answer = QMessageBox.question(
            self, self.tr("Very large job"), text,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

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
        if len(result.outputs) > 1:  # one layer per period, in a group, as a temporal stack
            layers = period_layers(QgsProject.instance(), result, task.params.output_type,
                                   self.tr("Clearsky periods: {stem}").format(
                                       stem=task.params.output.stem))
            self.message(self.tr("{n} period mosaics written: {names}.").format(
                n=len(layers), names=", ".join(o.output.name for o in result.outputs)),
                Qgis.MessageLevel.Success)
            return
        layer = replace_or_add_raster(QgsProject.instance(), result.output,
                                      lambda lyr: style_mosaic_layer(
                                          lyr, result.band_names, task.params.output_type))
        if layer is None:
            self.error(self.tr("QGIS cannot open the mosaic {path}.").format(path=result.output))
            return
        self.statusLabel.setText(self.tr("Done: {name}").format(name=result.output.name))
        if result.report_csv is not None:
            text = self.tr("Mosaic written to {out}; scene report {csv} (and {json}).").format(
                out=result.output, csv=result.report_csv, json=result.report_json.name)
        else:
            text = self.tr("Mosaic written to {out}.").format(out=result.output)
        self.message(text, Qgis.MessageLevel.Success)

    # -- tasks -------------------------------------------------------------------------------
    def _callback(self, method):
        """A task callback that does nothing once this dialog has been deleted."""
        def call(task: tasks.EngineTask) -> None:
            if not sip.isdeleted(self):
                method(task)
        return call

    def _start(self, task: tasks.EngineTask) -> tasks.EngineTask:
        self.task = task
        self.progressBar.setValue(0)
        self.statusLabel.setText(task.description())
        task.progressChanged.connect(self._on_progress)
        task.info.connect(self._on_info)  # queued: emitted in the worker thread
        tasks.start(task)
        self._update_enabled()
        return task

    @pyqtSlot(float)
    def _on_progress(self, value: float) -> None:
        self.progressBar.setValue(int(value))

    @pyqtSlot(str)
    def _on_info(self, text: str) -> None:
        """An engine phase, live: beside the progress bar and once in the Clearsky log."""
        self.statusLabel.setText(text)
        log(text)

    def _release(self, task: tasks.EngineTask) -> None:
        for signal, slot in ((task.progressChanged, self._on_progress),
                             (task.info, self._on_info)):
            with contextlib.suppress(TypeError, RuntimeError):
                signal.disconnect(slot)

    def _finish(self, task: tasks.EngineTask) -> None:
        self._release(task)
        if self.task is task:
            self.task = None
        failed = task.error is not None or task.cancelled
        self.progressBar.setValue(0 if failed else 100)
        if task.cancelled:
            self.statusLabel.setText(self.tr("Cancelled"))
        elif task.error is not None:
            self.statusLabel.setText(self.tr("Stopped: see the message above"))
        else:
            self.statusLabel.setText(self.tr("Done"))
        self._update_enabled()

    def detach_task(self) -> None:
        """Unload: the running task is cancelled and will call nothing of this dialog."""
        task = self.task
        if task is not None:
            self._release(task)
            task.detach()
            task.cancel()
            self.task = None

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
        chosen = self._chosen_crs
        s("crs", (chosen.authid() or chosen.toWkt()) if chosen.isValid() else "")
        s("output", self.outputWidget.filePath())
        s("selected_only", self.selectedOnly.isChecked())
        s("geometry", bytes(self.saveGeometry().toHex()).decode())
        s("splitter", bytes(self.splitter.saveState().toHex()).decode())

    def restore_settings(self) -> None:
        v = settings.value
        self._fill_catalogs(EARTH_SEARCH)
        today = date.today()
        option_widgets.restore(self.option_widgets, {
            "start": today - timedelta(days=30), "end": today, "target_date": None})
        self.bandsCombo.setCurrentIndex(v("bands_preset", 0, int))
        self.customBands.setText(v("custom_bands", ""))
        crs = QgsCoordinateReferenceSystem(v("crs", ""))
        self._chosen_crs = crs if crs.isValid() else QgsProject.instance().crs()
        self.crsWidget.setCrs(self._chosen_crs)
        self.utmCheck.setChecked(v("utm", True, bool))
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
                self.set_aoi(parse_aoi(wkt, crs_text), self.tr("last session"),
                             v("aoi_name", ""))
        for name, restore in (("geometry", self.restoreGeometry),
                              ("splitter", self.splitter.restoreState)):
            stored = v(name, "")
            if stored:
                restore(QByteArray.fromHex(stored.encode()))
        self._show_crs()

    def showEvent(self, event) -> None:
        if self.aoi is not None:
            self.band.show()
        super().showEvent(event)

    def closeEvent(self, event) -> None:
        self._hidden_for_drawing = False
        self.save_settings()
        self._restore_tool()
        self.band.hide()
        self.highlight.hide()
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
        _INSTANCE.detach_task()
        with contextlib.suppress(TypeError, RuntimeError):
            _INSTANCE.canvas.mapToolSet.disconnect(_INSTANCE._map_tool_set)
        _INSTANCE.close()
        _INSTANCE.canvas.scene().removeItem(_INSTANCE.band)
        _INSTANCE.canvas.scene().removeItem(_INSTANCE.highlight)
        _INSTANCE.deleteLater()
        _INSTANCE = None
