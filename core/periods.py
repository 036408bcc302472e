"""Periods of a multi-period run: months, meteorological seasons or explicit date ranges.

One search over the whole dates serves every period; each period is composited from the
kept scenes whose acquisition date falls inside it and written to its own file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import List

from .errors import InvalidParameterError

SEASONS = ((12, "DJF"), (3, "MAM"), (6, "JJA"), (9, "SON"))  # first month, name
KEY = "PERIODS"


@dataclass(frozen=True)
class Period:
    """Inclusive dates; `name` goes into the output file name and the STAC item."""

    name: str
    start: date
    end: date

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end


def _month_end(day: date) -> date:
    first_next = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return first_next - timedelta(days=1)


def _months(start: date, end: date) -> List[Period]:
    out = []
    first = date(start.year, start.month, 1)
    while first <= end:
        last = _month_end(first)
        out.append(Period(f"{first:%Y-%m}", max(first, start), min(last, end)))
        first = last + timedelta(days=1)
    return out


def _season_of(day: date) -> tuple:
    """(first day, name) of the meteorological season holding `day`; DJF is named by the
    year of its January (2024-DJF = December 2023 to February 2024)."""
    month = day.month
    first_month = 12 if month in (12, 1, 2) else (month // 3) * 3
    year = day.year - (1 if month in (1, 2) else 0)
    name = dict(SEASONS)[first_month]
    label_year = year + 1 if first_month == 12 else year
    return date(year, first_month, 1), f"{label_year}-{name}"


def _seasons(start: date, end: date) -> List[Period]:
    out = []
    day = start
    while day <= end:
        first, name = _season_of(day)
        after = date(first.year + (first.month + 3 > 12), (first.month + 2) % 12 + 1, 1)
        last = after - timedelta(days=1)
        out.append(Period(name, max(first, start), min(last, end)))
        day = last + timedelta(days=1)
    return out


def _explicit(text: str, start: date, end: date) -> List[Period]:
    out = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        pieces = part.split("/")
        try:
            if len(pieces) != 2:
                raise ValueError
            first, last = (date.fromisoformat(p.strip()[:10]) for p in pieces)
        except ValueError:
            raise InvalidParameterError(
                f"{KEY} takes empty, month, season, or date ranges start/end separated by "
                f"commas, e.g. 2024-06-01/2024-06-15,2024-06-16/2024-06-30; not {part!r}."
            ) from None
        if last < first:
            raise InvalidParameterError(f"The period {part} in {KEY} ends before it starts.")
        if last < start or first > end:
            raise InvalidParameterError(
                f"The period {part} in {KEY} lies outside the dates {start} to {end}: widen "
                "START_DATE/END_DATE or change the period.")
        first, last = max(first, start), min(last, end)
        out.append(Period(f"{first}_{last}", first, last))
    if len({p.name for p in out}) != len(out):
        raise InvalidParameterError(f"A period is listed twice in {KEY}: {text}.")
    return out


def split_periods(spec: str, start: date, end: date) -> List[Period]:
    """The periods of `spec` within start..end; empty spec -> [] (one composite)."""
    text = (spec or "").strip()
    lowered = text.lower()
    if not text:
        return []
    if lowered in ("month", "months", "monthly"):
        return _months(start, end)
    if lowered in ("season", "seasons", "seasonal"):
        return _seasons(start, end)
    periods = _explicit(text, start, end)
    if not periods:
        raise InvalidParameterError(f"{KEY} names no period: {text!r}.")
    return periods


def period_path(output: Path, period: Period) -> Path:
    """<stem>_<period><suffix> beside `output`, e.g. mosaic_2024-JJA.tif."""
    output = Path(output)
    return output.with_name(f"{output.stem}_{period.name}{output.suffix or '.tif'}")
