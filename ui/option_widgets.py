"""Dialog widgets <-> the engine's options table: ranges, tooltips, values and settings.

The dialog names one widget per option (`WidgetMap`); everything else (combo items from
the enums, spin box ranges, tooltips, reading, remembering, restoring) loops over the
table, so an option is declared once in core/options.py.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Dict, Tuple, Union

from qgis.PyQt.QtCore import QDate
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateEdit,
    QDoubleSpinBox,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from ..core import options as opts
from ..core.errors import InvalidParameterError
from ..core.options import Option
from . import settings

# option field -> widget, or (check box, date edit) for an optional date
Widget = Union[QWidget, Tuple[QCheckBox, QDateEdit]]
WidgetMap = Dict[str, Widget]


def _qdate(day: date) -> QDate:
    return QDate(day.year, day.month, day.day)


def setup(widgets: WidgetMap, tr=lambda text: text) -> None:
    """Ranges, tooltips and combo items from the table."""
    for field, widget in widgets.items():
        option = opts.option(field)
        main = widget[1] if isinstance(widget, tuple) else widget
        main.setToolTip(tr(option.help))
        if isinstance(main, (QSpinBox, QDoubleSpinBox)):
            if option.minimum is not None:
                main.setMinimum(option.minimum)
            if option.maximum is not None:
                main.setMaximum(option.maximum)
        if isinstance(main, QComboBox) and option.choices is not None:
            main.clear()
            for member in option.choices:
                main.addItem(tr(member.label), member.value)
        if isinstance(widget, tuple):
            check, edit = widget
            check.toggled.connect(edit.setEnabled)
            edit.setEnabled(check.isChecked())


def get(option: Option, widget: Widget) -> Any:
    """The engine value a widget shows; InvalidParameterError for text that does not parse."""
    if isinstance(widget, tuple):
        check, edit = widget
        return edit.date().toPyDate() if check.isChecked() else None
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QSpinBox):
        return int(widget.value())
    if isinstance(widget, QDoubleSpinBox):
        return float(widget.value())
    if isinstance(widget, QDateEdit):
        return widget.date().toPyDate()
    if isinstance(widget, QComboBox):
        if option.choices is not None:
            return option.choices(widget.currentData())
        return widget.currentText().strip()
    if isinstance(widget, QLineEdit):
        return option.parse(widget.text())
    raise TypeError(f"No reader for {type(widget).__name__}")


def put(option: Option, widget: Widget, value: Any) -> None:
    """Show an engine value in a widget."""
    if isinstance(widget, tuple):
        check, edit = widget
        check.setChecked(value is not None)
        if value is not None:
            edit.setDate(_qdate(value))
    elif isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        widget.setValue(value)
    elif isinstance(widget, QDateEdit):
        widget.setDate(_qdate(value))
    elif isinstance(widget, QComboBox):
        if option.choices is not None:
            index = widget.findData(option.choices(value).value)
            widget.setCurrentIndex(max(index, 0))
        else:
            widget.setCurrentText(option.text(value))
    elif isinstance(widget, QLineEdit):
        widget.setText(option.text(value))
    else:
        raise TypeError(f"No writer for {type(widget).__name__}")


def values(widgets: WidgetMap) -> Dict[str, Any]:
    """{field: engine value} of every mapped widget (the parameter object's keywords)."""
    return {field: get(opts.option(field), widget) for field, widget in widgets.items()}


def save(widgets: WidgetMap) -> None:
    """Remember what the widgets show, as the text a user would type (settings are text)."""
    for field, widget in widgets.items():
        option = opts.option(field)
        try:
            value = get(option, widget)
        except InvalidParameterError:  # remember what was typed, even if it does not parse
            value = widget.text() if isinstance(widget, QLineEdit) else None
            settings.set_value(field, value or "")
            continue
        settings.set_value(field, "" if value is None else option.text(value))


def restore(widgets: WidgetMap, defaults: Dict[str, Any]) -> None:
    """Show the remembered values, else `defaults` (dialog-only), else the table's."""
    for field, widget in widgets.items():
        option = opts.option(field)
        fallback = defaults.get(field, option.default)
        stored = settings.value(field, None)
        value = fallback
        if stored is not None:
            try:
                value = option.parse(_from_setting(option, stored))
            except (InvalidParameterError, ValueError):
                value = fallback
        if isinstance(widget, QLineEdit) and stored is not None and value is fallback:
            widget.setText(str(stored))  # a remembered, unparsable text stays for fixing
            continue
        put(option, widget, value)


def _from_setting(option: Option, stored: Any) -> Any:
    """A stored text back to what `Option.parse` takes."""
    if option.kind == opts.BOOL:
        return str(stored).lower() in ("true", "1", "yes")
    if option.kind == opts.NUMBER:
        return float(stored)
    if option.kind == opts.INTEGER:
        return int(float(stored))
    if option.kind == opts.CHOICE and option.choices is not None and str(stored).isdigit():
        return list(option.choices)[int(stored)].value  # an index, as older versions stored
    return stored
