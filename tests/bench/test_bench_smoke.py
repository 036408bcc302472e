"""Smoke run of the benchmark: tiny archive, ~1 km AOI, Clearsky and odc-stac in .venv-bench.

Sets up .venv-bench when missing (pip from PyPI, pinned; a no-op once there), then runs
each tool in its own process on the same served archive and checks that the two outputs
agree and that the harness measured what it reports.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import benchvenv  # noqa: E402
import harness  # noqa: E402
from run import Context, cloud_case, mosaic_case  # noqa: E402

SMOKE_EXTENT_KM = 5.0
SMOKE_AOI_KM = 1.0


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from world import World
    from world.cache import cached_archive
    from world.servers import ServedArchive

    python = benchvenv.ensure()
    root = cached_archive(World(extent_km=SMOKE_EXTENT_KM, seed=2024), 512)
    with ServedArchive(root) as served:
        work = harness.plan(served.stac_url, SMOKE_AOI_KM, threads=4)
        ctx = Context(root, served, tmp_path_factory.mktemp("bench"), python, rounds=1,
                      chunk=2048, qgis=False, keep=True)
        yield ctx, work


def test_bench_venv_is_isolated_and_pinned():
    import subprocess

    benchvenv.ensure()  # a fresh clone has no .venv-bench yet: this test may run first
    assert benchvenv.ready()
    code = ("import sys, numpy, rasterio, shapely, odc.stac; "
            "print(sys.prefix, numpy.__version__, shapely.__version__, rasterio.__version__)")
    out = subprocess.run([str(benchvenv.python()), "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == str(benchvenv.VENV)  # not the QGIS venv, not the system python
    pins = dict(line.split("==") for line in benchvenv.REQUIREMENTS.read_text().splitlines()
                if "==" in line)
    assert out[1:] == [pins["numpy"], pins["shapely"], pins["rasterio"]]


@pytest.mark.parametrize("case", ["median", "best"])
def test_clearsky_and_odc_stac_agree(bench, case):
    ctx, work = bench
    runs = mosaic_case(ctx, case, work)
    by_tool = {r.tool: r for r in runs}
    clearsky, odc = by_tool["clearsky"], by_tool["odc"]
    assert clearsky.agreement >= 0.99, clearsky.note
    a = harness.read_clearsky(clearsky.result["output"])
    b = np.load(odc.result["output"])
    assert a.shape == b.shape == (4, 100, 100)
    assert np.isfinite(a).all(0).mean() > 0.9  # a ~full mosaic, not two empty rasters agreeing
    for run in runs:  # each job's own reads are in the server log, and bounded by reality
        assert run.requests > 0 and run.bytes_served > 0
        assert run.peak_rss_mb > 50
        assert run.floor_bytes > 0
    if case == "best":  # best pixel stops reading once the block is full
        assert clearsky.bytes_served < odc.bytes_served


def test_cloud_check_agrees(bench):
    ctx, work = bench
    runs = cloud_case(ctx, work, n=20)
    clearsky = next(r for r in runs if r.tool == "clearsky")
    assert clearsky.result["scenes"] == 20
    assert clearsky.agreement == 1.0, clearsky.note
