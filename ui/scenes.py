"""The search result as a sortable, tickable table and as a temporary footprints layer."""

from __future__ import annotations

from typing import Any, FrozenSet, List, Optional, Sequence

from qgis.core import QgsFeature, QgsField, QgsFields, QgsGeometry, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtGui import QBrush, QPalette
from qgis.PyQt.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ..core.results import SceneReport
from .layers import style_footprints_layer

ID_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
PASS_ROLE = Qt.ItemDataRole.UserRole + 3  # the acquisition (Scene.pass_id) of the row


def tr(text: str) -> str:
    return QCoreApplication.translate("Clearsky", text)


COLUMNS = [tr("Date (UTC)"), tr("Platform"), tr("Tile"), tr("Scene cloud %"), tr("AOI coverage %"),
           tr("AOI cloud %"), tr("Kept / why")]


class SortItem(QTableWidgetItem):
    """Sorts by SORT_ROLE (numbers as numbers, missing values first), else by text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if mine is None or theirs is None:
            return (mine is None) and (theirs is not None)
        return mine < theirs


def _number(value: Optional[float]) -> SortItem:
    item = SortItem("" if value is None else f"{value:.1f}")
    item.setData(SORT_ROLE, None if value is None else float(value))
    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


def _text(text: str, key: Optional[str] = None) -> SortItem:
    item = SortItem(text)
    item.setData(SORT_ROLE, key if key is not None else text)
    return item


def setup_table(table: QTableWidget) -> None:
    table.setColumnCount(len(COLUMNS))
    table.setHorizontalHeaderLabels(COLUMNS)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    # after every sort (the user's or fill_table's), shade the rows of one pass together
    table.model().layoutChanged.connect(lambda *_: mark_passes(table))


def acquisition_key(report: SceneReport) -> tuple:
    """Rows of one acquisition (a satellite pass: platform + orbit + UTC day) sort together,
    by time, then their tiles by name."""
    scene = report.scene
    return (scene.date, scene.platform, scene.pass_id, scene.tile, scene.datetime, scene.id)


def mark_passes(table: QTableWidget) -> None:
    """Group the rows of one acquisition: consecutive rows of a pass share a shade (passes
    alternate between the base and the alternate base colour), the first row of a pass is
    bold and names how many tiles it has; the others' date is greyed."""
    palette = table.palette()
    base = palette.color(QPalette.ColorRole.Base)
    other = palette.color(QPalette.ColorRole.AlternateBase)
    shades = (base, other if other != base else base.darker(110))
    grey = palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
    text = palette.color(QPalette.ColorRole.Text)
    rows = [table.item(r, 0) for r in range(table.rowCount())]
    sizes: dict = {}
    for item in rows:
        if item is not None:
            sizes[item.data(PASS_ROLE)] = sizes.get(item.data(PASS_ROLE), 0) + 1
    group, previous = -1, object()
    for row, item in enumerate(rows):
        if item is None:
            continue
        key = item.data(PASS_ROLE)
        first = key != previous
        if first:
            group += 1
            previous = key
        font = item.font()
        font.setBold(first)
        item.setFont(font)
        item.setForeground(QBrush(text if first else grey))
        item.setToolTip(tr("{id}\nacquisition {key}: {n} tile(s)").format(
            id=item.data(ID_ROLE), key=key, n=sizes.get(key, 1)))
        for col in range(table.columnCount()):
            cell = table.item(row, col)
            if cell is not None:
                cell.setBackground(QBrush(shades[group % 2]))


