"""The coordinate operation of a warp, chosen once per CRS pair instead of once per read.

Every `rasterio.warp.reproject` builds GDAL's image-to-image transformer with the area of
interest of its own windows, so GDAL's cache of transformations never hits and PROJ
searches its database (SQLite) again for every read: 4 to 8 ms a read between a UTM zone
and EPSG:3035, a fifth of a warped run's CPU. PROJ's choice among the candidate
operations is per point: among those whose area of use holds the point, the one of best
known accuracy. When that is the same candidate at every point of a read whatever the
order GDAL lists them in (see `choose`), handing it to GDAL as COORDINATE_OPERATION gives
the same pixels without the search. Otherwise (a read across the edge of an area, several
regional candidates, a grid pyproj cannot find) nothing is handed over and GDAL decides.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from pyproj.exceptions import ProjError
from pyproj.transformer import AreaOfInterest, TransformerGroup

Box = Tuple[float, float, float, float]  # west, south, east, north (degrees)
# PROJ definition, area of use (None: everywhere), accuracy in metres (-1: unknown)
Candidate = Tuple[str, Optional[Box], float]


def warp_options(src_crs: str, dst_crs: str, footprint: Callable[[], Box]
                 ) -> Dict[str, str]:
    """{"COORDINATE_OPERATION": ...} for a read whose lon/lat box `footprint()` gives, or
    {}. The footprint is asked for only when a candidate has an area (not between two UTM
    zones of one datum, whose one operation applies everywhere)."""
    found = candidates(src_crs, dst_crs)
    if not found:
        return {}
    regional = any(area is not None for _, area, _ in found)
    chosen = choose(found, footprint() if regional else (-180.0, -90.0, 180.0, 90.0))
    return {"COORDINATE_OPERATION": chosen} if chosen else {}


def choose(found: Sequence[Candidate], lonlat: Box) -> Optional[str]:
    """The one candidate PROJ takes at every point of `lonlat`, whatever order GDAL sorts
    them in for its area of interest: the only regional one that meets the read, when it
    contains the read, has a known accuracy and the only other candidate meeting it is a
    worldwide fallback of unknown accuracy (a ballpark); or the only candidate there.
    PROJ takes, among the candidates whose area holds a point, the one of best known
    accuracy. None when the choice is not that clear."""
    meeting = [c for c in found if c[1] is None or not _disjoint(lonlat, c[1])]
    if len(meeting) == 1:
        definition, area, _ = meeting[0]
        return definition if area is None or _inside(lonlat, area) else None
    regional = [c for c in meeting if c[1] is not None]
    everywhere = [c for c in meeting if c[1] is None]
    if len(regional) != 1 or len(everywhere) != 1:
        return None
    (definition, area, accuracy), fallback = regional[0], everywhere[0]
    if area is None or not _inside(lonlat, area) or accuracy < 0 or fallback[2] >= 0:
        return None
    return definition


@functools.lru_cache(maxsize=64)
def candidates(src_crs: str, dst_crs: str) -> Tuple[Candidate, ...]:
    """PROJ's candidate operations, in its order, in the CRSs' own axis order (GDAL
    applies its axis mapping around the operation). Empty when PROJ offers none that can
    be instantiated, or an area crosses the antimeridian (then GDAL decides)."""
    try:
        group = TransformerGroup(src_crs, dst_crs, always_xy=False,
                                 area_of_interest=AreaOfInterest(-180, -90, 180, 90))
    except ProjError:
        return ()
    if group.unavailable_operations:
        return ()  # a grid pyproj lacks may be one GDAL finds (QGIS's own PROJ paths)
    found: List[Candidate] = []
    for op in group.transformers:
        definition = op.definition
        if not definition or "unavailable" in definition:
            return ()
        accuracy = float(op.accuracy) if op.accuracy is not None else -1.0
        area = op.area_of_use
        if area is None:
            found.append((definition, None, accuracy))
            continue
        west, south, east, north = area.bounds
        if west > east:
            return ()
        whole = west <= -180 and east >= 180 and south <= -90 and north >= 90
        found.append((definition, None if whole else (west, south, east, north), accuracy))
    return tuple(found)


def _inside(a: Box, b: Box) -> bool:
    return b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]


def _disjoint(a: Box, b: Box) -> bool:
    return a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
