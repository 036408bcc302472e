"""Engine calls as QgsTasks: run() in a worker thread, the callback in finished() (main thread).

run() touches no widget and no QgsProject; it stores the result or the error. Running
tasks are kept in RUNNING, because PyQGIS lets an unreferenced QgsTask be garbage-collected
while the task manager still runs it.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Optional, Set

from qgis.core import QgsApplication, QgsTask

from ..core.errors import CancelledError, ClearskyError
from ..core.progress import CallbackProgress

RUNNING: Set[EngineTask] = set()


class EngineTask(QgsTask):
    """Runs `work(progress)`; then calls `done(task)` where `result`, `error` or `cancelled`."""

    def __init__(
        self,
        description: str,
        work: Callable[[CallbackProgress], Any],
        done: Callable[[EngineTask], None],
        on_info: Optional[Callable[[str], None]] = None,
    ) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self._work, self._done, self._on_info = work, done, on_info
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.details = ""
        self.messages: list = []

    def run(self) -> bool:
        progress = CallbackProgress(
            on_progress=self.setProgress, on_info=self.messages.append, cancelled=self.isCanceled
        )
        try:
            self.result = self._work(progress)
        except CancelledError as exc:
            self.error = exc
            return False
        except Exception as exc:  # shown in finished(); an exception must not escape run()
            self.error = exc
            self.details = traceback.format_exc()
            return False
        return not self.isCanceled()

    @property
    def cancelled(self) -> bool:
        return self.isCanceled() or isinstance(self.error, CancelledError)

    @property
    def message(self) -> str:
        """A plain-language message for the user: the engine's own for ClearskyErrors."""
        if self.cancelled:
            return str(self.error) if self.error else str(CancelledError())
        if isinstance(self.error, ClearskyError):
            return str(self.error)
        if self.error is not None:
            return f"Unexpected error: {self.error} (details in the Clearsky log)."
        return ""

    def finished(self, result: bool) -> None:  # noqa: ARG002 - the state is on self
        RUNNING.discard(self)
        if self._on_info:
            for message in self.messages:
                self._on_info(message)
        self._done(self)


def start(task: EngineTask) -> EngineTask:
    """Add to the QGIS task manager (visible in its panel), keeping a reference."""
    RUNNING.add(task)
    QgsApplication.taskManager().addTask(task)
    return task
