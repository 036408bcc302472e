"""Compiled libraries Clearsky needs but cannot bundle, and how to install them.

The plugin zip bundles the pure-Python packages (pystac-client, pystac, dateutil); the
compiled ones below must come from the user's QGIS/Python distribution, because a second
GDAL (a pip rasterio wheel) inside the QGIS process breaks it. One text, used by the
toolbar action, the plugin log and the Processing provider. No qgis import here.
"""

from __future__ import annotations

import importlib
from typing import Dict, Iterable, List, Optional

# import name -> package name in Debian/Ubuntu, in the OSGeo4W installer and in conda-forge
PACKAGES: Dict[str, Dict[str, str]] = {
    "numpy": {"debian": "python3-numpy", "osgeo4w": "python3-numpy", "conda": "numpy"},
    "rasterio": {"debian": "python3-rasterio", "osgeo4w": "python3-rasterio", "conda": "rasterio"},
    "shapely": {"debian": "python3-shapely", "osgeo4w": "python3-shapely", "conda": "shapely"},
    "pyproj": {"debian": "python3-pyproj", "osgeo4w": "python3-pyproj", "conda": "pyproj"},
}


def missing_dependencies(modules: Optional[Iterable[str]] = None) -> List[str]:
    """Import names of the required libraries that cannot be imported, in a stable order.

    Any exception counts as missing: a broken binary install raises OSError or
    AttributeError rather than ImportError, and the user fixes both the same way.
    """
    missing = []
    for name in PACKAGES if modules is None else modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - see docstring
            missing.append(name)
    return missing


def install_hint(missing: Optional[Iterable[str]] = None) -> str:
    """Plain-language install instructions for each platform; '' when nothing is missing."""
    names = missing_dependencies() if missing is None else list(missing)
    if not names:
        return ""
    spec = [PACKAGES.get(n, {"debian": f"python3-{n}", "osgeo4w": f"python3-{n}", "conda": n})
            for n in names]
    debian = " ".join(s["debian"] for s in spec)
    osgeo4w = ", ".join(s["osgeo4w"] for s in spec)
    conda = " ".join(s["conda"] for s in spec)
    return (
        f"Clearsky needs the Python package(s) {', '.join(names)}, which QGIS cannot import. "
        "Install them for the Python that QGIS uses, then restart QGIS:\n"
        f"- Debian/Ubuntu: sudo apt install {debian}\n"
        f"- Windows (OSGeo4W installer): run the OSGeo4W Network Installer, choose Advanced "
        f"Install and select the package(s) {osgeo4w}\n"
        f"- conda: conda install -c conda-forge {conda}\n"
        "Do not pip-install rasterio into QGIS: its wheel carries a second GDAL."
    )
