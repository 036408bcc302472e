"""Per-pass atmosphere: clouds, their shadows, thin cirrus, snow and saturated pixels.

Every phenomenon is a scalar field of position with two thresholds: SCL flags it where
the field exceeds `t_flag`; the pixels are changed only where it exceeds
`t_on = t_flag + G * MARGIN_M` (G bounds the field's gradient). A 10 m pixel centre is
at most 7.07 m from the centre of the 20 m SCL pixel that holds it, so wherever the
written SCL says "clear" the 10 m pixels are exactly the surface truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .landscape import BANDS, WaveField

MARGIN_M = 9.0
SHADOW_OFFSET = (-320.0, 220.0)  # a cloud's shadow lies this far away (north-west), metres
SHADOW_FACTOR = 0.3  # surface x 0.3 in full shadow
# Water clouds are bright and flat from blue to NIR and darker in the SWIR (ice and water
# absorb there: ~0.45 at 1.6 um, ~0.3 at 2.2 um), while snow is bright in the visible and
# dark in the SWIR; thin cirrus adds less in the SWIR too.
CLOUD_TOP = {"blue": 0.62, "green": 0.60, "red": 0.58, "nir": 0.56, "swir16": 0.45,
             "swir22": 0.32}
CIRRUS_GAIN = {"blue": 0.035, "green": 0.03, "red": 0.028, "nir": 0.025, "swir16": 0.018,
               "swir22": 0.012}
SATURATED = 1.2  # reflectance written for saturated/defective pixels
CORE_STRENGTH = 0.7  # cloud opacity from which SCL says 9 (high probability)


@dataclass(frozen=True)
class BlobField:
    """The max of elliptic cones: value (km) = (R - elliptic distance) / 1000."""

    cx: Tuple[float, ...]
    cy: Tuple[float, ...]
    radius: Tuple[float, ...]
    a: Tuple[float, ...]
    b: Tuple[float, ...]
    angle: Tuple[float, ...]

    @property
    def gradient_bound(self) -> float:
        return 1.0 / (1000.0 * min(min(self.a), min(self.b))) if self.cx else 0.0

    def __call__(self, x, y, shift=(0.0, 0.0)) -> np.ndarray:
        out = np.full(np.shape(x), -1e6, dtype=np.float64)
        for cx, cy, r, a, b, ang in zip(self.cx, self.cy, self.radius, self.a, self.b,
                                        self.angle):
            dx = x - (cx + shift[0])
            dy = y - (cy + shift[1])
            u = (dx * np.cos(ang) + dy * np.sin(ang)) / a
            v = (-dx * np.sin(ang) + dy * np.cos(ang)) / b
            np.maximum(out, (r - np.hypot(u, v)) / 1000.0, out=out)
        return out


@dataclass(frozen=True)
class Hole:
    """A guaranteed clear capsule (segment p0-p1 widened by `radius`, metres)."""

    x0: float
    y0: float
    x1: float
    y1: float
    radius: float

    def distance(self, x, y) -> np.ndarray:
        vx, vy = self.x1 - self.x0, self.y1 - self.y0
        t = np.clip(((x - self.x0) * vx + (y - self.y0) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
        return np.hypot(x - (self.x0 + t * vx), y - (self.y0 + t * vy))


@dataclass(frozen=True)
class Layer:
    """A field with its flag threshold, opacity ramp and (optional) clear hole."""

    field: object  # WaveField | BlobField
    t_flag: float
    ramp: float
    hole: Optional[Hole] = None

    @property
    def grad(self) -> float:
        return self.field.gradient_bound

    @property
    def t_on(self) -> float:
        return self.t_flag + self.grad * MARGIN_M

    def value(self, pts, shift=(0.0, 0.0)) -> np.ndarray:
        if isinstance(self.field, WaveField):
            v = self.field(pts.x32, pts.y32, shift)
        else:
            v = self.field(pts.x, pts.y, shift)
        if self.hole is not None:
            # min() with a cone of the same slope bound keeps the gradient bound.
            d = self.hole.distance(pts.x - shift[0], pts.y - shift[1])
            psi = self.t_flag - 0.05 + self.grad * (d - self.hole.radius)
            v = np.minimum(v, psi.astype(v.dtype))
        return v

    def strength(self, v: np.ndarray) -> np.ndarray:
        return np.clip((v - self.t_on) / self.ramp, 0.0, 1.0)


@dataclass(frozen=True)
class Weather:
    """Everything that happens in the sky (and on the ground) during one pass."""

    cloud: Optional[Layer] = None
    cirrus: Optional[Layer] = None
    snow: Tuple[Tuple[float, float, float], ...] = ()  # (x, y, sigma) Gaussian bumps, metres
    saturated: Tuple[Tuple[float, float, float], ...] = ()  # (x, y, radius) disks, metres

    def snow_cover(self, pts) -> Optional[np.ndarray]:
        """Snow fraction 0..0.95 (part of the surface truth of this pass), or None."""
        if not self.snow:
            return None
        s = np.zeros(pts.shape)
        for x, y, sigma in self.snow:
            d2 = (pts.x - x) ** 2 + (pts.y - y) ** 2
            np.maximum(s, np.exp(-d2 / (2 * sigma * sigma)), out=s)
        return 0.95 * s

    def sky(self, pts) -> Sky:
        shape = pts.shape
        zero, false = np.zeros(shape, np.float32), np.zeros(shape, bool)
        alpha = beta = gamma = zero
        cloud_flag = shadow_flag = cirrus_flag = false
        if self.cloud is not None:
            v = self.cloud.value(pts)
            alpha, cloud_flag = self.cloud.strength(v), v > self.cloud.t_flag
            vs = self.cloud.value(pts, SHADOW_OFFSET)
            beta, shadow_flag = self.cloud.strength(vs), vs > self.cloud.t_flag
        if self.cirrus is not None:
            v = self.cirrus.value(pts)
            gamma, cirrus_flag = self.cirrus.strength(v), v > self.cirrus.t_flag
        sat_on, sat_flag = false.copy(), false.copy()
        for x, y, r in self.saturated:
            d = np.hypot(pts.x - x, pts.y - y)
            sat_on |= d < r
            sat_flag |= d < r + MARGIN_M
        return Sky(alpha, cloud_flag, beta, shadow_flag, gamma, cirrus_flag, sat_on, sat_flag)


@dataclass
class Sky:
    """A pass's sky evaluated on one grid."""

    alpha: np.ndarray  # cloud opacity 0..1
    cloud_flag: np.ndarray
    beta: np.ndarray  # shadow strength 0..1
    shadow_flag: np.ndarray
    gamma: np.ndarray  # cirrus strength 0..1
    cirrus_flag: np.ndarray
    sat_on: np.ndarray
    sat_flag: np.ndarray

    def observe(self, band: str, surface: np.ndarray) -> np.ndarray:
        """What the sensor records over `surface` (quantised reflectance)."""
        r = surface * (1.0 - (1.0 - SHADOW_FACTOR) * self.beta)
        r = r + CIRRUS_GAIN[band] * self.gamma
        top = CLOUD_TOP[band] * (0.85 + 0.3 * self.alpha)
        r = (1.0 - self.alpha) * r + self.alpha * top
        r = np.where(self.sat_on, SATURATED, r)
        changed = (self.alpha > 0) | (self.beta > 0) | (self.gamma > 0) | self.sat_on
        return np.where(changed, np.rint(r * 10000.0) / 10000.0, surface)

    def classify(self, surface_scl: np.ndarray, snow: Optional[np.ndarray]) -> np.ndarray:
        """SCL: 1 > 9 > 8 > 3 > 10 > 11 > the surface class (0 is added by the caller)."""
        scl = surface_scl.copy()
        if snow is not None:
            scl[snow > 0.5] = 11
        scl[self.cirrus_flag] = 10
        scl[self.shadow_flag] = 3
        scl[self.cloud_flag] = 8
        scl[self.cloud_flag & (self.alpha >= CORE_STRENGTH)] = 9
        scl[self.sat_flag] = 1
        return scl


