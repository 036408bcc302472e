"""The one table of user-facing options: key, label, default, range, help, advanced.

The parameter objects take their defaults from here, validation reads the ranges from
here, the Processing parameters and the dialog's remembered settings are built by looping
over it, and the README's parameter table is checked against it. Adding an option means:
a row here, the code that uses it, its widget, a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import Enum
from typing import Any, Dict, FrozenSet, Iterable, Optional, Tuple, Type

from .errors import InvalidParameterError
from .scene import BAND_RESOLUTION

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
DEFAULT_COLLECTION = "sentinel-2-c1-l2a"
DEFAULT_INVALID_SCL: FrozenSet[int] = frozenset({0, 1, 3, 8, 9, 10})
SCL_CLASSES = range(12)


class Method(str, Enum):
    """How the clear observations of a pixel become one value."""

    BEST = "best"  # best available pixel: first clear observation in pass order
    MEDIAN = "median"
    PERCENTILE = "percentile"

    @property
    def label(self) -> str:
        return _LABELS[self]


class OutputType(str, Enum):
    """What the output pixels hold."""

    REFLECTANCE = "reflectance"  # uint16, reflectance x 10000, nodata 0
    VISUAL = "visual"  # 3-band uint8 true colour, stretch 0..0.3 -> 1..255, nodata 0

    @property
    def label(self) -> str:
        return _LABELS[self]


class CloudMask(str, Enum):
    """Which layers make the cloud mask (the same rule for the AOI check and the mosaic)."""

    SCL = "scl"  # the scene classification alone
    PROB = "scl+prob"  # SCL or cloud (and snow) probability >= CLOUD_PROB
    SHADOW = "scl+prob+shadow"  # plus dark pixels under shadows projected along the sun
    ML = "ml"  # SCL plus the ukis-csmask cloud and shadow classes (optional packages)

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS: Dict[Enum, str] = {
    CloudMask.SCL: "SCL classes",
    CloudMask.PROB: "SCL + cloud probability",
    CloudMask.SHADOW: "SCL + cloud probability + projected shadows",
    CloudMask.ML: "SCL + machine-learning mask (ukis-csmask)",
    Method.BEST: "Best available pixel",
    Method.MEDIAN: "Median",
    Method.PERCENTILE: "Percentile",
    OutputType.REFLECTANCE: "Reflectance (uint16, x 10000)",
    OutputType.VISUAL: "True colour (8-bit RGB)",
}

# What each option's value is, for the adapters that build widgets and parameters.
NUMBER, INTEGER, BOOL, TEXT, DATE, CHOICE, BANDS, CLASSES, CRS, STATISTICS = (
    "number", "integer", "bool", "text", "date", "choice", "bands", "classes", "crs",
    "statistics")


@dataclass(frozen=True)
class Option:
    """One user-facing option, declared once."""

    field: str  # attribute of SearchParams / MosaicParams
    key: str  # Processing parameter name: a public contract, never renamed
    label: str
    kind: str
    default: Any
    help: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    advanced: bool = False
    optional: bool = False  # None is a valid value (an engine default applies)
    choices: Optional[Type[Enum]] = None  # for CHOICE: an Enum whose members have .label

    def check(self, value: Any) -> None:
        """InvalidParameterError when `value` is outside the option's range."""
        if value is None:
            if self.optional:
                return
            raise InvalidParameterError(f"{self.label} ({self.key}) needs a value.")
        if self.kind in (NUMBER, INTEGER) and (self.minimum, self.maximum) != (None, None):
            low = -float("inf") if self.minimum is None else self.minimum
            high = float("inf") if self.maximum is None else self.maximum
            if not (isinstance(value, (int, float)) and low <= value <= high):
                raise InvalidParameterError(
                    f"{self.label} ({self.key}) must be from {self.minimum:g} to "
                    f"{self.maximum:g}, not {value}." if self.maximum is not None else
                    f"{self.label} ({self.key}) must be at least {self.minimum:g}, not {value}."
                )
        elif self.kind == CHOICE and self.choices is not None:
            try:
                self.choices(value)
            except ValueError:
                names = ", ".join(m.value for m in self.choices)
                raise InvalidParameterError(
                    f"{self.label} ({self.key}) must be one of {names}, not {value!r}."
                ) from None

    def text(self, value: Any) -> str:
        """The value as a user types it (Processing strings, settings, the README)."""
        if value is None:
            return ""
        if self.kind == BANDS:
            return ",".join(value)
        if self.kind == CLASSES:
            return ",".join(str(c) for c in sorted(value))
        if self.kind == STATISTICS:
            return statistics_text(value)
        if isinstance(value, Enum):
            return str(value.value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    def parse(self, text: Any) -> Any:
        """The engine value of what a user typed; InvalidParameterError says what to fix."""
        if self.kind == BANDS:
            return parse_bands(text, self.key)
        if self.kind == CLASSES:
            return parse_classes(text, self.key)
        if self.kind == STATISTICS:
            return parse_statistics(text, self.key)
        if self.kind == DATE:
            return parse_date(text, self.key, self.optional)
        if self.kind == CHOICE and self.choices is not None:
            return self.choices(text)
        return text

    @property
    def index_of_default(self) -> int:
        """Position of the default among the choices (Processing enums are indexed)."""
        assert self.choices is not None
        return list(self.choices).index(self.default)


def parse_bands(text: Any, key: Optional[str] = None) -> Tuple[str, ...]:
    """'Red, NIR' -> ('red', 'nir'); unknown, missing or repeated names say what to type.

    `key` names the Processing parameter in messages (None: the engine's own wording)."""
    if isinstance(text, (tuple, list)):
        text = ",".join(text)
    bands = tuple(b.strip().lower() for b in str(text or "").replace(";", ",").split(",")
                  if b.strip())
    if not bands:
        where = f" in {key}" if key else ""
        raise InvalidParameterError(f"Give at least one band name{where}, e.g. red,green,blue.")
    unknown = [b for b in bands if b not in BAND_RESOLUTION]
    known = ", ".join(BAND_RESOLUTION)
    if unknown and key:
        raise InvalidParameterError(
            f"Unknown band name(s) in {key}: {', '.join(unknown)}. Use Sentinel-2 common "
            f"names: {known}.")
    if unknown:
        raise InvalidParameterError(
            f"Unknown band name(s) {', '.join(unknown)}; use common names: {known}")
    if len(set(bands)) != len(bands):
        raise InvalidParameterError(f"A band is listed twice{' in ' + key if key else ''}: "
                                    f"{text}.")
    return bands


def parse_classes(text: Any, key: str = "INVALID_SCL") -> FrozenSet[int]:
    """'0, 1, 3' -> frozenset({0, 1, 3}); SCL classes run from 0 to 11."""
    if isinstance(text, (set, frozenset, list, tuple)):
        items: Iterable[Any] = text
    else:
        items = [t for t in str(text or "").replace(";", ",").replace(" ", ",").split(",") if t]
    try:
        classes = frozenset(int(str(c).strip()) for c in items)
    except ValueError:
        raise InvalidParameterError(
            f"{key} takes SCL class numbers separated by commas, e.g. 0,1,3,8,9,10; "
            f"not {text!r}."
        ) from None
    bad = sorted(classes - set(SCL_CLASSES))
    if bad:
        raise InvalidParameterError(f"SCL classes run from 0 to 11; {bad} is not one ({key}).")
    return classes


MOMENTS = ("mean", "std")


def parse_statistics(text: Any, key: str = "PERCENTILES") -> Tuple[str, ...]:
    """'25, 50,75,mean' -> ('p25', 'p50', 'p75', 'mean'); empty -> () (not used).

    Numbers are percentiles (0-100); the words mean and std (population standard
    deviation) add those statistics. The order is the order of the output's bands."""
    if isinstance(text, (tuple, list)):
        tokens = [str(t) for t in text]
    else:
        tokens = str(text or "").replace(";", ",").replace(" ", ",").split(",")
    out = []
    for token in (t.strip().lower() for t in tokens):
        if not token:
            continue
        if token in MOMENTS:
            out.append(token)
            continue
        number = token[1:] if token.startswith("p") else token
        try:
            q = float(number)
        except ValueError:
            raise InvalidParameterError(
                f"{key} takes percentiles (0-100) and the words mean and std separated by "
                f"commas, e.g. 25,50,75; not {token!r}.") from None
        if not 0 <= q <= 100:
            raise InvalidParameterError(f"Percentiles in {key} run from 0 to 100, not {q:g}.")
        out.append(f"p{q:g}")
    if len(set(out)) != len(out):
        raise InvalidParameterError(f"A statistic is listed twice in {key}: {text}.")
    return tuple(out)


def statistics_text(statistics: Iterable[str]) -> str:
    """('p25', 'mean') -> '25,mean': what a user types."""
    return ",".join(s[1:] if s.startswith("p") else s for s in statistics)


def parse_date(text: Any, key: str, optional: bool = False) -> Optional[date]:
    if isinstance(text, date) or (text is None and optional):
        return text
    value = str(text or "").strip()
    if not value and optional:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise InvalidParameterError(
            f"Give a valid date in {key}, e.g. 2024-06-01; got {text!r}.") from None


_SCL_NAMES = ("0 nodata, 1 saturated/defective, 2 dark or topographic shadow, 3 cloud shadow, "
              "4 vegetation, 5 bare soil, 6 water, 7 unclassified, 8 cloud medium probability, "
              "9 cloud high probability, 10 thin cirrus, 11 snow")

OPTIONS: Tuple[Option, ...] = (
    Option("start", "START_DATE", "Start date", DATE, None,
           "First day of the search, inclusive (YYYY-MM-DD in qgis_process)."),
    Option("end", "END_DATE", "End date", DATE, None,
           "Last day of the search, inclusive; must not be before the start date."),
    Option("catalog_url", "CATALOG", "STAC catalog URL", TEXT, EARTH_SEARCH,
           "URL of a STAC API with Sentinel-2 L2A items. Default: Earth Search v1 "
           "(Element 84, free, no account)."),
    Option("collection", "COLLECTION", "Collection", TEXT, DEFAULT_COLLECTION,
           "STAC collection id. sentinel-2-c1-l2a (default) is the reprocessed Collection 1; "
           "sentinel-2-l2a the older one. Radiometric offsets are handled for both."),
    Option("max_scene_cloud", "MAX_SCENE_CLOUD", "Maximum scene cloud cover (%)", NUMBER, 80.0,
           "Lenient first filter on the whole-scene eo:cloud_cover of each ~110 km tile, in %. "
           "Keep it high: a cloudy scene can be clear over a small area.", 0, 100),
    Option("max_aoi_cloud", "MAX_AOI_CLOUD", "Maximum cloud over the AOI (%)", NUMBER, 50.0,
           "Strict filter: the share of the AOI's pixels that the cloud mask (INVALID_SCL, "
           "grown by DILATION) rejects, in %. Scenes above it are left out.", 0, 100),
    Option("invalid_scl", "INVALID_SCL", "SCL classes to mask", CLASSES, DEFAULT_INVALID_SCL,
           "Scene classification classes treated as unusable, comma-separated: "
           + _SCL_NAMES + ". Add 7 or 11 to mask unclassified pixels or snow.",
           advanced=True),
    Option("dilation", "DILATION", "Cloud mask dilation (20 m SCL pixels)", INTEGER, 2,
           "Grows the cloud, shadow and cirrus classes by this many 20 m pixels against the "
           "halos SCL misses; used by the AOI cloud check and the mosaic alike.", 0, 50,
           advanced=True),
    Option("cloud_mask", "CLOUD_MASK", "Cloud mask", CHOICE, CloudMask.SCL,
           "0 = SCL classes only; 1 = SCL or Sen2Cor cloud probability >= CLOUD_PROB (and snow "
           "probability when class 11 is masked), where the item has the cloud/snow assets "
           "(Earth Search sentinel-2-c1-l2a), else SCL with a note in the report; 2 = as 1 plus "
           "cloud shadows projected along the sun (view:sun_azimuth/elevation, clouds 0.5-5 km "
           "high): dark pixels under the projection are masked; 3 = SCL plus the ukis-csmask "
           "cloud and shadow classes (needs the optional packages ukis-csmask and "
           "onnxruntime; run on the scenes that pass the SCL check, at 20 m). The AOI cloud "
           "check and the mosaic use the same rule.", choices=CloudMask, advanced=True),
    Option("cloud_prob", "CLOUD_PROB", "Cloud probability threshold (%)", NUMBER, 40.0,
           "Cloud masks 1 and 2: a pixel whose cloud (or masked snow) probability is at least "
           "this, in %, is masked and grown by DILATION like an SCL cloud.", 0, 100,
           advanced=True),
    Option("method", "METHOD", "Compositing method", CHOICE, Method.BEST,
           "0 = best available pixel (the clearest pass nearest the target date fills each "
           "pixel first), 1 = median, 2 = percentile of the clear observations of each pixel.",
           choices=Method),
    Option("percentile", "PERCENTILE", "Percentile (method Percentile)", NUMBER, 25.0,
           "Percentile (0-100) for method 2.", 0, 100),
    Option("statistics", "PERCENTILES", "Percentiles and statistics from one read", STATISTICS,
           (),
           "Several statistics of the clear observations from one read, in band order: "
           "percentiles (0-100) and the words mean and std, e.g. 25,50,75 or 50,mean,std. "
           "When given it replaces METHOD's single statistic: the output has one band per "
           "statistic and band, named <band>_p25, <band>_p50, ..., <band>_mean, <band>_std "
           "(statistic by statistic: the first three bands are the first statistic's red, "
           "green, blue). Empty = METHOD decides.", optional=True),
    Option("bands", "BANDS", "Bands", BANDS, ("red", "green", "blue"),
           "Comma-separated Sentinel-2 common band names, in output order. Known names: "
           + ", ".join(BAND_RESOLUTION) + "."),
    Option("output_type", "OUTPUT_TYPE", "Output type", CHOICE, OutputType.REFLECTANCE,
           "0 = reflectance (uint16, reflectance x 10000, 0 = nodata), 1 = 8-bit true colour "
           "(needs bands red,green,blue; reflectance 0-0.3 stretched to 1-255).",
           choices=OutputType),
    Option("count_band", "COUNT_BAND", "Add a band counting clear observations", BOOL, False,
           "Add a band with the number of clear observations (passes) per pixel."),
    Option("source_band", "SOURCE_BAND", "Add a band naming the source scene", BOOL, False,
           "Best available pixel only: add a band with the number of the scene that gave each "
           "pixel (the numbers are listed in the file's CLEARSKY_SOURCES tag).", advanced=True),
    Option("normalise", "NORMALISE", "Normalise the passes' radiometry", BOOL, True,
           "Relative radiometric normalisation: before compositing, each pass gets a gain and "
           "offset per band, fitted robustly (trimmed least squares) from its clear pixels "
           "over the AOI against the median of the other passes there (read once, on a "
           "coarse grid of at most 320 x 320 pixels), so passes imaged under other haze or "
           "view angles match. Used when the mosaic has two passes or more; the report "
           "lists the coefficients.", advanced=True),
    Option("feather_m", "FEATHER_M", "Feather seams over (metres)", NUMBER, 200.0,
           "Near the edge of a pass's clear pixels (cloud holes, swath and tile edges) its "
           "weight falls off linearly over this distance, so neighbouring passes blend "
           "instead of meeting at a hard edge: best pixel fills from the next passes, "
           "median and percentiles blend in the statistic without the fading pass. 0 = "
           "hard edges.", 0, 5000, advanced=True),
    Option("target_date", "TARGET_DATE", "Target date (best pixel tie-break)", DATE, None,
           "Best available pixel: among passes equally clear over the AOI, the one nearest "
           "this date comes first. Empty = the middle of the dates.",
           advanced=True, optional=True),
    Option("target_crs", "TARGET_CRS", "Target CRS (empty: UTM zone of the AOI)", CRS, None,
           "CRS of the output; empty = the UTM zone of the AOI's centre.", optional=True),
    Option("resolution", "RESOLUTION", "Resolution (metres)", NUMBER, 10.0,
           "Pixel size in metres on the ground, whatever the target CRS: a geographic CRS "
           "gets the equivalent degrees at the AOI's latitude, a CRS in feet the "
           "equivalent feet.", 0.01, 100000),
    Option("clip_to_aoi", "CLIP_TO_AOI", "Clip to the AOI polygon", BOOL, True,
           "Pixels outside the AOI polygon are nodata; off = the whole bounding rectangle is "
           "filled."),
    Option("periods", "PERIODS", "Periods (one composite each)", TEXT, "",
           "Several composites from one search: empty = one over the dates; month = one per "
           "calendar month; season = one per meteorological season (DJF, MAM, JJA, SON), cut "
           "to the dates; or date ranges separated by commas, e.g. "
           "2024-06-01/2024-06-15,2024-06-16/2024-06-30. One file per period, named "
           "<output stem>_<period>.tif (e.g. mosaic_2024-JJA.tif), each with its STAC item, "
           "and one scene report.", optional=True),
    Option("max_read_gb", "MAX_READ_GB", "Refuse runs reading more than (GB)", NUMBER, 20.0,
           "The run is estimated after the search and refused before any reflectance is "
           "read when it would read more than this many GB (10^9 bytes) of source "
           "pixels; 0 = no limit.", 0, 1000000, advanced=True),
    Option("max_output_gib", "MAX_OUTPUT_GIB", "Refuse outputs larger than (GiB)", NUMBER, 2.0,
           "Refused likewise when the output files would hold more than this many GiB "
           "before compression (all periods together); 0 = no limit.", 0, 1000000,
           advanced=True),
    Option("memory_mb", "MEMORY_MB", "Memory budget (MB)", INTEGER, 1024,
           "Memory for the run's pixels: the block size, the blocks in flight, the AOI cloud "
           "check's chunks and the cache of decoded source tiles are derived from it: a "
           "larger AOI or more passes take more memory only until these shares are full, "
           "then longer. The process needs more besides (Python, GDAL, the catalog; a 20 km "
           "median with 384 MB peaked at 640-680 MB). A read it cannot serve "
           "(a dilation or shadow reach wider than a block allows, a file claiming absurd "
           "tiles) is refused with a message before anything is allocated.", 128, 1048576,
           advanced=True),
    Option("executor", "EXECUTOR", "Run blocks on (empty: this machine)", TEXT, "",
           "Where the blocks are computed: empty = this machine's threads; tcp://host:port = "
           "a running Dask scheduler whose workers have Clearsky's engine installed; "
           "local:N = N worker processes on this machine (headless runs only: qgis_process or "
           "Python). Needs dask and distributed.", advanced=True, optional=True),
    Option("resume", "RESUME", "Keep finished blocks so an interrupted run resumes", BOOL, False,
           "Keep each finished block on disk beside the output (a ledger and one GeoTIFF part "
           "per block, in a hidden folder removed on success): running again with the same "
           "parameters after an interruption skips the finished blocks. With a cluster the "
           "output folder must be shared storage.", advanced=True),
)

BY_FIELD: Dict[str, Option] = {o.field: o for o in OPTIONS}
BY_KEY: Dict[str, Option] = {o.key: o for o in OPTIONS}


def option(field: str) -> Option:
    return BY_FIELD[field]


def default(field: str) -> Any:
    """The engine default of an option (the dataclasses and every adapter use this)."""
    return BY_FIELD[field].default


def markdown_table(fields: Iterable[str]) -> str:
    """The README's table of these options (scripts/options_table.py writes it there)."""
    rows = ["| key | what it is | default | range |", "| --- | --- | --- | --- |"]
    for f in fields:
        o = BY_FIELD[f]
        if o.kind == CHOICE and o.choices is not None:
            shown = f"{o.index_of_default} ({o.default.value})"
        else:
            shown = o.text(o.default) or "(none)"
        if o.minimum is not None and o.maximum is not None:
            span = f"{o.minimum:g} to {o.maximum:g}"
        elif o.kind == CHOICE and o.choices is not None:
            span = ", ".join(f"{i} {m.value}" for i, m in enumerate(o.choices))
        else:
            span = ""
        key = f"`{o.key}`" + (" (advanced)" if o.advanced else "")
        rows.append(f"| {key} | {o.help} | {shown} | {span} |")
    return "\n".join(rows)
