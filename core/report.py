"""Sidecar reports (CSV and JSON) written atomically beside the output."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from .errors import OutputError
from .redact import redact_obj, redact_text
from .results import SceneReport

REPORT_FIELDS = (
    "id", "collection", "datetime", "platform", "tile", "scene_cloud", "aoi_coverage",
    "aoi_cloud", "kept", "reason", "pixels_contributed", "mask",
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


REPORT_SUFFIX = ".csv"
MAX_JSON_BYTES = 64 * 1024 * 1024  # an earlier JSON report is parsed whole up to this size


def check_report_paths(output: Path, report_csv: Optional[Path], overwrite: bool
                       ) -> Tuple[Path, Path]:
    """(csv, json) after the same consent rule as the COG, checked before any work starts.

    The report never replaces the mosaic; the CSV must end in .csv and sit in a writable
    folder; an existing file is replaced only when overwriting is allowed. The JSON beside
    the CSV, which the user did not name, replaces only an earlier Clearsky report.
    """
    csv_path, json_path = report_paths(Path(output), report_csv)
    same = {Path(os.path.abspath(output))}
    if Path(os.path.abspath(csv_path)) in same or Path(os.path.abspath(json_path)) in same:
        raise OutputError(f"The scene report {csv_path.name} would replace the mosaic itself: "
                          "choose another report name.")
    if csv_path.suffix.lower() != REPORT_SUFFIX:
        raise OutputError(f"The scene report must be a .csv file, not {csv_path.name!r}.")
    folder = csv_path.parent
    if not folder.is_dir():
        raise OutputError(f"The folder {folder} for the scene report does not exist: create "
                          "it or choose another.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"The folder {folder} for the scene report is not writable.")
    for path in (csv_path, json_path):
        if path.is_dir():
            raise OutputError(f"{path} is a folder: choose another report name.")
    if csv_path.exists() and not (overwrite or _is_our_report(csv_path)):
        raise OutputError(f"{csv_path} already exists: choose another report name or allow "
                          "overwriting.")
    if json_path.exists() and not _is_our_report(json_path):
        raise OutputError(f"{json_path} exists and is not a Clearsky report: choose another "
                          "report name so it is not replaced.")
    return csv_path, json_path


def _is_our_report(path: Path) -> bool:
    """An earlier Clearsky scene report (its CSV header, or its JSON's shape)."""
    is_json = path.suffix.lower() == ".json"
    try:
        if is_json and path.stat().st_size > MAX_JSON_BYTES:
            return False
        with open(path, encoding="utf-8") as handle:
            # the whole JSON (a run of a thousand scenes writes ~0.8 MB); the CSV's header
            head = handle.read(MAX_JSON_BYTES if is_json else 64 * 1024)
    except (OSError, UnicodeDecodeError):
        return False
    if is_json:
        try:
            data = json.loads(head)
        except ValueError:
            return False
        return isinstance(data, dict) and "scenes" in data and "parameters" in data
    return head.splitlines()[:1] == [",".join(REPORT_FIELDS)]


def write_scene_report(
    reports: List[SceneReport], csv_path: Path, json_path: Path, header: dict
) -> None:
    """Both reports, with credentials and query strings removed from every URL in them."""
    rows = [redact_obj(r.row()) for r in reports]
    header = redact_obj(json.loads(json.dumps(header, default=str)))
    atomic_write_text(csv_path, rows_to_csv(rows, REPORT_FIELDS))
    atomic_write_text(json_path, json.dumps({**header, "scenes": rows}, indent=2, default=str))
