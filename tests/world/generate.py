"""Build the offline archive: COGs + STAC JSON for every item of `World.items`.

    python -m world.generate --out DIR [--extent-km 12] [--seed 2024] [--block-size 512]
                             [--calendar june|year]

Layout (the contract with the servers in world.servers):
    <root>/manifest.json
    <root>/stac/collections/<collection>.json
    <root>/stac/items/<collection>.json              FeatureCollection
    <root>/data/<collection>/<item_id>/<asset>.tif   asset hrefs: __ASSET_BASE__/data/...
Same inputs give the same bytes; manifest.json is written last (a complete build has one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from .cog import write_cog
from .geography import Grid, Tile, points, to_lonlat
from .landscape import ALL_BANDS, RESOLUTION
from .passes import Pass
from .stac import assets_of, make_collection, make_item
from .truth import L2A, ItemInfo, World
from .weather import snow_probability

# The modules whose code decides the archive's bytes (servers and test helpers are not).
GENERATOR_MODULES = ("__init__.py", "cog.py", "generate.py", "geography.py", "landscape.py",
                     "passes.py", "stac.py", "truth.py", "weather.py")
VISUAL_MAX = 0.3  # reflectance 0..0.3 -> DN 1..255 in the `visual` asset
L2A_MAX_DN = 65535 - 1000


def generator_hash() -> str:
    """sha256 of the generator's source: archives built by other code get another key."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in GENERATOR_MODULES:
        h.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return h.hexdigest()


def to_dn(reflectance: np.ndarray, valid: np.ndarray, calibration: float = 1.0) -> np.ndarray:
    """sentinel-2-l2a DNs (offset removed): round(refl * 10000), 0 = nodata."""
    dn = np.clip(np.rint(reflectance * (10000.0 * calibration)), 1, L2A_MAX_DN)
    return np.where(valid, dn, 0).astype(np.uint16)


def to_visual(rgb: List[np.ndarray], valid: np.ndarray) -> np.ndarray:
    """3-band uint8 true colour: reflectance 0..0.3 -> 1..255, 0 = nodata."""
    out = [np.where(valid, np.clip(np.rint(1 + b * (254 / VISUAL_MAX)), 1, 255), 0) for b in rgb]
    return np.stack(out).astype(np.uint8)


def valid_half_plane(world: World) -> Polygon:
    """Lon/lat polygon east of the swath edge (where the swath-edge orbit has data)."""
    ys = np.array([-300_000.0, 300_000.0])
    xe = world.swath_edge_x(ys)
    lon, lat = to_lonlat([xe[0], 300_000.0, 300_000.0, xe[1]], [ys[0], ys[0], ys[1], ys[1]])
    return Polygon(list(zip(lon.tolist(), lat.tolist())))


def footprint(world: World, p: Pass, tile: Tile) -> Polygon:
    """Item geometry: the tile window minus the swath-edge wedge, CCW, 1e-8 degree precision."""
    poly = tile.footprint_wgs84()
    if p.swath_edge:
        poly = poly.intersection(valid_half_plane(world))
    poly = orient(poly, 1.0)
    return Polygon([(round(x, 8), round(y, 8)) for x, y in poly.exterior.coords])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_scene(world: World, pass_index: int, tile_id: str, infos: List[ItemInfo], root: Path,
                 block_size: int) -> Tuple[List[int], Dict[str, Dict[str, Tuple[int, str]]]]:
    """Write every item of one (pass, tile) in both collections.

    Returns the SCL class counts and, per item id, asset -> (size, sha256).
    """
    p, t = world.passes[pass_index], world.tile(tile_id)
    w = world.weather[pass_index]
    pts, valid, sky = {}, {}, {}
    for res in (10, 20, 60):  # every band at its own resolution, as Earth Search has them
        tr, shape = t.grid(res)
        pts[res] = points(Grid(t.crs, tr, shape))
        valid[res] = (pts[res].x >= world.swath_edge_x(pts[res].y) if p.swath_edge
                      else np.ones(pts[res].shape, bool))
        sky[res] = w.sky(pts[res])
    pts20, valid10, valid20 = pts[20], valid[10], valid[20]
    observed = {b: world._observe(b, p, pts[RESOLUTION[b]], sky[RESOLUTION[b]])
                for b in ALL_BANDS}
    scl = world._scl(p, pts20, valid20, sky[20])
    counts = np.bincount(scl.ravel(), minlength=12).tolist()

    files: Dict[str, Dict[str, Tuple[int, str]]] = {}
    shared: Dict[Tuple[str, float], Path] = {}  # identical assets are written once, then copied
    for info in infos:
        folder = root / "data" / info.collection / info.id
        written = {}
        dns = {b: to_dn(observed[b], valid[RESOLUTION[b]], info.calibration) for b in ALL_BANDS}
        for b in ALL_BANDS:
            ok = valid[RESOLUTION[b]]
            arr = dns[b] if info.collection == L2A else np.where(ok, dns[b] + 1000, 0)
            write_cog(folder / f"{b}.tif", arr.astype(np.uint16), t.grid(RESOLUTION[b])[0],
                      t.epsg, block_size=block_size, resampling="AVERAGE")
        for key in ("scl", "visual"):
            target = folder / f"{key}.tif"
            src = shared.get((key, info.calibration))
            if src is not None:
                shutil.copyfile(src, target)
            elif key == "scl":
                write_cog(target, scl, t.transform20, t.epsg, block_size=block_size,
                          resampling="NEAREST")
            else:
                rgb = [dns[b] / 10000.0 for b in ("red", "green", "blue")]
                write_cog(target, to_visual(rgb, valid10), t.transform10, t.epsg,
                          block_size=block_size, resampling="AVERAGE", rgb=True)
            shared.setdefault((key, info.calibration), target)
        write_probabilities(world, pass_index, pts20, scl, folder, t, block_size, info.collection)
        for key in assets_of(info.collection):
            path = folder / f"{key}.tif"
            written[key] = (path.stat().st_size, _sha256(path))
        files[info.id] = written
    return counts, files


