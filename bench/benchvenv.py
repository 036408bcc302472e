"""The benchmark-only venv `.venv-bench`: odc-stac, dask and pip rasterio, apart from QGIS.

Made from Debian's python without --system-site-packages, filled from PyPI with the pins
of bench/requirements.txt, and given a .pth to the plugin's import root so the Clearsky
engine can be timed in it too. A stamp (hash of the pins) makes re-runs a no-op.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-bench"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
BASE_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
IMPORT_ROOT = REPO / ".build" / "importroot"


def python() -> Path:
    return VENV / "bin" / "python"


def _wanted() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def _stamp() -> Path:
    return VENV / ".clearsky-bench-stamp"


def ready() -> bool:
    """True when the venv exists and was filled from the current pins."""
    stamp = _stamp()
    return python().exists() and stamp.exists() and stamp.read_text().strip() == _wanted()


def ensure(quiet: bool = True) -> Path:
    """Create or update .venv-bench when missing or stale; return its python."""
    if ready():
        return python()
    if not python().exists():
        subprocess.run([BASE_PYTHON, "-m", "venv", str(VENV)], check=True)
    pip = [str(python()), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    subprocess.run(pip + ["-r", str(REQUIREMENTS)], check=True)
    site = subprocess.run(
        [str(python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    # The plugin package only; the test world (scipy, GDAL's Python bindings) stays out.
    Path(site, "clearsky-bench.pth").write_text(f"{IMPORT_ROOT}\n")
    _stamp().write_text(_wanted() + "\n")
    return python()


if __name__ == "__main__":
    print(ensure(quiet=False))
