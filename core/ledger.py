"""Resumable runs: a JSON-lines ledger of finished blocks and their GeoTIFF parts.

The ledger lives in a hidden folder beside the output, `.<stem>.parts/`, with one part per
finished block. A block is skipped on a later run only when its inputs hash (block grid,
scenes and hrefs, radiometry, AOI, composite and mask settings) matches and its part still
has the recorded checksum; anything else is computed again. The folder goes once the COG
is committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Optional

from .blocks import BlockResult, BlockTask, block_id, digest, read_part

LEDGER = "ledger.jsonl"


def parts_folder(output: Path) -> Path:
    return Path(output).parent / f".{Path(output).stem}.parts"


def _pixel_assets(assets) -> list:
    """The scene's assets but its preview thumbnail, which decides no pixel (left out, a
    ledger written before scenes had one still matches)."""
    return sorted((k, v) for k, v in assets.items() if k != "thumbnail")


def task_digest(task: BlockTask) -> str:
    """What decides the block's pixels, hashed (not `skip` or `part`, which do not)."""
    g = task.block.grid
    description = {
        "block": [task.block.row_off, task.block.col_off, g.height, g.width],
        "grid": [str(g.crs), list(g.transform)[:6]],
        "passes": [[p.pass_id, [[i, s.id, _pixel_assets(s.assets), s.radiometry.scale,
                                 s.radiometry.offset] for i, s in p.scenes]]
                   for p in task.passes],
        "aoi": None if task.aoi is None else task.aoi.wkb_hex,
        "composite": {k: getattr(v, "value", v) for k, v in asdict(task.composite).items()},
        "mask": [sorted(task.mask.invalid), task.mask.dilation],
    }
    if task.seams is not None:  # normalisation and feathering change the pixels too
        description["seams"] = repr(task.seams)
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Ledger:
    """Finished blocks of one output, read at the start and appended to as blocks finish."""

    def __init__(self, output: Path) -> None:
        self.folder = parts_folder(output)
        self.folder.mkdir(exist_ok=True)
        self.path = self.folder / LEDGER
        self.entries: Dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    entry = json.loads(line)
                    if entry["state"] == "done":
                        self.entries[entry["block"]] = entry
        self.skipped = 0

    def part_path(self, task: BlockTask) -> str:
        return str(self.folder / f"{block_id(task.block)}.tif")

    def finished(self, task: BlockTask) -> Optional[BlockResult]:
        """The block's result from an earlier run, when it is still valid."""
        entry = self.entries.get(block_id(task.block))
        if entry is None or entry.get("inputs") != task_digest(task):
            return None
        part = Path(entry.get("part", ""))
        if not part.is_file():
            return None
        try:
            data = read_part(str(part))
        except Exception:  # a damaged part is computed again
            return None
        if digest(data) != entry.get("sha256"):
            return None
        self.skipped += 1
        return BlockResult(
            block=task.block, data=data, aoi_pixels=int(entry["aoi_pixels"]),
            filled=int(entry["filled"]),
            contributed={int(k): int(v) for k, v in entry["contributed"].items()},
            broken={int(k): str(v) for k, v in entry["broken"].items()},
            part=str(part), sha256=entry["sha256"],
        )

    def record(self, task: BlockTask, result: BlockResult) -> None:
        entry = {
            "block": block_id(task.block), "inputs": task_digest(task), "state": "done",
            "part": result.part, "sha256": result.sha256, "aoi_pixels": result.aoi_pixels,
            "filled": result.filled, "contributed": result.contributed,
            "broken": result.broken,
        }
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
