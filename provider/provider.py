"""The `clearsky` Processing provider (registered by the plugin's initProcessing)."""

from __future__ import annotations

from typing import List

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON
from .build_mosaic import BuildMosaicAlgorithm
from .clear_clips import ClearClipsAlgorithm
from .search_scenes import SearchScenesAlgorithm

ALGORITHMS = (BuildMosaicAlgorithm, SearchScenesAlgorithm, ClearClipsAlgorithm)


class ClearskyProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "clearsky"

    def name(self) -> str:
        return "Clearsky"

    def longName(self) -> str:
        return self.tr("Clearsky: cloud-free Sentinel-2 mosaics")

    def icon(self) -> QIcon:
        return QIcon(str(ICON)) if ICON.exists() else super().icon()

    def svgIconPath(self) -> str:
        return str(ICON) if ICON.exists() else super().svgIconPath()

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def supportedOutputRasterLayerExtensions(self) -> List[str]:
        """The engine writes Cloud-Optimized GeoTIFF only."""
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:
        return "tif"
