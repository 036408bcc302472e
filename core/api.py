"""The engine's public entry points: what the dialog, Processing and scripts call."""

from .aoi import Aoi
from .clips import clear_clips
from .errors import CancelledError, ClearskyError
from .mosaic import build_mosaic, search_scenes
from .params import MosaicParams, SearchParams
from .progress import CallbackProgress, NullProgress, Progress
from .results import ClipsResult, MosaicResult, SearchResult

__all__ = [
    "Aoi", "CallbackProgress", "CancelledError", "ClearskyError", "ClipsResult", "MosaicParams",
    "MosaicResult", "NullProgress", "Progress", "SearchParams", "SearchResult", "build_mosaic",
    "clear_clips", "search_scenes",
]
