"""The session fixtures' guarantees: one build per key, never a half-built archive reused,
and the per-test `assets` fixture hands out a clean range server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from world.servers import archive_complete, build_once


def _fake_build(calls: list, items: int = 3, fail: bool = False):
    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "data").mkdir(parents=True)
        (tmp / "data" / "x.tif").write_bytes(b"II*\x00")
        if fail:
            raise KeyboardInterrupt  # an interrupted build
        (tmp / "manifest.json").write_text(json.dumps({"items": items}))

    return build


def test_build_once_builds_then_reuses(tmp_path):
    calls: list = []
    final = tmp_path / "abc123"
    assert build_once(final, _fake_build(calls)) == final
    assert build_once(final, _fake_build(calls)) == final
    assert len(calls) == 1 and calls[0] != final
    assert archive_complete(final) and (final / "data" / "x.tif").read_bytes() == b"II*\x00"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abc123", "abc123.lock"]


def test_an_interrupted_build_is_never_reused(tmp_path):
    calls: list = []
    final = tmp_path / "abc123"
    with pytest.raises(KeyboardInterrupt):
        build_once(final, _fake_build(calls, fail=True))
    assert not final.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["abc123.lock"]  # temp folder removed
    build_once(final, _fake_build(calls))
    assert len(calls) == 2 and archive_complete(final)


def test_a_build_without_items_is_rejected(tmp_path):
    with pytest.raises(RuntimeError, match="no usable manifest"):
        build_once(tmp_path / "k", _fake_build([], items=0))
    assert not (tmp_path / "k").exists()


def test_a_half_written_final_folder_is_rebuilt(tmp_path):
    final = tmp_path / "k"
    (final / "data").mkdir(parents=True)  # e.g. left by an older, non-atomic tool
    calls: list = []
    build_once(final, _fake_build(calls))
    assert len(calls) == 1 and archive_complete(final)


def test_assets_fixture_starts_clean_after_a_faulty_test(assets):
    assets.configure(delay_ms=50, faults=[{"path": "*", "kind": "503", "count": None}])
    assert assets.requests() == []


def test_assets_fixture_reset_the_faults_of_the_previous_test(assets, served):
    import requests

    manifest = served.root / "manifest.json"
    assert manifest.is_file()
    r = requests.get(assets.url + "/manifest.json", timeout=10)
    assert r.status_code == 200 and r.content == manifest.read_bytes()
    assert [(e["path"], e["fault"]) for e in assets.requests()] == [("/manifest.json", None)]


def test_prune_keeps_the_newest_archives_and_drops_dead_temp_builds(tmp_path):
    import os

    from world.servers import prune_archives

    for i, key in enumerate(["a1", "b2", "c3", "d4"]):
        build_once(tmp_path / key, _fake_build([]))
        os.utime(tmp_path / key, (1000 + i, 1000 + i))
    (tmp_path / ".tmp-e5-999999999").mkdir()  # a build whose process is gone
    (tmp_path / "f6").mkdir()  # not an archive: left alone
    removed = prune_archives(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == [".tmp-e5-999999999", "a1", "b2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c3", "c3.lock", "d4", "d4.lock", "f6"]
