"""Enum spellings that work on QGIS 3.22 (Qt5) and QGIS 3.36+ / 4.x (Qt6).

QGIS 3.36 moved most Processing enums into the `Qgis` namespace
(`Qgis.ProcessingNumberParameterType.Double`); QGIS 4 builds drop the old
class-scoped names (`QgsProcessingParameterNumber.Type.Double`) that 3.22 needs.
Each constant here takes the new spelling when it exists, else the old one.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    Qgis,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QMetaType, QVariant


def _pick(new_enum: str, new_member: str, old_owner: Any, old_enum: str, old_member: str) -> Any:
    """`Qgis.<new_enum>.<new_member>` when this QGIS has it, else the class-scoped old name."""
    new = getattr(Qgis, new_enum, None)
    if new is not None and hasattr(new, new_member):
        return getattr(new, new_member)
    return getattr(getattr(old_owner, old_enum), old_member)


NUMBER_DOUBLE = _pick(
    "ProcessingNumberParameterType", "Double", QgsProcessingParameterNumber, "Type", "Double"
)
NUMBER_INTEGER = _pick(
    "ProcessingNumberParameterType", "Integer", QgsProcessingParameterNumber, "Type", "Integer"
)
DATE_ONLY = _pick(
    "ProcessingDateTimeParameterDataType", "Date", QgsProcessingParameterDateTime, "Type", "Date"
)
SOURCE_POLYGON = _pick(
    "ProcessingSourceType", "VectorPolygon", QgsProcessing, "SourceType", "TypeVectorPolygon"
)
SOURCE_VECTOR = _pick("ProcessingSourceType", "Vector", QgsProcessing, "SourceType", "TypeVector")
FIELD_ANY = _pick(
    "ProcessingFieldParameterDataType", "Any", QgsProcessingParameterField, "DataType", "Any"
)
FLAG_OPTIONAL = _pick(
    "ProcessingParameterFlag", "Optional", QgsProcessingParameterDefinition, "Flag", "FlagOptional"
)
FLAG_ADVANCED = _pick(
    "ProcessingParameterFlag", "Advanced", QgsProcessingParameterDefinition, "Flag", "FlagAdvanced"
)
ALG_CAN_CANCEL = _pick(
    "ProcessingAlgorithmFlag", "CanCancel", QgsProcessingAlgorithm, "Flag", "FlagCanCancel"
)
ALG_SUPPORTS_BATCH = _pick(
    "ProcessingAlgorithmFlag", "SupportsBatch", QgsProcessingAlgorithm, "Flag", "FlagSupportsBatch"
)
WKB_MULTIPOLYGON = _pick("WkbType", "MultiPolygon", QgsWkbTypes, "Type", "MultiPolygon")
WKB_NOGEOMETRY = _pick("WkbType", "NoGeometry", QgsWkbTypes, "Type", "NoGeometry")

# QgsField takes QMetaType.Type from QGIS 3.38 on (and only that on Qt6), QVariant.Type before.
if Qgis.QGIS_VERSION_INT >= 33800:
    FIELD_STRING = QMetaType.Type.QString
    FIELD_DOUBLE = QMetaType.Type.Double
    FIELD_BOOL = QMetaType.Type.Bool
else:
    FIELD_STRING = QVariant.Type.String
    FIELD_DOUBLE = QVariant.Type.Double
    FIELD_BOOL = QVariant.Type.Bool

