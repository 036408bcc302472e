"""Raster input and output: GDAL settings for remote COGs, windowed reads, atomic COG writes.

Remote reads are latency bound, so each read touches only the window it needs, at the
overview level that matches the output pixel size, from datasets kept open per thread.
rasterio's GDAL environment is per thread: the read functions enter one when the calling
thread has none (copying the options of the innermost active `gdal_env`), and
`init_worker` does it once per thread of a ThreadPoolExecutor.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform
from rasterio.windows import Window

from . import heap, operations
from .errors import CancelledError, OutputError, ReadError
from .grid import Grid
from .redact import redact_text
from .tiles import Rows, TileCache, check_window, tile_rows

try:  # rasterio's low-level GDAL errors (CPLE_HttpResponseError, ...)
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - very old or very new rasterio
    CPLE_BaseError = RasterioError

log = logging.getLogger(__name__)

READ_TRIES = 2  # attempts per read, on top of GDAL's own HTTP retries on 5xx
READ_BACKOFF = 0.5  # seconds before the second attempt; doubles each time
_PERMANENT = ("404", "No such file", "does not exist", "not recognized as a supported",
              "not a GeoTIFF", "ignores HTTP Range", "Range downloading not supported",
              "HTTP response code: 30", "redirected to", "retry budget")
# Remote assets are opened with this driver only: a VRT (or any format that names other
# files or URLs) behind a .tif href is refused instead of read (issue 10).
ALLOWED_DRIVERS = ("GTiff",)
# Time-outs of every GDAL HTTP request (seconds): connecting, the whole request, and a
# low-speed floor that ends a stalled or trickling transfer (LOW_SPEED_LIMIT bytes/s for
# LOW_SPEED_TIME s) long before the whole-request time-out.
HTTP_CONNECT_TIMEOUT = 10
HTTP_TIMEOUT = 30
HTTP_LOW_SPEED_TIME = 10
HTTP_LOW_SPEED_LIMIT = 1024
# Retries of failed reads a run may spend in all (see retry_budget); gdal_env starts one.
RUN_RETRY_BUDGET = 64
# libcurl follows redirects to http, https, ftp and ftps (GDAL 3.6 has no option to narrow
# that); while a gdal_env is active, an unusable ftp proxy makes every ftp(s) transfer
# fail before it connects, so a redirect can never leave http(s).
_NO_FTP = {"ftp_proxy": "clearsky-refuses-ftp://0", "ftps_proxy": "clearsky-refuses-ftp://0"}
_CACHE_SIZE = 256  # open datasets kept per thread (a handle costs a few kB)
# The output COG's DEFLATE level: 3 writes a 2000 x 2000 x 5 band mosaic in 0.51 s against
# 1.41 s at GDAL's default 6, for a file 4 % larger (scripts/cog_level.py measures it).
COG_DEFLATE_LEVEL = 3


# --- GDAL environment -------------------------------------------------------------------

HEADER_BYTES = 16384  # GDAL_INGESTED_BYTES_AT_OPEN: the first request of every file


def gdal_options(max_workers: int = 8, **overrides) -> Dict[str, object]:
    """GDAL configuration for reading COGs over HTTP/S3; caches scale with the workers."""
    workers = max(1, int(max_workers))
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per open
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
        "GDAL_HTTP_MAX_RETRY": "3",  # GDAL retries 429/5xx itself, doubling the delay
        "GDAL_HTTP_RETRY_DELAY": "0.5",
        "GDAL_HTTP_TIMEOUT": str(HTTP_TIMEOUT),
        "GDAL_HTTP_CONNECTTIMEOUT": str(HTTP_CONNECT_TIMEOUT),
        "GDAL_HTTP_LOW_SPEED_TIME": str(HTTP_LOW_SPEED_TIME),
        "GDAL_HTTP_LOW_SPEED_LIMIT": str(HTTP_LOW_SPEED_LIMIT),
        # No format that can chain to other files: VRT raw bands off (the driver allow-list
        # refuses VRT anyway), no .aux.xml side-car read or written next to a remote file.
        "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",
        "GDAL_PAM_ENABLED": "NO",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        # The COG header in one request (a longer one costs GDAL more requests, not a
        # failure). It ends within 1 KB in the archive's files, but 4 KB (or 8 KB) took more
        # requests than it saved bytes: the rest of the 16 KB holds small tiles that reads
        # then fetch on their own (benchmark: warped median 1.14x -> 1.08x the floor, 295
        # -> 310 requests, slower; aligned median 704 -> 729).
        "GDAL_INGESTED_BYTES_AT_OPEN": str(HEADER_BYTES),
        # /vsicurl/ rounds every range out to whole chunks: at its default 16 KB a run of
        # tiles came with up to 16 KB of each neighbouring tile (bytes served 1.21x the
        # tiles' on the benchmark's warped median, 1.14x at 4 KB). 1 KB chunks (1.11x)
        # split long runs into more requests (7 % more on the aligned median).
        "CPL_VSIL_CURL_CHUNK_SIZE": "4096",
        # No per-handle VSI_CACHE: /vsicurl/ keeps one process-wide cache of fetched ranges,
        # and a per-handle cache would multiply memory by the many handles kept open.
        "VSI_CACHE": "FALSE",
        # The run's tile cache keeps decoded tiles; this one only needs headers and the
        # chunks shared by neighbouring tiles' reads.
        "CPL_VSIL_CURL_CACHE_SIZE": str(min(64, 4 * workers) * 1024 * 1024),
        # GDAL's cache of decoded blocks: the run's tile cache (core.tiles) keeps every
        # decoded source tile once, so GDAL's copy only needs the blocks of reads in flight;
        # a larger one only grew the peak memory with the AOI.
        "GDAL_CACHEMAX": 32 * 1024 * 1024,  # bytes (an int)
        "AWS_NO_SIGN_REQUEST": "YES",  # public buckets only
        "GDAL_HTTP_USERAGENT": "Clearsky QGIS plugin",
    }
    options.update({k: v if k == "GDAL_CACHEMAX" else str(v) for k, v in overrides.items()})
    return options


def proxy_options(proxy: str = "", no_proxy: str = "") -> Dict[str, str]:
    """GDAL options that send every /vsicurl/ request through `proxy`
    ("http://[user:password@]host:port"; "" = no options, GDAL's own defaults).

    The user name and password go to GDAL_HTTP_PROXYUSERPWD, never into a URL that GDAL
    might print. GDAL 3.6 has no option for hosts that bypass the proxy: `no_proxy`
    ("a.org,b.net") is handed to libcurl as the NO_PROXY environment variable while the
    outermost gdal_env is active (see _ClearskyEnv), which libcurl honours when no
    CURLOPT_NOPROXY is set (GDAL sets none).
    """
    if not proxy:
        return {}
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    host = parts.hostname or ""
    if not host:
        return {}
    if ":" in host:  # IPv6
        host = f"[{host}]"
    address = f"{host}:{parts.port}" if parts.port else host
    if parts.scheme not in ("", "http"):
        address = f"{parts.scheme}://{address}"
    options = {"GDAL_HTTP_PROXY": address, "GDAL_HTTPS_PROXY": address}
    if parts.username:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        options["GDAL_HTTP_PROXYUSERPWD"] = f"{user}:{password}"
    if no_proxy:
        options[_NO_PROXY_KEY] = no_proxy
    return options


_NO_PROXY_KEY = "CLEARSKY_NO_PROXY"  # not a GDAL option: becomes NO_PROXY (see proxy_options)


# Process-wide settings that only the outermost gdal_env sets: re-setting them from every
# worker thread would flush GDAL's block cache each time.
_GLOBAL_ONLY = ("GDAL_CACHEMAX",)


_ACTIVE: List[Dict[str, object]] = []  # options of the gdal_env contexts entered, innermost last
_ACTIVE_LOCK = threading.Lock()


class _ClearskyEnv(rasterio.Env):
    """rasterio.Env that also publishes its options for worker threads (see ensure_env).

    The outermost one is a run: it starts a retry budget (RUN_RETRY_BUDGET, unless one is
    already active) and refuses ftp(s) redirects for its lifetime (see _NO_FTP).
    """

    def __enter__(self):
        result = super().__enter__()
        with _ACTIVE_LOCK:
            outermost = not _ACTIVE
            _ACTIVE.append(self._published)
        self._run = None
        if outermost:
            environ = dict(_NO_FTP)
            no_proxy = str(self._published.get(_NO_PROXY_KEY) or "")
            if no_proxy:
                environ.update({"NO_PROXY": no_proxy, "no_proxy": no_proxy})
            self._saved_env = {k: os.environ.get(k) for k in environ}
            os.environ.update(environ)
            if _BUDGET.remaining is None:
                self._run = retry_budget(RUN_RETRY_BUDGET)
                self._run.__enter__()
        return result

    def __exit__(self, *exc):
        with _ACTIVE_LOCK:
            with contextlib.suppress(ValueError):
                _ACTIVE.remove(self._published)
            last = not _ACTIVE
        run = getattr(self, "_run", None)
        if run is not None:
            run.__exit__(None, None, None)
            self._run = None
        if last and hasattr(self, "_saved_env"):
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return super().__exit__(*exc)


class _Budget:
    """The run-wide count of read retries left (None: no budget active, unlimited)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.remaining: Optional[int] = None
        self.total = 0
        self.spent = 0

    def take(self) -> bool:
        """Spend one retry; False when the budget is exhausted."""
        with self.lock:
            if self.remaining is None:
                self.spent += 1
                return True
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            self.spent += 1
            return True


_BUDGET = _Budget()


@contextlib.contextmanager
def retry_budget(retries: int = RUN_RETRY_BUDGET) -> Iterator[_Budget]:
    """Give the reads inside the block (all threads) `retries` retries in all.

    Each retry `_retrying` makes takes one; once none is left a failing read raises
    ReadError at once ("retry budget ... exhausted") instead of retrying, so a run against
    a failing store ends in bounded time. The outermost gdal_env enters one by itself;
    call this per run to choose the size. Nested calls replace the budget for their block
    and restore the outer one afterwards. Yields the budget (`.spent`, `.remaining`).
    """
    with _BUDGET.lock:
        saved = (_BUDGET.remaining, _BUDGET.total, _BUDGET.spent)
        _BUDGET.remaining, _BUDGET.total, _BUDGET.spent = max(0, int(retries)), int(retries), 0
    try:
        yield _BUDGET
    finally:
        with _BUDGET.lock:
            _BUDGET.remaining, _BUDGET.total, _BUDGET.spent = saved


def gdal_env(max_workers: int = 8, **overrides) -> rasterio.Env:
    """A rasterio.Env with `gdal_options`; worker threads without an env of their own
    inherit these options through `ensure_env`/`init_worker` while it is active."""
    options = gdal_options(max_workers, **overrides)
    env = _ClearskyEnv(**options)
    env._published = dict(options)
    return env


def current_options() -> Dict[str, object]:
    """Per-thread options of the innermost active gdal_env in any thread, else the defaults."""
    with _ACTIVE_LOCK:
        options = dict(_ACTIVE[-1]) if _ACTIVE else gdal_options()
    for key in _GLOBAL_ONLY:
        options.pop(key, None)
    return options


@contextlib.contextmanager
def ensure_env() -> Iterator[None]:
    """Run the body inside a GDAL env: the thread's own one, else `current_options()`."""
    if rasterio.env.hasenv():
        yield
        return
    with rasterio.Env(**current_options()):
        yield


def init_worker(options: Optional[Dict[str, object]] = None,
                tiles: Optional[TileCache] = None) -> None:
    """ThreadPoolExecutor initializer: keeps a GDAL env open for the thread's lifetime and
    lets the thread cache open datasets (they close when the worker thread ends). Its reads
    go through `tiles` (pass `current_tiles()` of the thread that makes the pool)."""
    _local.caching = True
    _local.tiles = tiles
    if not rasterio.env.hasenv():
        options = dict(options or current_options())
        for key in _GLOBAL_ONLY:
            options.pop(key, None)
        rasterio.Env(**options).__enter__()


# --- the run's tile cache ---------------------------------------------------------------

TILE_SHARE = 0.25  # of the run's memory budget for decoded source tiles
MIN_TILE_CACHE = 32 * 1024 * 1024


@contextlib.contextmanager
def run_tiles(memory_mb: int = 1024, requests: int = 16) -> Iterator[TileCache]:
    """The run's shared tile cache (see `core.tiles`), owned by the calling thread: the
    worker threads it starts read through it (`init_worker(options, current_tiles())`). A
    run nested in the same thread (a search inside a mosaic) shares it, so the AOI check's
    SCL tiles serve the mosaic's blocks; another run (another QGIS task) has its own."""
    outer = getattr(_local, "run", None)
    if outer is not None:
        yield outer
        return
    heap.share_arenas()  # before the run's threads: they share freed pages
    cache = new_tiles(memory_mb, requests)
    _local.run = cache
    try:
        yield cache
    finally:
        _local.run = None
        cache.end()  # worker threads still reading (abandoned) close their datasets


def new_tiles(memory_mb: int = 1024, requests: int = 16) -> TileCache:
    """A tile cache with its share of a `memory_mb` budget and `requests` request slots."""
    budget = int(memory_mb) * 1024 * 1024
    return TileCache(max(MIN_TILE_CACHE, int(budget * TILE_SHARE)), requests,
                     max_read=budget // 4)


def current_tiles() -> Optional[TileCache]:
    """The tile cache reads of the calling thread go through: a worker's, else its run's."""
    return getattr(_local, "tiles", None) or getattr(_local, "run", None)


@contextlib.contextmanager
def thread_tiles(tiles: Optional[TileCache]) -> Iterator[None]:
    """Reads of the calling thread go through `tiles` for the body."""
    saved = getattr(_local, "tiles", None)
    _local.tiles = tiles
    try:
        yield
    finally:
        _local.tiles = saved


MAX_WINDOW_BYTES = 1024 ** 3  # one window read without a run's budget (tests, scripts)


def _check_alloc(height: int, width: int, dtype) -> None:
    """ReadError before allocating a window the budget cannot hold."""
    tiles: Optional[TileCache] = getattr(_local, "tiles", None)
    limit = tiles.max_read if tiles is not None and tiles.max_read else MAX_WINDOW_BYTES
    check_window(height, width, dtype, limit)


def _read(ds, path: str, level: Optional[int], band: int, window: Window,
          keep: Optional[Dict[int, Tuple[int, int]]] = None) -> np.ndarray:
    """One window of `ds` (inside the raster): from the thread's tile cache when it has one
    (then only the tiles of `keep`, when given: see `TileCache.read`)."""
    tiles: Optional[TileCache] = getattr(_local, "tiles", None)
    if tiles is None:
        return ds.read(band, window=window)
    key = _cache_key(path, level)
    return tiles.read(ds, key, band, window, limit=tiles.max_read,
                      span=_span(tiles, ds, key, band), keep=keep)


def _span(tiles: TileCache, ds, key, band: int) -> Optional[Rows]:
    """Per tile row of `ds`, the tile columns under the run's area (`TileCache.extent`,
    slanted in the file's CRS), once per file."""
    if tiles.extent is None:
        return None
    span = tiles.spans.get((key, band))
    if span is None:
        crs, bounds = tiles.extent
        th, tw = (int(v) for v in ds.block_shapes[band - 1])
        span = _tiles_under(ds, _outline(crs, ds.crs, bounds), (th, tw), 2) or {}
        tiles.spans[(key, band)] = span
    return span or None


def _tiles_under(ds, outline: Tuple[np.ndarray, np.ndarray], shape: Tuple[int, int],
                 margin: float, window: Optional[Window] = None
                 ) -> Optional[Dict[int, Tuple[int, int]]]:
    """`tile_rows` of an outline (in `ds.crs`) within `window` (else the whole raster);
    None when the outline cannot be trusted (points that failed to transform)."""
    cols, rows = ~ds.transform * (outline[0], outline[1])
    cols, rows = np.asarray(cols), np.asarray(rows)
    if not (np.isfinite(cols).all() and np.isfinite(rows).all()):
        return None
    th, tw = shape
    if window is None:
        window = Window(0, 0, ds.width, ds.height)
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    return tile_rows(cols, rows, shape, margin, range(r0 // th, (r1 - 1) // th + 1),
                     range(c0 // tw, (c1 - 1) // tw + 1))


# --- paths and open datasets ------------------------------------------------------------

def gdal_path(href: str, *, allow_local: bool = False) -> str:
    """GDAL path for an asset href: http(s) -> /vsicurl/, s3:// -> /vsis3/.

    Local paths only when allow_local: a remote catalog must never make us read local files.
    """
    href = str(href)
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://"):]
    if href.startswith(("/vsicurl/http://", "/vsicurl/https://", "/vsis3/")):
        return href  # (not /vsicurl/file://..., /vsicurl?url=... or a chain of /vsi...)
    if allow_local:
        return href[len("file://"):] if href.startswith("file://") else href
    raise ReadError(
        f"Refusing to read {redact_text(href)!r}: only http(s):// and s3:// assets can be "
        "read from a remote catalog."
    )


_local = threading.local()


def _cache() -> OrderedDict:
    if not hasattr(_local, "datasets"):
        _local.datasets = OrderedDict()
    return _local.datasets


def _cache_key(path: str, overview_level: Optional[int]) -> tuple:
    if path.startswith("/vsi"):
        return (path, overview_level)
    try:  # a rewritten local file must not be served from a stale handle
        st = os.stat(path)
        return (path, overview_level, st.st_mtime_ns, st.st_size)
    except OSError:
        return (path, overview_level)


def _open(path: str, overview_level: Optional[int] = None):
    """An open dataset: from this thread's LRU cache in engine worker threads (datasets are
    not thread-safe), else opened for this read only and closed by `_retrying`.

    Only worker threads cache, because they end with their run: a dataset left open in a
    long-lived thread (QGIS's main thread, a task pool thread) would be closed only at
    interpreter exit, after QGIS has shut GDAL down, and crash the process.
    """
    kwargs: Dict[str, object] = {"driver": ALLOWED_DRIVERS[0]}  # the only driver GDAL may try
    if overview_level is not None:
        kwargs["overview_level"] = overview_level
    if not getattr(_local, "caching", False):
        ds = _request_open(path, kwargs)
        _transient().append(ds)
        return ds
    tiles: Optional[TileCache] = getattr(_local, "tiles", None)
    if tiles is not None and path.startswith("/vsi"):
        return _source(tiles, path, kwargs, _cache_key(path, overview_level))
    cache, key = _cache(), _cache_key(path, overview_level)
    ds = cache.get(key)
    if ds is not None and not ds.closed:
        cache.move_to_end(key)
        return ds
    ds = _request_open(path, kwargs)
    cache[key] = ds
    while len(cache) > _CACHE_SIZE:
        _, old = cache.popitem(last=False)
        old.close()
    return ds


def _source(tiles: TileCache, path: str, kwargs: Dict[str, object], key: tuple):
    """The run's `core.handles.Source` of `path` at this level, opened on first use (its
    header read once for the run; threads asking at once wait for that one open)."""
    source = tiles.handles.get(key)
    if source is not None:
        return source
    with tiles.opening(path):  # an open under way: wait for it holding no request slot
        source = tiles.handles.get(key)
    if source is not None:
        return source
    with tiles.requests, tiles.opening(path):  # in this order: see TileCache.opening
        source = tiles.handles.get(key)
        if source is None:
            ds = rasterio.open(path, **kwargs)
            source = tiles.handles.add(key, ds, _reopener(tiles, path, kwargs))
    return source


def _reopener(tiles: TileCache, path: str, kwargs: Dict[str, object]) -> Callable:
    def reopen():  # inside a fetch, which holds a request slot already
        with tiles.opening(path):
            return rasterio.open(path, **kwargs)
    return reopen


def keep_for_run(tiles: Optional[TileCache], path: str, ds) -> None:
    """Hand `ds`, opened by `_open` outside the run's workers (the estimate's threads), to
    the run's sources instead of closing it: its header then serves the blocks, which would
    otherwise fetch it again once GDAL's HTTP cache has dropped it."""
    transient = _transient()
    if tiles is None or tiles.done or not path.startswith("/vsi") or ds not in transient:
        return
    transient.remove(ds)
    tiles.handles.add(_cache_key(path, None), ds,
                      _reopener(tiles, path, {"driver": ALLOWED_DRIVERS[0]}))


def _request_open(path: str, kwargs: Dict[str, object]):
    """Open a dataset; the header fetch holds one of the run's request slots. Threads that
    open one file at once take turns: the first one's HEAD and header read are cached by
    GDAL for the others (at once, each sent its own HEAD)."""
    tiles: Optional[TileCache] = getattr(_local, "tiles", None)
    if tiles is None or not path.startswith("/vsi"):
        return rasterio.open(path, **kwargs)
    with tiles.opening(path):  # an open under way: let it finish holding no request slot
        pass  # (its header is then in GDAL's cache for this one)
    with tiles.requests, tiles.opening(path):  # in this order: see TileCache.opening
        return rasterio.open(path, **kwargs)


def _transient() -> list:
    if not hasattr(_local, "transient"):
        _local.transient = []
    return _local.transient


def _close_transient() -> None:
    transient = _transient()
    while transient:
        transient.pop().close()


def _forget(path: str) -> None:
    """Close this thread's handles on `path` and drop GDAL's HTTP cache for it (before a retry)."""
    cache = _cache()
    for key in [k for k in cache if k[0] == path]:
        cache.pop(key).close()
    tiles: Optional[TileCache] = getattr(_local, "tiles", None)
    if tiles is not None:
        tiles.forget_path(path)
        tiles.handles.forget(lambda k: k[0] == path)
    if path.startswith("/vsi"):
        with contextlib.suppress(Exception):
            from osgeo import gdal  # same libgdal as rasterio on Linux distributions and QGIS

            gdal.VSICurlPartialClearCache(path)


def close_datasets() -> None:
    """Close the datasets cached by the calling thread."""
    cache = _cache()
    while cache:
        cache.popitem()[1].close()


def _retrying(href: str, path: str, func, tries: int, backoff: float,
              cancelled: Optional[Callable[[], bool]] = None):
    """Call func(); on a read failure retry with exponential back-off, then ReadError.

    Each retry spends one from the run's retry budget (see retry_budget); the ReadError
    names the href without credentials or query string, and says in plain words why
    (not a GeoTIFF, the server ignores Range, a stall, a redirect off http(s), ...).
    """
    tries = max(1, int(tries))
    for attempt in range(1, tries + 1):
        if cancelled is not None and cancelled():
            raise CancelledError()
        try:
            with ensure_env():
                return func()
        except (RasterioError, CPLE_BaseError, OSError) as exc:
            _close_transient()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            _forget(path)
            permanent = any(p in reason for p in _PERMANENT)
            exhausted = not permanent and attempt < tries and not _BUDGET.take()
            if attempt == tries or permanent or exhausted:
                reason = _explain(href, reason)
                n = f"{attempt} tr{'y' if attempt == 1 else 'ies'}"
                if exhausted:
                    n += (f"; no retry left: the run's retry budget of {_BUDGET.total} is "
                          "exhausted")
                raise ReadError(redact_text(f"Could not read {href}: {reason} after {n}")) \
                    from exc
            log.info("Read of %s failed (%s); retry %d of %d", redact_text(href),
                     redact_text(reason), attempt, tries - 1)
            _sleep(backoff * 2 ** (attempt - 1), cancelled)
        finally:
            _close_transient()
            _close_if_run_over()
    raise AssertionError("unreachable")  # pragma: no cover


def _close_if_run_over() -> None:
    """A worker thread whose read outlived its run (a cancel abandons stalled reads) closes
    its datasets now, in a live interpreter: left to the end of the thread, GDAL would
    close them while Python clears the thread's state, at interpreter exit a crash."""
    tiles: Optional[TileCache] = getattr(_local, "tiles", None)
    if tiles is not None and tiles.done and getattr(_local, "caching", False):
        close_datasets()


def _sleep(seconds: float, cancelled: Optional[Callable[[], bool]]) -> None:
    """Sleep, waking every 0.1 s to raise CancelledError once `cancelled()` is true."""
    end = time.monotonic() + seconds
    while True:
        if cancelled is not None and cancelled():
            raise CancelledError()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(0.1, left))


PROBE_TIMEOUT = 5.0  # seconds for the one diagnostic request made after a failed read
_GENERIC = ("not recognized as a supported", "IReadBlock failed", "TIFFRead", "Range downloading",
            "HTTP response code: 30", "Read or write failed")


def _explain(href: str, reason: str) -> str:
    """GDAL's reason, made plain where GDAL's own words mislead; for http(s) hrefs one
    small bounded request finds out what the server really sent (never on success)."""
    if "HTTP response code: 30" in reason and " - " in reason:
        return f"redirected to a location that cannot be read ({reason.split(' - ', 1)[1]})"
    if not href.startswith(("http://", "https://")) or not any(g in reason for g in _GENERIC):
        return reason
    if current_options().get("GDAL_HTTP_PROXY"):
        return reason  # the probe talks to the host directly: never past the user's proxy
    found = _probe(href)
    return f"{found} ({reason})" if found else reason


def _probe(href: str, timeout: float = PROBE_TIMEOUT) -> str:
    """What a GET of the first bytes of `href` shows, without following redirects."""
    import http.client

    parts = urllib.parse.urlsplit(href)
    https = parts.scheme == "https"
    conn_cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
    deadline = time.monotonic() + timeout
    try:
        conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target or "/", headers={"Range": "bytes=0-15",
                                                        "User-Agent": "Clearsky QGIS plugin"})
            resp = conn.getresponse()
            head, slow = b"", False
            while len(head) < 16:
                left = deadline - time.monotonic()
                if left <= 0:
                    slow = True
                    break
                if conn.sock is not None:
                    conn.sock.settimeout(left)
                try:
                    chunk = resp.read1(16 - len(head))
                except TimeoutError:
                    slow = True
                    break
                if not chunk:
                    break
                head += chunk
            status = resp.status
            location = resp.getheader("Location") or ""
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError):
        return ""
    if slow:
        return (f"the server is too slow (it sent {len(head)} of 16 bytes in "
                f"{timeout:g} s)")
    if 300 <= status < 400:
        return f"redirected to {location.split(':', 1)[0] or 'an unknown'}:// location"
    if status == 200 and head:
        return ("the server ignores HTTP Range requests (it answered 200 with the whole "
                "file): Clearsky reads only parts of remote files and refuses such a server")
    if status in (200, 206) and head and not head.startswith((b"II*\0", b"MM\0*", b"II+\0",
                                                               b"MM\0+")):
        return "not a GeoTIFF (only GeoTIFF/COG assets are read)"
    return ""


# --- reads ----------------------------------------------------------------------------

# Kernels that give the same pixels without a nodata mask when the source window holds no
# nodata pixel: GDAL then takes its unmasked kernels, about 3x faster for bilinear on
# uint16 (the warped benchmark's reads). Cubic and the others differ at the window's edge.
_SAME_UNMASKED = frozenset({Resampling.nearest, Resampling.bilinear, Resampling.average})


def _crs(crs) -> CRS:
    return crs if isinstance(crs, CRS) else CRS.from_user_input(crs)


def _operation(src_crs: CRS, dst_crs: CRS, src_bounds: Tuple[float, float, float, float]
               ) -> Dict[str, str]:
    """The warp's coordinate operation, chosen once per CRS pair (`operations`); none
    within one CRS (GDAL would then build a reprojection for a no-op)."""
    if src_crs == dst_crs:
        return {}

    def footprint() -> Tuple[float, float, float, float]:
        west, south, east, north = bounds_in(src_crs, _WGS84, src_bounds)
        pad = 0.01  # degrees: the footprint's edges between the 21 points per side
        return west - pad, south - pad, east + pad, north + pad

    return operations.warp_options(src_crs.to_wkt(), dst_crs.to_wkt(), footprint)


_WGS84 = CRS.from_epsg(4326)


def bounds_in(src_crs, dst_crs, bounds: Tuple[float, float, float, float]
              ) -> Tuple[float, float, float, float]:
    """`bounds` (in `src_crs`) as bounds in `dst_crs`, from 21 points per edge.

    rasterio's transform_bounds builds a new PROJ transformation at every call: about 70 ms
    between a UTM zone and EPSG:3035, once per read (a third of a warped run's CPU; pyproj
    transformers cost as much again in every new thread). rasterio's point transform goes
    through GDAL's cache of transformations: about 1 ms."""
    if _crs(src_crs) == _crs(dst_crs):
        return tuple(bounds)  # type: ignore[return-value]
    return _extent(_outline(src_crs, dst_crs, bounds))


def _extent(outline: Tuple[np.ndarray, np.ndarray]) -> Tuple[float, float, float, float]:
    xs, ys = outline
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def _outline(src_crs, dst_crs, bounds: Tuple[float, float, float, float]
             ) -> Tuple[np.ndarray, np.ndarray]:
    """The edges of `bounds` (in `src_crs`), 21 points each, as a ring in `dst_crs`."""
    x0, y0, x1, y1 = bounds
    t = np.linspace(0.0, 1.0, 21)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(21, x1), x1 - (x1 - x0) * t,
                         np.full(21, x0)])
    ys = np.concatenate([np.full(21, y0), y0 + (y1 - y0) * t, np.full(21, y1),
                         y1 - (y1 - y0) * t])
    a, b = _crs(src_crs), _crs(dst_crs)
    if a == b:
        return xs, ys
    tx, ty = transform(a, b, xs.tolist(), ys.tolist())
    return np.asarray(tx, float), np.asarray(ty, float)


