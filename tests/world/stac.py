"""STAC JSON shaped like Earth Search v1 (compare ../shared/real-stac/).

`sentinel-2-c1-l2a` follows rustac-es-v1-c1-13TDE (raw DNs, B02-style band names,
file:size/checksum); `sentinel-2-l2a` follows the mapchete-eo 2024 items
(offset already removed: earthsearch:boa_offset_applied true, yet raster:bands still say
offset -0.1, exactly as the real catalog does).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Dict, List, Sequence, Tuple

from shapely.geometry import Polygon, mapping

from .geography import Tile
from .passes import Pass
from .truth import C1, L2A, ItemInfo
from .weather import SUN_AZIMUTH, SUN_ELEVATION

ASSET_BASE = "__ASSET_BASE__"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
LICENSE_HREF = "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"
EXT = "https://stac-extensions.github.io"
SCL_NAMES = {0: "nodata_pixel", 1: "saturated_defective_pixel", 2: "dark_features",
             3: "cloud_shadow", 4: "vegetation", 5: "not_vegetated", 6: "water",
             7: "unclassified", 8: "medium_proba_clouds", 9: "high_proba_clouds",
             10: "thin_cirrus", 11: "snow_ice"}

# common name -> (Sentinel-2 band, title, centre wavelength, FWHM, gsd), as Earth Search has
# them (the sentinel-2-l2a titles name the band number: "Red edge 1 (band 5)").
BAND_INFO = {
    "blue": ("B02", "Blue", 0.49, 0.098, 10),
    "green": ("B03", "Green", 0.56, 0.045, 10),
    "red": ("B04", "Red", 0.665, 0.038, 10),
    "nir": ("B08", "NIR 1", 0.842, 0.145, 10),
    "coastal": ("B01", "Coastal", 0.443, 0.027, 60),
    "rededge1": ("B05", "Red Edge 1", 0.704, 0.019, 20),
    "rededge2": ("B06", "Red Edge 2", 0.74, 0.018, 20),
    "rededge3": ("B07", "Red Edge 3", 0.783, 0.028, 20),
    "nir08": ("B8A", "NIR 2", 0.865, 0.033, 20),
    "nir09": ("B09", "NIR 3", 0.945, 0.026, 60),
    "swir16": ("B11", "SWIR 1.6\u03bcm", 1.61, 0.143, 20),
    "swir22": ("B12", "SWIR 2.2\u03bcm", 2.19, 0.242, 20),
}
REFLECTANCE_ASSETS = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3",
                      "nir", "nir08", "nir09", "swir16", "swir22")
ASSETS = REFLECTANCE_ASSETS + ("scl", "visual")
PROBABILITY_ASSETS = ("cloud", "snow")  # sentinel-2-c1-l2a only, as Earth Search has them


def assets_of(collection: str) -> tuple:
    """The asset keys the archive writes for an item of `collection`."""
    return ASSETS + (PROBABILITY_ASSETS if collection == C1 else ())


def iso(dt: datetime) -> str:
    """Earth Search style UTC timestamp: 2024-06-03T10:20:51.024000Z."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _eo_band(common: str, collection: str) -> dict:
    name, title, wl, fwhm, _gsd = BAND_INFO[common]
    band = {"name": name if collection == C1 else common, "common_name": common}
    if collection == L2A:
        band["description"] = f"{title} (band {name[1:].lstrip('0')})"
    band.update({"center_wavelength": wl, "full_width_half_max": fwhm})
    return band


