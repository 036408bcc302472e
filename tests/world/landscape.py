"""The ground truth: smooth surface reflectance per band and date, and its SCL class.

A two-endmember mix (vegetation / bare-urban) driven by smooth random cosine fields
whose shortest wavelength is 300 m, so bilinear resampling between 10 m grids stays far
within 0.005 reflectance. Values are quantised to the 1e-4 DN step, so that
DN = round(reflectance * 10000) holds exactly for the written pixels.

Every Sentinel-2 band has a spectrum here (ALL_BANDS); the archive writes each at its own
resolution (RESOLUTION: 10, 20 or 60 m) as point samples of the same fields at its own
pixel centres. 20 m and 60 m centres coincide with 20 m SCL centres, so "SCL clear means
truth" holds for them exactly as for the 10 m bands. Clouds over bands without weather
tables of their own (red edge, nir08, nir09: nir's; coastal: blue's) borrow a proxy band's
(WEATHER_PROXY); swir16 and swir22 have their own, darker clouds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from .geography import Points

BANDS = ("blue", "green", "red", "nir")  # 10 m
BANDS_20 = ("rededge1", "rededge2", "rededge3", "nir08", "swir16", "swir22")
BANDS_60 = ("coastal", "nir09")
ALL_BANDS = BANDS + BANDS_20 + BANDS_60
RESOLUTION = {**{b: 10 for b in BANDS}, **{b: 20 for b in BANDS_20}, **{b: 60 for b in BANDS_60}}
# Simple two-endmember spectra; the red edge climbs from red to NIR, SWIR is bright on bare soil.
VEGETATION = {"blue": 0.03, "green": 0.075, "red": 0.04, "nir": 0.36, "coastal": 0.025,
              "rededge1": 0.09, "rededge2": 0.25, "rededge3": 0.32, "nir08": 0.37,
              "nir09": 0.33, "swir16": 0.19, "swir22": 0.09}
BARE = {"blue": 0.095, "green": 0.12, "red": 0.15, "nir": 0.22, "coastal": 0.085,
        "rededge1": 0.17, "rededge2": 0.19, "rededge3": 0.21, "nir08": 0.225, "nir09": 0.23,
        "swir16": 0.30, "swir22": 0.25}
SNOW = {"blue": 0.80, "green": 0.78, "red": 0.75, "nir": 0.65, "coastal": 0.82,
        "rededge1": 0.73, "rededge2": 0.71, "rededge3": 0.69, "nir08": 0.63, "nir09": 0.55,
        "swir16": 0.10, "swir22": 0.05}
# The band whose cloud/cirrus/haze tables (weather.CLOUD_TOP, CIRRUS_GAIN) a band borrows.
WEATHER_PROXY = {**{b: b for b in BANDS}, "coastal": "blue", "rededge1": "nir",
                 "rededge2": "nir", "rededge3": "nir", "nir08": "nir", "nir09": "nir",
                 "swir16": "swir16", "swir22": "swir22"}  # SWIR clouds: their own tables
GREEN_UP = frozenset({"nir", "rededge2", "rededge3", "nir08", "nir09"})  # phenology bands
TEXTURE_AMPLITUDE = 0.08  # relative brightness texture
DATE_AMPLITUDE = 0.03  # relative date-to-date variation
PHENOLOGY = 0.04  # relative NIR green-up of vegetation over the month


@dataclass(frozen=True)
class WaveField:
    """A sum of plane cosine waves in local metres: smooth, cheap, Lipschitz-bounded."""

    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, n: int, lam_min: float, lam_max: float,
               norm: str = "variance", anisotropy: float = 1.0) -> WaveField:
        """n waves with log-uniform wavelengths (m); 'variance' -> unit variance,
        'bound' -> |field| <= 1 everywhere."""
        lam = np.exp(rng.uniform(np.log(lam_min), np.log(lam_max), n))
        theta = rng.uniform(0.0, np.pi, n)
        k = 2 * np.pi / lam
        amp = np.sqrt(lam / lam_max)  # longer waves a little stronger
        amp = amp / (np.sqrt(np.sum(amp**2) / 2) if norm == "variance" else np.sum(amp))
        return cls(k * np.cos(theta) * anisotropy, k * np.sin(theta), rng.uniform(0, 2 * np.pi, n),
                   amp)

    @property
    def gradient_bound(self) -> float:
        """An upper bound of |grad| in value per metre."""
        return float(np.sum(np.abs(self.amp) * np.hypot(self.kx, self.ky)))

    def __call__(self, x, y, shift=(0.0, 0.0)) -> np.ndarray:
        """Value at (x - shift); float32 when x, y are float32 (fast), else float64."""
        dtype = np.asarray(x).dtype
        out = np.zeros(np.shape(x), dtype=dtype)
        for kx, ky, ph, a in zip(self.kx, self.ky, self.phase, self.amp):
            arg = x * dtype.type(kx)
            arg += y * dtype.type(ky)
            arg += dtype.type(ph - kx * shift[0] - ky * shift[1])
            np.cos(arg, out=arg)
            arg *= dtype.type(a)
            out += arg
        return out


class Landscape:
    """Surface reflectance of the world, independent of any grid."""

    def __init__(self, seed: int, n_passes: int) -> None:
        rng = np.random.default_rng([seed, 1])
        self.seed = seed
        self.vegetation = WaveField.random(rng, 8, 700.0, 5000.0)
        self.texture = WaveField.random(rng, 6, 300.0, 900.0, norm="bound")
        self.unclassified = WaveField.random(rng, 5, 400.0, 1500.0)
        self.date = [WaveField.random(rng, 2, 4000.0, 12000.0, norm="bound")
                     for _ in range(n_passes)]

    def _base(self, pts: Points, bands=("red", "nir")) -> Dict[str, np.ndarray]:
        """Pass-independent part (cached on the grid's Points)."""
        key = ("landscape-base", self.seed)
        if key not in pts.cache:
            v = 1.0 / (1.0 + np.exp(-1.6 * self.vegetation(pts.x, pts.y)))
            bright = 1.0 + TEXTURE_AMPLITUDE * self.texture(pts.x, pts.y)
            base = {"veg": v, "bright": bright}
            pts.cache[key] = base
        base = pts.cache[key]
        for b in bands:
            if b not in base:
                v = base["veg"]
                base[b] = (v * VEGETATION[b] + (1 - v) * BARE[b]) * base["bright"]
        return base

    def surface(self, band: str, pass_index: int, season: float, pts: Points,
                snow: np.ndarray | None = None) -> np.ndarray:
        """Quantised float64 surface reflectance; `season` in [0, 1] over the month,
        `snow` the snow cover fraction (0..1) on that pass or None."""
        base = self._base(pts, (band,))
        r = base[band] * (1.0 + DATE_AMPLITUDE * self.date[pass_index](pts.x, pts.y))
        if band in GREEN_UP:
            r = r * (1.0 + PHENOLOGY * base["veg"] * (season - 0.5))
        if snow is not None:
            r = r * (1.0 - snow) + SNOW[band] * snow
        return np.rint(r * 10000.0) / 10000.0

    def surface_scl(self, pts: Points) -> np.ndarray:
        """SCL class of the cloud-free surface: 4 vegetation, 5 not vegetated, 7 unclassified."""
        key = ("landscape-scl", self.seed)
        if key not in pts.cache:
            base = self._base(pts)
            ndvi = (base["nir"] - base["red"]) / (base["nir"] + base["red"])
            scl = np.where(ndvi > 0.5, 4, 5).astype(np.uint8)
            scl[self.unclassified(pts.x32, pts.y32) > 2.0] = 7
            pts.cache[key] = scl
        return pts.cache[key]
