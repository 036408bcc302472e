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
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform, transform_bounds
from rasterio.windows import Window

from .errors import OutputError, ReadError
from .grid import Grid

try:  # rasterio's low-level GDAL errors (CPLE_HttpResponseError, ...)
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - very old or very new rasterio
    CPLE_BaseError = RasterioError

log = logging.getLogger(__name__)

READ_TRIES = 2  # attempts per read, on top of GDAL's own HTTP retries on 5xx
READ_BACKOFF = 0.5  # seconds before the second attempt; doubles each time
_PERMANENT = ("404", "No such file", "does not exist", "not recognized as a supported")
_CACHE_SIZE = 256  # open datasets kept per thread (a handle costs a few kB)


# --- GDAL environment -------------------------------------------------------------------

def gdal_options(max_workers: int = 8, **overrides) -> Dict[str, object]:
    """GDAL configuration for reading COGs over HTTP/S3; caches scale with the workers."""
    workers = max(1, int(max_workers))
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per open
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
        "GDAL_HTTP_MAX_RETRY": "3",  # GDAL retries 429/5xx itself, doubling the delay
        "GDAL_HTTP_RETRY_DELAY": "0.5",
        "GDAL_HTTP_TIMEOUT": "60",
        "GDAL_HTTP_CONNECTTIMEOUT": "15",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_INGESTED_BYTES_AT_OPEN": "16384",  # the COG header in one request
        # No per-handle VSI_CACHE: /vsicurl/ keeps one process-wide cache of fetched ranges,
        # and a per-handle cache would multiply memory by the many handles kept open.
        "VSI_CACHE": "FALSE",
        "CPL_VSIL_CURL_CACHE_SIZE": str(min(256, 16 * workers) * 1024 * 1024),
        # GDAL's cache of decoded blocks: each source block is decoded once or twice per run
        # (the /vsicurl/ cache keeps the compressed bytes), so a larger cache only grew the
        # peak memory with the AOI (bench: 1061 -> 697 MB at 20 km, same time).
        "GDAL_CACHEMAX": 64 * 1024 * 1024,  # bytes (an int)
        "AWS_NO_SIGN_REQUEST": "YES",  # public buckets only
        "GDAL_HTTP_USERAGENT": "Clearsky QGIS plugin",
    }
    options.update({k: v if k == "GDAL_CACHEMAX" else str(v) for k, v in overrides.items()})
    return options


# Process-wide settings that only the outermost gdal_env sets: re-setting them from every
# worker thread would flush GDAL's block cache each time.
_GLOBAL_ONLY = ("GDAL_CACHEMAX",)


_ACTIVE: List[Dict[str, object]] = []  # options of the gdal_env contexts entered, innermost last
_ACTIVE_LOCK = threading.Lock()


class _ClearskyEnv(rasterio.Env):
    """rasterio.Env that also publishes its options for worker threads (see ensure_env)."""

    def __enter__(self):
        result = super().__enter__()
        with _ACTIVE_LOCK:
            _ACTIVE.append(self._published)
        return result

    def __exit__(self, *exc):
        with _ACTIVE_LOCK, contextlib.suppress(ValueError):
            _ACTIVE.remove(self._published)
        return super().__exit__(*exc)


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


