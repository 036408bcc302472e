"""Truth for one multi-statistic, one-period COG (test helper, not a test).

A COG of a period holds `<band>_p<q>` bands (and maybe `count`) computed from the passes
whose date falls in the period. `check_statistics_cog` evaluates the world's truth on the
COG's own grid for exactly those passes and compares every pixel:

- each `<band>_p<q>`: within 0.01 reflectance of the q-th percentile of the clear truth
  (clear with one pixel more dilation than the engine) for >= 99 % of the pixels where
  both have a value, and at least `min_pixels` such pixels;
- no pixel filled where no pass of the period could give one (the loose mask: one pixel
  less dilation than the engine, and one pixel of slack at the edge of a pass's data);
- `count`: between the strict and the loose number of clear passes of the period for
  >= 99.5 % of the filled pixels (as tests/core/test_mosaic.py asks of single runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Dict, List, Sequence

import numpy as np
import rasterio
from scipy import ndimage

from .mosaic_truth import CLOUD_LIKE, INVALID, disk, nan_percentile


@dataclass
class StatisticsCheck:
    names: Sequence[str]
    passes: List[int]
    within: Dict[str, float]  # band name -> share of compared pixels within 0.01
    compared: Dict[str, int]  # band name -> pixels compared
    filled_outside_possible: int
    count_within_bounds: float  # share of filled pixels (1.0 without a count band)


def passes_between(world, start: date, end: date) -> List[int]:
    """Indices of the world's passes acquired on start..end (inclusive days)."""
    return [p.index for p in world.passes if start <= p.datetime.date() <= end]


def check_statistics_cog(world, path, passes: Sequence[int], radius: int,
                         min_pixels: int = 500) -> StatisticsCheck:
    with rasterio.open(path) as src:
        data = src.read()
        names = tuple(src.descriptions)
        crs, transform = src.crs.to_string(), src.transform
    shape = data.shape[1:]
    strict, loose = [], []
    for i in passes:
        s = world.scl(i, crs, transform, shape)
        bad = np.isin(s, sorted(INVALID))
        cloud = np.isin(s, sorted(CLOUD_LIKE))
        strict.append(~bad & ~ndimage.binary_dilation(cloud, disk(radius + 2)))
        # loosely, a pixel beside the data's edge (the swath-edge wedge, SCL 0 at this
        # pixel's centre but not at the 20 m SCL pixel's) may hold data too
        no_data = ndimage.binary_erosion(s == 0, disk(1), border_value=1)
        loose_bad = np.isin(s, sorted(INVALID - {0})) | no_data
        loose.append(~loose_bad & ~ndimage.binary_dilation(cloud, disk(max(radius - 2, 0))))
    strict_a, loose_a = np.array(strict), np.array(loose)
    stacks: Dict[str, np.ndarray] = {}
    within, compared = {}, {}
    filled_any = np.zeros(shape, bool)
    for b, name in enumerate(names):
        if name == "count":
            continue
        band, stat = name.rsplit("_", 1)
        assert stat.startswith("p"), name
        if band not in stacks:
            refl = np.array([world.reflectance(band, i, crs, transform, shape) for i in passes])
            stacks[band] = np.where(strict_a, refl, np.nan)
        expected = nan_percentile(stacks[band], float(stat[1:]))
        filled = data[b] > 0
        filled_any |= filled
        both = filled & np.isfinite(expected)
        err = np.abs(data[b] / 10000.0 - expected)[both]
        compared[name] = int(both.sum())
        within[name] = float((err <= 0.01).mean()) if err.size else 0.0
    outside = int((filled_any & ~loose_a.any(axis=0)).sum())
    count_ok = 1.0
    if "count" in names:
        count = data[names.index("count")].astype(int)
        low, high = strict_a.sum(axis=0), loose_a.sum(axis=0)
        count_ok = float(((count >= low) & (count <= high))[filled_any].mean())
    check = StatisticsCheck(names, list(passes), within, compared, outside, count_ok)
    assert passes, "no pass in the period"
    assert all(n >= min_pixels for n in compared.values()), compared
    assert all(w >= 0.99 for w in within.values()), within
    assert outside == 0, outside
    assert count_ok >= 0.995, count_ok
    return check
