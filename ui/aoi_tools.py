"""AOI input on the QGIS side: map tools that draw one, and QgsGeometry <-> engine `Aoi`.

The engine takes an `Aoi(shapely geometry, crs)`; these helpers only translate, they never
validate on their own (the engine's `Aoi` does, with messages written for users).
"""

from __future__ import annotations

from typing import List, Optional

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureRequest,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QKeyEvent

from ..core.aoi import Aoi
from ..core.errors import AoiError
from .geometry import aoi_from_geometries

POLYGON = QgsWkbTypes.GeometryType.PolygonGeometry
AOI_COLOUR = QColor(230, 60, 30)


def aoi_from_geometry(geometry: QgsGeometry, crs: QgsCoordinateReferenceSystem) -> Aoi:
    """The engine AOI of a QGIS polygon geometry in `crs`."""
    return aoi_from_geometries([geometry], crs)


def aoi_from_rectangle(rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> Aoi:
    if rect is None or rect.isEmpty():
        raise AoiError("The rectangle has no area: drag a larger one.")
    return aoi_from_geometry(QgsGeometry.fromRect(rect), crs)


def aoi_from_layer(layer: Optional[QgsVectorLayer], selected_only: bool) -> Aoi:
    """The union of a polygon layer's features (all, or only the selected ones)."""
    if layer is None or not layer.isValid():
        raise AoiError("Choose a polygon layer for the area of interest.")
    if selected_only:
        features = list(layer.getSelectedFeatures())
        if not features:
            raise AoiError(f"No feature of layer {layer.name()!r} is selected: select some "
                           "or untick 'Selected features only'.")
    else:
        features = list(layer.getFeatures(QgsFeatureRequest()))
    geometries = [f.geometry() for f in features if f.hasGeometry()]
    if not geometries:
        raise AoiError(f"Layer {layer.name()!r} has no polygon.")
    return aoi_from_geometries(geometries, layer.crs())


def aoi_to_geometry(aoi: Aoi, crs: QgsCoordinateReferenceSystem) -> QgsGeometry:
    """The AOI as a QgsGeometry in `crs` (for the rubber band on the canvas)."""
    geometry = QgsGeometry.fromWkt(aoi.geometry.wkt)
    source = QgsCoordinateReferenceSystem(aoi.crs)
    if not source.isValid():
        source = QgsCoordinateReferenceSystem.fromWkt(aoi.crs)
    if source.isValid() and crs.isValid() and source != crs:
        geometry.transform(QgsCoordinateTransform(source, crs, QgsProject.instance()))
    return geometry


def aoi_rubber_band(canvas: QgsMapCanvas) -> QgsRubberBand:
    band = QgsRubberBand(canvas, POLYGON)
    band.setStrokeColor(AOI_COLOUR)
    band.setFillColor(QColor(230, 60, 30, 40))
    band.setWidth(2)
    return band


def aoi_memory_layer(aoi: Aoi, name: str) -> QgsVectorLayer:
    """A memory layer holding the AOI polygon in the AOI's CRS, with its area in km²."""
    crs = QgsCoordinateReferenceSystem(aoi.crs)
    if not crs.isValid():
        crs = QgsCoordinateReferenceSystem.fromWkt(aoi.crs)
    layer = QgsVectorLayer(f"MultiPolygon?crs={crs.authid() or 'EPSG:4326'}"
                           "&field=area_km2:double", name, "memory")
    if not crs.authid():
        layer.setCrs(crs)
    feature = QgsFeature(layer.fields())
    geometry = QgsGeometry.fromWkt(aoi.geometry.wkt)
    geometry.convertToMultiType()
    feature.setGeometry(geometry)
    feature.setAttributes([round(aoi.area_km2, 4)])
    layer.dataProvider().addFeatures([feature])
    layer.updateExtents()
    return layer


def scene_rubber_band(canvas: QgsMapCanvas) -> QgsRubberBand:
    """The outline of the scene selected in the table (no fill: the map stays readable)."""
    band = QgsRubberBand(canvas, POLYGON)
    band.setStrokeColor(QColor(30, 120, 230))
    band.setFillColor(QColor(30, 120, 230, 0))
    band.setWidth(2)
    return band


class RectangleMapTool(QgsMapTool):
    """Press, drag, release: emits `drawn(QgsGeometry)` in canvas CRS; Esc cancels."""

    drawn = pyqtSignal(QgsGeometry)
    cancelled = pyqtSignal()

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self._start: Optional[QgsPointXY] = None
        self._band = aoi_rubber_band(canvas)

    def canvasPressEvent(self, event: QgsMapMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._start = event.mapPoint()
            self._band.reset(POLYGON)

    def canvasMoveEvent(self, event: QgsMapMouseEvent) -> None:
        if self._start is not None:
            rect = QgsRectangle(self._start, event.mapPoint())
            self._band.setToGeometry(QgsGeometry.fromRect(rect), None)

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self._start is None:
            return
        rect = QgsRectangle(self._start, event.mapPoint())
        self._start = None
        self._band.reset(POLYGON)
        if rect.width() > 0 and rect.height() > 0:
            self.drawn.emit(QgsGeometry.fromRect(rect))

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Escape:
            self._start = None
            self._band.reset(POLYGON)
            self.cancelled.emit()

    def deactivate(self) -> None:
        self._band.reset(POLYGON)
        super().deactivate()


class PolygonMapTool(QgsMapTool):
    """Left click adds a vertex, right click finishes (3+ vertices), Esc cancels."""

    drawn = pyqtSignal(QgsGeometry)
    cancelled = pyqtSignal()

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.points: List[QgsPointXY] = []
        self._band = aoi_rubber_band(canvas)

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.points.append(QgsPointXY(event.mapPoint()))
            self._show(None)
        elif event.button() == Qt.MouseButton.RightButton:
            points, self.points = self.points, []
            self._band.reset(POLYGON)
            if len(points) >= 3:
                self.drawn.emit(QgsGeometry.fromPolygonXY([points]))
            else:
                self.cancelled.emit()

    def canvasMoveEvent(self, event: QgsMapMouseEvent) -> None:
        if self.points:
            self._show(QgsPointXY(event.mapPoint()))

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Escape:
            self.points = []
            self._band.reset(POLYGON)
            self.cancelled.emit()

    def _show(self, moving: Optional[QgsPointXY]) -> None:
        ring = self.points + ([moving] if moving is not None else [])
        self._band.reset(POLYGON)
        for i, point in enumerate(ring):
            self._band.addPoint(point, i == len(ring) - 1)

    def deactivate(self) -> None:
        self.points = []
        self._band.reset(POLYGON)
        super().deactivate()
