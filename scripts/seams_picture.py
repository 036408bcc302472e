"""The README's before/after picture of seams (docs/images/seams.png), from the seamed
offline archive (tests/world/seams.py), served on loopback like the tests do.

    .venv/bin/python scripts/seams_picture.py

Best pixel and median of the same area, each with today's engine (NORMALISE off,
FEATHER_M 0) and with the defaults (NORMALISE on, FEATHER_M 200); every panel gets the
same strong contrast stretch so a few percent of brightness step shows.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "seams.png"


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clearsky.core.api import build_mosaic
    from clearsky.core.params import Method
    from world.mosaic_truth import mosaic_params, read_mosaic
    from world.seams import SeamedWorld, cached_seamed_archive
    from world.servers import ServedArchive

    world = SeamedWorld(6.0, 2024)
    panels = []
    with ServedArchive(cached_seamed_archive(world)) as served, \
            tempfile.TemporaryDirectory() as tmp:
        for method in (Method.BEST, Method.MEDIAN):
            for label, extra in (("today: NORMALISE off, FEATHER_M 0",
                                  dict(normalise=False, feather_m=0.0)),
                                 ("NORMALISE on, FEATHER_M 200 (defaults)",
                                  dict(normalise=True, feather_m=200.0))):
                path = Path(tmp) / f"{method.value}-{extra['normalise']}.tif"
                result = build_mosaic(mosaic_params(world, served, path, method=method,
                                                    count_band=False, **extra))
                data, *_ = read_mosaic(path)
                metric = json.loads(result.report_json.read_text())["seams"][0]["seam_metric"]
                panels.append((f"{method.label}, {label}\nseam metric {metric:.2f}", data))
    rgb = [np.moveaxis(d[:3][::-1] / 10000.0, 0, -1) for _, d in panels]  # blue,green,red
    rgb = [img[..., ::-1] for img in rgb]  # red, green, blue
    reference = rgb[1][rgb[1][..., 0] > 0]
    low, high = np.percentile(reference, 2, axis=0), np.percentile(reference, 98, axis=0)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.6), dpi=75)
    for ax, (title, data), img in zip(axes.ravel(), panels, rgb):
        shown = np.clip((img - low) / (high - low), 0, 1)
        shown[data[0] == 0] = 1.0
        ax.imshow(shown, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.suptitle("The same area of the seamed offline archive (every pass with its own gain, "
                 "offset and view-angle gradient),\nred/green/blue stretched from the 2nd to "
                 "the 98th percentile so that steps of a few percent show", fontsize=10)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
