"""Block tasks on Dask (a LocalCluster of worker processes on 127.0.0.1), failures, resume."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace

import distributed  # pinned in requirements.txt for the tests; optional for users
import numpy as np
import pytest
from shapely import affinity

from clearsky.core import executors, stalls
from clearsky.core.api import Aoi, build_mosaic
from clearsky.core.errors import CancelledError, ClearskyError, InvalidParameterError
from clearsky.core.ledger import LEDGER, parts_folder
from clearsky.core.params import Method
from clearsky.core.progress import CallbackProgress
from world.mosaic_truth import mosaic_params, read_mosaic


@pytest.fixture(scope="module")
def cluster():
    """An existing scheduler with two worker processes (nannies restart killed ones)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  silence_logs=40) as c, distributed.Client(c) as client:
        yield c, client


def small(world, served, path, **over):
    aoi = Aoi(affinity.scale(world.region, 0.4, 0.4), "EPSG:4326")
    values = dict(aoi=aoi, block_size=64, count_band=True)
    values.update(over)
    return mosaic_params(world, served, path, **values)


def pixels(path):
    data, names, *_ = read_mosaic(path)
    return data, names


# --- the option ---------------------------------------------------------------------------

def test_executor_option_is_parsed_with_plain_messages():
    assert executors.parse_executor("").kind == "threads"
    assert executors.parse_executor(" tcp://127.0.0.1:8786 ").address == "tcp://127.0.0.1:8786"
    assert executors.parse_executor("local:3").workers == 3
    for bad in ("dask", "local:0", "local:x", "http://127.0.0.1:8786", "tcp://host"):
        with pytest.raises(InvalidParameterError, match="EXECUTOR must be empty"):
            executors.parse_executor(bad)


def test_worker_processes_are_refused_inside_the_qgis_desktop(world, served, tmp_path):
    params = small(world, served, tmp_path / "m.tif", executor="local:2", gui=True)
    with pytest.raises(InvalidParameterError) as info:
        params.validate()
    assert "dask scheduler" in str(info.value) and "dask worker" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_dask_says_how_to_install_it(world, served, tmp_path, monkeypatch):
    real = executors.importlib.import_module

    def no_dask(name, *args):
        if name == "distributed":
            raise ImportError("No module named 'distributed'")
        return real(name, *args)

    monkeypatch.setattr(executors.importlib, "import_module", no_dask)
    with pytest.raises(ClearskyError, match=r"pip install dask==\S+ distributed==") as info:
        build_mosaic(small(world, served, tmp_path / "m.tif", executor="local:2"))
    assert "leave EXECUTOR empty" in str(info.value)
    assert not (tmp_path / "m.tif").exists()


def test_a_worker_with_other_engine_code_is_refused():
    class Client:
        def get_versions(self, check):
            return {}

        def run(self, fn):
            theirs = dict(fn(), **{"clearsky-engine": "0000000000000000"})
            return {"tcp://127.0.0.1:4001": theirs}

    with pytest.raises(ClearskyError, match="runs other code than this machine") as info:
        executors.check_versions(Client())
    assert "clearsky-engine: here" in str(info.value)


# --- on a cluster ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", [Method.BEST, Method.MEDIAN, Method.PERCENTILE])
def test_a_dask_cluster_gives_the_same_bytes_as_threads(world, served, tmp_path, cluster,
                                                        method):
    _, client = cluster
    address = client.scheduler.address
    threads = build_mosaic(small(world, served, tmp_path / "t.tif", method=method))
    # a block stalled past stalls.STALL_REPORT_S prints where the workers wait: once, this
    # test hung on CI with only the waiting parent's stack in the log
    dask = build_mosaic(small(world, served, tmp_path / "d.tif", method=method,
                              executor=address), CallbackProgress(on_info=print))
    a, names = pixels(threads.output)
    b, names_b = pixels(dask.output)
    assert names == names_b and (a[0] > 0).mean() > 0.5
    assert np.array_equal(a, b)
    assert [r.row() for r in threads.reports] == [r.row() for r in dask.reports]