def _pixel_size_in(grid: Grid, crs: CRS) -> float:
    """Size of the grid's central pixel measured in `crs` units (the finer of x and y)."""
    col, row = grid.width / 2.0, grid.height / 2.0
    xs, ys = zip(*(grid.transform * p for p in ((col, row), (col + 1, row), (col, row + 1))))
    tx, ty = transform(_crs(grid.crs), crs, list(xs), list(ys))
    return min(math.hypot(tx[1] - tx[0], ty[1] - ty[0]), math.hypot(tx[2] - tx[0], ty[2] - ty[0]))


# An overview up to 1 % coarser than the output still counts as fine enough: across UTM
# zones the output pixel measured in the source CRS is a fraction of a percent off the
# nominal size, and varies with the part of the grid a read covers.
OVERVIEW_SLACK = 0.01


def choose_overview(width: int, height: int, res: float, factors: Sequence[int],
                    target_res: float) -> Optional[int]:
    """Index of the coarsest overview not coarser than target_res (None: full resolution)."""
    best = None
    for i, f in enumerate(factors):
        ov_w, ov_h = -(-width // f), -(-height // f)  # GDAL rounds overview sizes up
        ov_res = res * max(width / ov_w, height / ov_h)
        if ov_res <= target_res * (1 + OVERVIEW_SLACK):
            best = i
    return best


def _window(ds, bounds, margin: int, clip: bool) -> Optional[Window]:
    """Pixel window of ds covering bounds (in ds.crs), rounded outward, plus margin pixels."""
    inv = ~ds.transform
    corners = [(x, y) for x in (bounds[0], bounds[2]) for y in (bounds[1], bounds[3])]
    cols, rows = zip(*(inv * c for c in corners))
    c0, c1 = math.floor(min(cols) + 1e-9) - margin, math.ceil(max(cols) - 1e-9) + margin
    r0, r1 = math.floor(min(rows) + 1e-9) - margin, math.ceil(max(rows) - 1e-9) + margin
    if clip:
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, ds.width), min(r1, ds.height)
    if c1 <= c0 or r1 <= r0 or c1 <= 0 or r1 <= 0 or c0 >= ds.width or r0 >= ds.height:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


