"""Open datasets of one run, shared by its worker threads: each file is opened about once.

Each worker thread used to keep its own open datasets, so a file read by many threads was
opened by each of them: a GDALOpen each time and, when GDAL's HTTP cache had meanwhile
dropped the file's header for newer tile bytes, another header request (51 of 160 files
in the aligned median benchmark). Reads mostly need what the header says (CRS, transform,
tile shape, overviews) and the decoded tiles, which the run's tile cache holds. So the run
keeps, per file and level, a `Source`: the header's figures, read once, and idle dataset
handles; a read that must fetch pixels borrows a handle for that fetch only (a dataset
serves one thread at a time) and another is opened only while every one is busy.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

from rasterio.windows import Window
from rasterio.windows import transform as window_transform

IDLE_PER_SOURCE = 4  # idle handles kept per file and level; more close when given back


class Source:
    """What reads need of one file (and overview level), with its idle handles to lend.

    Quacks like the rasterio dataset it was made from for the attributes the engine's
    reads use; `read` borrows a handle for the one read."""

    def __init__(self, ds, reopen: Callable[[], Any]) -> None:
        self.name: str = ds.name
        self.crs = ds.crs
        self.transform = ds.transform
        self.width: int = ds.width
        self.height: int = ds.height
        self.count: int = ds.count
        self.res: Tuple[float, float] = ds.res
        self.dtypes: Tuple[str, ...] = tuple(ds.dtypes)
        self.block_shapes: List[Tuple[int, int]] = list(ds.block_shapes)
        self._overviews = {b: list(ds.overviews(b)) for b in range(1, ds.count + 1)}
        self._reopen = reopen
        self._idle: List[Any] = [ds]
        self._lock = threading.Lock()
        self.closed = False

    def overviews(self, band: int) -> List[int]:
        return list(self._overviews.get(band, []))

    def window_transform(self, window: Window):
        return window_transform(window, self.transform)

    def read(self, band: int, window: Window):
        """`ds.read(band, window=window)` on an idle handle (a new one when all are busy);
        a handle whose read failed is closed, not lent again."""
        with self._lock:
            ds = self._idle.pop() if self._idle else None
        if ds is None:
            ds = self._reopen()
        try:
            data = ds.read(band, window=window)
        except BaseException:
            ds.close()
            raise
        with self._lock:
            if not self.closed and len(self._idle) < IDLE_PER_SOURCE:
                self._idle.append(ds)
                return data
        ds.close()
        return data

    def close(self) -> None:
        """Close the idle handles; one lent out closes when its read ends."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for ds in idle:
            ds.close()


class Handles:
    """The run's `Source`s by key (file path, overview level, ...)."""

    def __init__(self) -> None:
        self._sources: Dict[Hashable, Source] = {}
        self._lock = threading.Lock()
        self.done = False

    def get(self, key: Hashable) -> Optional[Source]:
        with self._lock:
            return self._sources.get(key)

    def add(self, key: Hashable, ds, reopen: Callable[[], Any]) -> Source:
        """The source of `key`, made from the freshly opened `ds` unless one exists (then
        `ds` is closed, as it is when the run is over)."""
        source = Source(ds, reopen)
        with self._lock:
            have = self._sources.get(key)
            if have is None and not self.done:
                self._sources[key] = source
                return source
        source.close()
        return have if have is not None else source

    def forget(self, matches: Callable[[Any], bool]) -> None:
        """Drop and close the sources whose key `matches` (before a retry of a failed read)."""
        with self._lock:
            gone = [self._sources.pop(k) for k in [k for k in self._sources if matches(k)]]
        for source in gone:
            source.close()

    def close(self) -> None:
        with self._lock:
            self.done = True
            gone: Sequence[Source] = list(self._sources.values())
            self._sources.clear()
        for source in gone:
            source.close()