@pytest.mark.parametrize("on_dask", [False, True], ids=["threads", "dask"])
def test_a_stalled_block_says_where_its_reads_wait_and_the_run_finishes(
        world, served, assets, tmp_path, cluster, monkeypatch, on_dask):
    """The first red band request is held 3 s, then dropped (the read is tried again); the
    block is reported once as stalled after 1 s, naming the engine threads still reading
    (on Dask, per worker), and the mosaic still finishes whole."""
    _, client = cluster
    monkeypatch.setattr(stalls, "STALL_REPORT_S", 1.0)
    assets.configure(faults=[{"path": "*/red.tif", "kind": "timeout", "count": 1,
                              "hold_s": 3}])
    said = []
    over = {"executor": client.scheduler.address} if on_dask else {}
    if on_dask:  # the workers' /vsicurl/ caches hold earlier tests' ranges
        client.run(lambda: __import__("osgeo.gdal").gdal.VSICurlClearCache())
    result = build_mosaic(small(world, served, tmp_path / "s.tif", block_size=256, **over),
                          CallbackProgress(on_info=said.append))
    assert any(e.get("fault") == "timeout" for e in assets.requests())
    stalled = [m for m in said if "has not finished after" in m]
    assert len(stalled) == 1, said
    message = stalled[0]
    assert message.startswith("Block ") and "Where it waits: " in message
    where = message.split("Where it waits: ", 1)[1]
    assert "clearsky-" in where and ".py:" in where, where  # a read thread, at its frames
    if on_dask:
        assert "tcp://127.0.0.1:" in where, where
    assert result.failed_blocks == () and (pixels(result.output)[0][0] > 0).mean() > 0.5


def test_a_stall_report_that_fails_does_not_end_the_run(world, served, assets, tmp_path,
                                                         monkeypatch):
    def broken(*args):
        raise RuntimeError("no frames today")

    monkeypatch.setattr(stalls, "STALL_REPORT_S", 1.0)
    monkeypatch.setattr(stalls, "stall_message", broken)
    assets.configure(faults=[{"path": "*/red.tif", "kind": "timeout", "count": 1,
                              "hold_s": 3}])
    said = []
    result = build_mosaic(small(world, served, tmp_path / "s.tif", block_size=256),
                          CallbackProgress(on_info=said.append))
    assert any("could not say where it waits (RuntimeError: no frames today)" in m
               for m in said), said
    assert result.failed_blocks == () and (pixels(result.output)[0][0] > 0).mean() > 0.5


def _kept_runs():
    """A function for `client.run`: on a worker, the runs whose read pools it keeps, with
    their tile cache figures (a lambda, which Dask sends by value: this module is not
    importable on the workers)."""
    return lambda: {run: dict(kept.pools.tiles.stats(), users=kept.users)
                    for run, kept in __import__("clearsky.core.blocks").core.blocks._KEPT.items()}


def _close_kept_runs():
    return lambda: [__import__("clearsky.core.blocks").core.blocks._close_idle(run, kept)
                    for run, kept in list(__import__("clearsky.core.blocks").core.blocks
                                          ._KEPT.items())]


def _set_kept_idle(seconds):
    return lambda: setattr(__import__("clearsky.core.blocks").core.blocks, "KEPT_IDLE_S", seconds)


