"""Cloud masks from the Sentinel-2 scene classification (SCL) and the per-AOI cloud check.

Scene-level eo:cloud_cover describes a 110 km tile; what matters is the SCL inside the
AOI, so each candidate scene's SCL is read at native 20 m over the AOI's bbox only.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, FrozenSet, Iterable, List, Optional, Tuple

import numpy as np

from .aoi import Aoi
from .errors import CancelledError
from .grid import Grid, geometry_mask, reproject_geometry
from .io import current_options, init_worker, read_native_window
from .options import DEFAULT_INVALID_SCL, default
from .progress import Progress, check_cancelled
from .results import SceneReport
from .scene import SCL, Scene

NODATA = 0
SCL_RESOLUTION = 20.0  # metres: the dilation is counted in these pixels
# Classes whose SCL outline misses a halo: grown by the dilation when they are invalid.
CLOUD_LIKE = frozenset({3, 7, 8, 9, 10, 11})


def disk_offsets(radius: int) -> List[Tuple[int, int]]:
    """(dy, half-width) rows of a digital disk: pixels with dx^2 + dy^2 <= radius^2."""
    return [(dy, int(math.isqrt(radius * radius - dy * dy))) for dy in range(-radius, radius + 1)]


def _shift_or(dst: np.ndarray, src: np.ndarray, dy: int, dx: int) -> None:
    """dst |= src moved by (dy, dx), without wrapping around the edges."""
    h, w = src.shape
    if abs(dy) >= h or abs(dx) >= w:
        return
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    dst[yd, xd] |= src[ys, xs]


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disk of `radius` pixels (numpy only: QGIS may lack scipy).

    Separable in rows: horizontal runs of each needed half-width are built incrementally,
    then OR-ed in at each vertical offset, so the cost is O(radius) array passes.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0 or not mask.any():
        return mask.copy()
    rows = disk_offsets(radius)
    runs = {0: mask.copy()}
    for half in range(1, radius + 1):
        run = runs[half - 1].copy()
        _shift_or(run, mask, 0, half)
        _shift_or(run, mask, 0, -half)
        runs[half] = run
    out = np.zeros_like(mask)
    for dy, half in rows:
        _shift_or(out, runs[half], dy, 0)
    return out


def invalid_mask(scl: np.ndarray, invalid: Iterable[int], dilation: int = 0) -> np.ndarray:
    """True where a pixel is unusable. Cloud-like invalid classes (3, 8, 9, 10 and 7, 11
    when chosen) grow by `dilation` pixels of `scl`; nodata and the others do not."""
    invalid = {int(c) for c in invalid}
    cloudy = sorted(invalid & CLOUD_LIKE)
    plain = sorted(invalid - CLOUD_LIKE)
    mask = np.isin(scl, cloudy)
    if dilation > 0:
        mask = dilate(mask, dilation)
    if plain:
        mask |= np.isin(scl, plain)
    return mask


@dataclass(frozen=True)
class MaskRule:
    """Which SCL classes are unusable and how far cloud-like ones grow (20 m pixels).

    The AOI cloud check and the mosaic take the same rule, so the AOI cloud % a user
    sees is the share of pixels the mosaic will refuse."""

    invalid: FrozenSet[int] = DEFAULT_INVALID_SCL
    dilation: int = default("dilation")

    def radius_px(self, pixel_m: float) -> int:
        """The dilation in pixels of size `pixel_m` metres."""
        return int(math.ceil(self.dilation * SCL_RESOLUTION / pixel_m))

    def unusable(self, scl: np.ndarray, radius: int) -> np.ndarray:
        return invalid_mask(scl, self.invalid, radius)


def aoi_scl_stats(scene: Scene, aoi: Aoi, invalid: Iterable[int], *,
                  allow_local: bool = False, dilation: int = 0,
                  cancelled: Optional[Callable[[], bool]] = None) -> Tuple[float, float, int]:
    """(coverage %, cloud %, covered pixels) of the AOI in this scene's SCL.

    coverage: share of the AOI's 20 m pixels (by pixel centre) with SCL data; cloud: share
    of those covered pixels in an invalid class other than nodata (NaN when none covered).
    `dilation` (SCL pixels) grows cloud-like classes first; 0 counts the SCL as is.
    """
    href = scene.assets.get(SCL)
    if not href:
        raise KeyError("the scene has no SCL asset")
    geom = reproject_geometry(aoi.geometry, aoi.crs, scene.crs)
    got = read_native_window(href, geom.bounds, scene.crs, allow_local=allow_local,
                             margin=max(0, int(dilation)), cancelled=cancelled)
    if got is None:
        return 0.0, math.nan, 0
    scl, transform, crs = got
    if crs != scene.crs:  # the catalog's proj:epsg disagreed with the file
        geom = reproject_geometry(aoi.geometry, aoi.crs, crs)
    grid = Grid(crs, transform, scl.shape[1], scl.shape[0])
    inside = geometry_mask(grid, geom)
    if not inside.any():  # AOI smaller than a pixel: count the pixels it touches
        inside = geometry_mask(grid, geom, all_touched=True)
    n_aoi = int(inside.sum())
    covered = inside & (scl != NODATA)
    n_cov = int(covered.sum())
    if n_aoi == 0 or n_cov == 0:
        return 0.0, math.nan, 0
    bad = invalid_mask(scl, set(invalid) - {NODATA}, dilation) & covered
    return 100.0 * n_cov / n_aoi, 100.0 * int(bad.sum()) / n_cov, n_cov


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
    `rule` is given, the mask rule (invalid_scl, dilation): the mosaic's own rule, so the
    % shown is the % the mosaic faces. Scenes are checked concurrently; a scene whose SCL
    cannot be read is rejected with the reason, the run goes on. Raises CancelledError
    when the user cancels.
    """
    scenes = list(scenes)
    if not scenes:
        return []
    check_cancelled(progress)
    rule = rule or MaskRule(frozenset(params.invalid_scl), int(params.dilation))

    def one(scene: Scene) -> SceneReport:
        if progress.is_cancelled():
            return SceneReport(scene, reason="cancelled")
        try:
            cov, cloud, _ = aoi_scl_stats(scene, aoi, rule.invalid, allow_local=allow_local,
                                          dilation=rule.dilation, cancelled=progress.is_cancelled)
        except CancelledError:
            raise
        except Exception as exc:  # one unreadable scene must not stop the run
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            reason = f"SCL could not be read: {msg}"
            progress.info(f"{scene.id}: {reason}")
            return SceneReport(scene, reason=reason)
        return verdict(scene, cov, cloud, params.max_aoi_cloud)

    reports: List[Optional[SceneReport]] = [None] * len(scenes)
    workers = max(1, min(params.max_workers, len(scenes)))
    with ThreadPoolExecutor(workers, thread_name_prefix="clearsky-scl",
                            initializer=init_worker, initargs=(current_options(),)) as pool:
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
