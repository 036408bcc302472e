"""Seamless mosaics: a seam metric, relative radiometric normalisation, feathering.

Neighbouring orbits are imaged days apart under other atmosphere and view geometry, so a
mosaic made of several passes shows their edges. Three tools, all numpy:

- **The seam metric** (`SeamStats`): over every pair of neighbouring output pixels, the
  mean absolute step (mean over bands, reflectance) across pairs whose pixels come from
  different sources (best pixel: the pass that gives the pixel most of its value; median,
  percentiles, statistics: the set of passes observed there) divided by the mean step
  between neighbours of one source. 1.0 means the seams are invisible. Pairs across two
  blocks are not counted (each block measures its own pixels).
- **Normalisation** (`fit_normalisation`, option NORMALISE): once per run, before the block
  phase, every pass is read on a coarse grid over the AOI (at most `COARSE_SIDE` pixels a
  side, so memory does not grow with the AOI), and for each pass and band a gain and
  offset are fitted robustly from its clear pixels against the median of the other passes'
  clear pixels there (the composite of all passes, leaving the pass itself out), three
  times: the gain from local contrast (trimmed slope of pixel differences, which smooth
  haze and smooth ground change cannot bias), the offset as the median residual. The
  blocks apply reflectance' = (reflectance - offset) / gain to every observation before
  compositing; the report lists the coefficients.
- **Feathering** (option FEATHER_M): each pass's clear-pixel mask is read on the block plus
  a halo of FEATHER_M, and its weight at a pixel is the distance to the edge of that mask
  (cloud edges, swath edges, tile edges) over FEATHER_M, at most 1, so a pass fades out
  towards its swath edge and towards the holes clouds leave in it: with passes of two
  orbits, the weights fall off towards each swath's edge, i.e. grow towards each swath's
  centre line, as in the seed's inverse distance weighting. Best pixel takes passes in
  plan order, each giving its weight of what is left (pixels far from every edge keep
  exactly the first clear pass's value); median and percentiles blend the statistic of
  the observed set with the statistics of the set without the one or two passes whose
  weight is lowest, multilinearly in their weights, so the value no longer steps where an
  observation appears or ends. Blocks stay independent: the halo is read, not shared.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from shapely.geometry.base import BaseGeometry

from . import composite, io
from .clouds import MaskRule, dilate
from .grid import Grid, geometry_mask, pixel_size_m
from .options import Method
from .plan import Pass
from .progress import check_cancelled
from .reader import SceneReader

COARSE_SIDE = 320  # pixels per side of the normalisation grid, at most
MIN_FIT_PIXELS = 200  # fewer clear overlapping pixels: the pass is left as it is
TRIM = 2.5  # residuals beyond this many robust sigmas are left out of the fit
GRADIENT_LAG = 3  # coarse pixels between the two pixels of a contrast pair (the gain's fit)
FEATHER_NEAREST = 2  # stacks: the passes with the lowest weights that are blended


# --- the metric --------------------------------------------------------------------------

@dataclass(frozen=True)
class SeamStats:
    """Sums of absolute steps across seams and inside sources (add blocks with +)."""

    seam_sum: float = 0.0
    seam_pairs: int = 0
    inner_sum: float = 0.0
    inner_pairs: int = 0

    def __add__(self, other: SeamStats) -> SeamStats:
        return SeamStats(self.seam_sum + other.seam_sum, self.seam_pairs + other.seam_pairs,
                         self.inner_sum + other.inner_sum, self.inner_pairs + other.inner_pairs)

    @property
    def seam_step(self) -> float:
        return self.seam_sum / self.seam_pairs if self.seam_pairs else 0.0

    @property
    def inner_step(self) -> float:
        return self.inner_sum / self.inner_pairs if self.inner_pairs else 0.0

    @property
    def metric(self) -> Optional[float]:
        """Mean step across seams / mean step inside sources (None without both)."""
        if not self.seam_pairs or not self.inner_pairs or self.inner_step == 0:
            return None
        return self.seam_step / self.inner_step

    def summary(self) -> dict:
        metric = self.metric
        return {"seam_metric": None if metric is None else round(metric, 4),
                "seam_step": round(self.seam_step, 6), "seam_pairs": self.seam_pairs,
                "inner_step": round(self.inner_step, 6), "inner_pairs": self.inner_pairs}


def seam_stats(values: np.ndarray, labels: np.ndarray, target: np.ndarray) -> SeamStats:
    """Steps between right and lower neighbours that both hold a value inside `target`.

    values: float (nb, h, w), NaN = empty; labels: int64 (h, w), the source of each pixel."""
    ok = np.isfinite(values).all(axis=0) & target
    out = SeamStats()
    for axis in (1, 2):
        n = values.shape[axis]
        if n < 2:
            continue
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, n - 1), slice(1, n)
        both = ok[tuple(a[1:])] & ok[tuple(b[1:])]
        if not both.any():
            continue
        step = np.abs(values[tuple(a)] - values[tuple(b)]).mean(axis=0, dtype=np.float64)
        seam = labels[tuple(a[1:])] != labels[tuple(b[1:])]
        s, i = both & seam, both & ~seam
        out = out + SeamStats(float(step[s].sum()), int(np.count_nonzero(s)),
                              float(step[i].sum()), int(np.count_nonzero(i)))
    return out


def set_labels(valid: np.ndarray) -> np.ndarray:
    """A label per pixel naming the set of passes observed there (bool (n, h, w))."""
    labels = np.zeros(valid.shape[1:], np.int64)
    for k in range(valid.shape[0]):  # a polynomial hash: unique in practice for any n
        labels = labels * 1_000_003 + valid[k]
    return labels


# --- normalisation -------------------------------------------------------------------------

@dataclass(frozen=True)
class PassFit:
    """reflectance' = (reflectance - offset) / gain, per band, for one pass."""

    pass_id: str
    gains: Tuple[float, ...]
    offsets: Tuple[float, ...]
    pixels: int  # clear coarse pixels the fit used (0: too few, identity)

    def summary(self, bands: Sequence[str]) -> dict:
        return {"pass": self.pass_id, "pixels": self.pixels,
                "gain": dict(zip(bands, (round(g, 5) for g in self.gains))),
                "offset": dict(zip(bands, (round(o, 5) for o in self.offsets)))}


