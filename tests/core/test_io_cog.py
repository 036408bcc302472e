"""CogWriter / write_cog: valid COGs, metadata, atomic replacement, no temp files left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from clearsky.core.errors import OutputError
from clearsky.core.grid import Grid
from clearsky.core.io import CogWriter, write_cog

GRID = Grid("EPSG:32633", from_origin(400000, 5800000, 10, 10), 1300, 1100)


def bands(grid: Grid = GRID, count: int = 3) -> np.ndarray:
    rows, cols = np.mgrid[0:grid.height, 0:grid.width]
    data = np.stack([(rows * 7 + cols * 3 + 1000 * b) % 9000 + 1 for b in range(count)])
    data = data.astype(np.uint16)
    data[:, :40, :50] = 0  # a nodata corner
    return data


def write_blocks(writer: CogWriter, data: np.ndarray, size: int = 512) -> None:
    for block in GRID.blocks(size):
        r, c = block.row_off, block.col_off
        h, w = block.shape
        writer.write(r, c, data[:, r:r + h, c:c + w])


def listing(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


def test_committed_file_is_a_valid_cog_with_metadata(tmp_path):
    out = tmp_path / "mosaic.tif"
    data = bands()
    with CogWriter(out, GRID, 3, "uint16", nodata=0) as w:
        write_blocks(w, data)
        assert not out.exists()  # nothing at the output path before commit
        path = w.commit(
            descriptions=["red", "green", "blue"],
            tags={"CLEARSKY_METHOD": "best", "CLEARSKY_SCENES": 4},
            band_tags=[{"scale": 0.0001, "offset": 0.0, "band": "red"},
                       {"scale": 0.0001, "band": "green"}, {"scale": 0.0001}],
        )
    assert path == out
    assert listing(tmp_path) == ["mosaic.tif"]  # no hidden temporary file left
    with rasterio.open(out) as ds:
        assert ds.driver == "GTiff"
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert ds.block_shapes == [(512, 512)] * 3
        assert ds.overviews(1) == [2, 4]
        assert ds.nodata == 0
        assert ds.crs.to_epsg() == 32633 and ds.transform == GRID.transform
        assert (ds.width, ds.height, ds.count) == (1300, 1100, 3)
        assert ds.descriptions == ("red", "green", "blue")
        assert ds.scales == (0.0001,) * 3 and ds.offsets == (0.0,) * 3
        assert ds.tags()["CLEARSKY_METHOD"] == "best" and ds.tags()["CLEARSKY_SCENES"] == "4"
        assert ds.tags(1)["band"] == "red" and ds.tags(2)["band"] == "green"
        np.testing.assert_array_equal(ds.read(), data)
        # averaged overviews ignore nodata: the nodata corner stays nodata at level 2
        ov = ds.read(1, out_shape=(550, 650))
        assert (ov[:20, :25] == 0).all() and ov[25:, 30:].all()


def test_exception_inside_the_context_leaves_no_file(tmp_path):
    out = tmp_path / "new.tif"
    with pytest.raises(RuntimeError, match="boom"), CogWriter(out, GRID, 3, "uint16") as w:
        write_blocks(w, bands())
        raise RuntimeError("boom")
    assert listing(tmp_path) == []


def test_failed_or_cancelled_run_leaves_an_existing_output_byte_identical(tmp_path):
    out = tmp_path / "mosaic.tif"
    write_cog(out, GRID.subgrid(0, 0, 100, 100), bands()[:, :100, :100])
    before = out.read_bytes()
    with pytest.raises(KeyboardInterrupt), CogWriter(out, GRID, 3, "uint16", overwrite=True) as w:
        write_blocks(w, bands())
        raise KeyboardInterrupt
    assert out.read_bytes() == before
    with CogWriter(out, GRID, 3, "uint16", overwrite=True) as w:
        write_blocks(w, bands())  # left without commit: same as cancel
    assert out.read_bytes() == before
    assert listing(tmp_path) == ["mosaic.tif"]


def test_commit_replaces_an_existing_output_when_overwrite(tmp_path):
    out = tmp_path / "mosaic.tif"
    write_cog(out, GRID.subgrid(0, 0, 100, 100), bands()[:, :100, :100])
    with pytest.raises(OutputError, match="already exists"):
        CogWriter(out, GRID, 3, "uint16")
    with CogWriter(out, GRID, 3, "uint16", overwrite=True) as w:
        write_blocks(w, bands())
        w.commit(["r", "g", "b"], {})
    with rasterio.open(out) as ds:
        assert ds.shape == (1100, 1300)
    assert listing(tmp_path) == ["mosaic.tif"]


def test_write_rejects_blocks_outside_the_grid(tmp_path):
    with CogWriter(tmp_path / "x.tif", GRID, 1, "uint8") as w:
        with pytest.raises(ValueError):
            w.write(1000, 0, np.ones((1, 200, 10), np.uint8))
        with pytest.raises(ValueError):
            w.write(0, 0, np.ones((2, 10, 10), np.uint8))
    assert listing(tmp_path) == []


def test_write_cog_small_float_and_single_band(tmp_path):
    grid = Grid("EPSG:25833", from_origin(390000, 5820000, 10, 10), 37, 23)
    arr = np.linspace(0, 1, 37 * 23, dtype=np.float32).reshape(23, 37)
    path = write_cog(tmp_path / "clip.tif", grid, arr, nodata=None, descriptions=["ndvi"],
                     tags={"CLEARSKY_AOI": "park"})
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.count == 1 and ds.dtypes[0] == "float32" and ds.crs.to_epsg() == 25833
        assert ds.descriptions == ("ndvi",) and ds.tags()["CLEARSKY_AOI"] == "park"
        np.testing.assert_array_equal(ds.read(1), arr)
    clip = write_cog(tmp_path / "u8.tif", grid, arr * 200, dtype="uint8", scales=[0.005])
    with rasterio.open(clip) as ds:
        assert ds.dtypes[0] == "uint8" and ds.scales == (0.005,)


def test_a_large_mosaics_part_is_compressed_and_both_parts_give_the_same_cog(tmp_path,
                                                                          monkeypatch):
    """The temporary part is left uncompressed only while small (its raw size under
    PLAIN_PART_BYTES): above that the disk holds it DEFLATE-compressed. Either way the
    committed COG is the same file, byte for byte."""
    from clearsky.core import io

    data = bands()
    made = {}
    for name, limit in (("plain", io.PLAIN_PART_BYTES), ("packed", 0)):
        monkeypatch.setattr(io, "PLAIN_PART_BYTES", limit)
        out = tmp_path / name / "mosaic.tif"
        out.parent.mkdir()
        with CogWriter(out, GRID, 3, "uint16", nodata=0) as w:
            write_blocks(w, data)
            w._ds.close()  # the part as the commit would find it, to look at
            with rasterio.open(w._part) as part:
                made[name] = (part.compression.value if part.compression else None,
                              part.read())
            w._ds = rasterio.open(w._part, "r+")
            w.commit()
        made[name] += (out.read_bytes(),)
    assert made["plain"][0] is None and made["packed"][0] == "DEFLATE"
    assert np.array_equal(made["plain"][1], data) and np.array_equal(made["packed"][1], data)
    assert made["plain"][2] == made["packed"][2]
