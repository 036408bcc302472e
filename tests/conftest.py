"""Session fixtures shared by every test: the synthetic world, its archive, the servers.

- `world`: the truth (`world.World`) at the test extent.
- `archive`: the archive built once into `.build/world/<key>` (see `world.cache`), reused
  while the generator and its parameters are unchanged.
- `served`: a `ServedArchive` (range server + rustac STAC API) over `archive`.
- `assets` (per test): the range server with its log, delay and faults reset around the test.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

TEST_EXTENT_KM = 6.0
TEST_SEED = 2024
TEST_BLOCK_SIZE = 512
def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config) -> None:
    """Let a SIGTERM (e.g. from `timeout`) unwind like Ctrl-C, so fixtures stop servers.

    And give every test process the same /vsicurl/ chunk size whatever order its tests run
    in: GDAL 3.6 reads CPL_VSIL_CURL_CHUNK_SIZE once, at the process's first /vsicurl/ call,
    so the engine's 4 KB (io.gdal_options) held only when an engine read came first and 16
    KB when a fixture's cache clear did, and byte counts changed with the test order (the
    estimate test failed only under some orders). The suite runs at GDAL's 16 KB default;
    the benchmark's processes read at 4 KB (README, "Known limits")."""
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    from osgeo import gdal

    gdal.VSICurlClearCache()


@pytest.fixture(scope="session")
def world():
    from world import World

    return World(extent_km=TEST_EXTENT_KM, seed=TEST_SEED)


@pytest.fixture(scope="session")
def archive(world) -> Path:
    from world.cache import cached_archive

    return cached_archive(world, TEST_BLOCK_SIZE)


@pytest.fixture(scope="session")
def served(archive):
    from world.servers import ServedArchive

    with ServedArchive(archive) as both:
        yield both


@pytest.fixture
def assets(served):
    """The range server, reset, with GDAL's /vsicurl/ cache emptied so that the log
    shows every read this test makes (cached ranges from earlier tests would hide them)."""
    from osgeo import gdal

    served.assets.reset()
    gdal.VSICurlClearCache()
    yield served.assets
    served.assets.reset()
    gdal.VSICurlClearCache()
