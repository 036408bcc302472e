"""Issue 12: a STAC Item beside each COG, opened and checked with pystac (no network)."""

from __future__ import annotations

import json

import pystac
import pytest
import rasterio

from clearsky.core.api import build_mosaic
from world.mosaic_truth import mosaic_params


@pytest.fixture(scope="module")
def halves(world, served, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stac")
    params = mosaic_params(world, served, folder / "halves.tif", statistics="25,50,75",
                           periods="2024-06-01/2024-06-15,2024-06-16/2024-06-30")
    return params, build_mosaic(params)


def test_each_cog_has_a_stac_item_pystac_reads(halves, served):
    params, result = halves
    assert len(result.outputs) == 2
    for out in result.outputs:
        assert out.stac_item.name == out.output.stem + ".stac.json"
        item = pystac.Item.from_file(str(out.stac_item))
        assert item.id == out.output.stem
        assert item.datetime is None
        assert str(item.common_metadata.start_datetime.date()) == str(out.start)
        assert str(item.common_metadata.end_datetime.date()) == str(out.end)
        assert item.geometry["type"] in ("Polygon", "MultiPolygon") and len(item.bbox) == 4
        with rasterio.open(out.output) as ds:
            # written as projection v1.1 proj:epsg; newer pystac migrates it to proj:code
            code = item.properties.get("proj:code") or f"EPSG:{item.properties['proj:epsg']}"
            assert code == f"EPSG:{ds.crs.to_epsg()}"
            assert json.loads(out.stac_item.read_text())["properties"]["proj:epsg"] == \
                ds.crs.to_epsg()
            assert item.properties["proj:shape"] == [ds.height, ds.width]
            assert item.properties["proj:transform"] == pytest.approx(list(ds.transform)[:6])
            names = ds.descriptions
        asset = item.assets["data"]
        assert asset.href.endswith(out.output.name)
        assert asset.media_type == pystac.MediaType.COG
        bands = asset.extra_fields["raster:bands"]
        assert [b["name"] for b in bands] == list(names)
        assert all(b["nodata"] == 0 and b["data_type"] == "uint16" for b in bands)
        assert bands[0]["scale"] == 0.0001 and bands[0]["offset"] == 0.0
        assert bands[-1]["name"] == "count" and bands[-1]["scale"] == 1.0
        derived = [link for link in item.links if link.rel == "derived_from"]
        assert sorted(link.title for link in derived) == sorted(out.scenes)
        assert all(link.href.startswith(served.stac_url) for link in derived)
        assert item.properties["clearsky:parameters"]["statistics"] == ["p25", "p50", "p75"]
        assert item.properties["clearsky:period"] == out.name
        for ext in item.stac_extensions:
            assert ext.startswith("https://stac-extensions.github.io/")


def test_derived_from_links_fetch_the_source_items(halves, served):
    """Every derived_from link resolves on the STAC API to the item it names."""
    import urllib.request

    _, result = halves
    item = json.loads(result.outputs[1].stac_item.read_text())
    for link in [x for x in item["links"] if x["rel"] == "derived_from"][:3]:
        with urllib.request.urlopen(link["href"], timeout=10) as response:
            assert json.load(response)["id"] == link["title"]
