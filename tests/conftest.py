"""Session fixtures shared by every test: the synthetic world, its archive, the servers.

- `world`: the truth (`world.World`) at the test extent.
- `archive`: the archive built once into `.build/world/<key>`, reused while the generator
  and its parameters are unchanged (built in a temp dir, then renamed: never half-built).
- `served`: a `ServedArchive` (range server + rustac STAC API) over `archive`.
- `assets` (per test): the range server with its log, delay and faults reset around the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
from pathlib import Path

import pytest

TEST_EXTENT_KM = 6.0
TEST_SEED = 2024
TEST_BLOCK_SIZE = 512
REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO / ".build" / "world"
WORLD_PKG = Path(__file__).resolve().parent / "world"
KEEP_ARCHIVES = 3  # older generator versions are deleted
SERVER_MODULES = {"servers.py", "rangeserver.py", "stacserver.py"}


def generator_hash() -> str:
    """Hash of the generator's source: A's own function when it has one, else its files."""
    with contextlib.suppress(ImportError, AttributeError):
        from world import generate

        return str(generate.generator_hash())
    digest = hashlib.sha256()
    for path in sorted(WORLD_PKG.rglob("*.py")):
        if path.name not in SERVER_MODULES:
            digest.update(path.relative_to(WORLD_PKG).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def archive_key(extent_km: float, seed: int, block_size: int) -> str:
    params = {"extent_km": extent_km, "seed": seed, "block_size": block_size,
              "generator": generator_hash()}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def cached_archive(world_obj, extent_km: float, seed: int, block_size: int) -> Path:
    """Build the archive for these parameters once; later sessions reuse the same folder."""
    from world import build_archive
    from world.servers import build_once, prune_archives

    final = BUILD_DIR / archive_key(extent_km, seed, block_size)
    built = build_once(final, lambda tmp: build_archive(tmp, world_obj, block_size=block_size))
    prune_archives(BUILD_DIR, keep=KEEP_ARCHIVES)
    return built


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config) -> None:
    """Let a SIGTERM (e.g. from `timeout`) unwind like Ctrl-C, so fixtures stop servers."""
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)


@pytest.fixture(scope="session")
def world():
    from world import World

    return World(extent_km=TEST_EXTENT_KM, seed=TEST_SEED)


@pytest.fixture(scope="session")
def archive(world) -> Path:
    return cached_archive(world, TEST_EXTENT_KM, TEST_SEED, TEST_BLOCK_SIZE)


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