@dataclass(frozen=True)
class SeamSpec:
    """What a block needs for seams: picklable (it travels in `BlockTask`)."""

    feather_m: float = 0.0
    fits: Tuple[PassFit, ...] = ()  # empty: not normalised

    def fit_of(self, pass_id: str) -> Optional[PassFit]:
        for fit in self.fits:
            if fit.pass_id == pass_id:
                return fit
        return None


def coarse_grid(grid: Grid, side: int = COARSE_SIDE) -> Grid:
    """The grid coarsened by a whole factor so neither side exceeds `side` pixels."""
    f = max(1, math.ceil(max(grid.width, grid.height) / side))
    return Grid(grid.crs, grid.transform * Affine.scale(f), math.ceil(grid.width / f),
                math.ceil(grid.height / f))


def robust_line(x: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    """(gain, offset) of y = gain * x + offset by least squares trimmed of outliers."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    keep = np.ones(x.shape, bool)
    gain, offset = 1.0, float(np.median(y - x))
    for _ in range(5):
        xs, ys = x[keep], y[keep]
        if xs.size < 2 or np.ptp(xs) == 0:
            break
        gain, offset = (float(v) for v in np.polyfit(xs, ys, 1))
        r = y - (gain * x + offset)
        sigma = 1.4826 * float(np.median(np.abs(r - np.median(r)))) or 1e-6
        new = np.abs(r - np.median(r)) <= TRIM * sigma
        if np.array_equal(new, keep):
            break
        keep = new
    return gain, offset


def robust_slope(dx: np.ndarray, dy: np.ndarray) -> Optional[float]:
    """Slope of dy = gain * dx through the origin, least squares trimmed of outliers."""
    dx, dy = dx.astype(np.float64), dy.astype(np.float64)
    keep = np.ones(dx.shape, bool)
    gain = None
    for _ in range(6):
        xs, ys = dx[keep], dy[keep]
        energy = float(np.dot(xs, xs))
        if xs.size < MIN_FIT_PIXELS or energy == 0.0:
            return gain
        gain = float(np.dot(xs, ys)) / energy
        r = dy - gain * dx
        sigma = 1.4826 * float(np.median(np.abs(r))) or 1e-9
        new = np.abs(r) <= TRIM * sigma
        if np.array_equal(new, keep):
            break
        keep = new
    return gain


def _differences(a: np.ndarray, lag: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    return [(a[lag:, :], a[:-lag, :]), (a[:, lag:], a[:, :-lag])]


def fit_gain_offset(reference: np.ndarray, observed: np.ndarray, both: np.ndarray,
                    lag: int = GRADIENT_LAG) -> Tuple[float, float]:
    """(gain, offset) of observed = gain * reference + offset over the `both` pixels (h, w).

    The gain comes from local contrast: differences between pixels `lag` apart, where both
    are clear. A difference cancels whatever is smooth in space (a haze gradient, a ground
    that changed evenly between the dates), so it cannot pass for gain, as it does in a
    least-squares line whose gain and offset trade off over a narrow range of reflectance.
    The offset is then the median residual. Too few neighbouring pairs (clear pixels in
    specks): the trimmed least-squares line."""
    dxs, dys = [], []
    for (r1, r0), (o1, o0), (b1, b0) in zip(_differences(reference, lag),
                                            _differences(observed, lag),
                                            _differences(both, lag)):
        pair = b1 & b0
        dxs.append((r1 - r0)[pair])
        dys.append((o1 - o0)[pair])
    gain = robust_slope(np.concatenate(dxs), np.concatenate(dys))
    if gain is None:
        return robust_line(reference[both], observed[both])
    return gain, float(np.median(observed[both].astype(np.float64) - gain * reference[both]))


def _others_median(stack: np.ndarray, p: int) -> Tuple[np.ndarray, np.ndarray]:
    """Median of every pass but `p` (nb, h, w) and how many passes it has (h, w)."""
    others = np.delete(stack, p, axis=0)
    count = np.count_nonzero(np.isfinite(others[:, 0]), axis=0)
    return composite.reduce_stack(others, "median"), count


def fit_stack(stack: np.ndarray, pass_ids: Sequence[str], iterations: int = 3
              ) -> List[PassFit]:
    """Per pass and band gain/offset against the median of the other passes.

    stack: float32 (n, nb, h, w) of clear observations, NaN elsewhere. The first round
    fits the raw passes; the next ones fit each raw pass against the others normalised.
    Relative coefficients are defined up to one common gain and offset: they are given
    against the median pass (median gain 1, median offset 0 over the fitted passes)."""
    n, nb = stack.shape[:2]
    gains, offsets = np.ones((n, nb)), np.zeros((n, nb))
    pixels = np.zeros(n, int)
    if n < 2:
        return [PassFit(pid, (1.0,) * nb, (0.0,) * nb, 0) for pid in pass_ids]
    need = min(2, n - 1)
    for _ in range(iterations):
        normalised = (stack - offsets[:, :, None, None]) / gains[:, :, None, None]
        new_g, new_o = np.ones((n, nb)), np.zeros((n, nb))
        for p in range(n):
            reference, count = _others_median(normalised, p)
            both = np.isfinite(stack[p, 0]) & (count >= need) & np.isfinite(reference[0])
            pixels[p] = int(both.sum())
            if pixels[p] < MIN_FIT_PIXELS:
                continue
            for b in range(nb):
                g, o = fit_gain_offset(reference[b], stack[p, b], both)
                if 0.5 <= g <= 2.0 and abs(o) <= 0.2:
                    new_g[p, b], new_o[p, b] = g, o
        gains, offsets = new_g, new_o
    fitted = pixels >= MIN_FIT_PIXELS
    if fitted.sum() >= 2:  # y = a C + b and C = alpha C' + beta: a' = a alpha, b' = a beta + b
        alpha = 1.0 / np.median(gains[fitted], axis=0)
        beta = -np.median(offsets[fitted], axis=0) * alpha
        gains[fitted], offsets[fitted] = gains[fitted] * alpha, gains[fitted] * beta + \
            offsets[fitted]
    return [PassFit(pid, tuple(float(g) for g in gains[p]), tuple(float(o) for o in offsets[p]),
                    int(pixels[p]) if pixels[p] >= MIN_FIT_PIXELS else 0)
            for p, pid in enumerate(pass_ids)]


def fit_normalisation(passes: Sequence[Pass], grid: Grid, aoi: Optional[BaseGeometry],
                      bands: Sequence[str], rule: MaskRule, workers: int,
                      options: Dict[str, object], progress=None) -> List[PassFit]:
    """Read every pass's clear pixels on a coarse grid over the AOI (concurrently), then
    fit (`fit_stack`). Unreadable scenes are left out here; the blocks report them. A
    cancel (`progress`) takes effect within half a second, stalled reads are not waited
    for."""
    from .blocks import _native_first, _read_pass, _SafeReads  # blocks imports this module

    coarse = coarse_grid(grid)
    target = geometry_mask(coarse, aoi) if aoi is not None else np.ones(coarse.shape, bool)
    reads = _SafeReads(SceneReader(bands, rule, coarse), frozenset())

    def read(p: Pass):
        observations, _ = _read_pass(_native_first(list(p.scenes), coarse.crs), coarse, target,
                                     reads)
        if not observations:
            return None
        values, valid = composite.merge_pass(observations)
        valid = valid & ~dilate(~valid, 1)  # coarse pixels at a mask edge mix clear and not
        return np.where(valid[None], values, np.nan).astype(np.float32)

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="clearsky-fit",
                              initializer=io.init_worker, initargs=(options, io.current_tiles()))
    finished = False
    try:
        futures = [pool.submit(read, p) for p in passes]
        layers = []
        for future in futures:
            while True:
                if progress is not None:
                    check_cancelled(progress)
                try:
                    layers.append(future.result(timeout=0.5))
                    break
                except FutureTimeout:
                    continue
        finished = True
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)
    empty = np.full((len(bands), *coarse.shape), np.nan, np.float32)
    stack = np.stack([layer if layer is not None else empty for layer in layers])
    return fit_stack(stack, [p.pass_id for p in passes])


def normalise_at(values: np.ndarray, fit: Optional[PassFit], where: np.ndarray) -> None:
    """`normalise` in place, at the pixels of `where` only (the others are another
    tile's, already normalised, or empty)."""
    if fit is None or not fit.pixels:
        return
    for band, gain, offset in zip(values, fit.gains, fit.offsets):
        np.subtract(band, np.float32(offset), out=band, where=where)
        np.divide(band, np.float32(gain), out=band, where=where)


def normalise(values: np.ndarray, fit: Optional[PassFit]) -> np.ndarray:
    if fit is None or not fit.pixels:
        return values
    gains = np.asarray(fit.gains, np.float32)[:, None, None]
    offsets = np.asarray(fit.offsets, np.float32)[:, None, None]
    return ((values - offsets) / gains).astype(np.float32)


# --- feathering ------------------------------------------------------------------------------

def inside_distance(mask: np.ndarray, limit: int) -> np.ndarray:
    """Distance in pixels (1 at the edge pixel) from each True pixel to the nearest False
    one, counted up to `limit`: erosions alternating 4- and 8-neighbours (an octagonal
    distance within 8 % of the Euclidean one). Outside the array counts as True."""
    d = np.zeros(mask.shape, np.float32)
    cur = mask.copy()
    for k in range(limit):
        d += cur
        if not cur.any():
            break
        pad = np.pad(cur, 1, constant_values=True)
        nxt = cur & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
        if k % 2:
            nxt &= pad[:-2, :-2] & pad[:-2, 2:] & pad[2:, :-2] & pad[2:, 2:]
        cur = nxt
    return d


def feather_weight(usable_halo: np.ndarray, halo: int, feather_px: float) -> np.ndarray:
    """Weight in 0..1 of a pass on the block (the halo cut off) from its clear mask."""
    if feather_px <= 0:
        w = usable_halo.astype(np.float32)
    else:
        d = inside_distance(usable_halo, int(math.ceil(feather_px)) + 1)
        w = np.clip((d - 0.5) / feather_px, 0.0, 1.0)
    if halo:
        w = w[halo:-halo, halo:-halo]
    return w


def halo_grid(grid: Grid, halo: int) -> Grid:
    return Grid(grid.crs, grid.transform * Affine.translation(-halo, -halo),
                grid.width + 2 * halo, grid.height + 2 * halo)


def halo_px(spec: Optional[SeamSpec], grid: Grid) -> int:
    """Output pixels a block reads around itself for feathering."""
    return _halo_px(spec, grid)[0] if spec is not None else 0


def _halo_px(spec: SeamSpec, grid: Grid) -> Tuple[int, float]:
    if spec.feather_m <= 0:
        return 0, 0.0
    feather_px = spec.feather_m / pixel_size_m(grid)
    return int(math.ceil(feather_px)) + 1, feather_px


def _crop(mask: np.ndarray, halo: int) -> np.ndarray:
    return mask[halo:-halo, halo:-halo] if halo else mask


def compose(task, grid: Grid, target: np.ndarray, reads, mapper: Callable,
            native_first: Callable, ahead: Optional[Executor] = None):
    """The block's composite with normalisation and feathering (`task.seams`).

    Returns (values, count, source, contributed, stats) as blocks' own reducers do, plus
    the seam statistics of the block. `ahead`: a pool on which best pixel reads the next
    pass's cloud masks while it reads this pass's bands."""
    spec: SeamSpec = task.seams
    if task.composite.stacked:
        ordered = [(p.pass_id, native_first(list(p.scenes), grid.crs)) for p in task.passes]
        return _stack(task, spec, grid, target, reads, mapper, ordered)
    return _best(task, spec, grid, target, reads, ahead)


def _pass_masks(scenes, wide: Grid, reads) -> List[Optional[Tuple[np.ndarray, np.ndarray]]]:
    """(clear, has data) of every tile of one pass on the block plus halo (None: no data
    or unreadable). Best pixel reads all of them whatever the bands give, so they can be
    read before, or while, the bands of an earlier pass are."""
    everywhere = np.ones(wide.shape, bool)
    return [reads.usable_and_covered(index, scene, wide, everywhere) for index, scene in scenes]


def _still_open(masks, left: np.ndarray, halo: int) -> bool:
    """Pixels with weight left that no tile of the pass is clear at: the next pass will be
    read whatever this pass's bands give (they only fill its clear pixels)."""
    rest = left > 0
    for both in masks:
        if both is not None:
            rest &= ~_crop(both[0], halo)
    return bool(rest.any())


def _read_pass_halo(scenes, pass_id: str, spec: SeamSpec, grid: Grid, halo: int,
                    target: np.ndarray, reads, nb: int, need: Optional[np.ndarray] = None,
                    stop_when_covered: bool = True, out: Optional[np.ndarray] = None,
                    masks: Optional[list] = None):
    """One pass's tiles over the block: values and validity on the block (normalised),
    its clear mask on the block plus halo, the block's usable pixels and the pixels each
    tile gave; only pixels in `need` are read. Tiles of one pass repeat one observation.

    Without a halo (`stop_when_covered`) the first valid tile wins a pixel and, once the
    block has data, the further tiles are not read, as blocks._read_pass does; best pixel
    (not `stop_when_covered`) reads every tile. With a halo and
    `stop_when_covered`, the first tile with data at a pixel decides it (mask and value)
    and the further tiles are read only while the block and its halo are not covered: a
    pixel's mask then never depends on where its block starts.
    `out`: the (nb, h, w) array to write the values into, at the valid pixels only (a
    stack slot: `Stack.keep` sets the others to NaN). `masks`: the tiles' masks, already
    read (`_pass_masks`, not with `stop_when_covered`)."""
    wide = halo_grid(grid, halo)
    everywhere = np.ones(wide.shape, bool)
    covered = np.zeros(wide.shape, bool)
    values = out if out is not None else np.full((nb, *grid.shape), np.nan, np.float32)
    valid = np.zeros(grid.shape, bool)
    usable_halo = np.zeros(wide.shape, bool)
    seen = np.zeros(grid.shape, bool)
    owners: List[Tuple[int, np.ndarray]] = []
    fit = spec.fit_of(pass_id)
    first_with_data = stop_when_covered and halo > 0
    for n, (index, scene) in enumerate(scenes):
        if stop_when_covered and covered.any() and (
                covered.all() if halo else not (~covered & target).any()):
            break
        both = masks[n] if masks is not None else reads.usable_and_covered(
            index, scene, wide, everywhere)
        if both is None:
            continue
        got, has_data = both
        if first_with_data:
            got = got & ~covered  # pixels an earlier tile has data for are decided
        block_usable = _crop(got, halo) & target
        seen |= block_usable
        wanted = block_usable & ~valid if need is None else block_usable & ~valid & need
        if wanted.any():
            # written straight into `values`, at pixels no earlier tile gave (`wanted`)
            read = reads.reflectance(index, scene, grid, wanted, values)
            if read is None:
                continue  # its pixels are left to the other tiles of the pass
            new = read[1]
            normalise_at(values, fit, new)
            valid |= new
            owners.append((index, new))
        usable_halo |= got
        covered |= has_data
    return values, valid, usable_halo, seen, owners


def _best(task, spec: SeamSpec, grid: Grid, target: np.ndarray, reads,
          ahead: Optional[Executor] = None):
    """Passes in plan order; each gives weight x what the earlier ones left of a pixel.

    With `ahead`, the next pass's cloud masks are read while this pass's bands are, when
    this pass's masks leave pixels open (so they are never read for nothing): a pass
    costs one round of requests instead of two."""
    cspec = task.composite
    halo, feather_px = _halo_px(spec, grid)
    wide = halo_grid(grid, halo)
    nb = len(cspec.bands)
    acc = np.zeros((nb, *grid.shape), np.float64)
    total = np.zeros(grid.shape, np.float64)
    left = np.where(target, 1.0, 0.0)
    top = np.zeros(grid.shape, np.float64)  # the largest contribution so far
    source = np.full(grid.shape, -1, np.int64)
    count = np.zeros(grid.shape, "uint16") if cspec.count_band else None
    passes = list(task.passes)
    upcoming: Optional[Future] = None  # the masks of passes[k + 1], being read
    try:
        for k, p in enumerate(passes):
            if count is None and not (left > 0).any():
                break  # every AOI pixel of the block has its full weight: stop reading
            masks = upcoming.result() if upcoming is not None else _pass_masks(
                p.scenes, wide, reads)
            upcoming = None
            if ahead is not None and k + 1 < len(passes) and (
                    count is not None or _still_open(masks, left, halo)):
                upcoming = ahead.submit(_pass_masks, passes[k + 1].scenes, wide, reads)
            values, valid, usable_halo, seen, owners = _read_pass_halo(
                p.scenes, p.pass_id, spec, grid, halo, target, reads, nb, need=left > 0,
                stop_when_covered=False, masks=masks)
            if count is not None:
                count += seen.astype("uint16")
            if not valid.any():
                continue
            weight = np.where(valid, feather_weight(usable_halo, halo, feather_px), 0.0)
            share = left * weight
            acc += share * np.nan_to_num(values)
            total += share
            left *= 1.0 - weight
            for index, new in owners:
                wins = new & (share > top)
                source[wins] = index
            top = np.maximum(top, share)
    finally:
        if upcoming is not None:  # an error or a cancel: the read is not waited for
            upcoming.cancel()
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, acc / total, np.nan).astype(np.float32)
    out[:, total <= 0] = np.nan
    filled = np.isfinite(out[0])
    source[~filled] = -1
    contributed = {int(i): int(n) for i, n in zip(*np.unique(source[filled],
                                                             return_counts=True))}
    stats = seam_stats(out, source, target)
    src = source.astype(np.int16) if cspec.source_band else None
    return out, count, src, contributed, stats


def _reduce(stack: np.ndarray, cspec, drop: Optional[np.ndarray] = None) -> np.ndarray:
    if cspec.statistics:
        stats = composite.reduce_statistics(stack, cspec.statistics, drop)
        return stats.reshape((-1,) + stack.shape[2:])
    percentile = 50.0 if cspec.method is Method.MEDIAN else cspec.percentile
    return composite.reduce_stack(stack, cspec.method.value, percentile, drop)


def _stack(task, spec: SeamSpec, grid: Grid, target: np.ndarray, reads, mapper: Callable,
           ordered):
    cspec = task.composite
    halo, feather_px = _halo_px(spec, grid)
    count = np.zeros(grid.shape, "uint16") if cspec.count_band else None
    contributed: Dict[int, int] = {}
    n = len(ordered)
    layers = composite.Stack(n, len(cspec.bands), grid.shape)
    weights = composite.Stack(n if feather_px > 0 else 0, 1, grid.shape)
    valids = composite.Stack(n, 1, grid.shape, "bool")
    for k, (values, valid, usable_halo, _seen, owners) in enumerate(mapper(
        lambda item: _read_pass_halo(item[1][1], item[1][0], spec, grid, halo, target,
                                     reads, len(cspec.bands), out=layers.slot(item[0])),
        list(enumerate(ordered)),
    )):
        if not valid.any():
            continue
        for index, new in owners:
            contributed[index] = contributed.get(index, 0) + int(np.count_nonzero(new))
        layers.keep(k, valid)
        valids.add(valid)
        if feather_px > 0:
            weights.add(np.where(valid, feather_weight(usable_halo, halo, feather_px), 0.0))
        del values, usable_halo
        if count is not None:
            count += valid.astype("uint16")
    stack = layers.view()
    if not len(stack):
        out = np.full((cspec.value_bands,) + grid.shape, np.nan, "float32")
        return out, count, None, contributed, SeamStats()
    valid = valids.view()[:, 0]
    out = _reduce(stack, cspec)
    if feather_px > 0:
        out = _feathered(stack, valid, weights.view()[:, 0], out, cspec)
    stats = seam_stats(out, set_labels(valid), target)
    return out, count, None, contributed, stats


def _feathered(stack: np.ndarray, valid: np.ndarray, weights: np.ndarray, full: np.ndarray,
               cspec) -> np.ndarray:
    """Blend the statistic of every observed set with those of the sets without the
    `FEATHER_NEAREST` passes of lowest weight (below 1), multilinearly in their weights."""
    n = stack.shape[0]
    low = np.where(valid & (weights < 1.0), weights, np.float32(np.inf))  # passes that fade
    chosen = []
    for _ in range(min(FEATHER_NEAREST, n)):  # the lowest weights, first index on ties
        idx = np.argmin(low, axis=0)
        w = np.take_along_axis(weights, idx[None], axis=0)[0]
        fading = np.isfinite(np.take_along_axis(low, idx[None], axis=0)[0])
        chosen.append((idx, np.where(fading, w, 1.0), fading))
        np.put_along_axis(low, idx[None], np.float32(np.inf), axis=0)
    if not any(f.any() for _, _, f in chosen):
        return full
    acc = np.zeros(full.shape, np.float64)
    total = np.zeros(full.shape[1:], np.float64)
    for pattern in range(1 << len(chosen)):  # bit k set: pass chosen[k] left out
        coeff = np.ones(full.shape[1:], np.float64)
        drop = np.zeros((n,) + full.shape[1:], bool)
        for k, (idx, w, fading) in enumerate(chosen):
            if pattern >> k & 1:
                coeff *= np.where(fading, 1.0 - w, 0.0)
                np.put_along_axis(drop, idx[None], fading[None], axis=0)
            else:
                coeff *= w
        if not coeff.any():
            continue
        part = full if pattern == 0 else _reduce(stack, cspec, drop)
        ok = np.isfinite(part).all(axis=0) & (coeff > 0)
        acc += np.where(ok, coeff, 0.0) * np.nan_to_num(part)
        total += np.where(ok, coeff, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, acc / total, full)
    return out.astype(np.float32)


# --- the run's plan ----------------------------------------------------------------------------

def plan_seams(params, grid: Grid, passes: Sequence[Pass], options: Dict[str, object],
               progress) -> SeamSpec:
    """The run's `SeamSpec`: the normalisation fitted once (NORMALISE, two passes or more)
    before any block, and FEATHER_M. `params` is a `MosaicParams`."""
    fits: Tuple[PassFit, ...] = ()
    if params.normalise and len(passes) >= 2:
        aoi = params.aoi.to_crs(grid.crs) if params.clip_to_aoi else None
        coarse = coarse_grid(grid)
        progress.info(f"Normalising {len(passes)} passes from their clear pixels on a "
                      f"{coarse.width} x {coarse.height} grid")
        fits = tuple(fit_normalisation(passes, grid, aoi, tuple(params.bands),
                                       MaskRule.from_params(params), params.max_workers,
                                       options, progress))
    return SeamSpec(feather_m=float(params.feather_m), fits=fits)


def describe(stats: SeamStats) -> str:
    """One line for the log."""
    metric = stats.metric
    if metric is None:
        return "Seam metric: no seam between sources in the mosaic"
    return (f"Seam metric {metric:.2f} (1.0 = invisible): mean step {stats.seam_step:.4f} "
            f"across {stats.seam_pairs} seam pairs, {stats.inner_step:.4f} inside sources")


def report(spec: SeamSpec, stats: SeamStats, bands: Sequence[str]) -> dict:
    """The seams section of the scene report's JSON header."""
    return {**stats.summary(), "feather_m": spec.feather_m, "normalised": bool(spec.fits),
            "normalisation": [f.summary(bands) for f in spec.fits]}
