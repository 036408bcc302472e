"""Styling for Clearsky result layers, shared by the Processing provider and the dialog.

Mosaics get a multiband colour renderer on the red, green and blue bands with a fixed
true-colour stretch (reflectance 0..0.3, the range design.md uses for 8-bit output),
not QGIS's default cumulative-cut stretch, so neighbouring mosaics look the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from qgis.core import (
    Qgis,
    QgsContrastEnhancement,
    QgsDateTimeRange,
    QgsFillSymbol,
    QgsMultiBandColorRenderer,
    QgsRasterLayer,
    QgsRasterLayerTemporalProperties,
    QgsRuleBasedRenderer,
    QgsSingleBandGrayRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QDateTime, QTime, QTimeZone

# Qgis.ContrastEnhancementAlgorithm on recent QGIS (only that on Qt6), class-scoped on 3.22.
_NEW_STRETCH = getattr(Qgis, "ContrastEnhancementAlgorithm", None)
STRETCH_MIN_MAX = (
    _NEW_STRETCH.StretchToMinimumMaximum
    if _NEW_STRETCH is not None
    else QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum
)

# A fixed time range per layer: Qgis.RasterTemporalMode on recent QGIS, class-scoped on 3.22.
_NEW_TEMPORAL = getattr(Qgis, "RasterTemporalMode", None)
FIXED_TEMPORAL_RANGE = (
    _NEW_TEMPORAL.FixedTemporalRange
    if _NEW_TEMPORAL is not None
    else QgsRasterLayerTemporalProperties.TemporalMode.ModeFixedTemporalRange
)

TRUE_COLOUR_MAX_REFLECTANCE = 0.3
REFLECTANCE_SCALE = 10000  # reflectance output: DN = reflectance x 10000
VISUAL_RANGE = (1.0, 255.0)  # visual output: 0 is nodata, 1..255 the stretched range
AUXILIARY_BANDS = ("count", "source")


def rgb_band_numbers(band_names: Sequence[str]) -> Optional[Tuple[int, int, int]]:
    """1-based (red, green, blue) band numbers, else the first three image bands, else None."""
    names = [str(n).lower() for n in band_names]
    if all(c in names for c in ("red", "green", "blue")):
        return names.index("red") + 1, names.index("green") + 1, names.index("blue") + 1
    image = [i + 1 for i, n in enumerate(names) if n not in AUXILIARY_BANDS]
    return (image[0], image[1], image[2]) if len(image) >= 3 else None


def stretch_range(layer: QgsRasterLayer, band: int, output_type: Any) -> Tuple[float, float]:
    """The display range of one band in the units QGIS shows.

    QGIS applies a GeoTIFF band's scale/offset when it has one (the engine writes scale
    0.0001 on reflectance bands), so values arrive as reflectance; without it they are DNs.
    """
    if str(getattr(output_type, "value", output_type)) == "visual":
        return VISUAL_RANGE
    provider = layer.dataProvider()
    scaled = provider.bandScale(band) != 1.0 or provider.bandOffset(band) != 0.0
    top = TRUE_COLOUR_MAX_REFLECTANCE
    return (0.0, top) if scaled else (0.0, top * REFLECTANCE_SCALE)


def _enhancement(layer: QgsRasterLayer, band: int, output_type: Any) -> QgsContrastEnhancement:
    enhancement = QgsContrastEnhancement(layer.dataProvider().dataType(band))
    lo, hi = stretch_range(layer, band, output_type)
    enhancement.setMinimumValue(lo)
    enhancement.setMaximumValue(hi)
    enhancement.setContrastEnhancementAlgorithm(STRETCH_MIN_MAX)
    return enhancement


def style_mosaic_layer(layer: QgsRasterLayer, band_names: Sequence[str], output_type: Any) -> None:
    """RGB renderer on the red/green/blue bands with the Clearsky stretch (grey if < 3 bands)."""
    provider = layer.dataProvider()
    rgb = rgb_band_numbers(band_names)
    if rgb is not None and max(rgb) <= layer.bandCount():
        renderer = QgsMultiBandColorRenderer(provider, *rgb)
        renderer.setRedContrastEnhancement(_enhancement(layer, rgb[0], output_type))
        renderer.setGreenContrastEnhancement(_enhancement(layer, rgb[1], output_type))
        renderer.setBlueContrastEnhancement(_enhancement(layer, rgb[2], output_type))
    else:
        renderer = QgsSingleBandGrayRenderer(provider, 1)
        renderer.setContrastEnhancement(_enhancement(layer, 1, output_type))
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_footprints_layer(layer: QgsVectorLayer) -> None:
    """Scene footprints: kept scenes with a solid green outline, the others dashed grey."""
    kept = QgsFillSymbol.createSimple({
        "color": "0,0,0,0", "outline_color": "26,150,65,255", "outline_width": "0.6",
        "outline_style": "solid",
    })
    rejected = QgsFillSymbol.createSimple({
        "color": "0,0,0,0", "outline_color": "150,150,150,255", "outline_width": "0.3",
        "outline_style": "dash",
    })
    root = QgsRuleBasedRenderer.Rule(None)
    root.appendChild(QgsRuleBasedRenderer.Rule(kept, 0, 0, '"kept"', "kept"))
    other = QgsRuleBasedRenderer.Rule(rejected, 0, 0, "ELSE", "left out")
    root.appendChild(other)
    layer.setRenderer(QgsRuleBasedRenderer(root))
    layer.triggerRepaint()


def _same_file(source: str, path: Path) -> bool:
    try:
        return Path(source.split("|")[0]).resolve() == path.resolve()
    except (OSError, ValueError):
        return False


def replace_or_add_raster(project: Any, path: Path, style: Callable[[QgsRasterLayer], None]
                          ) -> Optional[QgsRasterLayer]:
    """The layer of the file at `path`: an existing layer of that file is pointed at the new
    file in place (same name and position in the layer tree), else a new one is added.

    None when QGIS cannot open the file."""
    path = Path(path)
    existing = [lyr for lyr in project.mapLayers().values()
                if isinstance(lyr, QgsRasterLayer) and _same_file(lyr.source(), path)]
    if existing:
        layer = existing[0]
        layer.setDataSource(str(path), layer.name(), "gdal")
        if not layer.isValid():
            return None
        style(layer)
        layer.reload()
        layer.triggerRepaint()
        return layer
    layer = QgsRasterLayer(str(path), path.stem)
    if not layer.isValid():
        return None
    style(layer)
    project.addMapLayer(layer)
    return layer


def period_layers(project: Any, result: Any, output_type: Any, group_name: str
                  ) -> List[QgsRasterLayer]:
    """One styled layer per period of a multi-period run, in one group, each with its
    period as a fixed temporal range, so the Temporal Controller steps through them.
    A layer already showing one of the files is replaced, not stacked."""
    root = project.layerTreeRoot()
    group = root.findGroup(group_name) or root.insertGroup(0, group_name)
    utc = QTimeZone(b"UTC")
    layers = []
    for out in result.outputs:
        for old in list(project.mapLayers().values()):
            if isinstance(old, QgsRasterLayer) and _same_file(old.source(), out.output):
                project.removeMapLayer(old.id())
        layer = QgsRasterLayer(str(out.output), out.name or out.output.stem)
        if not layer.isValid():
            continue
        style_mosaic_layer(layer, result.band_names, output_type)
        props = layer.temporalProperties()
        props.setMode(FIXED_TEMPORAL_RANGE)
        props.setFixedTemporalRange(QgsDateTimeRange(
            QDateTime(out.start, QTime(0, 0), utc), QDateTime(out.end, QTime(23, 59, 59), utc)))
        props.setIsActive(True)
        project.addMapLayer(layer, False)
        group.addLayer(layer)
        layers.append(layer)
    return layers
