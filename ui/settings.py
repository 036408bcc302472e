"""Dialog choices remembered between sessions in QgsSettings under "Clearsky/..."."""

from __future__ import annotations

from typing import Any, List

from qgis.core import QgsSettings

GROUP = "Clearsky"  # tests point this elsewhere so they never touch a user's settings


def _key(name: str) -> str:
    return f"{GROUP}/{name}"


def value(name: str, default: Any = None, kind: type = str) -> Any:
    """A stored value converted to `kind` (bool/int/float/str), else `default`."""
    raw = QgsSettings().value(_key(name), None)
    if raw is None or raw == "":
        return default
    try:
        if kind is bool:
            return raw if isinstance(raw, bool) else str(raw).lower() in ("true", "1", "yes")
        return kind(raw)
    except (TypeError, ValueError):
        return default


def set_value(name: str, data: Any) -> None:
    QgsSettings().setValue(_key(name), data)


def string_list(name: str) -> List[str]:
    raw = QgsSettings().value(_key(name), [])
    if isinstance(raw, str):
        return [raw] if raw else []
    return [str(v) for v in (raw or []) if v]