def write_probabilities(world: World, pass_index: int, pts20, scl: np.ndarray, folder: Path,
                        t: Tile, block_size: int, collection: str) -> None:
    """cloud.tif and snow.tif (20 m uint8 %, nodata 0 in the metadata although 0 is 0 %,
    averaged overviews as a careless reader would use) for sentinel-2-c1-l2a items."""
    if collection == L2A:
        return
    cloud = world.misses[pass_index].cloud_probability(scl, pts20)
    snow = snow_probability(world.weather[pass_index].snow_cover(pts20), pts20.shape)
    snow[scl == 0] = 0
    for key, arr in (("cloud", cloud), ("snow", snow)):
        write_cog(folder / f"{key}.tif", arr, t.transform20, t.epsg, block_size=block_size,
                  resampling="AVERAGE")


def _render_job(args):
    return args[1], args[2], render_scene(*args)


def build_archive(root: Path, world: World, block_size: int = 512,
                  workers: Optional[int] = None) -> Path:
    """Write the whole archive into `root` (created; must be empty or missing) and return it.

    `workers` processes render scenes in parallel (default 2; 1 renders in this process).
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; build into a new folder")
    if block_size < 128 or block_size % 16:
        raise ValueError("block_size must be a multiple of 16 and at least 128 (GDAL COG)")
    infos = {c: world.items(c) for c in world.collections}
    jobs: Dict[Tuple[int, str], List[ItemInfo]] = {}
    for c in world.collections:
        for info in infos[c]:
            jobs.setdefault((info.pass_index, info.tile), []).append(info)
    order = sorted(jobs, key=lambda k: (k[1], k[0]))  # tile-major: grids stay cached
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    args = [(world, pi, tid, jobs[(pi, tid)], root, block_size) for pi, tid in order]
    results = {}
    if workers <= 1:
        for a in args:
            results[(a[1], a[2])] = render_scene(*a)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for pi, tid, res in pool.map(_render_job, args):
                results[(pi, tid)] = res

    (root / "stac" / "collections").mkdir(parents=True, exist_ok=True)
    (root / "stac" / "items").mkdir(parents=True, exist_ok=True)
    n_items = 0
    for c in world.collections:
        features = []
        for info in infos[c]:
            counts, files = results[(info.pass_index, info.tile)]
            p, t = world.passes[info.pass_index], world.tile(info.tile)
            features.append(make_item(info, p, t, footprint(world, p, t), counts, files[info.id]))
        n_items += len(features)
        _write_json(root / "stac" / "items" / f"{c}.json",
                    {"type": "FeatureCollection", "features": features})
        _write_json(root / "stac" / "collections" / f"{c}.json", make_collection(c, features))
    manifest = {
        "extent_km": world.extent_km, "seed": world.seed, "block_size": block_size,
        "generator": generator_hash(), "collections": list(world.collections), "items": n_items,
    }
    if world.calendar != "june":
        manifest["calendar"] = world.calendar
    _write_json(root / "manifest.json", manifest)
    return root


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def archive_size(root: Path) -> int:
    return sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file())


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m world.generate",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="new or empty folder")
    ap.add_argument("--extent-km", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--block-size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--calendar", default="june", choices=("june", "year"))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    root = build_archive(a.out, World(a.extent_km, a.seed, a.calendar), a.block_size, a.workers)
    manifest = json.loads((root / "manifest.json").read_text())
    print(f"wrote {manifest['items']} items, {archive_size(root) / 1e6:.1f} MB, to {root} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
