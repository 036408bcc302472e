"""The one parameter object shared by the dialog, the Processing algorithms and scripts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from pathlib import Path
from typing import FrozenSet, Optional, Tuple

from .aoi import Aoi
from .errors import InvalidParameterError
from .scene import BAND_RESOLUTION

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
DEFAULT_COLLECTION = "sentinel-2-c1-l2a"
DEFAULT_INVALID_SCL = frozenset({0, 1, 3, 8, 9, 10})


class Method(str, Enum):
    BEST = "best"  # best available pixel: first clear observation in scene order
    MEDIAN = "median"
    PERCENTILE = "percentile"


class OutputType(str, Enum):
    REFLECTANCE = "reflectance"  # uint16, reflectance x 10000, nodata 0
    VISUAL = "visual"  # 3-band uint8 true colour, stretch 0..0.3 -> 1..255, nodata 0


@dataclass
class SearchParams:
    """What to look for: enough for the search and the AOI cloud check."""

    aoi: Aoi
    start: date
    end: date
    catalog_url: str = EARTH_SEARCH
    collection: str = DEFAULT_COLLECTION
    max_scene_cloud: float = 80.0  # lenient, whole scene, eo:cloud_cover
    max_aoi_cloud: float = 50.0  # strict, SCL pixels inside the AOI
    invalid_scl: FrozenSet[int] = DEFAULT_INVALID_SCL
    dilation: int = 2  # in 20 m SCL pixels
    max_workers: int = 8  # concurrent range reads

    def validate(self) -> None:
        if self.end < self.start:
            raise InvalidParameterError(
                f"The end date {self.end} is before the start date {self.start}: "
                "swap them or pick a later end date."
            )
        for name in ("max_scene_cloud", "max_aoi_cloud"):
            value = getattr(self, name)
            if not 0 <= value <= 100:
                raise InvalidParameterError(
                    f"{name} must be a percentage from 0 to 100, not {value}."
                )
        bad = sorted(set(self.invalid_scl) - set(range(12)))
        if bad:
            raise InvalidParameterError(f"SCL classes run from 0 to 11; {bad} is not one.")
        if self.dilation < 0:
            raise InvalidParameterError("The cloud mask dilation cannot be negative.")
        if not self.catalog_url.startswith(("http://", "https://")):
            raise InvalidParameterError(
                "The catalog must be a STAC API URL starting with http(s)://, "
                f"not {self.catalog_url!r}."
            )
        if self.max_workers < 1:
            raise InvalidParameterError("max_workers must be at least 1.")


@dataclass
class MosaicParams(SearchParams):
    """Search parameters plus what to build and where to write it."""

    output: Optional[Path] = None
    report_csv: Optional[Path] = None  # default: <output stem>.report.csv (JSON beside it)
    bands: Tuple[str, ...] = ("red", "green", "blue")
    method: Method = Method.BEST
    percentile: float = 25.0
    target_date: Optional[date] = None  # best pixel tie-break; default: middle of the range
    count_band: bool = False
    source_band: bool = False
    target_crs: Optional[str] = None  # None: UTM zone of the AOI centroid
    resolution: float = 10.0  # in target CRS units
    clip_to_aoi: bool = True
    output_type: OutputType = OutputType.REFLECTANCE
    overwrite: bool = False
    scene_ids: Optional[FrozenSet[str]] = None  # restrict to these (user unticked others)
    block_size: int = 512  # output pixels per block side
    extra: dict = field(default_factory=dict)

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
        unknown = [b for b in self.bands if b not in BAND_RESOLUTION]
        if unknown:
            raise InvalidParameterError(
                f"Unknown band name(s) {', '.join(unknown)}; use common names: "
                + ", ".join(BAND_RESOLUTION)
            )
        if self.output_type is OutputType.VISUAL and tuple(self.bands) != ("red", "green", "blue"):
            raise InvalidParameterError(
                "The 8-bit true colour output needs the bands red, green, blue (in that order)."
            )
        if not 0 <= self.percentile <= 100:
            raise InvalidParameterError(
                f"The percentile must be from 0 to 100, not {self.percentile}."
            )
        if self.resolution <= 0:
            raise InvalidParameterError(f"The resolution must be positive, not {self.resolution}.")
        if self.source_band and self.method is not Method.BEST:
            raise InvalidParameterError("The source band exists only for best available pixel.")
        if self.block_size < 64:
            raise InvalidParameterError("block_size must be at least 64 pixels.")