def asset_defs(collection: str) -> Dict[str, dict]:
    """Asset fields shared by every item (and the collection's item_assets)."""
    out = {}
    for common in REFLECTANCE_ASSETS:
        gsd = BAND_INFO[common][4]
        rb = {"nodata": 0, "data_type": "uint16", "spatial_resolution": gsd, "scale": 0.0001,
              "offset": -0.1}
        if collection == L2A:
            rb = {"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                  "spatial_resolution": gsd, "scale": 0.0001, "offset": -0.1}
        out[common] = {"type": COG_TYPE, "title": f"{BAND_INFO[common][1]} - {gsd}m",
                       "eo:bands": [_eo_band(common, collection)], "gsd": gsd,
                       "raster:bands": [rb], "roles": ["data", "reflectance"]}
    out["scl"] = {"type": COG_TYPE, "title": "Scene classification map (SCL)", "gsd": 20,
                  "raster:bands": [{"nodata": 0, "data_type": "uint8",
                                    "spatial_resolution": 20}],
                  "roles": ["data"] if collection == C1 else ["data", "reflectance"]}
    out["visual"] = {"type": COG_TYPE, "title": "True color image",
                     "eo:bands": [_eo_band(b, collection) for b in ("red", "green", "blue")],
                     "gsd": 10,
                     "raster:bands": [{"nodata": 0, "data_type": "uint8",
                                       "spatial_resolution": 10}] * 3,
                     "roles": ["visual"]}
    if collection == C1:  # raster:bands say nodata 0, although 0 means 0 % (the trap)
        for key, title in (("cloud", "Cloud Probabilities"), ("snow", "Snow Probabilities")):
            out[key] = {"type": COG_TYPE, "title": title, "gsd": 20,
                        "raster:bands": [{"nodata": 0, "data_type": "uint8",
                                          "spatial_resolution": 20}],
                        "roles": ["data", key]}
    return out


def _nums(values) -> list:
    """Integral floats as ints, as Earth Search writes transforms and bboxes."""
    return [int(v) if float(v).is_integer() else v for v in values]


def _extensions(collection: str) -> List[str]:
    names = (["eo/v1.1.0", "file/v2.1.0", "grid/v1.1.0", "mgrs/v1.0.0", "processing/v1.1.0",
              "projection/v1.1.0", "raster/v1.1.0", "sat/v1.0.0", "sentinel-2/v1.0.0"]
             if collection == C1 else
             ["grid/v1.1.0", "mgrs/v1.0.0", "processing/v1.1.0", "projection/v1.1.0",
              "sat/v1.0.0", "sentinel-2/v1.0.0", "raster/v1.1.0", "eo/v1.1.0"])
    return [f"{EXT}/{n}/schema.json" for n in names]


def _percentages(counts: Sequence[int]) -> Tuple[float, Dict[str, float]]:
    """eo:cloud_cover and the s2:*_percentage fields from SCL class counts."""
    total = sum(counts)
    valid = total - counts[0]
    pct = {f"s2:{SCL_NAMES[0]}_percentage": round(100.0 * counts[0] / total, 6)}
    for c in range(1, 12):
        pct[f"s2:{SCL_NAMES[c]}_percentage"] = round(100.0 * counts[c] / max(valid, 1), 6)
    cloud = 100.0 * (counts[8] + counts[9] + counts[10]) / max(valid, 1)
    return round(cloud, 6), pct


def make_item(info: ItemInfo, p: Pass, tile: Tile, footprint: Polygon, scl_counts: Sequence[int],
              files: Dict[str, Tuple[int, str]]) -> dict:
    """One STAC item. `files` maps asset -> (size, sha256 hex) of the written COG."""
    c = info.collection
    baseline = info.processing_baseline
    nbase = "N" + baseline.replace(".", "")
    generated = p.datetime + timedelta(hours=3, minutes=9, seconds=51)
    if info.sequence:
        generated += timedelta(days=42, hours=5, minutes=17)
    created = generated + timedelta(hours=1, minutes=12, seconds=7, microseconds=331000)
    datatake = p.datetime - timedelta(seconds=250)
    fac = "2APS" if p.letter == "A" else "2BPS"
    gen_s = f"{generated:%Y%m%dT%H%M%S}"
    sensing = f"S{p.datetime:%Y%m%dT%H%M%S}"
    absolute = f"A{p.absolute_orbit:06d}"
    cloud, pct = _percentages(scl_counts)
    centroid = footprint.centroid
    props = {
        "created": iso(created),
        "platform": p.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": cloud,
        "proj:epsg": tile.epsg,
        "proj:code": f"EPSG:{tile.epsg}",
        "proj:centroid": {"lat": round(centroid.y, 5), "lon": round(centroid.x, 5)},
        "mgrs:utm_zone": tile.utm_zone,
        "mgrs:latitude_band": tile.latitude_band,
        "mgrs:grid_square": tile.grid_square,
        "grid:code": f"MGRS-{tile.id}",
        "s2:degraded_msi_data_percentage": 0,
        **pct,
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": baseline,
        "s2:product_uri": (f"S2{p.letter}_MSIL2A_{datatake:%Y%m%dT%H%M%S}_{nbase}_"
                           f"R{p.relative_orbit:03d}_T{tile.id}_{gen_s}.SAFE"),
        "s2:generation_time": iso(generated),
        "s2:datatake_id": f"GS2{p.letter}_{datatake:%Y%m%dT%H%M%S}_{p.absolute_orbit:06d}_"
                          f"{nbase[0]}{baseline}",
        "s2:datatake_type": "INS-NOBS",
        "s2:datastrip_id": f"S2{p.letter}_OPER_MSI_L2A_DS_{fac}_{gen_s}_{sensing}_N{baseline}",
        "s2:reflectance_conversion_factor": 0.969994,
        "datetime": iso(info.datetime),
        "sat:relative_orbit": p.relative_orbit,
        "sat:absolute_orbit": p.absolute_orbit,
        "sat:orbit_state": "descending",
        "view:sun_azimuth": SUN_AZIMUTH,  # consistent with the shadows' offset
        "view:sun_elevation": SUN_ELEVATION,
    }
    tile_key = "s2:tile_id" if c == C1 else "s2:granule_id"
    props[tile_key] = (f"S2{p.letter}_OPER_MSI_L2A_TL_{fac}_{gen_s}_{absolute}_T{tile.id}_"
                       f"N{baseline}")
    if c == C1:
        props["processing:software"] = {"sentinel-2-c1-l2a-to-stac": "v2024.02.01"}
    else:
        path = (f"s3://sentinel-cogs/sentinel-s2-l2a-cogs/{tile.utm_zone}/{tile.latitude_band}/"
                f"{tile.grid_square}/{p.datetime.year}/{p.datetime.month}/{info.id}")
        props.update({"s2:sequence": str(info.sequence), "earthsearch:s3_path": path,
                      "earthsearch:boa_offset_applied": True,
                      "processing:software": {"sentinel2-to-stac": "0.1.1"}})
    props["updated"] = iso(created)

    assets = {}
    for key, base in asset_defs(c).items():
        res = base["gsd"]
        tr, (rows, cols) = tile.grid(res)
        xmin, ymin, xmax, ymax = tile.bounds
        asset = {"href": f"{ASSET_BASE}/data/{c}/{info.id}/{key}.tif", **base,
                 "proj:shape": [rows, cols],
                 "proj:transform": _nums([tr.a, tr.b, tr.c, tr.d, tr.e, tr.f]),
                 "proj:bbox": _nums([xmin, ymin, xmax, ymax])}
        if c == C1:
            size, sha = files[key]
            asset["file:checksum"] = "1220" + sha
            asset["file:size"] = size
        assets[key] = asset
    minx, miny, maxx, maxy = footprint.bounds
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": _extensions(c),
        "id": info.id,
        "collection": c,
        "bbox": [minx, miny, maxx, maxy],
        "geometry": mapping(footprint),
        "properties": props,
        # The STAC API adds self/parent/collection/root links (rustac serve appends its own, so
        # relative ones here would be served as duplicates that resolve to nowhere).
        "links": [{"rel": "license", "href": LICENSE_HREF}],
        "assets": assets,
    }


