"""QGIS 4 / Qt6: every plugin module and .ui file checked against PyQt6 from PyPI.

Sets up .venv-qt6 when missing (pinned PyQt6 from PyPI, no system site packages; a no-op
once there), then runs tests/qt6/qt6check.py in it: the attribute chains and imports taken
from qgis.PyQt must exist in PyQt6 (scoped enums, no exec_, no QRegExp ...) and each .ui
must be buildable by PyQt6.uic. The snippets below prove that the checker fails on what
QGIS 4 rejects and lets through the guarded Qt5/Qt6 spellings that QGIS 3.22 needs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import qt6venv  # noqa: E402


@pytest.fixture(scope="session")
def qt6_python() -> Path:
    return qt6venv.ensure()  # a fresh clone has no .venv-qt6 yet: the first use makes it


def run_checker(python: Path, *files: Path, tmp: Path) -> Dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(tmp))
    out = subprocess.run(
        [str(python), "-I", str(qt6venv.CHECKER), "--json", "--root", str(REPO),
         *map(str, files)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert (out.returncode == 1) == bool(result["problems"])
    return result


def shown(problems: List[Dict]) -> str:
    return "\n".join(f"{p['file']}:{p['line']}: {p['message']}" for p in problems)


def by_line(problems: List[Dict]) -> Dict[int, List[str]]:
    lines: Dict[int, List[str]] = {}
    for p in problems:
        lines.setdefault(p["line"], []).append(p["message"])
    return lines


def _packager():
    spec = importlib.util.spec_from_file_location("clearsky_package_qt6",
                                                  REPO / "scripts" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_qt6_venv_is_isolated_and_pinned(qt6_python, tmp_path):
    assert qt6venv.ready()
    code = ("import sys, PyQt6.QtCore as c, importlib.util as u, importlib.metadata as m; "
            "print(sys.prefix, c.PYQT_VERSION_STR, m.version('PyQt6-Qt6'), "
            "m.version('PyQt6-sip'), u.find_spec('qgis') is None, u.find_spec('PyQt5') is None)")
    out = subprocess.run([str(qt6_python), "-I", "-c", code], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"}).stdout.split()
    pins = dict(line.split("==") for line in qt6venv.REQUIREMENTS.read_text().splitlines()
                if "==" in line)
    assert out[0] == str(qt6venv.VENV)  # neither the QGIS venv nor the system python
    assert out[1:4] == [pins["PyQt6"], pins["PyQt6-Qt6"], pins["PyQt6-sip"]]
    assert out[4:] == ["True", "True"]  # no QGIS, no Qt5 in it


def test_plugin_passes_the_qt6_check(qt6_python, tmp_path):
    result = run_checker(qt6_python, tmp=tmp_path)
    checked = {str(Path(p).resolve().relative_to(REPO)) for p in result["checked"]}
    shipped = {name.split("/", 1)[1] for name, _ in _packager().plugin_files(REPO)
               if name.endswith((".py", ".ui"))}
    assert checked == shipped  # every module and form the zip ships, nothing else
    assert result["problems"] == [], "QGIS 4 / PyQt6 would reject:\n" + shown(result["problems"])


QT5_SNIPPET = """\
from qgis.PyQt.QtCore import Qt, QRegExp, QVariant
from qgis.PyQt.QtWidgets import QAction, QDesktopWidget, QMessageBox
from qgis.PyQt import QtCore
from qgis.core import QgsField


def run(dlg, label):
    label.setAlignment(Qt.AlignLeft)
    if dlg.exec_() == QMessageBox.Yes:
        return QgsField("name", QVariant.String)
    role = getattr(Qt, "UserRole")
    return QtCore.Qt.Checked, role
"""


def test_checker_reports_short_enums_exec_and_qt5_names(qt6_python, tmp_path):
    snippet = tmp_path / "snippet.py"
    snippet.write_text(QT5_SNIPPET)
    problems = run_checker(qt6_python, snippet, tmp=tmp_path)["problems"]
    assert {p["file"] for p in problems} == {str(snippet)}
    lines = by_line(problems)
    assert sorted(lines) == [1, 2, 8, 9, 10, 11, 12], shown(problems)
    assert any("QRegExp" in m and "QRegularExpression" in m for m in lines[1])
    assert len(lines[2]) == 2 and any("QAction" in m and "QtGui" in m for m in lines[2])
    assert any("QDesktopWidget" in m for m in lines[2])
    assert lines[8] == ["`Qt.AlignLeft` does not exist in PyQt6 (QGIS 4): use the scoped enum "
                        "`Qt.AlignmentFlag.AlignLeft`"]
    assert len(lines[9]) == 2
    assert any("`.exec_`" in m and "exec()" in m for m in lines[9])
    assert any("QMessageBox.Yes" in m and "QMessageBox.StandardButton.Yes" in m
               for m in lines[9])
    assert any("QVariant.String" in m and "QMetaType.Type" in m for m in lines[10])
    assert any("Qt.UserRole" in m and "Qt.ItemDataRole.UserRole" in m for m in lines[11])
    assert any("QtCore.Qt.Checked" in m and "Qt.CheckState.Checked" in m for m in lines[12])


QT6_SNIPPET = """\
from qgis.core import Qgis
from qgis.PyQt import QtCore, uic
from qgis.PyQt.QtCore import NULL, QMetaType, Qt, QVariant
from qgis.PyQt.QtWidgets import QDialogButtonBox, QLayout, QMessageBox, QSizePolicy

