"""The selected scene's quicklook in a QLabel, fetched without ever blocking the UI.

The item's `thumbnail` asset (a small PNG/JPEG) comes through QGIS's network manager (so
QGIS's proxy and SSL settings apply), aborted above THUMBNAIL_MAX_BYTES or after
THUMBNAIL_TIMEOUT; without one, or when it cannot be shown, the `visual` COG's coarsest
overview is read by the engine (core.quicklook) in a QgsTask. Only the newest request's
answer is shown: selecting another row makes older answers stale.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from qgis.core import QgsNetworkAccessManager
from qgis.PyQt.QtCore import QCoreApplication, QObject, Qt, QTimer, QUrl
from qgis.PyQt.QtGui import QImage, QPixmap
from qgis.PyQt.QtNetwork import QNetworkReply, QNetworkRequest
from qgis.PyQt.QtWidgets import QLabel

from ..core.catalog import THUMBNAIL
from ..core.quicklook import THUMBNAIL_MAX_BYTES, THUMBNAIL_TIMEOUT, read_quicklook
from ..core.scene import VISUAL, Scene
from . import tasks

SIDE = 150  # pixels: the quicklook's longer side (the label is 160 wide)


def tr(text: str) -> str:
    return QCoreApplication.translate("Clearsky", text)


def to_pixmap(rgb: Any) -> QPixmap:
    """(rows, cols, 3) uint8 -> QPixmap (the image owns a copy of the bytes)."""
    rows, cols = rgb.shape[:2]
    image = QImage(rgb.tobytes(), cols, rows, 3 * cols, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(image.copy())


class Quicklook(QObject):
    """Shows scenes' quicklooks in `label`; `engine_fields()` gives the proxy fields."""

    def __init__(self, label: QLabel, engine_fields: Callable[[], dict]) -> None:
        super().__init__(label)
        self.label = label
        self.engine_fields = engine_fields
        self.token = 0  # the newest request; answers of older ones are dropped
        self.reply: Optional[QNetworkReply] = None
        self.task: Optional[tasks.EngineTask] = None
        self.source = ""  # "thumbnail" or "visual": what the shown picture came from

    def clear(self, text: str = "") -> None:
        self.token += 1
        self._abort()
        self.source = ""
        self.label.setPixmap(QPixmap())
        self.label.setText(text or tr("Select a row for a quicklook"))

    def show(self, scene: Optional[Scene]) -> None:
        self.clear()
        if scene is None:
            return
        token = self.token
        self.label.setText(tr("Loading the quicklook…"))
        thumbnail, visual = scene.assets.get(THUMBNAIL), scene.assets.get(VISUAL)
        if thumbnail:
            self._fetch(thumbnail, token, visual)
        elif visual:
            self._read(visual, token)
        else:
            self.label.setText(tr("No thumbnail or true-colour asset to preview"))

    def _abort(self) -> None:
        reply, self.reply = self.reply, None
        if reply is not None:
            reply.abort()
        task, self.task = self.task, None
        if task is not None:
            task.detach()
            task.cancel()

    # -- the thumbnail, through QGIS's network manager -----------------------------------
    def _fetch(self, href: str, token: int, fallback: Optional[str]) -> None:
        if not href.startswith(("http://", "https://")):
            self._fallback(token, fallback)
            return
        reply = QgsNetworkAccessManager.instance().get(QNetworkRequest(QUrl(href)))
        self.reply = reply

        def progress(received: int, total: int) -> None:
            if received > THUMBNAIL_MAX_BYTES or total > THUMBNAIL_MAX_BYTES:
                reply.abort()

        timer = QTimer(reply)
        timer.setSingleShot(True)
        timer.timeout.connect(reply.abort)
        timer.start(int(THUMBNAIL_TIMEOUT * 1000))
        reply.downloadProgress.connect(progress)
        reply.finished.connect(lambda: self._fetched(reply, token, fallback))

    def _fetched(self, reply: QNetworkReply, token: int, fallback: Optional[str]) -> None:
        ok = reply.error() == QNetworkReply.NetworkError.NoError
        data = reply.readAll() if ok else None
        reply.deleteLater()
        if token != self.token:
            return
        self.reply = None
        image = QImage()
        if data is not None and data.size() <= THUMBNAIL_MAX_BYTES:
            image.loadFromData(data)
        if image.isNull():
            self._fallback(token, fallback)
            return
        self._set(QPixmap.fromImage(image), THUMBNAIL)

    def _fallback(self, token: int, visual: Optional[str]) -> None:
        if visual:
            self._read(visual, token)
        else:
            self.label.setText(tr("The thumbnail could not be shown"))

    # -- the visual COG's coarsest overview, in a task -----------------------------------
    def _read(self, href: str, token: int) -> None:
        fields = self.engine_fields()
        task = tasks.EngineTask(
            tr("Clearsky: quicklook"),
            lambda progress: read_quicklook(href, SIDE, fields.get("proxy", ""),
                                            fields.get("no_proxy", "")),
            lambda t: self._read_done(t, token))
        self.task = task
        tasks.start(task)

    def _read_done(self, task: tasks.EngineTask, token: int) -> None:
        if token != self.token:
            return
        self.task = None
        if task.error is not None or task.result is None:
            self.label.setText(tr("No quicklook: {why}").format(why=task.message))
            return
        self._set(to_pixmap(task.result), VISUAL)

    def _set(self, pixmap: QPixmap, source: str) -> None:
        if max(pixmap.width(), pixmap.height()) > SIDE:
            pixmap = pixmap.scaled(SIDE, SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                   Qt.TransformationMode.SmoothTransformation)
        self.source = source
        self.label.setText("")
        self.label.setPixmap(pixmap)
