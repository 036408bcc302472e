"""A test world with seams: every pass has its own radiometric signature, as real data has.

`SeamedWorld` is `World` with, on top of what the sensor sees in each pass:

- a per-pass gain and offset per band (`Signature`): gains 0.96-1.04 (calibration and
  atmosphere), offsets of either sign up to 0.012 in blue and less in the longer bands
  (haze, or its over-correction);
- a smooth across-track gradient (view-angle brightness): the gain grows by
  `VIEW_GRADIENT` per half swath from the western to the eastern edge of the pass's swath.
  R022's western swath edge crosses the region (so R022 passes are ~3 % darker here), the
  region is 27 km east of R065's centre line (adjacent orbits are 172 km apart at 52 N).

observed = (gain * view(x) * ground + offset), quantised to 1e-4, wherever the sky is clear.
The truth (`reflectance`) keeps the ground reflectance without the signature, so tests
measure both accuracy to the ground and seam visibility. The default archive is untouched:
this world has its own cache folder and key (`cached_seamed_archive`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .geography import Points
from .landscape import ALL_BANDS
from .passes import SWATH_EDGE_ORBIT, Pass
from .truth import World

HALF_SWATH_M = 145_000.0  # Sentinel-2's 290 km swath
ORBIT_SPACING_M = 172_000.0  # adjacent relative orbits at 52 N
VIEW_GRADIENT = 0.03  # gain change per half swath, west to east (view-angle brightness)
GAIN_SPREAD = 0.04  # gains from 1 - spread to 1 + spread
HAZE = {"coastal": 0.015, "blue": 0.012, "green": 0.008, "red": 0.006, "nir": 0.004,
        "rededge1": 0.005, "rededge2": 0.004, "rededge3": 0.004, "nir08": 0.004,
        "nir09": 0.004, "swir16": 0.003, "swir22": 0.003}


@dataclass(frozen=True)
class Signature:
    """One pass's radiometry: observed = gain[b] * view(x) * ground + offset[b]."""

    gain: Dict[str, float]
    offset: Dict[str, float]
    centre_offset_m: float  # signed across-track distance of the region from the centre line


def make_signatures(seed: int, passes: List[Pass]) -> List[Signature]:
    """Deterministic per-pass signatures, spread evenly around the identity (so the
    consensus of all passes is close to the ground, as a good reference would be)."""
    rng = np.random.default_rng([seed, 14])
    n = len(passes)
    gains = 1.0 + GAIN_SPREAD * np.linspace(-1.0, 1.0, n)
    hazes = np.linspace(-1.0, 1.0, n)
    gains, hazes = rng.permutation(gains), rng.permutation(hazes)
    out = []
    for p, g, h in zip(passes, gains, hazes):
        jitter = rng.uniform(-0.005, 0.005, len(ALL_BANDS))  # bands differ a little
        gain = {b: float(round(g + j, 4)) for b, j in zip(ALL_BANDS, jitter)}
        offset = {b: float(round(h * HAZE[b], 4)) for b in ALL_BANDS}
        # R022's western swath edge is in the region; R065's centre line is 27 km west.
        centre = (-HALF_SWATH_M if p.relative_orbit == SWATH_EDGE_ORBIT
                  else ORBIT_SPACING_M - HALF_SWATH_M)
        out.append(Signature(gain, offset, centre))
    return out


class SeamedWorld(World):
    """`World` whose passes carry per-pass radiometric signatures (see the module)."""

    def __init__(self, extent_km: float = 6.0, seed: int = 2024) -> None:
        super().__init__(extent_km, seed)
        self.signatures = make_signatures(self.seed, self.passes)

    def __reduce__(self):
        return (type(self), (self.extent_km, self.seed))

    def __repr__(self) -> str:
        return f"SeamedWorld(extent_km={self.extent_km}, seed={self.seed})"

    def across_track(self, pass_index: int, pts: Points) -> np.ndarray:
        """Across-track position in half swaths (-1 west edge, 0 centre line, +1 east edge)."""
        x0, slope = self.swath_edge
        edge = x0 * self.extent_km * 1000.0 + slope * pts.y
        d = (pts.x - edge) / np.hypot(1.0, slope)  # metres east of R022's western edge line
        centre = self.signatures[pass_index].centre_offset_m
        return (d + centre) / HALF_SWATH_M

    def view_gain(self, pass_index: int, pts: Points) -> np.ndarray:
        return 1.0 + VIEW_GRADIENT * self.across_track(pass_index, pts)

    def _observe(self, band: str, p: Pass, pts: Points, sky=None) -> np.ndarray:
        seen = super()._observe(band, p, pts, sky)
        sig = self.signatures[p.index]
        r = sig.gain[band] * self.view_gain(p.index, pts) * seen + sig.offset[band]
        return np.rint(np.clip(r, 0.0001, None) * 10000.0) / 10000.0

    def injected(self, pass_index: int, band: str, crs, transform, shape
                 ) -> Tuple[float, float]:
        """(gain, offset) the pass applies over these pixels on average: the signature's
        gain times the mean view gain, and its offset."""
        pts = self._points(crs, transform, shape)
        sig = self.signatures[pass_index]
        return (sig.gain[band] * float(np.mean(self.view_gain(pass_index, pts))),
                sig.offset[band])


SEAMS_DIR = Path(__file__).resolve().parents[2] / ".build" / "world-seams"


def seamed_key(extent_km: float, seed: int, block_size: int) -> str:
    from .generate import generator_hash

    here = Path(__file__).read_bytes()
    params = {"variant": "seams", "extent_km": extent_km, "seed": seed,
              "block_size": block_size, "generator": generator_hash(),
              "seams": hashlib.sha256(here).hexdigest()}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def cached_seamed_archive(world: SeamedWorld, block_size: int = 512) -> Path:
    """The seamed archive, built once into `.build/world-seams/<key>` (its own folder, so
    it never displaces the default archives)."""
    from . import build_archive
    from .servers import build_once, prune_archives

    final = SEAMS_DIR / seamed_key(world.extent_km, world.seed, block_size)
    built = build_once(final, lambda tmp: build_archive(tmp, world, block_size=block_size))
    prune_archives(SEAMS_DIR, keep=2)
    return built