try:  # Qt5 (QGIS 3)
    from qgis.PyQt.QtWidgets import QAction
except ImportError:  # Qt6 (QGIS 4)
    from qgis.PyQt.QtGui import QAction
try:
    LEFT = Qt.AlignLeft
except AttributeError:
    LEFT = Qt.AlignmentFlag.AlignLeft
if Qgis.QGIS_VERSION_INT >= 33800:
    STRING = QMetaType.Type.QString
else:
    STRING = QVariant.String
OLD = QVariant.Double if Qgis.QGIS_VERSION_INT < 33800 else QMetaType.Type.Double
ROLE = getattr(Qt, "UserRole", None) or Qt.ItemDataRole.UserRole + 1
HAS = hasattr(QMessageBox, "Yes")


def run(dlg, layout, box):
    box.button(QDialogButtonBox.StandardButton.Close).setDefault(True)
    if dlg.exec() == QMessageBox.StandardButton.Yes:
        layout.addItem(QSizePolicy.Policy.Minimum)
    QLayout.setMargin(layout, 0)  # QGIS 4 adds it
    dlg.custom_attribute = QtCore.Qt.AlignmentFlag.AlignLeft
    return NULL, QAction, uic.loadUiType
"""


def test_checker_accepts_scoped_and_guarded_spellings(qt6_python, tmp_path):
    snippet = tmp_path / "snippet.py"
    snippet.write_text(QT6_SNIPPET)
    problems = run_checker(qt6_python, snippet, tmp=tmp_path)["problems"]
    assert problems == [], shown(problems)


UI = """\
<?xml version="1.0" encoding="UTF-8"?>
<ui version="4.0">
 <class>Form</class>
 <widget class="QDialog" name="Form">
  <layout class="QVBoxLayout" name="layout">
   <item><widget class="QgsFileWidget" name="output"><property name="storageMode"><enum>QgsFileWidget::SaveFile</enum></property></widget></item>
   <item><widget class="QgsMapLayerComboBox" name="layers"/></item>
   <item><widget class="QLabel" name="label"><property name="alignment"><set>{alignment}</set></property></widget></item>
   <item><spacer name="gap"><property name="orientation"><enum>Qt::Vertical</enum></property>{size}</spacer></item>
   <item><widget class="QDialogButtonBox" name="buttonBox"><property name="standardButtons"><set>QDialogButtonBox::Close|QDialogButtonBox::Help</set></property></widget></item>
  </layout>
 </widget>
 <customwidgets>
  <customwidget><class>QgsMapLayerComboBox</class><extends>QComboBox</extends><header>qgis.gui</header></customwidget>
  <customwidget><class>QgsFileWidget</class><extends>QWidget</extends><header>qgis.gui</header></customwidget>
 </customwidgets>
</ui>
"""  # noqa: E501
SIZE = ('<property name="sizeHint" stdset="0"><size><width>20</width><height>40</height></size>'
        "</property>")


def test_checker_builds_ui_files_with_pyqt6_uic(qt6_python, tmp_path):
    good, bad = tmp_path / "good.ui", tmp_path / "bad.ui"
    good.write_text(UI.format(alignment="Qt::AlignLeft|Qt::AlignVCenter", size=SIZE))
    bad.write_text(UI.format(alignment="Qt::AlignLeft|Qt::AlignNowhere", size=""))
    problems = run_checker(qt6_python, good, bad, tmp=tmp_path)["problems"]
    assert {p["file"] for p in problems} == {str(bad)}, shown(problems)
    lines = by_line(problems)
    assert any("spacer `gap` has no sizeHint" in m for m in lines[9]), shown(problems)
    assert any("cannot build it" in m and "AlignNowhere" in m for m in lines[1]), shown(problems)
