"""The parameter objects shared by the dialog, the Processing algorithms and scripts.

Defaults and ranges come from the options table (`core.options`), never from literals here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Dict, FrozenSet, Optional, Tuple

from .aoi import Aoi
from .errors import InvalidParameterError
from .executors import GUI_REFUSAL, parse_executor
from .options import (
    BY_FIELD,
    DEFAULT_COLLECTION,
    DEFAULT_INVALID_SCL,
    EARTH_SEARCH,
    CloudMask,
    Method,
    OutputType,
    default,
    parse_bands,
    parse_classes,
    parse_statistics,
)
from .periods import split_periods

__all__ = [
    "CloudMask", "DEFAULT_COLLECTION", "DEFAULT_INVALID_SCL", "EARTH_SEARCH", "Method",
    "MosaicParams",
    "OutputType", "SearchParams",
]


@dataclass
class SearchParams:
    """What to look for: enough for the search and the AOI cloud check."""

    aoi: Aoi
    start: date
    end: date
    catalog_url: str = default("catalog_url")
    collection: str = default("collection")
    max_scene_cloud: float = default("max_scene_cloud")  # lenient, whole scene, eo:cloud_cover
    max_aoi_cloud: float = default("max_aoi_cloud")  # strict, mask pixels inside the AOI
    invalid_scl: FrozenSet[int] = default("invalid_scl")
    dilation: int = default("dilation")  # in 20 m SCL pixels
    cloud_mask: CloudMask = default("cloud_mask")
    cloud_prob: float = default("cloud_prob")  # %, for the probability layers
    memory_mb: int = default("memory_mb")  # the run's memory budget (core.budget)
    max_workers: int = 16  # simultaneous HTTP requests of the whole run (every stage)
    # Sent with every STAC request (a QGIS auth configuration's headers); never written.
    catalog_headers: Dict[str, str] = field(default_factory=dict, repr=False)
    # The QGIS proxy ("http://[user:password@]host:port", "" = none; credentials only in
    # memory) and the hosts that bypass it ("a.org,b.net"): for STAC requests and GDAL reads.
    proxy: str = field(default="", repr=False)
    no_proxy: str = field(default="", repr=False)

    def validate(self) -> None:
        self.invalid_scl = parse_classes(self.invalid_scl)
        self._check_options()
        self.cloud_mask = CloudMask(self.cloud_mask)
        if self.cloud_mask is CloudMask.ML:
            from .mlmask import require  # lazy: the optional packages load only when chosen

            require()
        if self.end < self.start:
            raise InvalidParameterError(
                f"The end date {self.end} is before the start date {self.start}: "
                "swap them or pick a later end date."
            )
        if not self.catalog_url.startswith(("http://", "https://")):
            raise InvalidParameterError(
                "The catalog must be a STAC API URL starting with http(s)://, "
                f"not {self.catalog_url!r}."
            )
        if self.max_workers < 1:
            raise InvalidParameterError("max_workers must be at least 1.")

    def _check_options(self) -> None:
        """Every field that is a user-facing option is checked against the table's range."""
        for f in fields(self):
            if f.name in BY_FIELD:
                BY_FIELD[f.name].check(getattr(self, f.name))

    def search_only(self) -> SearchParams:
        """The search part of richer parameters (the dialog searches before it builds)."""
        return SearchParams(**{f.name: getattr(self, f.name) for f in fields(SearchParams)})


@dataclass
class MosaicParams(SearchParams):
    """Search parameters plus what to build and where to write it."""

    output: Optional[Path] = None
    report_csv: Optional[Path] = None  # default: <output stem>.report.csv (JSON beside it)
    write_report: bool = True  # False: no CSV/JSON report (Processing's "Skip output")
    bands: Tuple[str, ...] = default("bands")
    method: Method = default("method")
    percentile: float = default("percentile")
    # several statistics from one read ('p25', 'mean', 'std'); () = `method` decides
    statistics: Tuple[str, ...] = default("statistics")
    normalise: bool = default("normalise")  # relative radiometric normalisation (core.seams)
    feather_m: float = default("feather_m")  # metres of blending at source edges; 0 = hard
    target_date: Optional[date] = default("target_date")  # None: middle of the dates
    count_band: bool = default("count_band")
    source_band: bool = default("source_band")
    target_crs: Optional[str] = default("target_crs")  # None: UTM zone of the AOI centroid
    resolution: float = default("resolution")  # metres on the ground, whatever the CRS
    clip_to_aoi: bool = default("clip_to_aoi")
    output_type: OutputType = default("output_type")
    overwrite: bool = False
    scene_ids: Optional[FrozenSet[str]] = None  # restrict to these (user unticked others)
    block_size: int = 512  # output pixels per block side
    periods: str = default("periods")  # "", month, season or "a/b,c/d" (core.periods)
    max_read_gb: float = default("max_read_gb")  # refuse runs reading more (0: no limit)
    max_output_gib: float = default("max_output_gib")  # refuse larger outputs (0: no limit)
    executor: str = default("executor")  # "", tcp://host:port or local:N (core.executors)
    resume: bool = default("resume")
    gui: bool = False  # running inside the QGIS desktop: no worker processes

    def validate(self) -> None:
        super().validate()
        if self.output is None:
            raise InvalidParameterError("Choose an output file (.tif) for the mosaic.")
        self.output = Path(self.output)
        if self.report_csv is not None:
            self.report_csv = Path(self.report_csv)
        self.method = Method(self.method)
        self.output_type = OutputType(self.output_type)
        if not self.bands:
            raise InvalidParameterError("Choose at least one band.")
        self.bands = parse_bands(self.bands)
        if self.output_type is OutputType.VISUAL and tuple(self.bands) != ("red", "green", "blue"):
            raise InvalidParameterError(
                "The 8-bit true colour output needs the bands red, green, blue (in that order)."
            )
        self.statistics = parse_statistics(self.statistics)
        if self.source_band and (self.method is not Method.BEST or self.statistics):
            raise InvalidParameterError("The source band exists only for best available pixel.")
        if self.statistics and self.output_type is OutputType.VISUAL:
            raise InvalidParameterError(
                "Several statistics (PERCENTILES) need the reflectance output type: the 8-bit "
                "true colour output holds three bands only.")
        split_periods(self.periods or "", self.start, self.end)
        if self.block_size < 64:
            raise InvalidParameterError("block_size must be at least 64 pixels.")
        spec = parse_executor(self.executor)
        if spec.kind == "local" and self.gui:
            raise InvalidParameterError(GUI_REFUSAL)