def make_collection(collection: str, items: Sequence[dict]) -> dict:
    """The collection document; its extent covers exactly the given items."""
    xs = [v for it in items for v in it["bbox"][0::2]]
    ys = [v for it in items for v in it["bbox"][1::2]]
    times = sorted(it["properties"]["datetime"] for it in items)
    item_assets = {}
    for key, d in asset_defs(collection).items():
        item_assets[key] = {k: v for k, v in d.items()}
    title = ("Sentinel-2 Collection 1 Level-2A" if collection == C1 else "Sentinel-2 Level-2A")
    return {
        "type": "Collection",
        "id": collection,
        "stac_version": "1.0.0",
        "stac_extensions": [f"{EXT}/item-assets/v1.0.0/schema.json",
                            f"{EXT}/raster/v1.1.0/schema.json", f"{EXT}/eo/v1.1.0/schema.json"],
        "title": title + " (Clearsky synthetic test archive)",
        "description": (f"Synthetic {title} scenes around south-east Berlin, June 2024, "
                        "shaped like Earth Search v1. Generated by the Clearsky test world."),
        "keywords": ["sentinel", "earth observation", "esa", "synthetic"],
        "license": "proprietary",
        "providers": [{"name": "ESA", "roles": ["producer"]},
                      {"name": "Clearsky test world", "roles": ["processor", "host"]}],
        "extent": {"spatial": {"bbox": [[min(xs), min(ys), max(xs), max(ys)]]},
                   "temporal": {"interval": [[times[0], times[-1]]]}},
        "summaries": {
            "platform": ["sentinel-2a", "sentinel-2b"],
            "constellation": ["sentinel-2"],
            "instruments": ["msi"],
            "gsd": [10, 20, 60],
            "eo:bands": [_eo_band(b, collection) for b in REFLECTANCE_ASSETS],
        },
        "item_assets": item_assets,
        "links": [{"rel": "license", "href": LICENSE_HREF, "title": "proprietary"}],
    }