def fill_table(table: QTableWidget, reports: Sequence[SceneReport]) -> None:
    """One row per scene (tile), the tiles of one acquisition together (see mark_passes);
    kept scenes ticked, rejected ones unticked (users can change both)."""
    table.setSortingEnabled(False)
    table.setRowCount(0)
    table.setRowCount(len(reports))
    for row, report in enumerate(sorted(reports, key=acquisition_key)):
        scene = report.scene
        key = acquisition_key(report)
        # sorting by date keeps the tiles of a pass together, by time, then tile
        first = _text(scene.datetime.strftime("%Y-%m-%d %H:%M"),
                      "|".join(str(k) for k in key[:4]) + "|" + scene.datetime.isoformat())
        first.setData(ID_ROLE, scene.id)
        first.setData(PASS_ROLE, scene.pass_id)
        first.setToolTip(scene.id)
        first.setFlags(first.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        first.setCheckState(Qt.CheckState.Checked if report.kept else Qt.CheckState.Unchecked)
        verdict = tr("kept") if report.kept else (report.reason or tr("left out"))
        cells = [first, _text(scene.platform), _text(scene.tile), _number(scene.cloud_cover),
                 _number(report.aoi_coverage), _number(report.aoi_cloud),
                 _text(verdict, f"{0 if report.kept else 1}{verdict}")]
        for col, item in enumerate(cells):
            table.setItem(row, col, item)
    header = table.horizontalHeader()
    header.setSortIndicator(0, Qt.SortOrder.AscendingOrder)  # by acquisition
    table.setSortingEnabled(True)
    mark_passes(table)


def table_ids(table: QTableWidget, checked_only: bool = False) -> List[str]:
    """Scene ids in the table's current row order (only the ticked ones if asked)."""
    out = []
    for row in range(table.rowCount()):
        item = table.item(row, 0)
        if item is None:
            continue
        if checked_only and item.checkState() != Qt.CheckState.Checked:
            continue
        out.append(item.data(ID_ROLE))
    return out


def checked_ids(table: QTableWidget) -> FrozenSet[str]:
    return frozenset(table_ids(table, checked_only=True))


def _field_type(name: str):
    """QVariant.<name> on Qt5 (QGIS 3.22 wants it), QMetaType.Type.Q<name>/<name> on Qt6."""
    try:
        from qgis.PyQt.QtCore import QVariant

        return getattr(QVariant, name)
    except (ImportError, AttributeError):
        from qgis.PyQt.QtCore import QMetaType

        return getattr(QMetaType.Type, "Q" + name, None) or getattr(QMetaType.Type, name)


STRING, DOUBLE, BOOL = _field_type("String"), _field_type("Double"), _field_type("Bool")
FOOTPRINT_FIELDS = [
    ("id", STRING), ("datetime", STRING), ("platform", STRING), ("tile", STRING),
    ("scene_cloud", DOUBLE), ("aoi_coverage", DOUBLE), ("aoi_cloud", DOUBLE),
    ("kept", BOOL), ("reason", STRING),
]


FOOTPRINTS_ROLE = "clearsky/role"  # a custom property: the layer is Clearsky's footprints


def footprints_layer(reports: Sequence[SceneReport], name: str) -> QgsVectorLayer:
    """A memory layer (EPSG:4326) of the scene footprints, kept and left-out styled apart."""
    layer = QgsVectorLayer("MultiPolygon?crs=EPSG:4326", name, "memory")
    fields = QgsFields()
    for field_name, kind in FOOTPRINT_FIELDS:
        fields.append(QgsField(field_name, kind))
    layer.dataProvider().addAttributes(fields)
    layer.updateFields()
    layer.setCustomProperty(FOOTPRINTS_ROLE, "footprints")
    fill_footprints(layer, reports)
    style_footprints_layer(layer)
    return layer


def fill_footprints(layer: QgsVectorLayer, reports: Sequence[SceneReport]) -> None:
    """Replace the layer's features with one per report."""
    provider = layer.dataProvider()
    provider.truncate()
    features = []
    for report in reports:
        row = report.row()
        feature = QgsFeature(layer.fields())
        geometry = QgsGeometry.fromWkt(report.scene.footprint.wkt)
        geometry.convertToMultiType()
        feature.setGeometry(geometry)
        feature.setAttributes([row[f] for f, _ in FOOTPRINT_FIELDS])
        features.append(feature)
    provider.addFeatures(features)
    layer.updateExtents()
    layer.triggerRepaint()


def find_footprints(project: Any) -> List[QgsVectorLayer]:
    """Every footprints layer Clearsky put in the project (this session or an earlier one)."""
    return [lyr for lyr in project.mapLayers().values()
            if isinstance(lyr, QgsVectorLayer) and lyr.customProperty(FOOTPRINTS_ROLE) ==
            "footprints"]


def update_footprints(project: Any, reports: Sequence[SceneReport], name: str
                      ) -> QgsVectorLayer:
    """Refill the project's footprints layer in place, or add one; never a second copy."""
    found = find_footprints(project)
    if found:
        layer = found[0]
        if len(found) > 1:  # left over from older versions: keep one
            project.removeMapLayers([lyr.id() for lyr in found[1:]])
        layer.setName(name)
        fill_footprints(layer, reports)
        return layer
    layer = footprints_layer(reports, name)
    project.addMapLayer(layer)
    return layer
