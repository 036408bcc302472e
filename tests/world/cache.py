"""The archive cache shared by the tests, the demo and the benchmarks: `.build/world/<key>`.

An archive is built once per (extent, seed, block size, calendar, generator source) and
reused; a build goes to a temp folder and is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .generate import generator_hash
from .servers import build_once, prune_archives

REPO = Path(__file__).resolve().parents[2]
BUILD_DIR = REPO / ".build" / "world"
KEEP_ARCHIVES = 5  # tests, demo, bench smoke and bench sizes; older generator versions go


def archive_key(extent_km: float, seed: int, block_size: int, calendar: str = "june") -> str:
    params = {"extent_km": extent_km, "seed": seed, "block_size": block_size,
              "generator": generator_hash()}
    if calendar != "june":  # the June archive keeps the key it always had
        params["calendar"] = calendar
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def cached_archive(world, block_size: int = 512) -> Path:
    """The archive of `world` (a `World`), built on first use."""
    from . import build_archive

    final = BUILD_DIR / archive_key(world.extent_km, world.seed, block_size, world.calendar)
    built = build_once(final, lambda tmp: build_archive(tmp, world, block_size=block_size))
    prune_archives(BUILD_DIR, keep=KEEP_ARCHIVES)
    return built
