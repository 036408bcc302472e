"""core.quicklook: the coarsest overview of a served COG as a small RGB array; proxy options."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from clearsky.core import io
from clearsky.core.errors import ReadError
from clearsky.core.quicklook import read_quicklook, to_rgb

SCENE = "sentinel-2-c1-l2a/S2A_T32UQD_20240603T102021_L2A"


def test_the_coarsest_overview_of_a_served_cog_within_the_size(served, assets):
    href = f"{served.assets.url}/data/{SCENE}/visual.tif"
    rgb = read_quicklook(href, max_side=64)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert 0 < max(rgb.shape[:2]) <= 64 and rgb.std() > 0
    with rasterio.open("/vsicurl/" + href) as ds:
        levels = ds.overviews(1)
        full = ds.width * ds.height
    assert levels  # the archive's COGs have overviews: only the coarsest is read
    read = sum(int(e.get("bytes") or 0) for e in assets.requests()
               if e["path"].endswith("/visual.tif"))
    assert read < full  # far less than one byte per full-resolution pixel


def test_only_remote_geotiffs_and_bad_files_say_why(served, tmp_path):
    with pytest.raises(ReadError):
        read_quicklook(str(tmp_path / "local.tif"))
    with pytest.raises(ReadError, match="No quicklook"):
        read_quicklook(f"{served.assets.url}/missing.tif")


def test_to_rgb_grey_and_reflectance_stretch():
    grey = to_rgb(np.full((1, 2, 2), 7, np.uint8))
    assert grey.shape == (2, 2, 3) and (grey == 7).all()
    refl = to_rgb(np.array([[[0, 1500, 3000, 9000]]] * 3, np.uint16))
    assert refl[0, :, 0].tolist() == [0, 127, 255, 255]


def test_proxy_options_keep_credentials_out_of_the_address():
    opts = io.proxy_options("http://bob:p%40ss@proxy.example:3128", "a.org,b.net")
    assert opts["GDAL_HTTP_PROXY"] == "proxy.example:3128"
    assert opts["GDAL_HTTP_PROXYUSERPWD"] == "bob:p@ss"
    assert io.proxy_options("") == {}
    assert "GDAL_HTTP_PROXYUSERPWD" not in io.proxy_options("http://proxy.example:8080")
