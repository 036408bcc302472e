"""Check the plugin against PyQt6 as QGIS 4 exposes it; run in .venv-qt6 (see qt6venv.py).

QGIS 4's `qgis.PyQt.<Module>` is `from PyQt6.<Module> import *` (plus `QtCore.NULL` and
`QLayout.setMargin`), so whatever the plugin takes from `qgis.PyQt` must exist in PyQt6 with
PyQt6's rules: scoped enums only (`Qt.AlignmentFlag.AlignLeft`, never `Qt.AlignLeft`), no
`exec_`, no `QRegExp`, `QDesktopWidget`, `QVariant.String`..., `QAction` in QtGui.

1. Python modules, statically (nothing of QGIS is imported): every `from qgis.PyQt.<M> import
   <Name>` must name something in `PyQt6.<M>`, and every attribute chain rooted in such a name
   (`QSizePolicy.Policy.Minimum`, `getattr(Qt, "AlignLeft")`) must resolve against the real
   PyQt6 object. Any `.exec_` is reported. What QGIS 4 never runs is not checked: an import
   inside `try:` whose handler catches ImportError, a chain inside `try:` whose handler catches
   AttributeError, the branch of `if Qgis.QGIS_VERSION_INT < 33800:` that 4.x never takes,
   and `getattr(X, "name", default)` / `hasattr(X, "name")` probes.
2. `.ui` files: each is built as the plugin builds it (`uic.loadUiType`, then `setupUi`) and with
   `uic.loadUi`, under an offscreen QApplication, so a Qt5-only class, enum or property fails
   there; spacers without a sizeHint (a TypeError in PyQt6's uic) are reported with their line.
   Custom QGIS widgets (`<header>qgis.gui</header>`) are stubbed as subclasses of their
   `<extends>` base that accept any QGIS-specific property or enum.
Not seen: enums reached through instances or subclasses (`self.table.SelectRows`), names built
at run time (`getattr(QVariant, name)`).

Usage: python qt6check.py [--root DIR] [--json] [FILE.py|FILE.ui ...]
Prints one `path:line: message` per problem (or JSON) and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import ast
import enum
import importlib
import json
import os
import sys
import types
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_FILES = ("__init__.py", "plugin.py", "dependencies.py")
PLUGIN_DIRS = ("core", "ui", "provider")
QGIS_VERSION_INT = 40000  # the QGIS that branches on Qgis.QGIS_VERSION_INT are judged for
# What QGIS 4's qgis/PyQt/PyQt6/*.py add to the PyQt6 modules they re-export.
MODULE_ADDITIONS = {("QtCore", "NULL")}
CLASS_ADDITIONS = {("QLayout", "setMargin")}
# What the plugin can import from qgis.PyQt on QGIS 4, and the PyQt6 module each one is.
QGIS_PYQT = {"sip": "PyQt6.sip", "uic": "PyQt6.uic"}
# PyQt6 modules that come in distributions of their own: pin them in requirements.txt to check.
EXTRA_DISTRIBUTIONS = {"PyQt6.Qsci": "PyQt6-QScintilla", "PyQt6.QtWebEngineWidgets":
                       "PyQt6-WebEngine", "PyQt6.QtWebEngineCore": "PyQt6-WebEngine"}
HINTS = {
    "exec_": "use exec()",
    "QRegExp": "use QRegularExpression (QtCore)",
    "QRegExpValidator": "use QRegularExpressionValidator (QtGui)",
    "QDesktopWidget": "use QGuiApplication.primaryScreen() / QWidget.screen()",
    "QAction": "QAction, QActionGroup and QShortcut are in QtGui on Qt6",
    "QActionGroup": "QAction, QActionGroup and QShortcut are in QtGui on Qt6",
    "QShortcut": "QAction, QActionGroup and QShortcut are in QtGui on Qt6",
    "QFileSystemModel": "QFileSystemModel is in QtGui on Qt6",
    "QUndoStack": "the undo framework is in QtGui on Qt6",
    "QUndoCommand": "the undo framework is in QtGui on Qt6",
    "QStringListModel": "QStringListModel is in QtCore",
    "QVariant": "QgsField and friends take QMetaType.Type on QGIS 4 (QMetaType.Type.QString, "
                ".Double, .Bool, .Int, .LongLong, .QDate, .QDateTime)",
    "pyqtSignature": "use pyqtSlot",
}
IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError"})
ATTRIBUTE_ERRORS = frozenset({"AttributeError"})


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


# -- Python modules ---------------------------------------------------------------------------
def _pyqt6_module(module: str) -> Optional[types.ModuleType]:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _missing(target: str) -> str:
    extra = EXTRA_DISTRIBUTIONS.get(target)
    if extra:
        return f"{target} is not in .venv-qt6: pin {extra} in tests/qt6/requirements.txt"
    return f"there is no {target} in PyQt6 (QGIS 4)"


def _qgis_pyqt_target(module: str) -> Optional[str]:
    """`qgis.PyQt.QtCore` -> `PyQt6.QtCore`; None for modules outside qgis.PyQt."""
    parts = module.split(".")
    if parts[:2] != ["qgis", "PyQt"] or len(parts) < 3:
        return None
    head = QGIS_PYQT.get(parts[2], f"PyQt6.{parts[2]}")
    return ".".join([head] + parts[3:])


def _caught(handler_type: Optional[ast.expr]) -> FrozenSet[str]:
    if handler_type is None:
        return frozenset()
    nodes = handler_type.elts if isinstance(handler_type, ast.Tuple) else [handler_type]
    names = set()
    for n in nodes:
        if isinstance(n, ast.Name):
            names.add(n.id)
        elif isinstance(n, ast.Attribute):
            names.add(n.attr)
    return frozenset(names)


def _version_operand(node: ast.expr) -> bool:
    """`Qgis.QGIS_VERSION_INT` or `Qgis.versionInt()` (any prefix)."""
    if isinstance(node, ast.Call) and not node.args:
        node = node.func
        return isinstance(node, ast.Attribute) and node.attr == "versionInt"
    return isinstance(node, ast.Attribute) and node.attr == "QGIS_VERSION_INT"


def static_truth(test: ast.expr) -> Optional[bool]:
    """The value of a QGIS version test on QGIS 4, None when the test is not one."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = static_truth(test.operand)
        return None if inner is None else not inner
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    left, op, right = test.left, test.ops[0], test.comparators[0]
    if _version_operand(right) and isinstance(left, ast.Constant):
        left, right = right, left
        op = {ast.Lt: ast.Gt(), ast.Gt: ast.Lt(), ast.LtE: ast.GtE(), ast.GtE: ast.LtE()}.get(
            type(op), op)
    if not (_version_operand(left) and isinstance(right, ast.Constant)
            and isinstance(right.value, int)):
        return None
    v, c = QGIS_VERSION_INT, right.value
    table = {ast.Lt: v < c, ast.LtE: v <= c, ast.Gt: v > c, ast.GtE: v >= c, ast.Eq: v == c,
             ast.NotEq: v != c}
    return table.get(type(op))