_KERNELS = frozenset({Resampling.bilinear, Resampling.cubic, Resampling.cubic_spline,
                      Resampling.lanczos})


# Source pixels a kernel reaches from a point, at the output's pixel size when that is the
# coarser (a fixed-width kernel, see `kernel_scale`; average takes the output pixel).
_REACH = {Resampling.bilinear: 1, Resampling.cubic: 2, Resampling.cubic_spline: 2,
          Resampling.lanczos: 3}


def _footprint(ds, band: int, outline: Tuple[np.ndarray, np.ndarray], window: Window,
               how: Resampling, target_m: float) -> Optional[Dict[int, Tuple[int, int]]]:
    """The tiles of `window` a warp onto the grid of `outline` samples: those meeting the
    outline (the grid's edges in the file's CRS) grown by the kernel's reach and 2 pixels
    for rounding and the warper's approximate transformer. None without a tile cache
    (the window is read whole)."""
    if getattr(_local, "tiles", None) is None:
        return None
    th, tw = (int(v) for v in ds.block_shapes[band - 1])
    reach = _REACH.get(how, 1) * max(1.0, target_m / max(ds.res))
    return _tiles_under(ds, outline, (th, tw), 2 + math.ceil(reach), window)


def _complete(src: np.ndarray, window: Window, keep: Optional[Dict[int, Tuple[int, int]]],
              ds, band: int) -> bool:
    """No pixel read is nodata: every pixel of the window, or of the kept tiles in it."""
    if keep is None:
        return bool(src.all())
    th, tw = (int(v) for v in ds.block_shapes[band - 1])
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    kept = sum((min((r + 1) * th, r1) - max(r * th, r0))
               * (min((last + 1) * tw, c1) - max(first * tw, c0))
               for r, (first, last) in keep.items())
    return int(np.count_nonzero(src)) == kept


