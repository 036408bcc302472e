"""The small year-long archive: World(calendar="year"), for four-season runs.

Eight passes, two per meteorological season from December 2023 to November 2024
(passes.YEAR_SCHEDULE), over a 5 km region (the smallest that reaches all four tiles), in
sentinel-2-c1-l2a only: 32 items, 22 MB, built in about 13 s on 2 busy cores into its own
`.build/world/<key>` (the calendar is part of the key; the default June archive is
unchanged). Tests make their own fixtures from these (see tests/core/test_seasons_year.py).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

YEAR_EXTENT_KM = 5.0
YEAR_SEED = 2024
YEAR_START, YEAR_END = date(2023, 12, 1), date(2024, 11, 30)
SEASONS = ("2024-DJF", "2024-MAM", "2024-JJA", "2024-SON")
SEASON_DATES = {  # inclusive first and last day of each season within YEAR_START..YEAR_END
    "2024-DJF": (date(2023, 12, 1), date(2024, 2, 29)),
    "2024-MAM": (date(2024, 3, 1), date(2024, 5, 31)),
    "2024-JJA": (date(2024, 6, 1), date(2024, 8, 31)),
    "2024-SON": (date(2024, 9, 1), date(2024, 11, 30)),
}


def year_world():
    from . import World

    return World(extent_km=YEAR_EXTENT_KM, seed=YEAR_SEED, calendar="year")


def year_archive(world=None, block_size: int = 512) -> Path:
    from .cache import cached_archive

    return cached_archive(world if world is not None else year_world(), block_size)
