"""Which passes a mosaic uses and in which order: the plan every block follows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import Dict, List, Optional, Sequence, Tuple

from .results import SceneReport
from .scene import Scene


@dataclass(frozen=True)
class Pass:
    """The tiles of one satellite pass: one observation per ground pixel.

    `scenes` holds (index into the kept scenes, scene), larger AOI coverage first."""

    pass_id: str
    scenes: Tuple[Tuple[int, Scene], ...]
    score: float  # AOI clear fraction of its best tile, in %
    distance: float  # seconds from the target date


def target_datetime(start: date, end: date, target: Optional[date] = None) -> datetime:
    """Noon UTC of the target date; default the middle of the dates."""
    day = target if target is not None else start + (end - start) / 2
    return datetime.combine(day, time(12), tzinfo=timezone.utc)


def plan_passes(kept: Sequence[SceneReport], start: date, end: date,
                target: Optional[date] = None) -> List[Pass]:
    """Group kept scenes by pass and order them for best available pixel.

    Order: AOI clear fraction (whole percent, best first), then closeness to the target
    date, then the pass id (so equal passes keep one order from run to run).
    """
    when = target_datetime(start, end, target)
    members: Dict[str, List[Tuple[int, Scene]]] = {}
    score: Dict[str, float] = {}
    distance: Dict[str, float] = {}
    for index, report in enumerate(kept):
        scene = report.scene
        members.setdefault(scene.pass_id, []).append((index, scene))
        clear = (report.aoi_coverage or 0.0) * (100.0 - (report.aoi_cloud or 0.0)) / 100.0
        score[scene.pass_id] = max(score.get(scene.pass_id, 0.0), clear)
        distance[scene.pass_id] = abs((scene.datetime - when).total_seconds())
    passes = [
        Pass(pid, tuple(sorted(items, key=lambda item: -(kept[item[0]].aoi_coverage or 0.0))),
             score[pid], distance[pid])
        for pid, items in members.items()
    ]
    return sorted(passes, key=lambda p: (-round(p.score), p.distance, p.pass_id))