def kernel_scale(how: Resampling, source_m: float, output_m: float) -> Dict[str, str]:
    """GDAL warp options that fix the resampling kernel's width from the pixel sizes.

    Left to itself, GDAL's warper widens a bilinear or cubic kernel by the ratio of the
    destination window to the source window it reads. Between two UTM zones the source
    window of a square grid is a rotated square's bounding box, so a 10 m to 10 m warp
    was blurred as if downsampled by 5 %, and a grid cropped to a thin strip far more;
    the same pixel also changed with the extent of the read. The ratio of the pixel
    sizes is what the kernel should follow (1 when the output is not coarser)."""
    if how not in _KERNELS or source_m <= 0 or output_m <= 0:
        return {}
    ratio = source_m / output_m
    scale = "1" if ratio >= 0.999 else f"{ratio:.4f}"
    return {"XSCALE": scale, "YSCALE": scale}


def reflectance_resampling(source_m: float, output_m: float) -> Resampling:
    """Resampling of reflectance from pixels of `source_m` onto pixels of `output_m`: the
    average of the source pixels when the output is coarser than 1.5x them, else bilinear.
    Chosen from the pixel size of the file (or overview) actually read, not the band's
    nominal one."""
    return Resampling.average if output_m > 1.5 * source_m else Resampling.bilinear


