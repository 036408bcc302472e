"""Cloud masks from the Sentinel-2 scene classification (SCL) and the per-AOI cloud check.

Scene-level eo:cloud_cover describes a 110 km tile; what matters is the SCL inside the
AOI, so each candidate scene's SCL is read at native 20 m over the AOI's bbox only.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import Callable, FrozenSet, Iterable, List, Optional, Tuple

import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from shapely.geometry import box

from . import budget, shadows
from .aoi import Aoi
from .errors import CancelledError, ReadError
from .grid import Grid, geometry_mask, pixel_size_m, reproject_geometry
from .io import (
    current_options,
    current_tiles,
    init_worker,
    native_grid,
    read_native_window,
    read_to_grid,
)
from .options import DEFAULT_INVALID_SCL, CloudMask, default
from .progress import Progress, check_cancelled
from .results import SceneReport
from .scene import BAND_RESOLUTION, CLOUD, SCL, SNOW, Scene

NODATA = 0
SCL_RESOLUTION = 20.0  # metres: the dilation is counted in these pixels
MAX_CHECK_PIXELS = 4 * 10**10  # SCL pixels of one scene's AOI check (a 4,000 km square)
# Classes whose SCL outline misses a halo: grown by the dilation when they are invalid.
CLOUD_LIKE = frozenset({3, 7, 8, 9, 10, 11})


def disk_offsets(radius: int) -> List[Tuple[int, int]]:
    """(dy, half-width) rows of a digital disk: pixels with dx^2 + dy^2 <= radius^2."""
    return [(dy, int(math.isqrt(radius * radius - dy * dy))) for dy in range(-radius, radius + 1)]


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disk of `radius` pixels (numpy only: QGIS may lack scipy).

    Separable in rows: horizontal runs of each needed half-width are built incrementally,
    then OR-ed in at each vertical offset, so the cost is O(radius) array passes.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0 or not mask.any():
        return mask.copy()
    by_half: dict = {}
    for dy, half in disk_offsets(radius):
        by_half.setdefault(half, []).append(dy)
    # One run at a time (memory: three masks, whatever the radius): the run of half-width h
    # is used by every row offset dy whose disk row has that half-width.
    run = mask.copy()
    out = np.zeros_like(mask)
    for half in range(0, radius + 1):
        if half:
            shadows.shift_or(run, mask, 0, half)
            shadows.shift_or(run, mask, 0, -half)
        for dy in by_half.get(half, ()):
            shadows.shift_or(out, run, dy, 0)
    return out


IN_CLASSES_COMPARE = 8  # up to this many classes are compared, not looked up


def in_classes(scl: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """True where `scl` is one of `classes`: a 256-entry lookup for 8-bit class rasters
    (np.isin sorts and searches for every call, a few times the cost of the lookup)."""
    classes = sorted({int(c) for c in classes})
    if scl.dtype == np.uint8:
        classes = [c for c in classes if 0 <= c < 256]
        if len(classes) <= IN_CLASSES_COMPARE:  # a few vector compares beat any lookup
            out = np.zeros(scl.shape, bool)
            for c in classes:
                out |= scl == c
            return out
        table = np.zeros(256, bool)
        table[classes] = True
        return np.take(table, scl)  # twice as fast as table[scl]
    return np.isin(scl, classes)


def invalid_mask(scl: np.ndarray, invalid: Iterable[int], dilation: int = 0) -> np.ndarray:
    """True where a pixel is unusable. Cloud-like invalid classes (3, 8, 9, 10 and 7, 11
    when chosen) grow by `dilation` pixels of `scl`; nodata and the others do not."""
    invalid = {int(c) for c in invalid}
    cloudy = sorted(invalid & CLOUD_LIKE)
    plain = sorted(invalid - CLOUD_LIKE)
    mask = in_classes(scl, cloudy)
    if dilation > 0:
        mask = dilate(mask, dilation)
    if plain:
        mask |= in_classes(scl, plain)
    return mask


@dataclass(frozen=True)
class MaskRule:
    """The cloud mask, made of parts: which SCL classes are unusable, how far cloud-like
    ones grow (20 m pixels), and which other layers join them (`kind`): the cloud and snow
    probability layers (>= `prob` %), shadows projected along the sun, an ML mask.

    The AOI cloud check and the mosaic take the same rule, so the AOI cloud % a user
    sees is the share of pixels the mosaic will refuse."""

    invalid: FrozenSet[int] = DEFAULT_INVALID_SCL
    dilation: int = default("dilation")
    kind: CloudMask = default("cloud_mask")
    prob: float = default("cloud_prob")

    @classmethod
    def from_params(cls, params) -> MaskRule:
        """The rule of search or mosaic parameters (SearchParams and its subclasses)."""
        return cls(frozenset(params.invalid_scl), int(params.dilation),
                   CloudMask(getattr(params, "cloud_mask", default("cloud_mask"))),
                   float(getattr(params, "cloud_prob", default("cloud_prob"))))

    @property
    def uses_prob(self) -> bool:
        return self.kind in (CloudMask.PROB, CloudMask.SHADOW)

    @property
    def uses_shadow(self) -> bool:
        return self.kind is CloudMask.SHADOW

    @property
    def uses_ml(self) -> bool:
        return self.kind is CloudMask.ML

    def scl_only(self) -> MaskRule:
        """The same rule on the SCL alone (the pre-check before an ML mask runs)."""
        return replace(self, kind=CloudMask.SCL)

    def radius_px(self, pixel_m: float) -> int:
        """The dilation in pixels of size `pixel_m` metres."""
        return int(math.ceil(self.dilation * SCL_RESOLUTION / pixel_m))

    def reach_px(self, scene: Optional[Scene], pixel_m: float) -> int:
        """Pixels around a grid to read so that shadows of clouds outside it still fall
        on it (0 unless shadows are projected for this scene)."""
        if scene is None or not self._shadows_for(scene):
            return 0
        return shadows.reach_px(scene.sun_elevation, pixel_m)

    def _shadows_for(self, scene: Scene) -> bool:
        return (self.uses_shadow and scene.sun_azimuth is not None
                and scene.sun_elevation is not None and SHADOW_BAND in scene.assets)

    def layers(self, scene: Scene) -> List[str]:
        """The layers this rule uses for this scene: 'scl', 'cloud', 'snow', 'shadow', 'ml'."""
        used = [SCL]
        if self.uses_prob and CLOUD in scene.assets:
            used.append(CLOUD)
        if self.uses_prob and SNOW_CLASS in self.invalid and SNOW in scene.assets:
            used.append(SNOW)
        if self._shadows_for(scene):
            used.append("shadow")
        if self.uses_ml:
            used.append("ml")
        return used

    def describe(self, scene: Scene) -> str:
        """The report's `mask` text: the rule and the layers this scene used, with why a
        layer the rule wants was missing."""
        used = self.layers(scene)
        text = f"{self.kind.value}: " + "+".join(used)
        missing = []
        if self.uses_prob and CLOUD not in scene.assets:
            missing.append("no cloud probability asset, SCL clouds only")
        if self.uses_shadow and "shadow" not in used:
            missing.append("no sun angles or nir band, no projected shadows")
        return text + (f" ({'; '.join(missing)})" if missing else "")

    def unusable(self, scl: np.ndarray, radius: int, *, scene: Optional[Scene] = None,
                 grid: Optional[Grid] = None, reach: int = 0, allow_local: bool = False,
                 cancelled: Optional[Callable[[], bool]] = None) -> np.ndarray:
        """True where a pixel of `scl` (on `grid`) is unusable.

        Without `scene` and `grid` this is the SCL rule alone. With them, the rule's other
        layers are read onto `grid`: the probability layers raw (0 is 0 %, not nodata) with
        nearest resampling and no overviews; for shadows the `reach` outer pixels of `grid`
        are margin (clouds there shade the inside) and the NIR band is read only where a
        projected shadow falls inside; the ML mask on the inside only.
        """
        invalid = {int(c) for c in self.invalid}
        cloudy = in_classes(scl, invalid & CLOUD_LIKE)
        plain = sorted(invalid - CLOUD_LIKE)
        if scene is not None and grid is not None and self.kind is not CloudMask.SCL:
            prob = None
            if self.uses_prob:
                prob = _probability(scene, CLOUD, grid, allow_local, cancelled)
                if prob is not None:
                    cloudy |= prob >= self.prob
                if SNOW_CLASS in invalid:
                    snow = _probability(scene, SNOW, grid, allow_local, cancelled)
                    if snow is not None:
                        cloudy |= (snow >= self.prob) & (scl != NODATA)
            if self._shadows_for(scene):
                _add_shadows(cloudy, scl, prob, self.prob, scene, grid, reach, allow_local,
                             cancelled)
            if self.uses_ml:
                from . import mlmask  # lazy: optional packages

                inner = _inner(grid, reach)
                found = mlmask.cloud_and_shadow(scene, inner, allow_local=allow_local,
                                                cancelled=cancelled)
                if found is not None:
                    _view(cloudy, reach)[...] |= found & (_view(scl, reach) != NODATA)
        if radius > 0:
            cloudy = dilate(cloudy, radius)
        if plain:
            cloudy |= in_classes(scl, plain)
        return cloudy


SNOW_CLASS = 11
SHADOW_BAND = "nir"  # dark pixels under a projected shadow: NIR (B08)
SHADOW_CASTERS = (8, 9)  # SCL classes that cast a shadow (thin cirrus does not, here)


def _view(array: np.ndarray, reach: int) -> np.ndarray:
    return array[reach:array.shape[0] - reach, reach:array.shape[1] - reach] if reach else array


def _inner(grid: Grid, reach: int) -> Grid:
    if not reach:
        return grid
    return grid.subgrid(reach, reach, grid.height - 2 * reach, grid.width - 2 * reach)


def _probability(scene: Scene, name: str, grid: Grid, allow_local: bool,
                 cancelled: Optional[Callable[[], bool]]) -> Optional[np.ndarray]:
    """A probability layer (0-100 %) on `grid`, read raw: its metadata says nodata 0, but 0
    means 0 %. Nearest, never overviews (averaged ones would smear clouds). None: no asset."""
    href = scene.assets.get(name)
    if not href:
        return None
    return read_to_grid(href, grid, resampling=Resampling.nearest, use_overviews=False,
                        raw=True, allow_local=allow_local, cancelled=cancelled)


def _add_shadows(cloudy: np.ndarray, scl: np.ndarray, prob: Optional[np.ndarray],
                 threshold: float, scene: Scene, grid: Grid, reach: int, allow_local: bool,
                 cancelled: Optional[Callable[[], bool]]) -> None:
    """cloudy |= dark pixels (inside the margin) under the shadows projected from the
    clouds (SCL 8, 9 and, when read, cloud probability >= threshold)."""
    casters = in_classes(scl, SHADOW_CASTERS)
    if prob is not None:
        casters |= prob >= threshold
    assert scene.sun_azimuth is not None and scene.sun_elevation is not None
    pixel_m = pixel_size_m(grid)
    swept = _view(shadows.project(casters, pixel_m, scene.sun_azimuth, scene.sun_elevation),
                  reach)
    inside = _view(cloudy, reach)
    scl_in = _view(scl, reach)
    candidates = swept & ~inside & (scl_in != NODATA)
    if not candidates.any():
        return
    native = BAND_RESOLUTION[SHADOW_BAND]
    dn = read_to_grid(scene.assets[SHADOW_BAND], _inner(grid, reach),
                      resampling=Resampling.average if pixel_m > 1.5 * native
                      else Resampling.bilinear, allow_local=allow_local, cancelled=cancelled)
    if dn is None:
        return
    nir = np.where(dn > 0, scene.radiometry.reflectance(dn), np.nan)
    inside |= candidates & shadows.dark(nir, scl_in)


def aoi_scl_stats(scene: Scene, aoi: Aoi, invalid: Iterable[int], *,
                  allow_local: bool = False, dilation: int = 0,
                  cancelled: Optional[Callable[[], bool]] = None,
                  rule: Optional[MaskRule] = None, chunk: int = 1024
                  ) -> Tuple[float, float, int]:
    """(coverage %, cloud %, covered pixels) of the AOI in this scene's SCL.

    coverage: share of the AOI's 20 m pixels (by pixel centre) with SCL data; cloud: share
    of those covered pixels that the mask rejects, nodata aside (NaN when none covered).
    `dilation` (SCL pixels) grows cloud-like classes first; 0 counts the SCL as is.
    `rule` (its classes and dilation replace `invalid` and `dilation`) adds its layers:
    probabilities, projected shadows (the SCL window then has the shadows' reach as
    margin), the ML mask, all on the SCL's own 20 m pixels.
    The AOI's SCL pixels are counted in chunks of `chunk` x `chunk` (each read with the
    dilation's and the shadows' margin), so memory does not grow with the AOI.
    """
    href = scene.assets.get(SCL)
    if not href:
        raise KeyError("the scene has no SCL asset")
    if rule is None:
        rule = MaskRule(frozenset(invalid), int(dilation), CloudMask.SCL)
    geom = reproject_geometry(aoi.geometry, aoi.crs, scene.crs)
    native = native_grid(href, geom.bounds, scene.crs, allow_local=allow_local,
                         cancelled=cancelled)
    if native is None:
        return 0.0, math.nan, 0
    if native.resolution < SCL_RESOLUTION / 4 and CRS.from_user_input(native.crs).is_projected:
        # a header claiming tiny pixels would make the chunks of a small AOI endless
        raise ReadError(f"{href}: its pixels are {native.resolution:g} m, not the SCL's "
                        f"{SCL_RESOLUTION:g} m; not read")
    if native.width * native.height > MAX_CHECK_PIXELS:  # any CRS: bounded time as well
        raise ReadError(f"{href}: the AOI covers {native.width} x {native.height} of its "
                        "pixels, more than an AOI cloud check counts; not read")
    if native.crs != scene.crs:  # the catalog's proj:epsg disagreed with the file
        geom = reproject_geometry(aoi.geometry, aoi.crs, native.crs)
    counts = _count_chunks(href, scene, geom, native, rule, chunk, False, allow_local,
                           cancelled)
    if counts[0] == 0:  # AOI smaller than a pixel: count the pixels it touches
        counts = _count_chunks(href, scene, geom, native, rule, chunk, True, allow_local,
                               cancelled)
    n_aoi, n_cov, n_bad = counts
    if n_aoi == 0 or n_cov == 0:
        return 0.0, math.nan, 0
    return 100.0 * n_cov / n_aoi, 100.0 * n_bad / n_cov, n_cov


def _count_chunks(href: str, scene: Scene, geom, native: Grid, rule: MaskRule, chunk: int,
                  all_touched: bool, allow_local: bool,
                  cancelled: Optional[Callable[[], bool]]) -> Tuple[int, int, int]:
    """(AOI pixels, covered, unusable) over the chunks of `native` that meet the AOI."""
    reach = rule.reach_px(scene, SCL_RESOLUTION)
    margin = max(0, int(rule.dilation)) + reach
    no_nodata = replace(rule, invalid=frozenset(set(rule.invalid) - {NODATA}))
    n_aoi = n_cov = n_bad = 0
    for row in range(0, native.height, chunk):
        for col in range(0, native.width, chunk):
            if cancelled is not None and cancelled():
                raise CancelledError()
            part = native.subgrid(row, col, min(chunk, native.height - row),
                                  min(chunk, native.width - col))
            if not geom.intersects(box(*part.bounds)):
                continue
            inside = geometry_mask(part, geom, all_touched=all_touched)
            if not inside.any():
                continue
            n_aoi += int(inside.sum())
            got = read_native_window(href, part.bounds, part.crs, allow_local=allow_local,
                                     margin=margin, cancelled=cancelled)
            if got is None:
                continue
            scl, transform, crs = got
            if scl.shape != (part.height + 2 * margin, part.width + 2 * margin):
                raise ReadError(f"{href}: the SCL window of a chunk is not on the file's own "
                                "pixel grid")
            wide = Grid(crs, transform, scl.shape[1], scl.shape[0])
            if rule.kind is CloudMask.SCL:
                bad = no_nodata.unusable(scl, rule.dilation)
            else:
                bad = no_nodata.unusable(scl, rule.dilation, scene=scene, grid=wide,
                                         reach=reach, allow_local=allow_local,
                                         cancelled=cancelled)
            inner = (slice(margin, margin + part.height), slice(margin, margin + part.width))
            covered = inside & (scl[inner] != NODATA)
            n_cov += int(covered.sum())
            n_bad += int((bad[inner] & covered).sum())
    return n_aoi, n_cov, n_bad


def verdict(scene: Scene, coverage: float, cloud: float, max_cloud: float) -> SceneReport:
    """The search stage's report of one checked scene (cloud NaN: nothing covered)."""
    aoi_cloud = None if math.isnan(cloud) else cloud
    if not coverage:
        return SceneReport(scene, coverage, aoi_cloud, False, "does not cover the AOI")
    if aoi_cloud is not None and aoi_cloud > max_cloud:
        return SceneReport(scene, coverage, aoi_cloud, False,
                           f"AOI cloud {aoi_cloud:.1f} % > {max_cloud:g} %")
    return SceneReport(scene, coverage, aoi_cloud, True, "")


