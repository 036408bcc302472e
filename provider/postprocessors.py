"""Layer post-processors: style Clearsky outputs when Processing loads them.

PyQGIS pitfall: the context keeps only a C++ pointer to a post-processor, so a Python
instance that goes out of scope is garbage-collected before QGIS calls it (no styling,
or a crash). `keep_alive` holds the most recent ones at module level.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Sequence, TypeVar

from qgis.core import (
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsVectorLayer,
)

from ..ui.layers import style_footprints_layer, style_mosaic_layer

_ALIVE: Deque[Any] = deque(maxlen=256)  # a long batch loads its layers only at the end
P = TypeVar("P")


def keep_alive(processor: P) -> P:
    _ALIVE.append(processor)
    return processor


class MosaicStyler(QgsProcessingLayerPostProcessorInterface):
    """RGB multiband colour renderer with the Clearsky stretch."""

    def __init__(self, band_names: Sequence[str], output_type: str) -> None:
        super().__init__()
        self.band_names = tuple(band_names)
        self.output_type = output_type

    def postProcessLayer(self, layer: Any, context: Any, feedback: Any) -> None:
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            style_mosaic_layer(layer, self.band_names, self.output_type)


class FootprintStyler(QgsProcessingLayerPostProcessorInterface):
    """Kept scenes solid, rejected ones dashed."""

    def postProcessLayer(self, layer: Any, context: Any, feedback: Any) -> None:
        if isinstance(layer, QgsVectorLayer) and layer.isValid():
            style_footprints_layer(layer)