def _on_lattice(ds, grid: Grid, dst_crs: CRS, finer: bool) -> Optional[Tuple[int, int, int]]:
    """(col, row, k) when `grid` lies on `ds`'s own pixel lattice (same CRS, no rotation):
    `finer` False, every grid pixel is a k x k block of source pixels (k >= 1) and (col,
    row) is the grid's origin in source pixels; `finer` True, every source pixel is a
    k x k block of grid pixels (k >= 2) and (col, row) is the grid's origin in grid
    pixels from the source's. None when the grid needs a warp."""
    t, g = ds.transform, grid.transform
    if t.b or t.d or g.b or g.d or ds.crs != dst_crs:
        return None
    big, small = (t, g) if finer else (g, t)
    kx, ky = big.a / small.a, big.e / small.e
    k = int(round(kx))
    if k < (2 if finer else 1) or abs(kx - k) > 1e-6 * k or abs(ky - k) > 1e-6 * k:
        return None
    col, row = (g.c - t.c) / small.a, (g.f - t.f) / small.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(col)), int(round(row)), k


def _lattice(ds, grid: Grid, dst_crs: CRS) -> Optional[Tuple[int, int, int]]:
    """A grid of k x k source pixels per pixel: copied or decimated (`_lattice_read`)."""
    return _on_lattice(ds, grid, dst_crs, finer=False)


