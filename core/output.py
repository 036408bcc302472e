"""What the output file holds: band names, data type, the encoding of block values, tags."""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import composite
from .options import Method, OutputType
from .params import MosaicParams
from .redact import redact_obj, redact_text
from .results import SceneReport


def value_names(bands: Sequence[str], statistics: Sequence[str]) -> List[str]:
    """The reflectance bands of the output: the bands, or <band>_<statistic> statistic by
    statistic (red_p25, green_p25, blue_p25, red_p50, ...), so the first three bands of a
    true-colour list are one statistic's RGB."""
    if not statistics:
        return list(bands)
    return [f"{b}_{s}" for s in statistics for b in bands]


def band_names(params: MosaicParams) -> List[str]:
    names = value_names(params.bands, params.statistics)
    if params.count_band:
        names.append("count")
    if params.source_band:
        names.append("source")
    return names


def dtype_of(output_type: OutputType) -> str:
    return "uint8" if output_type is OutputType.VISUAL else "uint16"


def encode(values: np.ndarray, target: np.ndarray, count: Optional[np.ndarray],
           source: Optional[np.ndarray], output_type: OutputType) -> np.ndarray:
    """Block values -> the output's data type; 0 is nodata everywhere."""
    values = values.copy()
    values[:, ~target] = np.nan
    if output_type is OutputType.VISUAL:
        layers = [composite.to_visual(values)]
        cap = 255
    else:
        layers = [composite.to_uint16(values)]
        cap = 65535
    dtype = layers[0].dtype
    if count is not None:
        layers.append(np.where(target, np.minimum(count, cap), 0).astype(dtype)[None])
    if source is not None:
        src = np.where(target & (source >= 0), source + 1, 0)
        layers.append(np.minimum(src, cap).astype(dtype)[None])
    return np.concatenate(layers, axis=0)


def params_summary(params: MosaicParams) -> dict:
    """The parameters as written into the COG's tags and the report (no credentials)."""
    return redact_obj({
        "catalog": params.catalog_url,
        "collection": params.collection,
        "start": str(params.start),
        "end": str(params.end),
        "max_scene_cloud": params.max_scene_cloud,
        "max_aoi_cloud": params.max_aoi_cloud,
        "invalid_scl": sorted(params.invalid_scl),
        "dilation": params.dilation,
        "bands": list(params.bands),
        "method": params.method.value,
        "percentile": params.percentile if params.method is Method.PERCENTILE else None,
        "statistics": list(params.statistics) or None,
        "periods": params.periods or None,
        "target_date": None if params.target_date is None else str(params.target_date),
        "output_type": params.output_type.value,
        "target_crs": params.target_crs,
        "resolution": params.resolution,
        "clip_to_aoi": params.clip_to_aoi,
        "aoi_wkt": params.aoi.wgs84.wkt,
    })


def tags(params: MosaicParams, used: Sequence[str], kept: Sequence[SceneReport]) -> dict:
    out = {
        "CLEARSKY_PARAMETERS": json.dumps(params_summary(params)),
        "CLEARSKY_SCENES": redact_text(",".join(used)),
    }
    if params.output_type is OutputType.VISUAL:
        out["CLEARSKY_STRETCH"] = "reflectance 0..0.3 -> 1..255, 0 = nodata"
    else:
        out["CLEARSKY_ENCODING"] = "reflectance = DN * 0.0001, 0 = nodata"
    if params.source_band:
        out["CLEARSKY_SOURCES"] = json.dumps(
            {str(i + 1): r.scene.id for i, r in enumerate(kept)}
        )
    return out


def band_tags(params: MosaicParams, names: Sequence[str]) -> List[Dict[str, object]]:
    out: List[Dict[str, object]] = []
    values = set(value_names(params.bands, params.statistics))
    for name in names:
        if name in values and params.output_type is OutputType.REFLECTANCE:
            out.append({"scale": 0.0001, "offset": 0.0, "name": name})
        else:
            out.append({"scale": 1.0, "offset": 0.0, "name": name})
    return out
