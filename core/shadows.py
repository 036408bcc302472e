"""Cloud shadows projected from a cloud mask along the sun direction (numpy only).

A cloud at height h casts its shadow h / tan(sun elevation) away from the sun, opposite
the sun azimuth. Cloud heights are unknown, so the cloud mask is swept over the distances
of heights HEIGHTS_M (the usual recipe: 0.5-5 km) and the pixels under the sweep that are
dark in the near infrared (and not water) are the shadow. The sweep is capped at
MAX_REACH_M on the ground (a low sun would otherwise reach tens of kilometres): a reader
must read that margin around its grid so that clouds outside still shade it.

The sweep runs on a grid of about 20 m (the SCL's) whatever the output pixel, so its cost
is (reach / 20 m) shifts of an array 1/f^2 of the grid's size: bounded, vectorised.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

HEIGHTS_M = (500.0, 5000.0)  # cloud heights searched
MAX_REACH_M = 3000.0  # the sweep never goes farther from a cloud than this
DARK_NIR = 0.15  # reflectance: NIR below this under a projection is shadow
WATER = 6  # SCL water is dark in NIR everywhere: never called shadow
SWEEP_PIXEL_M = 20.0


def shadow_distances(elevation: float, heights: Tuple[float, float] = HEIGHTS_M,
                     cap: float = MAX_REACH_M) -> Tuple[float, float]:
    """(nearest, farthest) shadow distance on the ground in metres for these heights."""
    tan = math.tan(math.radians(max(float(elevation), 1.0)))
    near, far = heights[0] / tan, heights[1] / tan
    return min(near, cap), min(far, cap)


def reach_px(elevation: Optional[float], pixel_m: float, cap: float = MAX_REACH_M) -> int:
    """How many pixels of `pixel_m` a shadow can lie from its cloud (0: no sun angles)."""
    if elevation is None:
        return 0
    return int(math.ceil(shadow_distances(elevation, cap=cap)[1] / pixel_m)) + 1


def shift_or(dst: np.ndarray, src: np.ndarray, dy: int, dx: int) -> None:
    """dst |= src moved by (dy, dx), without wrapping around the edges."""
    h, w = src.shape
    if abs(dy) >= h or abs(dx) >= w:
        return
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    dst[yd, xd] |= src[ys, xs]


def _coarsen(mask: np.ndarray, f: int) -> np.ndarray:
    """Any-of-f x f blocks (the array padded with False to a multiple of f)."""
    if f == 1:
        return mask
    h, w = mask.shape
    ph, pw = -h % f, -w % f
    padded = np.pad(mask, ((0, ph), (0, pw)))
    return padded.reshape((h + ph) // f, f, (w + pw) // f, f).any(axis=(1, 3))


def project(cloud: np.ndarray, pixel_m: float, azimuth: float, elevation: float,
            heights: Tuple[float, float] = HEIGHTS_M, cap: float = MAX_REACH_M) -> np.ndarray:
    """Where the shadows of `cloud` (a north-up grid of `pixel_m` pixels) can fall."""
    cloud = np.asarray(cloud, bool)
    out = np.zeros_like(cloud)
    if not cloud.any():
        return out
    f = max(1, int(SWEEP_PIXEL_M // pixel_m))
    step_m = pixel_m * f
    coarse = _coarsen(cloud, f)
    near, far = shadow_distances(elevation, heights, cap)
    # Away from the sun: east = -sin(az), north = -cos(az); rows grow southwards.
    az = math.radians(float(azimuth))
    drow, dcol = math.cos(az), -math.sin(az)
    swept = np.zeros_like(coarse)
    seen = set()
    for k in range(int(math.floor(near / step_m)), int(math.ceil(far / step_m)) + 1):
        offset = (int(round(k * drow)), int(round(k * dcol)))
        if offset not in seen:
            seen.add(offset)
            shift_or(swept, coarse, *offset)
    if f > 1:
        swept = np.repeat(np.repeat(swept, f, axis=0), f, axis=1)[:cloud.shape[0], :cloud.shape[1]]
    out |= swept
    return out


def dark(nir: np.ndarray, scl: Optional[np.ndarray] = None) -> np.ndarray:
    """Pixels dark enough in the near infrared to be shadow (reflectance, NaN = no data)."""
    with np.errstate(invalid="ignore"):
        out = np.asarray(nir) < DARK_NIR
    if scl is not None:
        out &= scl != WATER
    return out