@dataclass(frozen=True)
class PassWeatherSpec:
    """How cloudy a pass is; see `passes.SCHEDULE`."""

    cloud: str = "none"  # none | dense | sparse | aoi_blob | dense_hole
    cloud_fraction: float = 0.0  # dense kinds: share of the region flagged cloud
    n_blobs: int = 0  # sparse
    cirrus_fraction: float = 0.0
    n_snow: int = 0
    n_saturated: int = 0


@dataclass
class _Exclusions:
    """Discs (x, y, r) that the clouds of each sparse pass occupy (with shadows)."""

    discs: List[Tuple[int, float, float, float]] = field(default_factory=list)

    def free(self, pass_index: int, x: float, y: float, r: float) -> bool:
        return all(p == pass_index or np.hypot(x - dx, y - dy) > r + dr
                   for p, dx, dy, dr in self.discs)


def _quantile_threshold(f: WaveField, bounds, fraction: float) -> float:
    """The field value exceeded on `fraction` of the region (sampled on a 100 x 75 lattice)."""
    xmin, ymin, xmax, ymax = bounds
    gx, gy = np.meshgrid(np.linspace(xmin, xmax, 100), np.linspace(ymin, ymax, 75))
    return float(np.quantile(f(gx, gy), 1.0 - fraction))