def init_worker(options: Optional[Dict[str, object]] = None) -> None:
    """ThreadPoolExecutor initializer: keeps a GDAL env open for the thread's lifetime and
    lets the thread cache open datasets (they close when the worker thread ends)."""
    _local.caching = True
    if not rasterio.env.hasenv():
        options = dict(options or current_options())
        for key in _GLOBAL_ONLY:
            options.pop(key, None)
        rasterio.Env(**options).__enter__()


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
    if href.startswith(("/vsicurl/", "/vsis3/")):
        return href
    if allow_local:
        return href[len("file://"):] if href.startswith("file://") else href
    raise ReadError(
        f"Refusing to read {href!r}: only http(s):// and s3:// assets can be read from a "
        "remote catalog."
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
    kwargs = {} if overview_level is None else {"overview_level": overview_level}
    if not getattr(_local, "caching", False):
        ds = rasterio.open(path, **kwargs)
        _transient().append(ds)
        return ds
    cache, key = _cache(), _cache_key(path, overview_level)
    ds = cache.get(key)
    if ds is not None and not ds.closed:
        cache.move_to_end(key)
        return ds
    ds = rasterio.open(path, **kwargs)
    cache[key] = ds
    while len(cache) > _CACHE_SIZE:
        _, old = cache.popitem(last=False)
        old.close()
    return ds


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
    if path.startswith("/vsi"):
        with contextlib.suppress(Exception):
            from osgeo import gdal  # same libgdal as rasterio on Linux distributions and QGIS

            gdal.VSICurlPartialClearCache(path)


def close_datasets() -> None:
    """Close the datasets cached by the calling thread."""
    cache = _cache()
    while cache:
        cache.popitem()[1].close()


def _retrying(href: str, path: str, func, tries: int, backoff: float):
    """Call func(); on a read failure retry with exponential back-off, then ReadError."""
    tries = max(1, int(tries))
    for attempt in range(1, tries + 1):
        try:
            with ensure_env():
                return func()
        except (RasterioError, CPLE_BaseError, OSError) as exc:
            _close_transient()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            _forget(path)
            if attempt == tries or any(p in reason for p in _PERMANENT):
                n = f"{attempt} tr{'y' if attempt == 1 else 'ies'}"
                raise ReadError(f"Could not read {href}: {reason} after {n}") from exc
            log.info("Read of %s failed (%s); retry %d of %d", href, reason, attempt, tries - 1)
            time.sleep(backoff * 2 ** (attempt - 1))
        finally:
            _close_transient()
    raise AssertionError("unreachable")  # pragma: no cover


# --- reads ----------------------------------------------------------------------------

def _crs(crs) -> CRS:
    return crs if isinstance(crs, CRS) else CRS.from_user_input(crs)


def _pixel_size_in(grid: Grid, crs: CRS) -> float:
    """Size of the grid's central pixel measured in `crs` units (the finer of x and y)."""
    col, row = grid.width / 2.0, grid.height / 2.0
    xs, ys = zip(*(grid.transform * p for p in ((col, row), (col + 1, row), (col, row + 1))))
    tx, ty = transform(_crs(grid.crs), crs, list(xs), list(ys))
    return min(math.hypot(tx[1] - tx[0], ty[1] - ty[0]), math.hypot(tx[2] - tx[0], ty[2] - ty[0]))


def choose_overview(width: int, height: int, res: float, factors: Sequence[int],
                    target_res: float) -> Optional[int]:
    """Index of the coarsest overview not coarser than target_res (None: full resolution)."""
    best = None
    for i, f in enumerate(factors):
        ov_w, ov_h = -(-width // f), -(-height // f)  # GDAL rounds overview sizes up
        ov_res = res * max(width / ov_w, height / ov_h)
        if ov_res <= target_res * (1 + 1e-6):
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


def _aligned_offset(ds, grid: Grid, dst_crs: CRS) -> Optional[Tuple[int, int]]:
    """(col, row) of the grid's origin in `ds` pixels when the grid lies on the source's
    own pixel grid (same CRS and pixel size, whole-pixel offset), else None."""
    t, g = ds.transform, grid.transform
    if t.b or t.d or g.b or g.d or not math.isclose(t.a, g.a) or not math.isclose(t.e, g.e):
        return None
    col, row = (g.c - t.c) / t.a, (g.f - t.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6 or ds.crs != dst_crs:
        return None
    return int(round(col)), int(round(row))


def _aligned_read(ds, band: int, grid: Grid, dst_crs: CRS) -> Optional[np.ndarray]:
    """The grid's pixels copied straight from `ds` when no resampling is needed, else None.

    Warping an aligned window is an identity for every resampling method, but GDAL's
    warper still costs more CPU than decoding: most tiles of a mosaic are in its own CRS.
    """
    offset = _aligned_offset(ds, grid, dst_crs)
    if offset is None:
        return None
    col, row = offset
    h, w = grid.shape
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + w, ds.width), min(row + h, ds.height)
    dst = np.zeros(grid.shape, dtype=ds.dtypes[band - 1])
    if c1 > c0 and r1 > r0:
        dst[r0 - row:r1 - row, c0 - col:c1 - col] = ds.read(
            band, window=Window(c0, r0, c1 - c0, r1 - r0))
    return dst


def read_to_grid(
    href: str,
    grid: Grid,
    *,
    resampling: Resampling = Resampling.bilinear,
    band: int = 1,
    use_overviews: bool = True,
    allow_local: bool = False,
    tries: int = READ_TRIES,
    backoff: float = READ_BACKOFF,
) -> Optional[np.ndarray]:
    """One band of `href` warped onto `grid`, in the source dtype with 0 = nodata.

    Reads only the source window under the grid (plus 2 source pixels), from the coarsest
    overview that is still at least as fine as the grid. Returns None when the source has
    nothing for the grid: no overlap, or only nodata there.
    SCL and other class rasters: pass use_overviews=False and Resampling.nearest.
    """
    path = gdal_path(href, allow_local=allow_local)
    dst_crs = _crs(grid.crs)

    def read() -> Optional[np.ndarray]:
        ds = _open(path)
        src_bounds = transform_bounds(dst_crs, ds.crs, *grid.bounds, densify_pts=21)
        if _window(ds, src_bounds, 0, clip=True) is None:
            return None
        factors = ds.overviews(band) if use_overviews else []
        level = None
        if factors:
            level = choose_overview(ds.width, ds.height, max(ds.res), factors,
                                    _pixel_size_in(grid, ds.crs))
        if level is not None:
            ds = _open(path, level)
        aligned = _aligned_read(ds, band, grid, dst_crs)
        if aligned is not None:  # the grid is the source's own pixel grid: no warp needed
            return aligned if aligned.any() else None
        win = _window(ds, src_bounds, 2, clip=True)
        if win is None:
            return None
        src = ds.read(band, window=win)
        if not src.any():
            return None
        dst = np.zeros(grid.shape, dtype=src.dtype)
        reproject(
            source=src, destination=dst,
            src_transform=ds.window_transform(win), src_crs=ds.crs, src_nodata=0,
            dst_transform=grid.transform, dst_crs=dst_crs, dst_nodata=0,
            resampling=resampling,
        )
        return dst if dst.any() else None

    return _retrying(href, path, read, tries, backoff)


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
) -> Optional[Tuple[np.ndarray, Affine, str]]:
    """The source's own pixels covering `bounds` (plus `margin` pixels), not resampled.

    Returns (array, window transform, source CRS). The window is aligned to the source
    grid and covers all of `bounds`: parts outside the raster are 0 (nodata). None when
    the raster does not overlap the bounds at all.
    """
    path = gdal_path(href, allow_local=allow_local)

    def read():
        ds = _open(path)
        src_bounds = transform_bounds(_crs(bounds_crs), ds.crs, *bounds, densify_pts=21)
        full = _window(ds, src_bounds, margin, clip=False)
        inner = _window(ds, src_bounds, margin, clip=True)
        if full is None or inner is None:
            return None
        out = np.zeros((int(full.height), int(full.width)), dtype=ds.dtypes[band - 1])
        r, c = int(inner.row_off - full.row_off), int(inner.col_off - full.col_off)
        out[r:r + int(inner.height), c:c + int(inner.width)] = ds.read(band, window=inner)
        return out, ds.window_transform(full), ds.crs.to_string()

    return _retrying(href, path, read, tries, backoff)


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


class CogWriter:
    """Block-wise writer of a Cloud Optimized GeoTIFF, atomic and with bounded memory.

    Blocks go into a hidden tiled temporary GTiff next to the output; `commit` converts it
    with GDAL's COG driver into a second temporary file and renames that onto the output.
    Leaving the context without commit removes the temporary files and leaves an existing
    output untouched.
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
        tile = max(16, min(512, blocksize) // 16 * 16)
        try:
            self._ds = rasterio.open(
                self._part, "w", driver="GTiff", width=grid.width, height=grid.height,
                count=count, dtype=self.dtype.name, crs=_crs(grid.crs), transform=grid.transform,
                nodata=nodata, tiled=True, blockxsize=tile, blockysize=tile,
                compress="DEFLATE", zlevel=1, predictor=_predictor(self.dtype),
                interleave="band", bigtiff="IF_SAFER", sparse_ok=True,
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
        with self._lock:
            self._ds.write(array.astype(self.dtype, copy=False),
                           window=Window(block_col_off, block_row_off, w, h))

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
        try:
            ds = self._ds
            with self._lock:
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
            rasterio.shutil.copy(
                str(self._part), str(self._cog), driver="COG", COMPRESS="DEFLATE",
                PREDICTOR=_predictor(self.dtype), BLOCKSIZE=str(self.blocksize),
                OVERVIEW_RESAMPLING=overview_resampling.upper(), BIGTIFF="IF_SAFER",
                NUM_THREADS=str(self.num_threads),
            )
            os.replace(self._cog, self.path)
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
