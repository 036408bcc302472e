"""Clear clips: for many small AOIs, every scene that is clear over each AOI, as GeoTIFFs.

One search covers all AOIs; the strict AOI cloud check runs per AOI; each clip is written
on the AOI's own UTM grid, so all clips of one AOI align pixel for pixel across dates.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from shapely.ops import unary_union

from . import catalog, clouds, composite, io
from .aoi import WGS84, Aoi
from .clouds import MaskRule
from .errors import InvalidParameterError, OutputError, ReadError
from .grid import geometry_mask, output_grid
from .options import parse_bands
from .params import SearchParams
from .progress import NullProgress, Progress, SubProgress, check_cancelled
from .reader import SceneReader
from .report import atomic_write_text, rows_to_csv
from .results import ClipRecord, ClipsResult, SceneReport

CLIP_FIELDS = ("aoi_name", "scene_id", "datetime", "aoi_cloud", "aoi_coverage", "path")
FULL_COVERAGE = 99.0  # % of the AOI a scene must cover to give a clip
MAX_AOI_CLOUD = 2.0  # the clips' default AOI cloud limit: only (almost) clear clips
CLIP_RESOLUTION = 10.0  # metres


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "aoi"


def _pick_per_pass(reports: Sequence[SceneReport]
                   ) -> Tuple[List[SceneReport], List[SceneReport]]:
    """(one report per clear pass: the tile that covers the AOI best, then the clearest;
    every report with the verdict of this stage: partial coverage leaves a scene out)."""
    best: Dict[str, SceneReport] = {}
    verdicts: List[SceneReport] = []
    for r in reports:
        if r.kept and (r.aoi_coverage or 0.0) < FULL_COVERAGE:
            r = replace(r, kept=False, reason=f"covers only {r.aoi_coverage:.1f} % of the AOI")
        verdicts.append(r)
        if not r.kept:
            continue
        current = best.get(r.scene.pass_id)
        key = (r.aoi_coverage, -(r.aoi_cloud or 0.0))
        if current is None or key > (current.aoi_coverage, -(current.aoi_cloud or 0.0)):
            best[r.scene.pass_id] = r
    return sorted(best.values(), key=lambda r: r.scene.datetime), verdicts


def clear_clips(
    params: SearchParams,
    aois: Sequence[Tuple[str, Aoi]],
    output_folder: Path,
    bands: Tuple[str, ...] = ("red", "green", "blue"),
    progress: Optional[Progress] = None,
    overwrite: bool = False,
) -> ClipsResult:
    """Write one reflectance GeoTIFF per AOI and clear pass, plus `clear_clips.csv`."""
    with io.gdal_env(params.max_workers,
                     **io.proxy_options(params.proxy, params.no_proxy)), \
            io.run_tiles(params.memory_mb, params.max_workers):
        return _clear_clips(params, aois, Path(output_folder), tuple(bands), progress, overwrite)


def _clear_clips(
    params: SearchParams,
    aois: Sequence[Tuple[str, Aoi]],
    folder: Path,
    bands: Tuple[str, ...],
    progress: Optional[Progress],
    overwrite: bool,
) -> ClipsResult:
    progress = progress or NullProgress()
    if not aois:
        raise InvalidParameterError("Give at least one AOI for the clear clips.")
    names = [name for name, _ in aois]
    if len(set(names)) != len(names):
        raise InvalidParameterError("AOI names must be unique: they name the clip files.")
    union = Aoi(unary_union([a.wgs84 for _, a in aois]), WGS84)
    search_params = replace(params, aoi=union)
    search_params.validate()
    bands = parse_bands(bands)
    rule = MaskRule.from_params(search_params)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {folder}: {exc.strerror}.") from exc
    csv_path = folder / "clear_clips.csv"
    io.check_output_path(folder / "probe.tif", overwrite=True)  # folder writable

    candidates, _rejected, _notes = catalog.search(search_params, SubProgress(progress, 0, 20))
    jobs: List[Tuple[str, Aoi, SceneReport, Path]] = []
    per_aoi: Dict[str, List[SceneReport]] = {}
    for n, (name, aoi) in enumerate(aois):
        check_cancelled(progress)
        span = SubProgress(progress, 20 + 30 * n / len(aois), 20 + 30 * (n + 1) / len(aois))
        checked = clouds.check_aoi_clouds(candidates, aoi, replace(search_params, aoi=aoi), span,
                                          rule=rule)
        picked, per_aoi[name] = _pick_per_pass(checked)
        for r in picked:
            stamp = r.scene.datetime.strftime("%Y%m%d")
            path = folder / f"{_safe(name)}_{stamp}_{_safe(r.scene.id)}.tif"
            jobs.append((name, aoi, r, path))
    if not overwrite:
        existing = [str(p) for *_, p in jobs if p.exists()]
        if existing:
            raise OutputError(
                f"{len(existing)} clip file(s) already exist, e.g. {existing[0]}: choose an "
                "empty folder or allow overwriting."
            )

    written: List[Path] = []
    unreadable: Dict[Tuple[str, str], str] = {}  # (aoi name, scene id) -> why

    def write(job) -> Optional[ClipRecord]:
        name, aoi, report, path = job
        check_cancelled(progress)
        grid = output_grid(aoi, None, CLIP_RESOLUTION)
        inside = geometry_mask(grid, aoi.to_crs(grid.crs))
        reader = SceneReader(bands, rule, grid)
        try:
            usable = reader.usable(report.scene, grid)
            usable = inside if usable is None else usable & inside
            values, _valid = reader.reflectance(report.scene, grid, usable)
        except ReadError as exc:  # skip this clip, say why; the others still count
            unreadable[(name, report.scene.id)] = f"skipped, could not be read: {exc}"
            return None
        io.write_cog(
            path, grid, composite.to_uint16(values), dtype="uint16", nodata=0,
            descriptions=list(bands), overwrite=overwrite,
            tags={"CLEARSKY_SCENE": report.scene.id, "CLEARSKY_AOI": name},
        )
        written.append(path)
        return ClipRecord(
            aoi_name=name, scene_id=report.scene.id, datetime=report.scene.datetime.isoformat(),
            aoi_cloud=round(report.aoi_cloud or 0.0, 3), path=path,
        )

    records: List[ClipRecord] = []
    clip_progress = SubProgress(progress, 50, 98)
    try:
        with ThreadPoolExecutor(
            max_workers=params.max_workers, initializer=io.init_worker,
            initargs=(io.current_options(), io.current_tiles()),
        ) as pool:
            for done, record in enumerate(pool.map(write, jobs)):
                if record is not None:
                    records.append(record)
                clip_progress.set_progress(100.0 * (done + 1) / len(jobs))
                check_cancelled(progress)
    except BaseException:
        for path in written:  # a cancelled or failed run leaves none of its clips behind
            path.unlink(missing_ok=True)
        raise
    per_aoi = {
        name: [replace(r, kept=False, reason=unreadable[(name, r.scene.id)])
               if (name, r.scene.id) in unreadable else r for r in reports]
        for name, reports in per_aoi.items()
    }
    coverage = {(n, r.scene.id): r.aoi_coverage for n, _, r, _ in jobs}
    rows = [
        {**vars(rec), "path": str(rec.path), "aoi_coverage": coverage[(rec.aoi_name, rec.scene_id)]}
        for rec in records
    ]
    atomic_write_text(csv_path, rows_to_csv(rows, CLIP_FIELDS))
    progress.info(f"{len(records)} clear clip(s) written to {folder}")
    progress.set_progress(100)
    return ClipsResult(records=records, csv=csv_path, reports=per_aoi)
