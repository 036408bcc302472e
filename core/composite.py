"""Per-block reducers (numpy only): best available pixel, median/percentile, counts, scaling.

Reflectance arrays are float32 (bands, rows, cols) with NaN for "no valid observation".
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

VISUAL_MAX_REFLECTANCE = 0.3


class BestPixel:
    """Best-available fill: the first valid observation added wins each pixel.

    Feed observations best first (e.g. least cloudy, nearest the target date); the caller
    can stop reading once `is_complete(target)` holds for the block's AOI pixels.
    """

    def __init__(self, nbands: int, shape: Tuple[int, int]) -> None:
        self.values = np.full((nbands, *shape), np.nan, dtype=np.float32)
        self.source = np.full(shape, -1, dtype=np.int16)
        self.filled = np.zeros(shape, dtype=bool)

    def add(self, values: np.ndarray, valid: np.ndarray, source: int) -> int:
        """Fill still-empty pixels where `valid` (and every band finite); returns how many."""
        new = np.asarray(valid, dtype=bool) & ~self.filled
        if not new.any():
            return 0
        new &= np.isfinite(values).all(axis=0)
        np.copyto(self.values, values, where=new[None])
        self.source[new] = source
        self.filled |= new
        return int(np.count_nonzero(new))

    def is_complete(self, target: np.ndarray) -> bool:
        """True when every pixel of `target` (bool mask) is filled."""
        return not (np.asarray(target, dtype=bool) & ~self.filled).any()

    def result(self) -> Tuple[np.ndarray, np.ndarray]:
        """(values float32 (nb, h, w), NaN where empty; source int16 (h, w), -1 where empty)."""
        return self.values, self.source


def merge_pass(observations: Sequence[Tuple[np.ndarray, np.ndarray]]
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Tiles of one satellite pass -> one observation; the first valid tile wins a pixel."""
    if not observations:
        raise ValueError("merge_pass needs at least one observation")
    values, valid = observations[0]
    if len(observations) == 1:
        return values, np.asarray(valid, dtype=bool)
    best = BestPixel(values.shape[0], (values.shape[1], values.shape[2]))
    for vals, ok in observations:
        best.add(vals, ok, 0)
    return best.values, best.filled


def _quantile_sorted(s: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """numpy's 'linear' quantile of the first `counts` entries of each column of sorted s."""
    pos = (counts - 1).astype(np.float64) * (q / 100.0)
    lo = np.floor(pos).astype(np.intp)
    np.clip(lo, 0, None, out=lo)
    hi = np.minimum(lo + 1, np.maximum(counts - 1, 0))
    t = (pos - lo).astype(np.float32)
    a = np.take_along_axis(s, lo[None], axis=0)[0]
    b = np.take_along_axis(s, hi[None], axis=0)[0]
    diff = b - a
    out = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)  # numpy's _lerp, same rounding
    out[counts == 0] = np.nan
    return out.astype(np.float32, copy=False)


class Stack:
    """A block's observations, written into one preallocated array as they arrive.

    A list of arrays joined by np.stack holds every observation twice at its peak; this
    holds it once, and slots never written are never touched, so they take no memory.
    Observations come either appended (`add`) or written by their reads straight into a
    slot per pass (`slot`, then `keep` for those that gave a pixel), which saves a copy
    and an array per pass in flight; `view` then closes the gaps in place."""

    def __init__(self, capacity: int, nbands: int, shape: Tuple[int, int],
                 dtype: str = "float32") -> None:
        self.data = np.empty((max(1, capacity), nbands, *shape), dtype=dtype)
        self.n = 0
        self._kept: list = []

    def add(self, values: np.ndarray) -> None:
        self.data[self.n] = values
        self.n += 1

    def slot(self, k: int) -> np.ndarray:
        """Slot k, to write a pass's values into at its valid pixels only."""
        return self.data[k]

    def keep(self, k: int, valid: np.ndarray) -> None:
        """Slot k holds an observation at `valid` (slots are kept in increasing order);
        its other pixels, never written, become NaN."""
        np.copyto(self.data[k], np.float32(np.nan), where=~valid[None])
        self._kept.append(k)

    def view(self) -> np.ndarray:
        if self._kept:
            for w, k in enumerate(self._kept):
                if w != k:
                    self.data[w] = self.data[k]
            self.n, self._kept = len(self._kept), []
        return self.data[: self.n]


def _band_sorted(values: np.ndarray, b: int, drop: Optional[np.ndarray],
                 sort: bool = True) -> np.ndarray:
    """Band b of the stack sorted along it (NaN last), `drop` (n, h, w) left out: one copy."""
    if drop is not None:
        band = np.where(drop, np.float32(np.nan), values[:, b])
    else:
        band = values[:, b].copy() if sort else values[:, b]
    if sort:
        band.sort(axis=0)
    return band


