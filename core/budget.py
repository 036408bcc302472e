"""The run's memory budget (`MEMORY_MB`) split into what each stage may hold.

Memory must follow the budget, not the work: the block side and the blocks in flight
come from the passes, bands and statistics of the composite, the AOI cloud check reads
in chunks sized from the scenes it checks at once, and decoded source tiles get a fixed
share (`io.TILE_SHARE`). A run the budget cannot serve at the smallest block is refused
with the figure to raise, before a pixel is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .errors import InvalidParameterError

MB = 1024 * 1024
BLOCK_SHARE = 0.5  # of the budget for the blocks in flight (tiles 0.25, reads the rest)
CHECK_SHARE = 0.5  # of the budget for the AOI check's chunks in flight (before any block)
MIN_SIDE = 16
SIDE_STEP = 16
CHECK_BYTES_PER_PIXEL = 24  # SCL, masks, dilation, probability layers of one 20 m pixel
MIN_CHUNK, MAX_CHUNK = 256, 2048
BEST_READS = 4  # band reads a best-pixel block holds at once (one pass's bands)
BEST_PER_BAND, BEST_FIXED = 36, 96  # bytes per pixel best pixel's compositing holds
BEST_FEATHER = 24  # and its feathering's weights over the halo (a 48 px block: 136-151 B
# per pixel at 1 band with 100 m, where 148 was allowed without this term)
PASSES_AHEAD = 16  # pass reads a stacked block holds before they join the stack (workers)


@dataclass(frozen=True)
class Blocks:
    side: int  # output pixels per block side
    in_flight: int  # blocks computed at once


def stack_bytes_per_pixel(passes: int, bands: int, stacked: bool,
                          feathered: bool = False) -> int:
    """Bytes one output pixel of a block holds while it is composited."""
    n, nb = max(1, passes), max(1, bands)
    if not stacked:  # best pixel (core.seams._best): its sums, weights and temporaries,
        # measured with tracemalloc at 107-112 (1 band) to 426-428 B (12 bands) whatever
        # the passes (one pass and the next's masks are held at a time), and the band
        # reads in flight
        return (BEST_PER_BAND * nb + BEST_FIXED + 4 * nb * BEST_READS
                + (BEST_FEATHER if feathered else 0))
    # the stack (the pass reads write into it), the masks per pass, one band's sorted
    # copy, its NaN mask and counts, the pass reads in flight (their 16-bit DNs, SCL and
    # masks; Sentinel-2 L2A bands are 16-bit, a float32 DN file would hold 2 more bytes
    # per band and a scratch band) and the count band
    held = 4 * n * nb + n + 4 * n + 3 * n + PASSES_AHEAD * (2 * nb + 12) + 64
    if feathered:  # weights per pass, the fading weights, the passes left out, temporaries
        held += 4 * n + 4 * n + n + 2 * n
    return held


def blocks_for(memory_mb: int, passes: int, bands: int, stacked: bool, largest: int = 512,
               worker_memory: Optional[int] = None, in_flight: int = 2,
               feathered: bool = False, grid_side: Optional[int] = None) -> Blocks:
    """Block side and blocks in flight that keep the blocks within the budget's share
    (and within a quarter of a Dask worker's memory when the cluster says).

    Two blocks in flight overlap one block's reads with the other's compositing; but
    when the budget allows the whole grid (`grid_side`, its longer side) as one block
    only alone, one block is chosen: every block reads every source tile it touches, and
    when the tiles of many passes outgrow the tile cache, each extra block fetches them
    again."""
    per_pixel = stack_bytes_per_pixel(passes, bands, stacked, feathered)
    budget = memory_mb * MB * BLOCK_SHARE
    if worker_memory:
        budget = min(budget * in_flight, worker_memory / 4 * in_flight)

    def side_for(n: int) -> int:
        return int(math.sqrt(budget / n / per_pixel)) // SIDE_STEP * SIDE_STEP

    for n in range(max(1, in_flight), 0, -1):
        side = side_for(n)
        if side >= MIN_SIDE:
            if (n > 1 and grid_side is not None and side < grid_side <= largest
                    and grid_side * grid_side * per_pixel <= budget):
                return Blocks(grid_side, 1)
            return Blocks(min(largest, side), n)
    need = math.ceil(MIN_SIDE * MIN_SIDE * per_pixel / BLOCK_SHARE / MB)
    raise InvalidParameterError(
        f"A memory budget of {memory_mb} MB cannot hold even a {MIN_SIDE} x {MIN_SIDE} pixel "
        f"block of {passes} pass(es) x {bands} band(s): raise MEMORY_MB to at least {need}, "
        "or shorten the dates (fewer passes) or choose fewer bands.")


def evened(blocks: Blocks, width: int, height: int) -> Blocks:
    """The same number of blocks along each side of a `width` x `height` grid, of even
    sides: a 600 px grid in 304 + 296 px blocks, not 512 + 88. A strip block goes through
    every pass's reads for a few rows, and the blocks in flight hold the full side's arrays
    (the benchmark's 6 km warped median peaked at 411 MB instead of 464)."""
    if max(width, height) <= blocks.side:
        return blocks  # one block

    def even(n_px: int) -> int:
        n = math.ceil(n_px / blocks.side)
        return math.ceil(math.ceil(n_px / n) / SIDE_STEP) * SIDE_STEP
    return Blocks(min(blocks.side, max(even(width), even(height))), blocks.in_flight)


def check_chunk(memory_mb: int, scenes_at_once: int, dilation: int = 0) -> int:
    """Side (20 m SCL pixels) of the AOI check's chunks so that the scenes checked at once
    stay within its share; the dilation keeps a few extra masks per pixel."""
    per_pixel = CHECK_BYTES_PER_PIXEL + 2 * max(0, dilation)
    side = math.sqrt(memory_mb * MB * CHECK_SHARE / max(1, scenes_at_once) / per_pixel)
    return int(max(MIN_CHUNK, min(MAX_CHUNK, side // SIDE_STEP * SIDE_STEP)))


def check_margin(margin_px: int, side: int, memory_mb: int, reads_at_once: int,
                 what: str) -> None:
    """Refuse a read margin (dilation plus shadow reach, in output pixels) that makes the
    windows read at once outgrow the budget: the message names the figures."""
    window = (side + 2 * margin_px) ** 2 * CHECK_BYTES_PER_PIXEL
    if window * max(1, reads_at_once) > memory_mb * MB * (1 - BLOCK_SHARE):
        raise InvalidParameterError(
            f"{what} reaches {margin_px} pixels around every {side} x {side} block: "
            f"{reads_at_once} mask windows of {window / MB:.0f} MB each would exceed the "
            f"memory budget of {memory_mb} MB. Lower DILATION, use a coarser resolution, "
            "or raise MEMORY_MB.")
