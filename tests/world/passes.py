"""The acquisition calendar: ten June 2024 passes from relative orbits R065 and R022.

`calendar="year"` (World(..., calendar="year")) is another, smaller calendar: eight passes
spread over December 2023 to November 2024, two per meteorological season, for
multi-season runs (YEAR_SCHEDULE; its archive has sentinel-2-c1-l2a only); the default
"june" calendar is SCHEDULE.

Real Sentinel-2 timing: each satellite repeats a relative orbit every 10 days, S2A and S2B
are 5 days apart, and the spatially adjacent orbit R065 comes 3 days (43 orbits) after
R022. R022 is the swath-edge orbit here: its western swath edge crosses the region.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .weather import PassWeatherSpec

R065_TIME = (10, 20, 21)  # datastrip sensing start (UTC) of R065 over the region
R022_TIME = (10, 10, 31)

# day of June 2024, platform, relative orbit, weather
SCHEDULE = (
    (3, "sentinel-2a", 65, PassWeatherSpec("sparse", n_blobs=3)),
    (5, "sentinel-2b", 22, PassWeatherSpec("dense", 0.50, cirrus_fraction=0.10, n_saturated=3)),
    (8, "sentinel-2b", 65, PassWeatherSpec("aoi_blob")),  # cloudy_under_clear
    (10, "sentinel-2a", 22, PassWeatherSpec("dense", 0.80, n_snow=2, n_saturated=3)),
    # clear_under_cloudy:
    (13, "sentinel-2a", 65, PassWeatherSpec("dense_hole", 0.85, n_saturated=2)),
    (15, "sentinel-2b", 22, PassWeatherSpec("dense", 0.15, cirrus_fraction=0.20, n_snow=1,
                                            n_saturated=2)),
    (18, "sentinel-2b", 65, PassWeatherSpec("sparse", n_blobs=2)),
    (20, "sentinel-2a", 22, PassWeatherSpec("none", cirrus_fraction=0.04)),
    (23, "sentinel-2a", 65, PassWeatherSpec("dense", 0.45, n_snow=2, n_saturated=3)),
    (25, "sentinel-2b", 22, PassWeatherSpec("dense", 0.25, cirrus_fraction=0.05, n_saturated=2)),
)
# (year, month, day), platform, relative orbit, weather: two passes in each of 2024-DJF,
# -MAM, -JJA, -SON. Pass indices keep the June calendar's roles: 0 has the reprocessed
# duplicate, 2 and 4 are the known AOIs' passes, 6 is sparse (weather.MISSES_PASS).
YEAR_SCHEDULE = (
    ((2023, 12, 12), "sentinel-2a", 65, PassWeatherSpec("sparse", n_blobs=3)),
    ((2024, 2, 5), "sentinel-2b", 22, PassWeatherSpec("dense", 0.50, cirrus_fraction=0.10,
                                                      n_snow=2, n_saturated=2)),
    ((2024, 3, 18), "sentinel-2b", 65, PassWeatherSpec("aoi_blob")),  # cloudy_under_clear
    ((2024, 5, 10), "sentinel-2a", 22, PassWeatherSpec("dense", 0.30, n_saturated=2)),
    ((2024, 6, 13), "sentinel-2a", 65, PassWeatherSpec("dense_hole", 0.85, n_saturated=2)),
    ((2024, 8, 20), "sentinel-2a", 22, PassWeatherSpec("none", cirrus_fraction=0.04)),
    ((2024, 9, 23), "sentinel-2b", 65, PassWeatherSpec("sparse", n_blobs=2)),
    ((2024, 11, 15), "sentinel-2b", 22, PassWeatherSpec("dense", 0.25, cirrus_fraction=0.05)),
)
CALENDARS = ("june", "year")
SWATH_EDGE_ORBIT = 22
CLEAR_UNDER_CLOUDY_PASS = 4
CLOUDY_UNDER_CLEAR_PASS = 2
DUPLICATE = (0, "33UUU")  # pass index, tile: reprocessed in sentinel-2-l2a (_0_ and _1_)

# Absolute orbit numbers on 2024-06-01 00:00 UTC (approximate, for realistic ids).
ABSOLUTE_ORBIT_JUNE_1 = {"sentinel-2a": 46_710, "sentinel-2b": 37_846}
# Seconds from the datastrip start to each tile's sensing time (north first: descending).
TILE_TIME_OFFSET_S = {"32UQD": 30.508, "33UUU": 31.024, "33UVU": 31.912, "33UUT": 45.317}


@dataclass(frozen=True)
class Pass:
    """One overpass (one datastrip) of one satellite."""

    index: int
    datetime: datetime  # datastrip sensing start, UTC
    platform: str  # "sentinel-2a" / "sentinel-2b"
    relative_orbit: int
    swath_edge: bool

    @property
    def letter(self) -> str:
        return self.platform[-1].upper()

    @property
    def absolute_orbit(self) -> int:
        start = datetime(2024, 6, 1, tzinfo=timezone.utc)
        days = (self.datetime - start).total_seconds() / 86400.0
        return ABSOLUTE_ORBIT_JUNE_1[self.platform] + int(days * 14.3)

    @property
    def season(self) -> float:
        """0 at the start of June, 1 at its end (drives the NIR green-up)."""
        return (self.datetime.day - 1) / 29.0

    def tile_datetime(self, tile_id: str) -> datetime:
        return self.datetime + timedelta(seconds=TILE_TIME_OFFSET_S[tile_id])


def _schedule(calendar: str) -> tuple:
    if calendar not in CALENDARS:
        raise ValueError(f"unknown calendar {calendar!r}; the world has {CALENDARS}")
    if calendar == "year":
        return YEAR_SCHEDULE
    return tuple(((2024, 6, day), *rest) for day, *rest in SCHEDULE)


def make_passes(calendar: str = "june") -> list:
    passes = []
    for i, (ymd, platform, orbit, _spec) in enumerate(_schedule(calendar)):
        h, m, s = R065_TIME if orbit == 65 else R022_TIME
        when = datetime(*ymd, h, m, s, tzinfo=timezone.utc)
        passes.append(Pass(i, when, platform, orbit, orbit == SWATH_EDGE_ORBIT))
    return passes


def weather_specs(calendar: str = "june") -> list:
    return [spec for *_rest, spec in _schedule(calendar)]
