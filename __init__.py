"""Clearsky: cloud-free Sentinel-2 mosaics for QGIS.

QGIS calls `classFactory`. Importing this package imports nothing from QGIS, so the
engine (`clearsky.core`) stays usable from plain Python.
"""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    """Create the plugin; `iface` is None under qgis_process (Processing only)."""
    from .plugin import ClearskyPlugin

    return ClearskyPlugin(iface)
