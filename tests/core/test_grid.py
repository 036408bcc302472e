"""Output grid: UTM choice, outward snapping, blocks, AOI masks."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer
from shapely.geometry import Polygon, box

from clearsky.core.aoi import Aoi
from clearsky.core.errors import InvalidParameterError
from clearsky.core.grid import Grid, geometry_mask, output_grid, utm_crs_for


def square(lon: float, lat: float, half: float = 0.01) -> Aoi:
    return Aoi(box(lon - half, lat - half, lon + half, lat + half))


@pytest.mark.parametrize(
    ("lon", "lat", "expected"),
    [
        (13.40, 52.52, "EPSG:32633"),  # Berlin
        (11.90, 48.10, "EPSG:32632"),  # just west of the 12E zone line
        (12.10, 48.10, "EPSG:32633"),  # just east of it
        (-43.20, -22.90, "EPSG:32723"),  # Rio de Janeiro, southern hemisphere
        (151.20, -33.87, "EPSG:32756"),  # Sydney
        (-0.13, 51.51, "EPSG:32630"),  # London
        (5.32, 60.39, "EPSG:32632"),  # Bergen: the Norway exception that MGRS follows
    ],
)
def test_utm_zone_of_the_aoi_centroid(lon, lat, expected):
    assert utm_crs_for(square(lon, lat)) == expected


def test_output_grid_snaps_outward_to_multiples_of_the_resolution():
    aoi = Aoi(box(13.31, 52.41, 13.52, 52.58))
    grid = output_grid(aoi, None, 20.0)
    assert grid.crs == "EPSG:32633"
    minx, miny, maxx, maxy = grid.bounds
    for v in grid.bounds:
        assert v / 20.0 == pytest.approx(round(v / 20.0), abs=1e-9)
    # Every vertex of a densely sampled AOI outline lies inside the grid, within one pixel
    # of its edges (outward snapping adds less than one pixel per side).
    ring = np.array(aoi.geometry.exterior.coords)
    dense = np.concatenate(
        [np.linspace(a, b, 200) for a, b in zip(ring[:-1], ring[1:])]
    )
    x, y = Transformer.from_crs(4326, 32633, always_xy=True).transform(dense[:, 0], dense[:, 1])
    assert minx <= x.min() < minx + 20 and maxx - 20 < x.max() <= maxx
    assert miny <= y.min() < miny + 20 and maxy - 20 < y.max() <= maxy
    assert (grid.width, grid.height) == (round((maxx - minx) / 20), round((maxy - miny) / 20))
    assert grid.resolution == 20.0 and grid.shape == (grid.height, grid.width)


def test_grids_of_different_aois_align():
    a = output_grid(square(13.40, 52.50), "EPSG:32633", 10.0)
    b = output_grid(square(13.4437, 52.5213, 0.02), "EPSG:32633", 10.0)
    dx = (a.transform.c - b.transform.c) / 10.0
    dy = (a.transform.f - b.transform.f) / 10.0
    assert dx == pytest.approx(round(dx), abs=1e-9) and dy == pytest.approx(round(dy), abs=1e-9)


def test_bounds_already_on_the_grid_are_kept():
    aoi = Aoi(box(400000, 5800000, 401230, 5801000), crs="EPSG:32633")
    grid = output_grid(aoi, "EPSG:32633", 10.0)
    assert grid.bounds == (400000, 5800000, 401230, 5801000)
    assert grid.shape == (100, 123)


def test_densified_bounds_catch_curved_edges():
    """Parallels curve in UTM: the bottom edge of a box across the central meridian sags
    south between its corners; the grid must still cover it."""
    aoi = Aoi(box(13.0, 60.0, 17.0, 60.5))
    grid = output_grid(aoi, "EPSG:32633", 100.0)
    to_utm = Transformer.from_crs(4326, 32633, always_xy=True)
    _, y = to_utm.transform(np.linspace(13.0, 17.0, 401), np.full(401, 60.0))
    assert grid.bounds[1] <= y.min()
    assert min(y[0], y[-1]) - y.min() > 1000  # the sag is real: over 10 pixels


def test_output_grid_in_other_crs_and_errors():
    aoi = square(13.4, 52.5)
    grid = output_grid(aoi, "EPSG:25833", 10.0)
    assert grid.crs == "EPSG:25833"
    with pytest.raises(InvalidParameterError, match="Unknown output CRS"):
        output_grid(aoi, "EPSG:999999", 10.0)
    with pytest.raises(InvalidParameterError, match="resolution"):
        output_grid(aoi, None, 0)
    with pytest.raises(InvalidParameterError, match="units"):
        output_grid(Aoi(box(0, 40, 30, 60)), "EPSG:4326", 0.00001)


def test_blocks_cover_the_grid_exactly_once_in_row_major_order():
    grid = Grid("EPSG:32633", Affine(10, 0, 1000, 0, -10, 9000), 1300, 1100)
    blocks = grid.blocks(512)
    assert len(blocks) == 3 * 3
    hits = np.zeros(grid.shape, dtype=int)
    for b in blocks:
        hits[b.row_off:b.row_off + b.grid.height, b.col_off:b.col_off + b.grid.width] += 1
        # the block's own grid maps its pixel (0, 0) to the parent's pixel (row_off, col_off)
        assert b.grid.transform * (0, 0) == grid.transform * (b.col_off, b.row_off)
        assert b.grid.crs == grid.crs and b.grid.resolution == grid.resolution
    assert (hits == 1).all()
    assert [(b.row_off, b.col_off) for b in blocks] == [
        (r, c) for r in (0, 512, 1024) for c in (0, 512, 1024)
    ]
    assert blocks[-1].shape == (1100 - 1024, 1300 - 1024)


def test_subgrid_rejects_windows_outside_the_grid():
    grid = Grid("EPSG:32633", Affine(10, 0, 0, 0, -10, 0), 100, 50)
    with pytest.raises(ValueError):
        grid.subgrid(40, 0, 20, 10)


def test_geometry_mask_by_pixel_centre_and_all_touched():
    grid = Grid("EPSG:32633", Affine(10, 0, 0, 0, -10, 100), 10, 10)
    # centres (x = 5 + 10 col, y = 95 - 10 row) inside 12..52 x 22..62: cols 1-4, rows 4-7
    geom = box(12, 22, 52, 62)
    mask = geometry_mask(grid, geom)
    rows, cols = np.nonzero(mask)
    assert mask.sum() == 16
    assert set(cols) == {1, 2, 3, 4} and set(rows) == {4, 5, 6, 7}
    assert geometry_mask(grid, geom, all_touched=True).sum() == 5 * 5
    assert not geometry_mask(grid, box(500, 500, 600, 600)).any()
    tri = Polygon([(0, 0), (105, 0), (0, 105)])  # centres with x + y < 105: col <= row
    assert geometry_mask(grid, tri).sum() == 55
