"""Area of interest: parse, reproject, validate."""

from __future__ import annotations

from dataclasses import dataclass

from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry
from shapely.ops import transform

from .errors import AoiError

WGS84 = "EPSG:4326"


@dataclass(frozen=True)
class Aoi:
    """A polygon or multipolygon in a named CRS (anything pyproj understands)."""

    geometry: BaseGeometry
    crs: str = WGS84

    def __post_init__(self) -> None:
        if self.geometry is None or self.geometry.is_empty:
            raise AoiError("The area of interest is empty: draw or choose a polygon.")
        if self.geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise AoiError(
                f"The area of interest must be a polygon, not a {self.geometry.geom_type}."
            )
        try:
            CRS.from_user_input(self.crs)
        except Exception as exc:  # pyproj raises CRSError with a terse message
            raise AoiError(f"Unknown CRS for the area of interest: {self.crs!r}.") from exc

    def to_crs(self, crs: str) -> BaseGeometry:
        """The geometry in another CRS (lon/lat order for geographic CRSs)."""
        if CRS.from_user_input(crs) == CRS.from_user_input(self.crs):
            return self.geometry
        tr = Transformer.from_crs(self.crs, crs, always_xy=True)
        return transform(tr.transform, self.geometry)

    @property
    def wgs84(self) -> BaseGeometry:
        return self.to_crs(WGS84)