def _disc_of_blob(x, y, r, a, b) -> Tuple[float, float, float]:
    sx, sy = SHADOW_OFFSET
    return x + sx / 2, y + sy / 2, r * max(a, b) + np.hypot(sx, sy) / 2 + 60.0


def _spots(rng, n: int, bounds, hole: Hole, keep_out: float) -> List[Tuple[float, float]]:
    """n random points in the region, at least `keep_out` m from the clear hole."""
    xmin, ymin, xmax, ymax = bounds
    res = []
    for _ in range(n):
        for _try in range(100):
            x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
            if hole.distance(np.array(x), np.array(y)) > keep_out:
                res.append((float(x), float(y)))
                break
    return res


def make_weather(seed: int, bounds, specs: Sequence[PassWeatherSpec],
                 aoi_clear: Tuple[float, float, float], aoi_cloudy: Tuple[float, float, float]
                 ) -> List[Weather]:
    """Weather of every pass. `aoi_clear`/`aoi_cloudy` = (x, y, radius) of the known AOIs.

    The sparse passes (`sparse`, `aoi_blob`) get clouds whose footprints (with shadows) never
    overlap another sparse pass's: with three of them, every region pixel is clear at least
    twice.
    """
    xmin, ymin, xmax, ymax = bounds
    width = xmax - xmin
    excl = _Exclusions()
    sx, sy = SHADOW_OFFSET
    cx, cy, cr = aoi_clear
    hole = Hole(cx, cy, cx - sx, cy - sy, cr + 170.0)
    order = sorted(range(len(specs)), key=lambda i: specs[i].cloud != "aoi_blob")
    out: List[Optional[Weather]] = [None] * len(specs)
    for i in order:
        spec = specs[i]
        rng = np.random.default_rng([seed, 100 + i])
        cloud = cirrus = None
        if spec.cloud in ("dense", "dense_hole"):
            f = WaveField.random(rng, 10, 1200.0, 6000.0)
            cloud = Layer(f, _quantile_threshold(f, bounds, spec.cloud_fraction), 0.8,
                          hole if spec.cloud == "dense_hole" else None)
        elif spec.cloud == "aoi_blob":
            x, y, _ = aoi_cloudy
            blob = (x + 450.0, y + 150.0, 550.0, 1.2, 0.85, 0.5)
            excl.discs.append((i, *_disc_of_blob(*blob[:5])))
            cloud = Layer(BlobField(*map(tuple, zip(blob))), 0.0, 0.25)
        elif spec.cloud == "sparse":
            blobs = []
            for _ in range(spec.n_blobs):
                for _try in range(500):
                    r = width * rng.uniform(0.05, 0.08)
                    a, b = rng.uniform(1.0, 1.3), rng.uniform(0.75, 0.95)
                    x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
                    disc = _disc_of_blob(x, y, r, a, b)
                    if excl.free(i, *disc):
                        excl.discs.append((i, *disc))
                        blobs.append((x, y, r, a, b, rng.uniform(0, np.pi)))
                        break
            if blobs:
                cloud = Layer(BlobField(*map(tuple, zip(*blobs))), 0.0, 0.25)
        if spec.cirrus_fraction > 0:
            f = WaveField.random(rng, 6, 3000.0, 10000.0)
            cirrus = Layer(f, _quantile_threshold(f, bounds, spec.cirrus_fraction), 0.8)

        snow = tuple((x, y, float(rng.uniform(90.0, 140.0)))
                     for x, y in _spots(rng, spec.n_snow, bounds, hole, hole.radius + 600.0))
        sat = tuple((x, y, float(rng.uniform(12.0, 25.0)))
                    for x, y in _spots(rng, spec.n_saturated, bounds, hole, hole.radius + 100.0))
        out[i] = Weather(cloud, cirrus, snow, sat)
    return out  # type: ignore[return-value]


