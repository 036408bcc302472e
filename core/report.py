"""Sidecar reports (CSV and JSON) written atomically beside the output."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from pathlib import Path
from typing import Iterable, List, Sequence

from .redact import redact_obj, redact_text
from .results import SceneReport

REPORT_FIELDS = (
    "id", "collection", "datetime", "platform", "tile", "scene_cloud", "aoi_coverage",
    "aoi_cloud", "kept", "reason", "pixels_contributed",
)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, then rename: never a half-written file.

    The file gets the permissions a plain open() would give it: an existing file's mode,
    else 0666 minus the umask (not mkstemp's 0600). Data is flushed to disk before the
    rename, so a full disk fails here and leaves any existing file byte-identical.
    """
    path = Path(path)
    try:
        mode, existing = os.stat(path).st_mode & 0o7777, True
    except OSError:
        mode, existing = 0o666, False
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if existing:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rows_to_csv(rows: Iterable[dict], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:  # no URL in a report keeps its credentials or signed query string
        writer.writerow({k: "" if row.get(k) is None else redact_text(row.get(k))
                         if isinstance(row.get(k), str) else row.get(k) for k in fields})
    return buffer.getvalue()


def report_paths(output: Path, report_csv: Path | None = None) -> tuple[Path, Path]:
    """(csv, json) paths: the user's CSV choice, else `<output stem>.report.csv`."""
    csv_path = Path(report_csv) if report_csv else output.with_name(output.stem + ".report.csv")
    return csv_path, csv_path.with_suffix(".json")


def write_scene_report(
    reports: List[SceneReport], csv_path: Path, json_path: Path, header: dict
) -> None:
    """Both reports, with credentials and query strings removed from every URL in them."""
    rows = [redact_obj(r.row()) for r in reports]
    header = redact_obj(json.loads(json.dumps(header, default=str)))
    atomic_write_text(csv_path, rows_to_csv(rows, REPORT_FIELDS))
    atomic_write_text(json_path, json.dumps({**header, "scenes": rows}, indent=2, default=str))
