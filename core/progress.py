"""One progress/cancel interface shared by the QgsTask, Processing feedback and scripts."""

from __future__ import annotations

import threading
from typing import Callable, Optional, Protocol

from .errors import CancelledError


class Progress(Protocol):
    """What the engine reports to, and asks whether to stop."""

    def set_progress(self, percent: float) -> None: ...

    def info(self, message: str) -> None: ...

    def is_cancelled(self) -> bool: ...


class NullProgress:
    """Reports nowhere, never cancels; can be cancelled from another thread."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self.messages: list[str] = []
        self.percent = 0.0

    def set_progress(self, percent: float) -> None:
        self.percent = percent

    def info(self, message: str) -> None:
        self.messages.append(message)

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()


class CallbackProgress(NullProgress):
    """Adapts plain callables (a QgsTask, QgsProcessingFeedback, a CLI) to Progress."""

    def __init__(
        self,
        on_progress: Optional[Callable[[float], None]] = None,
        on_info: Optional[Callable[[str], None]] = None,
        cancelled: Optional[Callable[[], bool]] = None,
    ) -> None:
        super().__init__()
        self._on_progress = on_progress
        self._on_info = on_info
        self._cancelled = cancelled

    def set_progress(self, percent: float) -> None:
        super().set_progress(percent)
        if self._on_progress:
            self._on_progress(percent)

    def info(self, message: str) -> None:
        super().info(message)
        if self._on_info:
            self._on_info(message)

    def is_cancelled(self) -> bool:
        return super().is_cancelled() or bool(self._cancelled and self._cancelled())


class SubProgress:
    """Maps 0-100 % of a sub-step onto [start, end] of its parent."""

    def __init__(self, parent: Progress, start: float, end: float) -> None:
        self.parent, self.start, self.end = parent, start, end

    def set_progress(self, percent: float) -> None:
        clamped = min(max(percent, 0.0), 100.0)
        self.parent.set_progress(self.start + (self.end - self.start) * clamped / 100.0)

    def info(self, message: str) -> None:
        self.parent.info(message)

    def is_cancelled(self) -> bool:
        return self.parent.is_cancelled()


def check_cancelled(progress: Progress) -> None:
    """Raise CancelledError when the user asked to stop."""
    if progress.is_cancelled():
        raise CancelledError()
