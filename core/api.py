"""The engine's public entry points: what the dialog, Processing and scripts call."""

from .aoi import Aoi
from .clips import clear_clips
from .errors import CancelledError, ClearskyError
from .estimate import Estimate, LimitError, estimate_mosaic
from .mosaic import build_mosaic, search_scenes
from .params import MosaicParams, SearchParams
from .progress import CallbackProgress, NullProgress, Progress
from .results import ClipsResult, MosaicResult, PeriodOutput, SearchResult

__all__ = [
    "Aoi", "CallbackProgress", "CancelledError", "ClearskyError", "ClipsResult", "Estimate",
    "LimitError", "MosaicParams", "MosaicResult", "NullProgress", "PeriodOutput", "Progress",
    "SearchParams", "SearchResult", "build_mosaic", "clear_clips", "estimate_mosaic",
    "search_scenes",
]
