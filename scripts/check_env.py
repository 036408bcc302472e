"""Fail loudly if the venv shadows Debian's numpy, GDAL or rasterio.

A pip rasterio wheel carries its own GDAL (a second, different GDAL in the QGIS
process), and a pip numpy 2 breaks Debian's compiled rasterio.
"""

import importlib
import sys

DEBIAN_ONLY = ("numpy", "rasterio", "osgeo", "shapely", "pyproj")
SYSTEM_PREFIX = "/usr/lib/python3/dist-packages/"


def main() -> int:
    bad = []
    for name in DEBIAN_ONLY:
        module = importlib.import_module(name)
        if not module.__file__.startswith(SYSTEM_PREFIX):
            bad.append(f"{name} is imported from {module.__file__}")
    import qgis.core  # noqa: F401  (QGIS must be importable from the venv)
    import rasterio
    from osgeo import gdal

    if rasterio.__gdal_version__ != gdal.__version__:
        bad.append(f"rasterio links GDAL {rasterio.__gdal_version__}, QGIS uses {gdal.__version__}")
    if bad:
        print("check_env: the environment is broken:", *bad, sep="\n  ", file=sys.stderr)
        print("Remove the pip copies (pip uninstall ...); use Debian's packages.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