def _lattice_read(ds, path: str, level: Optional[int], band: int, grid: Grid,
                  lattice: Tuple[int, int, int], resampling: Resampling, raw: bool
                  ) -> Optional[np.ndarray]:
    """The grid's pixels from a grid on the source lattice: copied (k = 1) or decimated
    (nearest: the pixel under each output centre; average: the mean of the valid source
    pixels, rounded half up), exactly as GDAL's warper computes them but without it (it
    was half the CPU of a block). None when the resampling has no exact decimation here."""
    col, row, k = lattice
    if k > 1 and resampling not in (Resampling.nearest, Resampling.average):
        return None
    h, w = grid.shape
    dtype = np.dtype(ds.dtypes[band - 1])
    _check_alloc(h * k, w * k, dtype)
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + w * k, ds.width), min(row + h * k, ds.height)
    if (c0, r0, c1, r1) == (col, row, col + w * k, row + h * k):  # inside: no padding
        src = _read(ds, path, level, band, Window(c0, r0, c1 - c0, r1 - r0))
    else:
        src = np.zeros((h * k, w * k), dtype)
        if c1 > c0 and r1 > r0:
            src[r0 - row:r1 - row, c0 - col:c1 - col] = _read(
                ds, path, level, band, Window(c0, r0, c1 - c0, r1 - r0))
    if k == 1:
        return src
    if resampling is Resampling.nearest:
        return np.ascontiguousarray(src[k // 2::k, k // 2::k])
    blocks = src.reshape(h, k, w, k)
    total = blocks.sum(axis=(1, 3), dtype="float64")
    n = np.count_nonzero(blocks, axis=(1, 3)) if not raw else np.full((h, w), k * k)
    mean = np.where(n > 0, total / np.maximum(n, 1), 0.0)
    return np.floor(mean + 0.5).astype(dtype)


def _fine_lattice(ds, grid: Grid, dst_crs: CRS) -> Optional[Tuple[int, int, int]]:
    """A grid k times finer than the source (a 20 m SCL on 10 m): `_fine_lattice_read`."""
    return _on_lattice(ds, grid, dst_crs, finer=True)


def _fine_lattice_read(ds, path: str, level: Optional[int], band: int, grid: Grid,
                       lattice: Tuple[int, int, int]) -> np.ndarray:
    """Nearest neighbour onto a grid m times finer than the source, on its lattice: each
    source pixel repeated m x m, as GDAL's warper gives it (no output centre lies on a
    source pixel edge), without the warper."""
    col, row, m = lattice
    h, w = grid.shape
    dtype = np.dtype(ds.dtypes[band - 1])
    _check_alloc(h, w, dtype)
    r0, c0 = row // m, col // m  # source pixels under the first and last grid pixels
    r1, c1 = (row + h - 1) // m + 1, (col + w - 1) // m + 1
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r1, ds.height), min(c1, ds.width)
    if (rr0, cc0, rr1, cc1) == (r0, c0, r1, c1):  # inside: no padding
        src = _read(ds, path, level, band, Window(c0, r0, c1 - c0, r1 - r0))
    else:
        src = np.zeros((r1 - r0, c1 - c0), dtype)
        if rr1 > rr0 and cc1 > cc0:
            src[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = _read(
                ds, path, level, band, Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
    rows = (row + np.arange(h)) // m - r0
    cols = (col + np.arange(w)) // m - c0
    # one axis at a time: several times faster than one 2-D fancy index (src[rows, cols])
    return np.take(np.take(src, cols, axis=1), rows, axis=0)


def read_to_grid(
    href: str,
    grid: Grid,
    *,
    resampling: Optional[Resampling] = Resampling.bilinear,
    band: int = 1,
    use_overviews: bool = True,
    allow_local: bool = False,
    tries: int = READ_TRIES,
    backoff: float = READ_BACKOFF,
    cancelled: Optional[Callable[[], bool]] = None,
    raw: bool = False,
) -> Optional[np.ndarray]:
    """One band of `href` on `grid`, in the source dtype with 0 = nodata.

    Reads only the source window under the grid (plus 2 source pixels), from the coarsest
    overview that is still at least as fine as the grid. A grid on the source's own lattice
    (or an integer multiple of it) is copied or decimated without GDAL's warper, and with
    nearest resampling a grid an integer factor finer (a 20 m SCL on 10 m) has each source
    pixel repeated; any other grid is warped. Returns None when the source has nothing for
    the grid: no overlap, or only nodata there.
    SCL and other class rasters: pass use_overviews=False and Resampling.nearest.
    `resampling=None`: reflectance, resampled by `reflectance_resampling` from the pixel
    size of the level actually read.
    `cancelled` (e.g. progress.is_cancelled): checked before each try and during the
    back-off; raises CancelledError. A GDAL request in progress cannot be interrupted:
    it ends by its own time-outs (see HTTP_LOW_SPEED_TIME, HTTP_TIMEOUT).
    `raw`: 0 is a value, not nodata (cloud/snow probability layers, whose metadata says
    nodata 0 although 0 means 0 %): the pixels are warped without a nodata mask and an
    all-zero window is returned as zeros, not None (None only when nothing overlaps).
    Pixels outside the source are 0 either way.
    """
    path = gdal_path(href, allow_local=allow_local)
    dst_crs = _crs(grid.crs)
    nodata = None if raw else 0

    def read() -> Optional[np.ndarray]:
        ds = _open(path)
        outline = _outline(dst_crs, ds.crs, grid.bounds)
        src_bounds = _extent(outline)
        if _window(ds, src_bounds, 0, clip=True) is None:
            return None
        factors = ds.overviews(band) if use_overviews else []
        level = None
        target_m = _pixel_size_in(grid, ds.crs)
        if factors:
            level = choose_overview(ds.width, ds.height, max(ds.res), factors, target_m)
        if level is not None:
            ds = _open(path, level)
        how = resampling if resampling is not None else reflectance_resampling(
            max(ds.res), target_m)
        lattice = _lattice(ds, grid, dst_crs)
        if lattice is not None:
            got = _lattice_read(ds, path, level, band, grid, lattice, how, raw)
            if got is not None:
                return got if raw or got.any() else None
        fine = _fine_lattice(ds, grid, dst_crs) if how is Resampling.nearest else None
        if fine is not None:
            got = _fine_lattice_read(ds, path, level, band, grid, fine)
            return got if raw or got.any() else None
        win = _window(ds, src_bounds, 2, clip=True)
        if win is None:
            return None
        keep = _footprint(ds, band, outline, win, how, target_m)
        src = _read(ds, path, level, band, win, keep)
        if not raw and not src.any():
            return None
        dst = np.zeros(grid.shape, dtype=src.dtype)
        masked = nodata if nodata is not None and not (how in _SAME_UNMASKED
                                                       and _complete(src, win, keep, ds, band)) \
            else None
        reproject(
            source=src, destination=dst,
            src_transform=ds.window_transform(win), src_crs=ds.crs, src_nodata=masked,
            dst_transform=grid.transform, dst_crs=dst_crs, dst_nodata=masked,
            resampling=how, **kernel_scale(how, max(ds.res), target_m),
            **_operation(ds.crs, dst_crs, src_bounds),
        )
        return dst if raw or dst.any() else None

    return _retrying(href, path, read, tries, backoff, cancelled)


def native_grid(href: str, bounds: Tuple[float, float, float, float], bounds_crs: str, *,
                allow_local: bool = False, tries: int = READ_TRIES,
                backoff: float = READ_BACKOFF,
                cancelled: Optional[Callable[[], bool]] = None) -> Optional[Grid]:
    """The grid of the source's own pixels covering `bounds` (rounded outward, not clipped
    to the raster), from its header alone; None when the raster does not meet the bounds.
    Windows of this grid read with `read_native_window` tile it exactly (chunked reads)."""
    path = gdal_path(href, allow_local=allow_local)

    def read() -> Optional[Grid]:
        ds = _open(path)
        src_bounds = bounds_in(bounds_crs, ds.crs, bounds)
        full = _window(ds, src_bounds, 0, clip=False)
        if full is None or _window(ds, src_bounds, 0, clip=True) is None:
            return None
        return Grid(ds.crs.to_string(), ds.window_transform(full), int(full.width),
                    int(full.height))

    return _retrying(href, path, read, tries, backoff, cancelled)


def read_native_window(
    href: str,
    bounds: Tuple[float, float, float, float],
    bounds_crs: str,
    *,
    band: int = 1,
    allow_local: bool = False,
    margin: int = 0,
    tries: int = READ_TRIES,
    backoff: float = READ_BACKOFF,
    cancelled: Optional[Callable[[], bool]] = None,
) -> Optional[Tuple[np.ndarray, Affine, str]]:
    """The source's own pixels covering `bounds` (plus `margin` pixels), not resampled.

    Returns (array, window transform, source CRS). The window is aligned to the source
    grid and covers all of `bounds`: parts outside the raster are 0 (nodata). None when
    the raster does not overlap the bounds at all. `cancelled`: as for read_to_grid.
    """
    path = gdal_path(href, allow_local=allow_local)

    def read():
        ds = _open(path)
        src_bounds = bounds_in(bounds_crs, ds.crs, bounds)
        full = _window(ds, src_bounds, margin, clip=False)
        inner = _window(ds, src_bounds, margin, clip=True)
        if full is None or inner is None:
            return None
        _check_alloc(int(full.height), int(full.width), ds.dtypes[band - 1])
        out = np.zeros((int(full.height), int(full.width)), dtype=ds.dtypes[band - 1])
        r, c = int(inner.row_off - full.row_off), int(inner.col_off - full.col_off)
        out[r:r + int(inner.height), c:c + int(inner.width)] = _read(ds, path, None, band,
                                                                     inner)
        return out, ds.window_transform(full), ds.crs.to_string()

    return _retrying(href, path, read, tries, backoff, cancelled)


# --- output ---------------------------------------------------------------------------

def check_output_path(path: Path, overwrite: bool) -> None:
    """Raise OutputError with a plain message when `path` cannot be written."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise OutputError(
            f"The output must be a GeoTIFF ending in .tif or .tiff, not {path.name!r}."
        )
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"The folder {folder} does not exist: create it or choose another.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"The folder {folder} is not writable: choose another folder.")
    if path.is_dir():
        raise OutputError(f"{path} is a folder: choose a file name ending in .tif.")
    if path.exists() and not overwrite:
        raise OutputError(
            f"{path} already exists: choose another name or allow overwriting."
        )


def _predictor(dtype) -> str:
    return "3" if np.dtype(dtype).kind == "f" else "2"


class _GdalErrors:
    """Collects the GDAL errors (CE_Failure and worse) raised in this thread inside the block.

    rasterio turns most failed calls into exceptions, but errors GDAL reports while it
    flushes its block cache or closes a file (a full disk: "No space left on device") only
    reach its logging handler: such a file looks written. Without the GDAL Python bindings
    nothing is collected, and the verification after writing still catches a bad file.
    """

    def __init__(self) -> None:
        self.messages: List[str] = []
        self._gdal = None

    def __enter__(self) -> _GdalErrors:
        with contextlib.suppress(Exception):
            from osgeo import gdal

            gdal.PushErrorHandler(self._handler)
            self._gdal = gdal
        return self

    def _handler(self, level, number, message) -> None:
        if level >= 3:  # CE_Failure, CE_Fatal
            self.messages.append(" ".join(str(message).split()))

    def __exit__(self, *exc) -> None:
        if self._gdal is not None:
            with contextlib.suppress(Exception):
                self._gdal.PopErrorHandler()

    def check(self, what: str) -> None:
        if self.messages:
            raise OutputError(f"{what}: {'; '.join(dict.fromkeys(self.messages))}")


def _write_mode(path: Path) -> Optional[int]:
    """Permission bits the committed file must get: an existing file's, as when a program
    opens and rewrites it; None for a new file (GDAL creates it with 0666 minus the umask)."""
    with contextlib.suppress(OSError):
        return os.stat(path).st_mode & 0o7777
    return None


def _sum(array: np.ndarray):
    """An order-independent checksum of the values (exact for integers, NaN-free for floats)."""
    if array.dtype.kind == "f":
        return float(np.nansum(array, dtype=np.float64))
    return int(array.sum(dtype=np.int64 if array.dtype.kind == "i" else np.uint64))


def verify_cog(path: Path, *, count: Optional[int] = None, width: Optional[int] = None,
               height: Optional[int] = None, dtype=None, blocksize: Optional[int] = None,
               sums: Optional[Sequence] = None) -> None:
    """Raise OutputError unless `path` is a readable COG as expected.

    Checks: it opens as a GeoTIFF with LAYOUT=COG (set by GDAL's COG driver), it is tiled
    (`blocksize` x `blocksize` when given) with overviews when larger than one tile, it has
    the expected size, band count and dtype, every block of every band (and of every
    overview) decodes, and, with `sums`, each band's values add up to what was written.
    """
    path = Path(path)
    try:
        with _GdalErrors() as errors, rasterio.open(path, driver=ALLOWED_DRIVERS[0]) as ds:
            problems = []
            if ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG":
                problems.append("it is not laid out as a COG")
            if count is not None and ds.count != count:
                problems.append(f"it has {ds.count} bands, not {count}")
            if (width, height) != (None, None) and (ds.width, ds.height) != (width, height):
                problems.append(f"it is {ds.width} x {ds.height} pixels, not {width} x {height}")
            if dtype is not None and ds.dtypes[0] != np.dtype(dtype).name:
                problems.append(f"its pixels are {ds.dtypes[0]}, not {np.dtype(dtype).name}")
            shapes = set(ds.block_shapes)
            if blocksize and shapes != {(blocksize, blocksize)}:
                problems.append(f"its tiles are {sorted(shapes)}, not {blocksize} x {blocksize}")
            tiled = bool(ds.profile.get("tiled"))
            if not tiled:
                problems.append("it is not tiled")
            tile = max(ds.block_shapes[0]) if tiled else 512
            if max(ds.width, ds.height) > tile and not ds.overviews(1):
                problems.append("it has no overviews")
            if problems:
                raise OutputError(f"{path.name} failed verification: {'; '.join(problems)}.")
            got = [0] * ds.count
            for band in range(1, ds.count + 1):
                for _, window in ds.block_windows(band):
                    got[band - 1] += _sum(ds.read(band, window=window))
            factors = ds.overviews(1)
        errors.check(f"{path.name} failed verification")
        for level in range(len(factors)):  # each overview decodes too
            with rasterio.open(path, driver=ALLOWED_DRIVERS[0], overview_level=level) as ov:
                for band in range(1, ov.count + 1):
                    for _, window in ov.block_windows(band):
                        ov.read(band, window=window)
    except OutputError:
        raise
    except (RasterioError, CPLE_BaseError, OSError) as exc:
        raise OutputError(f"{path.name} failed verification: it cannot be read back "
                          f"({' '.join(str(exc).split())}).") from exc
    if sums is not None:
        for band, (want, have) in enumerate(zip(sums, got), start=1):
            same = (math.isclose(want, have, rel_tol=1e-9, abs_tol=1e-6)
                    if isinstance(want, float) else want == have)
            if not same:
                raise OutputError(f"{path.name} failed verification: band {band} does not hold "
                                  "the pixels written.")


PLAIN_PART_BYTES = 256 * 1024 * 1024  # uncompressed temporary part up to this size


class CogWriter:
    """Block-wise writer of a Cloud Optimized GeoTIFF, atomic and with bounded memory.

    Blocks go into a hidden tiled temporary GTiff next to the output; `commit` converts it
    with GDAL's COG driver into a second temporary file, verifies that file (`verify_cog`:
    COG layout, every block of every band decodes, each band's checksum equals that of the
    blocks written) and only then renames it onto the output. Any GDAL error while writing
    (a full disk included) fails with OutputError. Leaving the context without commit, or
    any failure, removes the temporary files and leaves an existing output byte-identical.
    The output gets an existing file's permission bits, else 0666 minus the umask.
    """

    def __init__(self, path: Path, grid: Grid, count: int, dtype, nodata=0,
                 overwrite: bool = False, *, blocksize: int = 512, num_threads="ALL_CPUS") -> None:
        self.path = Path(path)
        check_output_path(self.path, overwrite)
        self.grid, self.count, self.dtype, self.nodata = grid, count, np.dtype(dtype), nodata
        self.blocksize, self.num_threads = blocksize, num_threads
        tag = uuid.uuid4().hex[:12]
        self._part = self.path.parent / f".{self.path.stem}.{tag}.part.tif"
        self._cog = self.path.parent / f".{self.path.stem}.{tag}.cog.tif"
        self._lock = threading.Lock()
        self._done = False
        self._sums: list = [0.0 if self.dtype.kind == "f" else 0] * count
        self._windows: List[Tuple[int, int, int, int]] = []
        self._overlap = False  # a block written twice: the checksums no longer apply
        tile = max(16, min(512, blocksize) // 16 * 16)
        # The COG driver decodes the part once more: a small part is left uncompressed (a
        # 2000 x 2000 x 5 uint16 mosaic written in 0.76 s instead of 1.20 s, medians of
        # scripts/cog_commit.py), a large one is compressed so that the disk holds it.
        plain = grid.width * grid.height * count * self.dtype.itemsize <= PLAIN_PART_BYTES
        packing = {} if plain else {"compress": "DEFLATE", "zlevel": 1,
                                    "predictor": _predictor(self.dtype)}
        try:
            self._ds = rasterio.open(
                self._part, "w", driver="GTiff", width=grid.width, height=grid.height,
                count=count, dtype=self.dtype.name, crs=_crs(grid.crs), transform=grid.transform,
                nodata=nodata, tiled=True, blockxsize=tile, blockysize=tile,
                interleave="band", bigtiff="IF_SAFER", sparse_ok=True, **packing,
            )
        except (RasterioError, CPLE_BaseError, OSError) as exc:
            self._cleanup()
            raise OutputError(f"Could not create a temporary file in {self.path.parent}: {exc}") \
                from exc

    def __enter__(self) -> CogWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._done:
            self.abort()

    def write(self, block_row_off: int, block_col_off: int, array: np.ndarray) -> None:
        """Write (count, h, w) (or (h, w) for one band) at the block's offset."""
        if self._done:
            raise OutputError("This writer is already closed.")
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        if array.shape[0] != self.count:
            raise ValueError(f"Expected {self.count} bands, got {array.shape[0]}")
        h, w = array.shape[1:]
        if (block_row_off < 0 or block_col_off < 0 or block_row_off + h > self.grid.height
                or block_col_off + w > self.grid.width):
            raise ValueError(
                f"Block {block_row_off, block_col_off, h, w} exceeds {self.grid.shape}"
            )
        data = array.astype(self.dtype, copy=False)
        with self._lock:
            try:
                with _GdalErrors() as errors:
                    self._ds.write(data, window=Window(block_col_off, block_row_off, w, h))
                errors.check(f"Could not write {self.path}")
            except OutputError as exc:
                self.abort()
                raise OutputError(f"{exc} {_free(self.path)}") from exc
            except (RasterioError, CPLE_BaseError, OSError) as exc:
                self.abort()
                raise OutputError(f"Could not write {self.path}: {exc}") from exc
            box_ = (block_row_off, block_col_off, block_row_off + h, block_col_off + w)
            if not self._overlap:
                self._overlap = any(r0 < box_[2] and box_[0] < r1 and c0 < box_[3]
                                    and box_[1] < c1 for r0, c0, r1, c1 in self._windows)
                self._windows.append(box_)
            for i in range(self.count):
                self._sums[i] += _sum(data[i])

    def commit(self, descriptions: Optional[List[str]] = None, tags: Optional[dict] = None,
               band_tags: Optional[List[dict]] = None, overview_resampling: str = "average",
               *, scales: Optional[Sequence[float]] = None,
               offsets: Optional[Sequence[float]] = None) -> Path:
        """Finish the COG and move it onto the output path; returns that path.

        band_tags: one dict per band; keys "scale" and "offset" set the band's scale/offset,
        the others become band metadata.
        """
        if self._done:
            raise OutputError("This writer is already closed.")
        mode = _write_mode(self.path)
        try:
            ds = self._ds
            with self._lock, _GdalErrors() as errors:
                if descriptions:
                    ds.descriptions = tuple(descriptions)
                if tags:
                    ds.update_tags(**{k: str(v) for k, v in tags.items()})
                scl = list(scales) if scales is not None else [1.0] * self.count
                off = list(offsets) if offsets is not None else [0.0] * self.count
                for i, bt in enumerate(band_tags or [], start=1):
                    bt = dict(bt)
                    scl[i - 1] = float(bt.pop("scale", scl[i - 1]))
                    off[i - 1] = float(bt.pop("offset", off[i - 1]))
                    if bt:
                        ds.update_tags(i, **{k: str(v) for k, v in bt.items()})
                if scales is not None or offsets is not None or band_tags:
                    ds.scales, ds.offsets = tuple(scl), tuple(off)
                ds.close()
            errors.check(f"Could not write {self.path} {_free(self.path)}")
            with _GdalErrors() as errors:
                rasterio.shutil.copy(  # DEFLATE level 3: a third of level 6's time, ~4 % larger
                    str(self._part), str(self._cog), driver="COG", COMPRESS="DEFLATE",
                    LEVEL=str(COG_DEFLATE_LEVEL),
                    PREDICTOR=_predictor(self.dtype), BLOCKSIZE=str(self.blocksize),
                    OVERVIEW_RESAMPLING=overview_resampling.upper(), BIGTIFF="IF_SAFER",
                    NUM_THREADS=str(self.num_threads),
                )
            errors.check(f"Could not write {self.path} {_free(self.path)}")
            self._part.unlink(missing_ok=True)  # free its space before the check reads
            try:
                verify_cog(self._cog, count=self.count, width=self.grid.width,
                           height=self.grid.height, dtype=self.dtype, blocksize=self.blocksize,
                           sums=None if self._overlap else self._sums)
            except OutputError as exc:
                raise OutputError(f"Could not write {self.path}: {exc} {_free(self.path)}") \
                    from exc
            if mode is not None:
                os.chmod(self._cog, mode)
            _fsync(self._cog)
            os.replace(self._cog, self.path)
            _fsync_dir(self.path.parent)
        except OutputError:
            self.abort()
            raise
        except (RasterioError, CPLE_BaseError, OSError) as exc:
            self.abort()
            raise OutputError(f"Could not write {self.path}: {exc}") from exc
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._cleanup()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; an existing output stays as it was."""
        self._done = True
        with contextlib.suppress(Exception):
            if not self._ds.closed:
                self._ds.close()
        self._cleanup()

    def _cleanup(self) -> None:
        for base in (self._part, self._cog):
            for p in (base, Path(f"{base}.aux.xml"), Path(f"{base}.ovr"),
                      Path(f"{base}.ovr.tmp"), Path(f"{base}.msk.ovr.tmp")):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


def _free(path: Path) -> str:
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(Path(path).parent).free
        return f"({free / 1e6:.1f} MB free in {Path(path).parent}: is the disk full?)"
    return ""


def _fsync(path: Path) -> None:
    """Flush the file's data to the disk: a full or failing disk shows here, not later."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_cog(path: Path, grid: Grid, array: np.ndarray, *, dtype=None, nodata=0,
              overwrite: bool = False,
              descriptions: Optional[List[str]] = None, tags: Optional[dict] = None,
              band_tags: Optional[List[dict]] = None, overview_resampling: str = "average",
              scales: Optional[Sequence[float]] = None,
              offsets: Optional[Sequence[float]] = None) -> Path:
    """Write a small in-memory (count, h, w) or (h, w) array as a COG in one go (clips)."""
    array = np.asarray(array, dtype=dtype)
    if array.ndim == 2:
        array = array[None]
    with CogWriter(path, grid, array.shape[0], array.dtype, nodata, overwrite) as w:
        w.write(0, 0, array)
        return w.commit(descriptions, tags, band_tags, overview_resampling,
                        scales=scales, offsets=offsets)
