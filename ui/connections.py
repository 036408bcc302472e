"""STAC API connections: a name, a URL and an optional QGIS auth configuration.

Stored in QgsSettings (name, URL and the auth configuration's id only: secrets stay in the
QGIS auth manager and become request headers when a search is sent). The manager dialog
adds, edits, removes and tests connections; Test opens the API and lists its collections.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

from qgis.core import QgsApplication
from qgis.gui import QgsAuthConfigSelect
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtNetwork import QNetworkRequest
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
)

from ..core.catalog import list_collections
from ..core.errors import ClearskyError, InvalidParameterError
from ..core.options import EARTH_SEARCH
from . import settings, tasks
from .proxy import proxy_fields

KEY = "connections"
LEGACY_KEY = "catalogs"  # plain URL list of earlier versions


@dataclass(frozen=True)
class Connection:
    name: str
    url: str
    authcfg: str = ""

    def validate(self) -> None:
        if not self.name.strip():
            raise InvalidParameterError("Give the connection a name.")
        if not self.url.strip().lower().startswith(("http://", "https://")):
            raise InvalidParameterError(
                f"A STAC API URL starts with http:// or https://, not {self.url!r}; e.g. "
                f"{EARTH_SEARCH}.")


DEFAULT = Connection("Earth Search (Element 84)", EARTH_SEARCH)


def load() -> List[Connection]:
    """The saved connections, Earth Search first; older plain URL lists are taken over."""
    raw = settings.value(KEY, "")
    found: List[Connection] = []
    try:
        for entry in json.loads(raw) if raw else []:
            found.append(Connection(str(entry["name"]), str(entry["url"]),
                                    str(entry.get("authcfg", ""))))
    except (ValueError, KeyError, TypeError):
        found = []
    if not raw:
        found = [Connection(url, url) for url in settings.string_list(LEGACY_KEY)]
    if not any(c.url == EARTH_SEARCH for c in found):
        found.insert(0, DEFAULT)
    return found


def save(connections: List[Connection]) -> None:
    settings.set_value(KEY, json.dumps([asdict(c) for c in connections]))


def find(url: str) -> Optional[Connection]:
    return next((c for c in load() if c.url == url), None)


def auth_headers(authcfg: str, url: str) -> Dict[str, str]:
    """The headers a QGIS auth configuration adds to a request to `url` (e.g. Basic, API
    key, OAuth2 bearer), to pass to the engine; never stored or logged."""
    if not authcfg:
        return {}
    request = QNetworkRequest(QUrl(url))
    answer = QgsApplication.authManager().updateNetworkRequest(request, authcfg)
    ok, request = answer if isinstance(answer, tuple) else (answer, request)
    if not ok:
        raise ClearskyError(f"The QGIS authentication configuration {authcfg} could not be "
                            "applied: check it in Settings > Options > Authentication.")
    return {bytes(h).decode("latin-1"): bytes(request.rawHeader(h)).decode("latin-1")
            for h in request.rawHeaderList()}


class ConnectionsDialog(QDialog):
    """New / Edit / Remove / Test STAC API connections."""

    def __init__(self, parent=None, current: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle(self.tr("STAC API connections"))
        self.connections = load()
        self.collections: List[str] = []
        self.task: Optional[tasks.EngineTask] = None
        self.listWidget = QListWidget()
        self.nameEdit = QLineEdit()
        self.urlEdit = QLineEdit()
        self.urlEdit.setPlaceholderText("https://…/v1")
        self.authSelect = QgsAuthConfigSelect(self)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.collectionList = QListWidget()
        self.newButton = QPushButton(self.tr("New"))
        self.removeButton = QPushButton(self.tr("Remove"))
        self.applyButton = QPushButton(self.tr("Save"))
        self.testButton = QPushButton(self.tr("Test"))
        form = QFormLayout()
        form.addRow(self.tr("Name"), self.nameEdit)
        form.addRow(self.tr("URL"), self.urlEdit)
        form.addRow(self.tr("Authentication"), self.authSelect)
        row = QHBoxLayout()
        for button in (self.newButton, self.applyButton, self.removeButton, self.testButton):
            button.setAutoDefault(False)  # Enter in a field saves; it never clears the form
            row.addWidget(button)
        self.applyButton.setDefault(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.listWidget)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addWidget(QLabel(self.tr("Collections")))
        layout.addWidget(self.collectionList)
        layout.addWidget(self.buttons)
        self.listWidget.currentRowChanged.connect(self._show)
        self.newButton.clicked.connect(self.new)
        self.applyButton.clicked.connect(self.apply)
        self.removeButton.clicked.connect(self.remove)
        self.testButton.clicked.connect(self.test)
        self.buttons.rejected.connect(self.reject)
        self._refill(next((i for i, c in enumerate(self.connections) if c.url == current), 0))

    def _refill(self, row: int) -> None:
        self.listWidget.clear()
        for c in self.connections:
            self.listWidget.addItem(f"{c.name} — {c.url}")
        self.listWidget.setCurrentRow(min(row, len(self.connections) - 1))

    def _show(self, row: int) -> None:
        if 0 <= row < len(self.connections):
            c = self.connections[row]
            self.nameEdit.setText(c.name)
            self.urlEdit.setText(c.url)
            self.authSelect.setConfigId(c.authcfg)
            self.removeButton.setEnabled(c.url != EARTH_SEARCH)

    def edited(self) -> Connection:
        return Connection(self.nameEdit.text().strip(), self.urlEdit.text().strip(),
                          self.authSelect.configId())

    def new(self) -> None:
        self.listWidget.clearSelection()
        self.listWidget.setCurrentRow(-1)
        for edit in (self.nameEdit, self.urlEdit):
            edit.clear()
        self.authSelect.setConfigId("")
        self.nameEdit.setFocus()

    def apply(self) -> bool:
        """Save the form as a new connection or over the selected one."""
        c = self.edited()
        try:
            c.validate()
        except ClearskyError as exc:
            self.status.setText(str(exc))
            return False
        row = self.listWidget.currentRow()
        same = [i for i, old in enumerate(self.connections) if old.url == c.url]
        if 0 <= row < len(self.connections) and not (same and same[0] != row):
            self.connections[row] = c
        elif same:
            row = same[0]
            self.connections[row] = c
        else:
            self.connections.append(c)
            row = len(self.connections) - 1
        save(self.connections)
        self._refill(row)
        self.status.setText(self.tr("Saved {name}.").format(name=c.name))
        return True

    def remove(self) -> None:
        row = self.listWidget.currentRow()
        if 0 <= row < len(self.connections) and self.connections[row].url != EARTH_SEARCH:
            del self.connections[row]
            save(self.connections)
            self._refill(max(row - 1, 0))

    def test(self) -> Optional[tasks.EngineTask]:
        """Open the API in a task and list its collections (or say why it failed)."""
        c = self.edited()
        try:
            c.validate()
            headers = auth_headers(c.authcfg, c.url)
            proxy = proxy_fields()
        except ClearskyError as exc:
            self.status.setText(str(exc))
            return None
        self.status.setText(self.tr("Testing {url}…").format(url=c.url))
        self.collectionList.clear()
        self.testButton.setEnabled(False)
        self.task = tasks.EngineTask(
            self.tr("Clearsky: test {url}").format(url=c.url),
            lambda progress: list_collections(c.url, headers, progress, **proxy), self._tested)
        return tasks.start(self.task)

    def _tested(self, task: tasks.EngineTask) -> None:
        self.task = None
        self.testButton.setEnabled(True)
        self.collections = []
        if task.error is not None or task.cancelled:
            self.status.setText(task.message)
            return
        found = task.result or []
        self.collections = [cid for cid, _title in found]
        for cid, title in found:
            self.collectionList.addItem(f"{cid} — {title}" if title else cid)
        self.status.setText(self.tr("{n} collection(s) offered.").format(n=len(found)))