def reduce_stack(values: np.ndarray, method: str, percentile: float = 50,
                 drop: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-pixel median or percentile over the valid (non-NaN) observations of a stack.

    values: float32 (n, nb, h, w); returns float32 (nb, h, w), NaN where no observation;
    `drop` (bool (n, h, w)) leaves observations out as if they were NaN, without a copy
    of the stack. Sorts along the stack (NaN last) and interpolates between the two ranks
    like numpy's default 'linear' method: same numbers as np.nanpercentile, much faster,
    no warnings.
    """
    method = getattr(method, "value", method)
    if method == "median":
        q = 50.0
    elif method == "percentile":
        q = float(percentile)
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within 0..100, not {q}")
    else:
        raise ValueError(f"Unknown reducer {method!r}: use 'median' or 'percentile'")
    values = np.asarray(values, dtype=np.float32)
    n, nb = values.shape[:2]
    out = np.empty(values.shape[1:], dtype=np.float32)
    for b in range(nb):  # one band at a time keeps the sorted copy small
        ordered = _band_sorted(values, b, drop)
        if n == 1:
            out[b] = ordered[0]
            continue
        counts = np.count_nonzero(~np.isnan(ordered), axis=0)
        out[b] = _quantile_sorted(ordered, counts, q)
    return out


def statistic_label(statistic: str) -> str:
    """'p25' -> '25th percentile', 'mean' -> 'mean', 'std' -> 'standard deviation'."""
    if statistic == "std":
        return "standard deviation"
    return statistic if statistic == "mean" else f"{statistic[1:]}th percentile"


def reduce_statistics(values: np.ndarray, statistics: Sequence[str],
                      drop: Optional[np.ndarray] = None) -> np.ndarray:
    """Several per-pixel statistics of one stack, sorted once per band.

    values: float32 (n, nb, h, w) with NaN for no observation; statistics: names such as
    'p25', 'p50', 'mean', 'std' (population standard deviation). Returns float32
    (len(statistics), nb, h, w), NaN where a pixel has no observation; `drop` as in
    `reduce_stack`. Percentiles are numpy's 'linear' ones, exactly as `reduce_stack`
    computes them.
    """
    values = np.asarray(values, dtype=np.float32)
    n, nb = values.shape[:2]
    out = np.empty((len(statistics), *values.shape[1:]), dtype=np.float32)
    quantiles = [(i, float(s[1:])) for i, s in enumerate(statistics) if s.startswith("p")]
    moments = [(i, s) for i, s in enumerate(statistics) if not s.startswith("p")]
    for q in (q for _, q in quantiles):
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within 0..100, not {q}")
    for _, s in moments:
        if s not in ("mean", "std"):
            raise ValueError(f"Unknown statistic {s!r}: use pNN, 'mean' or 'std'")
    for b in range(nb):
        band = _band_sorted(values, b, drop, sort=bool(quantiles) and n > 1)
        valid = ~np.isnan(band)
        counts = np.count_nonzero(valid, axis=0)
        if quantiles:
            for i, q in quantiles:
                out[i, b] = _quantile_sorted(band, counts, q) if n > 1 else band[0]
        if moments:
            with np.errstate(invalid="ignore", divide="ignore"):
                total = np.where(valid, band, 0).sum(axis=0, dtype=np.float64)
                mean = total / counts
                dev = np.where(valid, band - mean, 0)
                std = np.sqrt((dev * dev).sum(axis=0) / counts)
            for i, s in moments:
                out[i, b] = np.where(counts > 0, mean if s == "mean" else std, np.nan)
    return out


def count_valid(valid: np.ndarray) -> np.ndarray:
    """Number of valid observations per pixel: bool (n, h, w) -> uint16 (h, w)."""
    valid = np.asarray(valid, dtype=bool)
    return np.minimum(valid.sum(axis=0), np.iinfo(np.uint16).max).astype(np.uint16)


def to_uint16(refl: np.ndarray) -> np.ndarray:
    """Reflectance -> uint16 DN = round(refl * 10000), clipped to 1..65535; 0 where NaN."""
    refl = np.asarray(refl, dtype=np.float32)
    out = np.zeros(refl.shape, dtype=np.uint16)
    ok = np.isfinite(refl)
    out[ok] = np.clip(np.rint(refl[ok] * 10000.0), 1, 65535)
    return out


def to_visual(rgb_refl: np.ndarray, max_reflectance: float = VISUAL_MAX_REFLECTANCE) -> np.ndarray:
    """Reflectance -> uint8 true colour by a fixed linear stretch.

    0 .. max_reflectance (default 0.3, bright enough for land without saturating most
    surfaces) maps linearly onto 1 .. 255, values outside are clipped; 0 is kept for
    nodata (NaN). A fixed stretch, not a per-image one, keeps mosaics and tiles comparable.
    """
    refl = np.asarray(rgb_refl, dtype=np.float32)
    out = np.zeros(refl.shape, dtype=np.uint8)
    ok = np.isfinite(refl)
    out[ok] = np.clip(np.rint(1.0 + refl[ok] * (254.0 / max_reflectance)), 1, 255)
    return out