def check_aoi_clouds(scenes: List[Scene], aoi: Aoi, params, progress: Progress, *,
                     allow_local: bool = False, rule: Optional[MaskRule] = None
                     ) -> List[SceneReport]:
    """One SceneReport per scene (input order) with AOI coverage, AOI cloud and a verdict.

    `params` gives the limit (max_aoi_cloud), the concurrency (max_workers) and, unless
    `rule` is given, the mask rule (invalid_scl, dilation, cloud_mask, cloud_prob): the
    mosaic's own rule, so the % shown is the % the mosaic faces; each report's `mask` says
    which rule and layers it used. With the ML rule, the model runs only on the scenes the
    SCL alone lets pass. Scenes are checked concurrently; a scene whose SCL
    cannot be read is rejected with the reason, the run goes on. Raises CancelledError
    when the user cancels.
    """
    scenes = list(scenes)
    if not scenes:
        return []
    check_cancelled(progress)
    rule = rule or MaskRule.from_params(params)

    workers = max(1, min(params.max_workers, len(scenes)))
    chunk = budget.check_chunk(getattr(params, "memory_mb", default("memory_mb")), workers,
                               rule.dilation)

    def stats(scene: Scene, this: MaskRule) -> Tuple[float, float, int]:
        return aoi_scl_stats(scene, aoi, this.invalid, allow_local=allow_local,
                             cancelled=progress.is_cancelled, rule=this, chunk=chunk)

    def one(scene: Scene) -> SceneReport:
        if progress.is_cancelled():
            return SceneReport(scene, reason="cancelled")
        mask = rule.describe(scene)
        try:
            if rule.uses_ml:  # the ML mask runs only on scenes the SCL alone lets pass
                cov, cloud, _ = stats(scene, rule.scl_only())
                first = verdict(scene, cov, cloud, params.max_aoi_cloud)
                if not first.kept:
                    return replace(first, mask=f"{rule.scl_only().describe(scene)} "
                                                "(SCL pre-check; the ML mask did not run)")
            cov, cloud, _ = stats(scene, rule)
        except CancelledError:
            raise
        except Exception as exc:  # one unreadable scene must not stop the run
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            what = "SCL" if rule.kind is CloudMask.SCL else "The cloud mask layers"
            reason = f"{what} could not be read: {msg}"
            progress.info(f"{scene.id}: {reason}")
            return SceneReport(scene, reason=reason, mask=mask)
        return replace(verdict(scene, cov, cloud, params.max_aoi_cloud), mask=mask)

    reports: List[Optional[SceneReport]] = [None] * len(scenes)
    with ThreadPoolExecutor(workers, thread_name_prefix="clearsky-scl",
                            initializer=init_worker,
                            initargs=(current_options(), current_tiles())) as pool:
        futures = {pool.submit(one, s): i for i, s in enumerate(scenes)}
        done = 0
        try:
            for fut in as_completed(futures):
                reports[futures[fut]] = fut.result()
                done += 1
                progress.set_progress(100.0 * done / len(scenes))
                check_cancelled(progress)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return [r for r in reports if r is not None]