__all__ = ["BANDS", "Weather", "Sky", "PassWeatherSpec", "make_weather", "Hole", "Layer"]


# --- what SCL misses ------------------------------------------------------------------------
# The sun that casts SHADOW_OFFSET: shadows lie opposite the sun azimuth, at cloud height /
# tan(elevation). Every item says so in view:sun_azimuth / view:sun_elevation.
SHADOW_HEIGHT_M = 600.0  # the clouds of this world float this high
SUN_AZIMUTH = round(float(np.degrees(np.arctan2(-SHADOW_OFFSET[0], -SHADOW_OFFSET[1]))) % 360.0, 6)
SUN_ELEVATION = round(float(np.degrees(np.arctan2(SHADOW_HEIGHT_M, np.hypot(*SHADOW_OFFSET)))), 6)
MISSES_PASS = 6  # a sparse pass, clear along the east edge: best pixel takes it there
HAZE_OPACITY = 0.35  # thin cloud SCL calls vegetation/bare soil: brighter, not opaque
HAZE_EDGE = 40.0  # metres over which the haze fades out
SHADOW_EDGE = 12.0  # metres over which a missed shadow fades out
# Sen2Cor-like cloud probability (%) per SCL class, and over the haze SCL misses.
CLOUD_PROBABILITY = {8: 55, 9: 90, 10: 25}
HAZE_PROBABILITY = 70


