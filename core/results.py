"""Result objects: what a run found, kept, rejected and wrote."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, List, Optional, Tuple

from affine import Affine

from .scene import Scene


@dataclass(frozen=True)
class SceneReport:
    """One row of the scene report; `reason` says why a scene was rejected (or '').

    Frozen: each stage returns new reports (`dataclasses.replace`), none patches one."""

    scene: Scene
    aoi_coverage: Optional[float] = None  # % of the AOI with data in this scene
    aoi_cloud: Optional[float] = None  # % of the covered AOI pixels that are invalid
    kept: bool = False
    reason: str = ""
    pixels_contributed: int = 0
    mask: str = ""  # the cloud mask rule and the layers this scene used (clouds.MaskRule)

    def row(self) -> dict:
        s = self.scene
        return {
            "id": s.id,
            "collection": s.collection,
            "datetime": s.datetime.isoformat(),
            "platform": s.platform,
            "tile": s.tile,
            "scene_cloud": s.cloud_cover,
            "aoi_coverage": None if self.aoi_coverage is None else round(self.aoi_coverage, 3),
            "aoi_cloud": None if self.aoi_cloud is None else round(self.aoi_cloud, 3),
            "kept": self.kept,
            "reason": self.reason,
            "pixels_contributed": self.pixels_contributed,
            "mask": self.mask,
        }


@dataclass
class SearchResult:
    """Every scene the catalog returned, each with its verdict."""

    reports: List[SceneReport]
    notes: List[str] = field(default_factory=list)

    @property
    def kept(self) -> List[SceneReport]:
        return [r for r in self.reports if r.kept]


@dataclass(frozen=True)
class PeriodOutput:
    """One file of a run: its period (name '' for a single-period run) and what it holds."""

    name: str
    start: date
    end: date
    output: Path
    stac_item: Path
    filled_fraction: float
    scenes: Tuple[str, ...]  # ids of the source items that gave pixels


@dataclass
class MosaicResult:
    output: Path
    report_json: Optional[Path]  # None when no report was asked for
    report_csv: Optional[Path]
    reports: List[SceneReport]
    band_names: Tuple[str, ...]
    crs: str
    resolution: float  # metres on the ground, as asked
    bounds: Tuple[float, float, float, float]
    shape: Tuple[int, int]  # rows, cols
    filled_fraction: float  # share of AOI pixels that got a value
    transform: Optional[Affine] = None  # the output grid (pixel size in CRS units)
    failed_blocks: Tuple[str, ...] = ()  # blocks no worker could compute (left nodata)
    resumed_blocks: int = 0  # blocks taken from an interrupted run's ledger
    outputs: Tuple[PeriodOutput, ...] = ()  # one per period written (a single run: one)
    estimate: Optional[Any] = None  # core.estimate.Estimate: the figures logged before reading


@dataclass
class ClipRecord:
    """One clear AOI clip written by the clear-clips mode."""

    aoi_name: str
    scene_id: str
    datetime: str
    aoi_cloud: float
    path: Path


@dataclass
class ClipsResult:
    records: List[ClipRecord]
    csv: Path
    reports: dict = field(default_factory=dict)  # aoi name -> list[SceneReport]
