"""QgsGeometry -> engine `Aoi`: the one translation used by the dialog and by Processing.

Only qgis.core here (no widgets), so the Processing algorithms can use it under
qgis_process. The engine's `parse_aoi` validates and, where safe, repairs the polygon.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from qgis.core import QgsCoordinateReferenceSystem, QgsGeometry
from shapely import wkb as shapely_wkb
from shapely.geometry import mapping

from ..core.aoi import Aoi, parse_aoi
from ..core.errors import AoiError


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    """What pyproj understands: the authority id, else the CRS's WKT (custom CRSs)."""
    return crs.authid() or crs.toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT2_2019)


def to_shapely(geometry: QgsGeometry) -> Any:
    """QGIS geometry -> shapely geometry: curves straightened, Z/M dropped."""
    flat = geometry.constGet().segmentize()  # a straight-segment copy (a clone if no curves)
    flat.dropZValue()
    flat.dropMValue()
    return shapely_wkb.loads(bytes(QgsGeometry(flat).asWkb()))


def aoi_from_geometries(
    geometries: Iterable[QgsGeometry], crs: QgsCoordinateReferenceSystem
) -> Aoi:
    """One AOI: the union of the polygons in `crs`, validated by the engine."""
    shapes = [to_shapely(g) for g in geometries if g is not None and not g.isEmpty()]
    if not shapes:
        raise AoiError("The area of interest is empty: draw or choose a polygon.")
    collection = {"type": "GeometryCollection", "geometries": [mapping(s) for s in shapes]}
    return parse_aoi(json.dumps(collection), crs_text(crs))
