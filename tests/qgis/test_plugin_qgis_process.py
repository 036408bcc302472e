"""qgis_process (headless QGIS) loads the checkout's plugin and lists its algorithms."""

from __future__ import annotations

import re


def clearsky_algorithms(listing: str) -> list:
    return re.findall(r"^\s*(clearsky:\w+)\t", listing, flags=re.MULTILINE)


def test_qgis_process_lists_clearsky_algorithms(qgis_process_env, qgis_process):
    env = qgis_process_env()
    out = qgis_process(["list"], env)
    assert out.returncode == 0, out.stderr
    assert "clearsky:buildmosaic" in clearsky_algorithms(out.stdout)
    assert "Traceback" not in out.stderr


def test_qgis_process_reports_the_plugin_as_loaded(qgis_process_env, qgis_process):
    out = qgis_process(["plugins"], qgis_process_env())
    assert out.returncode == 0, out.stderr
    assert re.search(r"^\* clearsky$", out.stdout, flags=re.MULTILINE), out.stdout


def test_not_enabled_means_not_loaded(qgis_process_env, qgis_process):
    """The control: the same plugin folder without the settings key loads nothing of ours."""
    env = qgis_process_env(plugins=())
    out = qgis_process(["list"], env)
    assert out.returncode == 0, out.stderr
    assert clearsky_algorithms(out.stdout) == []
