"""Engine calls as QgsTasks: run() in a worker thread, the callback in finished() (main thread).

run() touches no widget and no QgsProject; it stores the result or the error. The
engine's phase messages ("Searching ...", "Compositing ...") are emitted live through the
`info` signal, which Qt queues to the receiver's (main) thread. Running tasks are kept in
RUNNING, because PyQGIS lets an unreferenced QgsTask be garbage-collected while the task
manager still runs it; `cancel_all` (plugin unload) detaches their callbacks and cancels them.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Optional, Set

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..core.errors import CancelledError, ClearskyError
from ..core.progress import CallbackProgress

RUNNING: Set[EngineTask] = set()


class EngineTask(QgsTask):
    """Runs `work(progress)`; then calls `done(task)` where `result`, `error` or `cancelled`."""

    info = pyqtSignal(str)  # an engine phase message, emitted from the worker thread

    def __init__(
        self,
        description: str,
        work: Callable[[CallbackProgress], Any],
        done: Optional[Callable[[EngineTask], None]],
    ) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self._work, self._done = work, done
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.details = ""  # a traceback, for unexpected errors only
        self.messages: list = []
        self.params: Any = None

    def run(self) -> bool:
        progress = CallbackProgress(
            on_progress=self.setProgress, on_info=self._emit_info, cancelled=self.isCanceled
        )
        try:
            self.result = self._work(progress)
        except CancelledError as exc:
            self.error = exc
            return False
        except ClearskyError as exc:  # handled: a message for the user, no traceback
            self.error = exc
            return False
        except Exception as exc:  # shown in finished(); an exception must not escape run()
            self.error = exc
            self.details = traceback.format_exc()
            return False
        return not self.isCanceled()

    def _emit_info(self, message: str) -> None:
        self.messages.append(message)
        self.info.emit(message)

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

    def detach(self) -> None:
        """Forget the callback (its dialog is going away); the task still ends cleanly."""
        self._done = None

    def finished(self, result: bool) -> None:  # noqa: ARG002 - the state is on self
        RUNNING.discard(self)
        done, self._done = self._done, None
        if done is not None:
            done(self)


def start(task: EngineTask) -> EngineTask:
    """Add to the QGIS task manager (visible in its panel), keeping a reference."""
    RUNNING.add(task)
    QgsApplication.taskManager().addTask(task)
    return task


def cancel_all() -> int:
    """Plugin unload: detach every running task's callback and cancel it; how many."""
    count = 0
    for task in list(RUNNING):
        task.detach()
        task.cancel()
        count += 1
    return count
