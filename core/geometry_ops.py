"""Shapely 1.8 / 2.x compatibility: one way to apply a coordinate function to a geometry."""

from __future__ import annotations

import numpy as np
from shapely.geometry.base import BaseGeometry

try:  # shapely >= 2.0: vectorised; shapely.ops.transform is deprecated from 2.1
    from shapely import transform as _transform_coords
except ImportError:  # shapely 1.8 (Debian 12, QGIS 3.22-3.34 on Linux)
    _transform_coords = None
    from shapely.ops import transform as _ops_transform


def transform_xy(func, geometry: BaseGeometry) -> BaseGeometry:
    """`geometry` with `func(xs, ys) -> (xs, ys)` (array in, arrays out) applied."""
    if _transform_coords is None:
        return _ops_transform(func, geometry)

    def on_array(coords: np.ndarray) -> np.ndarray:
        x, y = func(coords[:, 0], coords[:, 1])
        return np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])

    return _transform_coords(geometry, on_array)