@dataclass
class _Chain:
    names: Tuple[str, ...]
    line: int
    tolerated: bool


class _Walker:
    """Collects the qgis.PyQt bindings and the attribute chains of one module."""

    def __init__(self, filename: str):
        self.filename = filename
        self.problems: List[Problem] = []
        self.bindings: Dict[str, object] = {}  # local name -> PyQt6 object
        self.chains: List[_Chain] = []

    def report(self, node: ast.AST, message: str) -> None:
        self.problems.append(Problem(self.filename, getattr(node, "lineno", 0), message))

    # traversal ---------------------------------------------------------------------------
    def visit(self, node: ast.AST, caught: FrozenSet[str] = frozenset()) -> None:
        if isinstance(node, (ast.If, ast.IfExp)):
            truth = static_truth(node.test)
            self.visit(node.test, caught)
            body = node.body if isinstance(node.body, list) else [node.body]
            orelse = node.orelse if isinstance(node.orelse, list) else [node.orelse]
            for child in (body if truth is not False else []) + (orelse if truth is not True
                                                                 else []):
                self.visit(child, caught)
            return
        if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            inner = caught.union(*(_caught(h.type) for h in node.handlers))
            for child in node.body:
                self.visit(child, inner)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                self.visit(child, caught)
            return
        if isinstance(node, ast.ImportFrom):
            self._import_from(node, caught)
        elif isinstance(node, ast.Import):
            self._import(node, caught)
        elif isinstance(node, ast.Attribute):
            self._attribute(node, caught)
            return
        elif isinstance(node, ast.Call) and self._getattr_call(node, caught):
            return
        for child in ast.iter_child_nodes(node):
            self.visit(child, caught)

    # imports -----------------------------------------------------------------------------
    def _import_from(self, node: ast.ImportFrom, caught: FrozenSet[str]) -> None:
        if node.level or not node.module:
            return
        tolerated = bool(caught & IMPORT_ERRORS)
        if node.module.split(".")[0] == "PyQt5":
            if not tolerated:
                self.report(node, f"`from {node.module} import ...`: QGIS 4 has no PyQt5; "
                                  "import from qgis.PyQt")
            return
        if node.module == "qgis.PyQt":  # from qgis.PyQt import QtCore, uic, sip
            for alias in node.names:
                target = _qgis_pyqt_target(f"qgis.PyQt.{alias.name}")
                module = _pyqt6_module(target)
                if module is None:
                    if not tolerated:
                        self.report(node, f"`qgis.PyQt.{alias.name}`: {_missing(target)}")
                    continue
                self.bindings[alias.asname or alias.name] = module
            return
        target = _qgis_pyqt_target(node.module)
        if target is None and node.module.split(".")[0] == "PyQt6":
            target = node.module
        if target is None:
            return
        module = _pyqt6_module(target)
        if module is None:
            if not tolerated:
                self.report(node, f"`{node.module}`: {_missing(target)}")
            return
        short = target.split(".", 1)[1]
        for alias in node.names:
            if alias.name == "*":
                self.report(node, f"`from {node.module} import *` cannot be checked; name the "
                                  "imports")
                continue
            if hasattr(module, alias.name) or (short, alias.name) in MODULE_ADDITIONS:
                self.bindings[alias.asname or alias.name] = getattr(module, alias.name, None)
            elif not tolerated:
                hint = HINTS.get(alias.name, "")
                self.report(node, f"`{alias.name}` is not in {target} (QGIS 4 / Qt6)"
                                  + (f": {hint}" if hint else ""))

    def _import(self, node: ast.Import, caught: FrozenSet[str]) -> None:
        tolerated = bool(caught & IMPORT_ERRORS)
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top == "PyQt5":
                if not tolerated:
                    self.report(node, f"`import {alias.name}`: QGIS 4 has no PyQt5")
                continue
            target = _qgis_pyqt_target(alias.name)
            if target is None and top == "PyQt6":
                target = alias.name
            if target is None:
                continue
            module = _pyqt6_module(target)
            if module is None:
                if not tolerated:
                    self.report(node, f"`import {alias.name}`: {_missing(target)}")
            elif alias.asname:
                self.bindings[alias.asname] = module
            # `import qgis.PyQt.QtCore` binds `qgis`: chains qgis.PyQt.X... are handled below

    # attribute chains --------------------------------------------------------------------
    def _attribute(self, node: ast.Attribute, caught: FrozenSet[str]) -> None:
        names: List[str] = []
        cur: ast.expr = node
        while isinstance(cur, ast.Attribute):
            names.append(cur.attr)
            if cur.attr == "exec_":
                self.report(cur, "`.exec_` does not exist in PyQt6 (QGIS 4): use `.exec()`")
            cur = cur.value
        names.reverse()
        if isinstance(cur, ast.Name):
            if isinstance(node.ctx, ast.Store):
                names = names[:-1]  # assigning an attribute creates it
            if names:
                self.chains.append(_Chain((cur.id, *names), node.lineno,
                                          bool(caught & ATTRIBUTE_ERRORS)))
        else:
            self.visit(cur, caught)

    def _getattr_call(self, node: ast.Call, caught: FrozenSet[str]) -> bool:
        """`getattr(Qt, "AlignLeft")` is the chain Qt.AlignLeft; with a default, a probe."""
        func = node.func
        if not (isinstance(func, ast.Name) and func.id in ("getattr", "hasattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)):
            return False
        self.visit(node.args[0], caught)
        for extra in node.args[2:]:
            self.visit(extra, caught)
        if func.id == "hasattr" or len(node.args) > 2:
            return True
        base = node.args[0]
        names: List[str] = [node.args[1].value]
        while isinstance(base, ast.Attribute):
            names.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            self.chains.append(_Chain((base.id, *reversed(names)), node.lineno,
                                      bool(caught & ATTRIBUTE_ERRORS)))
        return True

    def resolve(self) -> None:
        for chain in self.chains:
            root, *attrs = chain.names
            if root == "qgis" and attrs[:1] == ["PyQt"] and len(attrs) >= 2 and \
                    root not in self.bindings:
                target = _qgis_pyqt_target(f"qgis.PyQt.{attrs[1]}")
                module = _pyqt6_module(target)
                if module is None:
                    self.problems.append(Problem(self.filename, chain.line, _missing(target)))
                    continue
                obj, path, attrs = module, [target.split(".", 1)[1]], attrs[2:]
            elif root in self.bindings:
                obj, path = self.bindings[root], [root]
                if isinstance(obj, types.ModuleType):
                    path = [obj.__name__.split(".", 1)[-1]]
            else:
                continue
            problem = _resolve(obj, path, attrs)
            if problem and not chain.tolerated:
                shown = ".".join(chain.names)
                self.problems.append(Problem(self.filename, chain.line,
                                             f"`{shown}` does not exist in PyQt6 (QGIS 4): "
                                             f"{problem}"))


def _scoped_suggestion(owner: object, name: str) -> Optional[str]:
    """`AlignLeft` on Qt -> `AlignmentFlag.AlignLeft`: the scoped enum that has that member."""
    for key in dir(owner):
        value = getattr(owner, key, None)
        if isinstance(value, type) and issubclass(value, enum.Enum) and name in value.__members__:
            return f"{key}.{name}"
    return None


def _resolve(obj: object, path: List[str], attrs: Sequence[str]) -> Optional[str]:
    """None when obj.attrs... exists, else why not."""
    for attr in attrs:
        if (path[-1], attr) in CLASS_ADDITIONS or (path[-1], attr) in MODULE_ADDITIONS:
            return None  # added by QGIS; nothing further to check
        if obj is None or not hasattr(obj, attr):
            if obj is None:
                return None  # a name QGIS adds (QtCore.NULL): its attributes are not known
            scoped = _scoped_suggestion(obj, attr)
            if scoped:
                return f"use the scoped enum `{'.'.join(path)}.{scoped}`"
            hint = HINTS.get(attr) or HINTS.get(path[-1]) or ""
            return f"no `{attr}` in `{'.'.join(path)}`" + (f"; {hint}" if hint else "")
        obj = getattr(obj, attr)
        path.append(attr)
    return None


def check_python(path: Path, shown: Optional[str] = None) -> List[Problem]:
    shown = shown or str(path)
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=shown)
    except SyntaxError as e:
        return [Problem(shown, e.lineno or 0, f"syntax error: {e.msg}")]
    walker = _Walker(shown)
    walker.visit(tree)
    walker.resolve()
    return walker.problems


# -- .ui files --------------------------------------------------------------------------------
def _accepting(base: type, name: str) -> type:
    """A stub of a QGIS widget: a `base` that takes any QGIS-only setter or enum value."""

    class Meta(type(base)):
        def __getattr__(cls, attr):  # QgsFileWidget::SaveFile in a <enum>
            if attr.startswith("__"):
                raise AttributeError(attr)
            return 0

    def __getattr__(self, attr):  # noqa: N807 - setStorageMode(...) from a <property>
        if attr.startswith("set"):
            return lambda *args: None
        raise AttributeError(attr)

    return Meta(name, (base,), {"__getattr__": __getattr__})


def _stub_custom_widgets(ui: Path) -> None:
    from PyQt6 import QtWidgets

    root = ET.parse(ui).getroot()
    declared = {}
    for cw in root.iter("customwidget"):
        declared[cw.findtext("class")] = (cw.findtext("extends") or "QWidget",
                                          (cw.findtext("header") or "").strip())
    made: Dict[str, type] = {}

    def make(name: str, seen: Tuple[str, ...] = ()) -> type:
        if name in made:
            return made[name]
        if hasattr(QtWidgets, name):
            return getattr(QtWidgets, name)
        if name not in declared or name in seen:
            raise ValueError(f"custom widget {name}: base class unknown to Qt6")
        extends, header = declared[name]
        cls = _accepting(make(extends, (*seen, name)), name)
        module_name = header[:-2].replace("/", ".") if header.endswith(".h") else header
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        setattr(sys.modules[module_name], name, cls)
        made[name] = cls
        return cls

    for name in declared:
        make(name)


def _spacers_without_size(path: Path, shown: str) -> List[Problem]:
    """PyQt6's uic builds a spacer with no sizeHint as QSpacerItem(policy, policy): TypeError
    (PyQt5 took the enums as ints). Designer always writes one; hand-written .ui may not."""
    root = ET.parse(path).getroot()
    bare = [sp.get("name") for sp in root.iter("spacer")
            if not any(p.get("name") == "sizeHint" for p in sp.findall("property"))]
    lines = path.read_text(encoding="utf-8").splitlines()
    problems = []
    for name in bare:
        line = next((i for i, text in enumerate(lines, 1) if f'<spacer name="{name}"' in text), 0)
        problems.append(Problem(shown, line, (
            f"spacer `{name}` has no sizeHint: PyQt6's uic then calls QSpacerItem(policy, "
            "policy) and fails with TypeError; add <property name=\"sizeHint\" stdset=\"0\">"
            "<size><width>40</width><height>20</height></size></property>")))
    return problems


def check_ui(path: Path, shown: Optional[str] = None) -> List[Problem]:
    """Build the form as the plugin does (uic.loadUiType, then setupUi) and with uic.loadUi."""
    shown = shown or str(path)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt6 import QtWidgets, uic

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])  # noqa: F841
    try:
        _stub_custom_widgets(path)
    except ET.ParseError as e:
        return [Problem(shown, e.position[0], f"not valid XML: {e}")]
    except ValueError as e:
        return [Problem(shown, 1, str(e))]
    problems = _spacers_without_size(path, shown)
    errors = []

    def load_ui_type():
        form, base = uic.loadUiType(str(path))
        widget = base()
        form().setupUi(widget)
        return widget

    for how, build in (("loadUiType + setupUi", load_ui_type),
                       ("loadUi", lambda: uic.loadUi(str(path)))):
        try:
            build().deleteLater()
        except Exception as e:  # noqa: BLE001 - whatever uic raises is the finding
            message = " ".join(f"{type(e).__name__}: {e}".split())
            if message not in errors:
                errors.append(message)
                problems.append(Problem(shown, 1, f"PyQt6.uic ({how}) cannot build it: "
                                                  f"{message}"))
    return problems


# -- the plugin -------------------------------------------------------------------------------
def plugin_sources(root: Path = ROOT) -> Tuple[List[Path], List[Path]]:
    """The plugin's own .py and .ui files (never tests/, bench/, scripts/)."""
    py = [root / name for name in PLUGIN_FILES if (root / name).is_file()]
    ui: List[Path] = []
    for folder in PLUGIN_DIRS:
        for path in sorted((root / folder).rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix == ".py":
                py.append(path)
            elif path.suffix == ".ui":
                ui.append(path)
    return py, ui


def check(files: Iterable[Path], root: Path) -> List[Problem]:
    problems: List[Problem] = []
    for path in files:
        try:
            shown = str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            shown = str(path)
        if path.suffix == ".ui":
            problems += check_ui(path, shown)
        else:
            problems += check_python(path, shown)
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    if args.files:
        files = list(args.files)
    else:
        py, ui = plugin_sources(args.root)
        files = py + ui
    problems = check(files, args.root)
    if args.json:
        print(json.dumps({"checked": [str(f) for f in files],
                          "problems": [asdict(p) for p in problems]}))
    else:
        for p in problems:
            print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
