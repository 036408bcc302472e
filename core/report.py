"""Sidecar reports (CSV and JSON) written atomically beside the output."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, List, Sequence

from .results import SceneReport

REPORT_FIELDS = (
    "id", "collection", "datetime", "platform", "tile", "scene_cloud", "aoi_coverage",
    "aoi_cloud", "kept", "reason", "pixels_contributed",
)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rows_to_csv(rows: Iterable[dict], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})
    return buffer.getvalue()


def report_paths(output: Path, report_csv: Path | None = None) -> tuple[Path, Path]:
    """(csv, json) paths: the user's CSV choice, else `<output stem>.report.csv`."""
    csv_path = Path(report_csv) if report_csv else output.with_name(output.stem + ".report.csv")
    return csv_path, csv_path.with_suffix(".json")


def write_scene_report(
    reports: List[SceneReport], csv_path: Path, json_path: Path, header: dict
) -> None:
    rows = [r.row() for r in reports]
    atomic_write_text(csv_path, rows_to_csv(rows, REPORT_FIELDS))
    atomic_write_text(json_path, json.dumps({**header, "scenes": rows}, indent=2, default=str))
