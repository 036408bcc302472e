"""Clearsky engine: plain Python (no QGIS, no Qt).

The public entry points are re-exported from `clearsky.core.api`; import them from
there so the QGIS side and scripts share one parameter object and one result object.
"""