def test_a_worker_keeps_a_runs_tiles_for_its_next_blocks_then_lets_them_go(
        world, served, tmp_path, cluster):
    """Blocks of one run on one worker share its opened files and decoded tiles (a tile
    fetched for one 64 px block serves the next ones), and once no block of the run has
    come for KEPT_IDLE_S (5 s here: the COG is written after the last block) the worker
    closes them."""
    _, client = cluster
    client.run(_close_kept_runs())  # earlier tests' runs, idle for less than 30 s
    assert not any(client.run(_kept_runs()).values())
    client.run(_set_kept_idle(5.0))
    try:
        result = build_mosaic(small(world, served, tmp_path / "k.tif",
                                    executor=client.scheduler.address))
        kept = client.run(_kept_runs())
    finally:
        client.run(_set_kept_idle(30.0))
    assert result.failed_blocks == () and (pixels(result.output)[0][0] > 0).mean() > 0.5
    busy = [runs for runs in kept.values() if runs]
    assert busy and all(len(runs) == 1 for runs in busy), kept
    for runs in busy:
        (figures,) = runs.values()
        assert figures["users"] == 0, figures
        assert figures["hits"] > figures["fetched"] > 0, figures  # tiles served again
    deadline = time.monotonic() + 20
    while any(client.run(_kept_runs()).values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(client.run(_kept_runs()).values())


def test_a_worker_budgets_its_tiles_from_its_own_memory_limit(world, served, tmp_path):
    """MEMORY_MB 4096 on a worker limited to 1 GiB: its tasks get 1024 MB, so the tiles it
    keeps between them are held to a quarter of that, not a quarter of 4096 MB."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  silence_logs=40, memory_limit="1GiB") as c, \
            distributed.Client(c) as client:
        result = build_mosaic(small(world, served, tmp_path / "w.tif", memory_mb=4096,
                                    executor=c.scheduler_address))
        budgets = client.run(lambda: [kept.pools.tiles.budget for kept in __import__(
            "clearsky.core.blocks").core.blocks._KEPT.values()])
    assert result.failed_blocks == () and (pixels(result.output)[0][0] > 0).mean() > 0.5
    assert list(budgets.values()) == [[256 * 1024 * 1024]], budgets


def test_local_n_starts_its_own_cluster_headless(world, served, tmp_path):
    threads = build_mosaic(small(world, served, tmp_path / "t.tif", block_size=128))
    local = build_mosaic(small(world, served, tmp_path / "l.tif", block_size=128,
                               executor="local:2"))
    assert np.array_equal(pixels(threads.output)[0], pixels(local.output)[0])


def test_a_worker_killed_mid_run_is_replaced_and_the_mosaic_is_identical(
        world, served, tmp_path, cluster):
    _, client = cluster
    reference = build_mosaic(small(world, served, tmp_path / "t.tif"))
    killed = []

    def on_progress(percent):
        if percent > 30 and not killed:
            pids = client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    result = build_mosaic(small(world, served, tmp_path / "k.tif",
                                executor=client.scheduler.address),
                          CallbackProgress(on_progress=on_progress))
    assert killed
    assert np.array_equal(pixels(reference.output)[0], pixels(result.output)[0])
    client.wait_for_workers(2, timeout=60)


def test_cancel_stops_every_pending_task_within_seconds(world, served, tmp_path, cluster):
    _, client = cluster
    cancel = threading.Event()
    asked = []

    def on_progress(percent):
        if percent > 25 and not cancel.is_set():
            asked.append(time.monotonic())
            cancel.set()

    progress = CallbackProgress(on_progress=on_progress, cancelled=cancel.is_set)
    with pytest.raises(CancelledError):
        build_mosaic(small(world, served, tmp_path / "c.tif", executor=client.scheduler.address,
                           block_size=64), progress)
    stopped = time.monotonic() - asked[0]
    assert stopped < 5.0, stopped
    deadline = time.monotonic() + 10
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(client.processing().values())
    assert list(tmp_path.iterdir()) == []


# --- memory failures ------------------------------------------------------------------------

class Killing(ThreadPoolExecutor):
    """Blocks larger than `limit` pixels a side 'kill their worker', as Dask reports it."""

    def __init__(self, limit: int) -> None:
        super().__init__(max_workers=2)
        self.limit = limit
        self.sizes = []

    def submit(self, fn, task):
        self.sizes.append(max(task.block.shape))
        if max(task.block.shape) > self.limit:
            failed = Future()
            worker = SimpleNamespace(address="tcp://127.0.0.1:1")
            failed.set_exception(distributed.KilledWorker("run_block-1", worker, 3))
            return failed
        return super().submit(fn, task)


def test_a_block_that_kills_its_worker_is_computed_in_quarters(world, served, tmp_path):
    reference = build_mosaic(small(world, served, tmp_path / "t.tif", block_size=128))
    with Killing(limit=64) as pool:
        halved = build_mosaic(small(world, served, tmp_path / "h.tif", block_size=128),
                              executor=pool)
    assert 128 in pool.sizes and max(s for s in pool.sizes if s <= 64) == 64
    assert halved.failed_blocks == ()
    a, b = pixels(reference.output)[0].astype(int), pixels(halved.output)[0].astype(int)
    assert (a > 0).mean() > 0.5 and ((a > 0) == (b > 0)).all()
    # Other block windows warp the other UTM zone's tiles through GDAL's approximate
    # transformer a little differently: at most 1 DN, on about 0.1 % of the pixels.
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.005


def test_a_block_that_fails_again_is_reported_and_left_empty(world, served, tmp_path):
    with Killing(limit=16) as pool:
        result = build_mosaic(small(world, served, tmp_path / "f.tif", block_size=128),
                              executor=pool)
    assert result.failed_blocks and all("KilledWorker" in b for b in result.failed_blocks)
    import json

    header = json.loads(result.report_json.read_text())
    assert header["failed_blocks"] == list(result.failed_blocks)
    assert (pixels(result.output)[0] == 0).all()


# --- resume ---------------------------------------------------------------------------------

def test_an_interrupted_run_resumes_from_its_ledger_with_identical_bytes(world, served,
                                                                        tmp_path):
    whole = build_mosaic(small(world, served, tmp_path / "whole.tif"))
    out = tmp_path / "resumed.tif"
    cancel = threading.Event()
    progress = CallbackProgress(on_progress=lambda p: p > 50 and cancel.set(),
                                cancelled=cancel.is_set)
    with pytest.raises(CancelledError):
        build_mosaic(small(world, served, out, resume=True), progress)
    assert not out.exists()
    ledger = parts_folder(out) / LEDGER
    done = len(ledger.read_text().splitlines())
    assert done >= 2
    again = build_mosaic(small(world, served, out, resume=True))
    assert again.resumed_blocks == done
    assert out.read_bytes() == whole.output.read_bytes()
    assert not parts_folder(out).exists()  # removed once the COG is committed
    # a ledger whose blocks were made with other inputs is not reused
    cancel.clear()
    with pytest.raises(CancelledError):
        build_mosaic(small(world, served, out, resume=True, overwrite=True), progress)
    other = build_mosaic(small(world, served, out, resume=True, dilation=0, overwrite=True))
    assert other.resumed_blocks == 0
