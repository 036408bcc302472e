"""The Qt6 check venv `.venv-qt6`: PyQt6 from PyPI, apart from QGIS and its Qt5.

Made from Debian's python without --system-site-packages, filled from PyPI with the pins of
tests/qt6/requirements.txt. A stamp (hash of the pins) makes re-runs a no-op; a venv left
half-made (no stamp, stale pins) is filled again in place. A lock keeps two test runs of
this checkout from filling it at once. Nothing of the plugin is installed in it: the
checker (qt6check.py) reads the plugin's files, it never imports them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-qt6"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
CHECKER = Path(__file__).with_name("qt6check.py")
BASE_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def python() -> Path:
    return VENV / "bin" / "python"


def _wanted() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def _stamp() -> Path:
    return VENV / ".clearsky-qt6-stamp"


def ready() -> bool:
    """True when the venv exists and was filled from the current pins."""
    stamp = _stamp()
    return python().exists() and stamp.exists() and stamp.read_text().strip() == _wanted()


def ensure(quiet: bool = True) -> Path:
    """Create or update .venv-qt6 when missing or stale; return its python."""
    if ready():
        return python()
    VENV.mkdir(exist_ok=True)
    (VENV / ".gitignore").write_text("*\n")  # git never sees it, whether .gitignore names it
    with open(VENV / ".clearsky-qt6.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if ready():  # filled by another run while this one waited
                return python()
            if not python().exists():
                subprocess.run([BASE_PYTHON, "-m", "venv", str(VENV)], check=True)
            pip = [str(python()), "-m", "pip", "install", "--disable-pip-version-check"]
            if quiet:
                pip.append("-q")
            subprocess.run(pip + ["-r", str(REQUIREMENTS)], check=True)
            _stamp().write_text(_wanted() + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return python()


if __name__ == "__main__":
    print(ensure(quiet=False))
