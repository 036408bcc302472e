"""What every Clearsky algorithm shares: metadata, early validation, engine call and errors.

The algorithms are thin adapters: they turn Processing parameters into the engine's
parameter object, run the engine with a progress/cancel adapter over the feedback,
and turn the engine's result (or its `ClearskyError`) into outputs (or a
`QgsProcessingException` whose message the user can act on).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, TypeVar

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
)
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QIcon

from ..core.errors import ClearskyError
from .parameters import tr

T = TypeVar("T")
ICON = Path(__file__).resolve().parent.parent / "resources" / "icon.svg"
HELP = Path(__file__).resolve().parent.parent / "resources" / "help" / "index.html"


def missing_dependency_hint() -> Optional[str]:
    """How to install rasterio & co. when the engine cannot import them, else None."""
    from ..dependencies import install_hint

    return install_hint() or None


class EngineProgress:
    """Feedback -> the engine's Progress; serialised because engine threads report too."""

    def __init__(self, feedback: QgsProcessingFeedback) -> None:
        from ..core.progress import CallbackProgress

        self._lock = threading.Lock()
        self._feedback = feedback
        self.progress = CallbackProgress(self._set, self._info, feedback.isCanceled)

    def _set(self, percent: float) -> None:
        with self._lock:
            self._feedback.setProgress(percent)

    def _info(self, message: str) -> None:
        with self._lock:
            self._feedback.pushInfo(message)


class ClearskyAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses define parameters, `engine_params` and `processAlgorithm`."""

    def tr(self, text: str) -> str:
        return tr(text)

    def createInstance(self) -> ClearskyAlgorithm:
        return type(self)()

    def icon(self) -> QIcon:
        return QIcon(str(ICON)) if ICON.exists() else super().icon()

    def svgIconPath(self) -> str:
        return str(ICON) if ICON.exists() else super().svgIconPath()

    def helpUrl(self) -> str:
        """The algorithm's section of the help page shipped in the plugin (anchor = name)."""
        return QUrl.fromLocalFile(str(HELP)).toString() + "#" + self.name()

    def canExecute(self) -> Tuple[bool, str]:
        hint = missing_dependency_hint()
        return (False, hint) if hint else (True, "")

    def engine_params(self, parameters: dict, context: QgsProcessingContext, for_run: bool) -> Any:
        """Build (and validate) the engine's parameter object; `for_run` False = check only."""
        raise NotImplementedError

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext):
        """Catch what the engine would refuse before anything runs (shown in the dialog too)."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        try:
            self.engine_params(parameters, context, for_run=False)
        except (QgsProcessingException, ClearskyError) as err:
            return False, str(err)
        return True, ""

    def run_engine(self, feedback: Optional[QgsProcessingFeedback], call: Callable[[Any], T]) -> T:
        """Run an engine call with progress/cancel over `feedback`; errors -> plain messages."""
        hint = missing_dependency_hint()
        if hint:
            raise QgsProcessingException(hint)
        feedback = feedback or QgsProcessingFeedback()
        adapter = EngineProgress(feedback)
        try:
            return call(adapter.progress)
        except ClearskyError as err:  # CancelledError included: says nothing was written
            raise QgsProcessingException(str(err)) from err

    @staticmethod
    def build(call: Callable[[], T]) -> T:
        """Construct and validate an engine object, engine errors -> QgsProcessingException."""
        try:
            return call()
        except ClearskyError as err:
            raise QgsProcessingException(str(err)) from err
