"""Waiting for the plugin's background tasks in QGIS tests (bounded, events processed)."""

from __future__ import annotations

import time


def wait(owner, timeout: float = 90.0) -> None:
    """Process events until `owner.task` (a dialog's running QgsTask) is done."""
    from qgis.core import QgsApplication

    deadline = time.monotonic() + timeout
    while owner.task is not None:
        assert time.monotonic() < deadline, "the task did not finish in time"
        QgsApplication.processEvents()
        time.sleep(0.01)
    QgsApplication.processEvents()
