"""Truth for a mosaic's grid, from the offline archive's generator (test helper, not a test)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Dict, List

import numpy as np
import rasterio
from scipy import ndimage

if TYPE_CHECKING:
    from clearsky.core.api import MosaicParams

CLOUD_LIKE = frozenset({3, 8, 9, 10})
INVALID = frozenset({0, 1, 3, 8, 9, 10})


def disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


@dataclass
class MosaicTruth:
    """Per pass: truth SCL, reflectance, and clear masks (strict and loose around clouds)."""

    scl: List[np.ndarray]
    reflectance: Dict[str, List[np.ndarray]]
    strict: List[np.ndarray]  # clear even with one more pixel of dilation than the engine
    loose: List[np.ndarray]  # clear with one pixel less dilation than the engine

    def fillable(self) -> np.ndarray:
        return np.any(self.strict, axis=0)

    def possible(self) -> np.ndarray:
        return np.any(self.loose, axis=0)


def read_mosaic(path):
    with rasterio.open(path) as src:
        return src.read(), src.descriptions, src.transform, src.crs.to_string(), src.tags()


def truth_for(world, result, bands, radius: int = 4) -> MosaicTruth:
    """Evaluate the generator's truth on the mosaic's own grid."""
    transform = result.transform
    shape = result.shape
    scl, strict, loose = [], [], []
    refl: Dict[str, List[np.ndarray]] = {b: [] for b in bands}
    for p in world.passes:
        s = world.scl(p.index, result.crs, transform, shape)
        bad = np.isin(s, list(INVALID))
        cloud = np.isin(s, list(CLOUD_LIKE))
        strict.append(~bad & ~ndimage.binary_dilation(cloud, disk(radius + 2)))
        loose.append(~bad & ~ndimage.binary_dilation(cloud, disk(max(radius - 2, 0))))
        scl.append(s)
        for b in bands:
            refl[b].append(world.reflectance(b, p.index, result.crs, transform, shape))
    return MosaicTruth(scl, refl, strict, loose)


def aoi_mask(aoi, result) -> np.ndarray:
    """Pixels whose centre lies in the AOI, on the mosaic's grid (independent of the engine)."""
    from rasterio.features import geometry_mask

    transform = result.transform
    geometry = aoi.to_crs(result.crs)
    return ~geometry_mask([geometry], out_shape=result.shape, transform=transform)


def nan_percentile(stack: np.ndarray, q: float) -> np.ndarray:
    """np.nanpercentile along axis 0 (linear interpolation), fast: NaN sorts last."""
    ordered = np.sort(stack, axis=0)
    n = np.sum(np.isfinite(stack), axis=0)
    position = np.maximum(n - 1, 0) * q / 100.0
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, np.maximum(n - 1, 0))
    frac = position - low
    take = lambda idx: np.take_along_axis(ordered, idx[None], axis=0)[0]  # noqa: E731
    result = take(low) * (1 - frac) + take(high) * frac
    return np.where(n > 0, result, np.nan)


def mosaic_params(world, served, path, **overrides) -> MosaicParams:
    """A mosaic over most of the archive: 4 tiles, 2 UTM zones, every pass."""
    from shapely import affinity

    from clearsky.core.api import Aoi, MosaicParams

    aoi = Aoi(affinity.scale(world.region, 0.7, 0.7), "EPSG:4326")
    values = dict(
        aoi=aoi, start=date(2024, 6, 1), end=date(2024, 6, 30), catalog_url=served.stac_url,
        output=path, bands=("red", "green", "blue", "nir"), max_scene_cloud=100.0,
        max_aoi_cloud=100.0, count_band=True, block_size=256,
        # each pixel from one pass, as these tests check it against that pass's truth; the
        # seam tools (on by default) are measured in tests/core/test_seams.py
        normalise=False, feather_m=0.0,
    )
    values.update(overrides)
    return MosaicParams(**values)
