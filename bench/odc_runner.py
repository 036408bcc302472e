"""The odc-stac + xarray/dask side of a benchmark job: what a notebook user would write.

Runs only in .venv-bench. Same items, output grid, SCL rule (no dilation), GDAL options
and thread count as the Clearsky run it is compared with.
"""

from __future__ import annotations

import time
from typing import Dict, List

import dask
import numpy as np
import odc.stac
import pystac_client
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from shapely.geometry import box, mapping
from shapely.ops import transform as shp_transform

CHUNK = 2048  # dask chunk side (pixels): the common notebook choice for 10 m loads


def _chunk(spec: dict) -> int:
    return int(spec.get("chunk") or CHUNK)


def _configure(spec: dict) -> None:
    opts = {k: v for k, v in spec["gdal"].items() if k != "GDAL_CACHEMAX"}
    odc.stac.configure_rio(cloud_defaults=False, **opts)


def _aoi_wgs84(spec: dict):
    tr = Transformer.from_crs(spec["aoi"]["crs"], "EPSG:4326", always_xy=True)
    return shp_transform(tr.transform, box(*spec["aoi"]["bounds"]))


def _items(spec: dict, collections: List[str], ids) -> list:
    """The same items as Clearsky, found with pystac-client on the same STAC API."""
    client = pystac_client.Client.open(spec["stac_url"])
    search = client.search(
        collections=collections, intersects=mapping(_aoi_wgs84(spec)),
        datetime=f"{spec['start']}T00:00:00Z/{spec['end']}T23:59:59Z", limit=100,
    )
    wanted = set(ids)
    items = [i for i in search.items() if (i.collection_id, i.id) in wanted or i.id in wanted]
    return sorted(items, key=lambda i: (i.datetime, i.id))


def _geobox(spec: dict, resolution: float) -> GeoBox:
    g = spec["grid"]
    t = Affine(*g["transform"][:6])
    if resolution != abs(t.a):  # the same bounds at another pixel size (the SCL check)
        f = resolution / abs(t.a)
        t = t * Affine.scale(f)
        shape = (int(round(g["height"] / f)), int(round(g["width"] / f)))
    else:
        shape = (g["height"], g["width"])
    return GeoBox(shape, t, g["crs"])


def _reflectance_and_valid(ds, bands: List[str], invalid: List[int]):
    """Reflectance (band, time, y, x) and the validity mask: SCL rule, DN 0, negatives."""
    valid = ~ds["scl"].isin(invalid)
    layers = []
    for b in bands:
        dn = ds[b]
        refl = dn.astype("float32") * np.float32(1e-4) - np.float32(0.1)  # c1: offset -0.1
        valid = valid & (dn > 0) & (refl >= 0)
        layers.append(refl)
    return layers, valid


def mosaic(spec: dict) -> dict:
    _configure(spec)
    # N simultaneous requests = N dask threads: each task reads one chunk of one band of
    # one solar day, its files one after the other (the server log checks the figure).
    threads = int(spec["threads"])
    bands = list(spec["bands"])
    t0 = time.perf_counter()
    items = _items(spec, [spec["collection"]], spec["item_ids"])
    ds = odc.stac.load(
        items, bands=bands + ["scl"], geobox=_geobox(spec, spec["resolution"]),
        groupby="solar_day", chunks={"x": _chunk(spec), "y": _chunk(spec)},
        resampling={"*": "bilinear", "scl": "nearest"},
    )
    layers, valid = _reflectance_and_valid(ds, bands, spec["invalid"])
    if spec["case"] == "median":
        lazy = [r.where(valid).chunk({"time": -1}).median("time", skipna=True) for r in layers]
    else:  # best: first clear value per pixel, passes in Clearsky's order
        days = [str(t)[:10] for t in ds.time.values]
        order = [days.index(d) for d in spec["pass_order"] if d in days]
        lazy = []
        for r in layers:
            masked = r.where(valid).isel(time=order)
            first = masked.isel(time=0)
            for k in range(1, len(order)):
                first = first.fillna(masked.isel(time=k))
            lazy.append(first)
    with dask.config.set(scheduler="threads", num_workers=threads):
        values = dask.compute(*[x.data for x in lazy])
    out = np.stack([np.asarray(v, dtype="float32") for v in values])
    np.save(spec["out"] + ".npy", out)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "output": spec["out"] + ".npy", "shape": list(out.shape[1:]),
            "items": [i.id for i in items], "chunk": _chunk(spec)}


def _by_index(item, parsed, index: int) -> int:
    """One layer per item, in the order the items were given (groupby="id" re-sorts)."""
    return index


def cloudcheck(spec: dict) -> dict:
    """SCL loaded for the AOI at 20 m, one layer per item, then the invalid share per item."""
    _configure(spec)
    threads = int(spec["threads"])
    t0 = time.perf_counter()
    wanted = [tuple(x) for x in spec["scenes"]]
    items = _items(spec, sorted({c for c, _ in wanted}), wanted)
    search_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = odc.stac.load(items, bands=["scl"], geobox=_geobox(spec, 20.0), groupby=_by_index,
                       chunks={"x": _chunk(spec), "y": _chunk(spec)}, resampling="nearest")
    scl = ds["scl"]
    covered = (scl != 0).sum(("x", "y"))
    bad = scl.isin([c for c in spec["invalid"] if c != 0]).sum(("x", "y"))
    total = scl.sizes["x"] * scl.sizes["y"]
    with dask.config.set(scheduler="threads", num_workers=threads):
        covered, bad = dask.compute(covered.data, bad.data)
    seconds = time.perf_counter() - t0
    cloud: Dict[str, float] = {}
    coverage: Dict[str, float] = {}
    for item, n_cov, n_bad in zip(items, covered, bad):
        key = f"{item.collection_id}/{item.id}"
        coverage[key] = 100.0 * float(n_cov) / total
        cloud[key] = 100.0 * float(n_bad) / float(n_cov) if n_cov else None
    return {"seconds": seconds, "search_seconds": search_s, "scenes": len(items),
            "cloud": cloud, "coverage": coverage}