@dataclass(frozen=True)
class Misses:
    """One pass's phenomena the scene classification misses, known to the truth:
    `haze` discs (x, y, r) of thin cloud whose SCL stays 4/5 while the pixels brighten and
    the cloud probability is high; `casters` small clouds SCL flags (9) whose shadows, at
    SHADOW_OFFSET, it leaves unflagged."""

    haze: Tuple[Tuple[float, float, float], ...] = ()
    casters: Tuple[Tuple[float, float, float], ...] = ()

    def _haze(self, pts) -> Tuple[np.ndarray, np.ndarray]:
        """(opacity, flagged by the probability layer) of the haze."""
        alpha, flag = np.zeros(pts.shape), np.zeros(pts.shape, bool)
        for x, y, r in self.haze:
            d = np.hypot(pts.x - x, pts.y - y)
            np.maximum(alpha, HAZE_OPACITY * np.clip((r - d) / HAZE_EDGE, 0.0, 1.0), out=alpha)
            flag |= d < r + MARGIN_M
        return alpha, flag

    def _casters(self, pts, shift=(0.0, 0.0)) -> Tuple[np.ndarray, np.ndarray]:
        """(strength 0..1, SCL flag) of the caster clouds, or of their shadows when shifted."""
        strength, flag = np.zeros(pts.shape), np.zeros(pts.shape, bool)
        for x, y, r in self.casters:
            d = np.hypot(pts.x - x - shift[0], pts.y - y - shift[1])
            np.maximum(strength, np.clip((r - d) / SHADOW_EDGE, 0.0, 1.0), out=strength)
            flag |= d < r + MARGIN_M
        return strength, flag

    def observe(self, band: str, observed: np.ndarray, pts) -> np.ndarray:
        """The pixels with these phenomena added on top of what the sky did."""
        if not (self.haze or self.casters):
            return observed
        alpha, _ = self._haze(pts)
        cloud, _ = self._casters(pts)
        shadow, _ = self._casters(pts, SHADOW_OFFSET)
        top = CLOUD_TOP[band]
        r = observed * (1.0 - (1.0 - SHADOW_FACTOR) * shadow)
        r = (1.0 - alpha) * r + alpha * top
        r = (1.0 - cloud) * r + cloud * top
        changed = (alpha > 0) | (cloud > 0) | (shadow > 0)
        return np.where(changed, np.rint(r * 10000.0) / 10000.0, observed)

    def classify(self, scl: np.ndarray, pts) -> np.ndarray:
        """SCL with the caster clouds flagged 8, 9 in their opaque core (as the sky's clouds:
        every 10 m pixel of a 20 m 9-pixel has opacity >= CORE_STRENGTH); their shadows and
        the haze are not flagged."""
        if self.casters:
            _, flag = self._casters(pts)
            core = np.zeros(pts.shape, bool)
            for x, y, r in self.casters:
                core |= np.hypot(pts.x - x, pts.y - y) < r - CORE_STRENGTH * SHADOW_EDGE - MARGIN_M
            scl = scl.copy()
            scl[flag] = 8
            scl[core] = 9
        return scl

    def missed(self, pts) -> np.ndarray:
        """Pixels these phenomena change that SCL does not flag: haze and caster shadows."""
        alpha, _ = self._haze(pts)
        shadow, _ = self._casters(pts, SHADOW_OFFSET)
        _, cloud_flag = self._casters(pts)
        return ((alpha > 0) | (shadow > 0)) & ~cloud_flag

    def cloud_probability(self, scl: np.ndarray, pts) -> np.ndarray:
        """Cloud probability (uint8 %) from the SCL classes, plus the haze SCL missed."""
        prob = np.zeros(scl.shape, np.uint8)
        for cls, value in CLOUD_PROBABILITY.items():
            prob[scl == cls] = value
        if self.haze:
            _, flag = self._haze(pts)
            prob[flag & (scl != 0)] = np.maximum(prob[flag & (scl != 0)], HAZE_PROBABILITY)
        return prob


def make_misses(bounds, n_passes: int) -> List[Misses]:
    """Misses for every pass: only MISSES_PASS has some, near the region's east edge (outside
    the central 70 % that the mosaic tests cover, so their SCL-only truth still holds)."""
    xmin, ymin, xmax, ymax = bounds
    out = [Misses() for _ in range(n_passes)]
    out[MISSES_PASS] = Misses(haze=((xmax - 450.0, -1000.0, 120.0), (xmax - 400.0, 300.0, 100.0)),
                              casters=((xmax - 150.0, 900.0, 80.0),))
    return out


def snow_probability(snow: Optional[np.ndarray], shape) -> np.ndarray:
    """Snow probability (uint8 %) from the snow cover fraction (0..0.95)."""
    if snow is None:
        return np.zeros(shape, np.uint8)
    return np.clip(np.rint(snow / 0.95 * 100.0), 0, 100).astype(np.uint8)
