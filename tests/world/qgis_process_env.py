"""Run `qgis_process.bin` with Clearsky enabled in a throw-away QGIS profile.

How qgis_process (QGIS 3.22 to 4.x) finds and enables the plugin:

1. `QGIS_CUSTOM_CONFIG_PATH=<root>`: settings and the profile come from
   `<root>/profiles/default/` instead of the user's real profile.
2. `<root>/profiles/default/QGIS/QGIS3.ini` (QGIS4.ini on QGIS 4) holds
   `[PythonPlugins] clearsky=true`. At start qgis_process loads every plugin that is
   enabled there AND whose metadata.txt says `hasProcessingProvider=yes`: it imports the
   package, calls `classFactory(None)` and `initProcessing()`. (`qgis_process.bin plugins
   enable clearsky` writes the same key.)
3. The plugin folder: `QGIS_PLUGINPATH` adds a folder that holds `clearsky/`, searched as
   well as `<root>/profiles/default/python/plugins`. By default it is the checkout
   (`.build/importroot/clearsky -> repo`); pass `plugin_path=None` to use only the
   profile's own plugins folder, where an unzipped package goes.
4. qgis_process embeds Debian's Python, which does not see the venv: in development the
   venv's site-packages go on `PYTHONPATH` so pystac-client is found (`venv=False` for the
   packaged plugin, which carries its own copy).
5. `QT_QPA_PLATFORM=offscreen`; run `qgis_process.bin`, never the `qgis_process` wrapper
   script (it passes --noversioncheck, which the 3.22 binary rejects).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
DEV_PLUGIN_PATH = REPO / ".build" / "importroot"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
# Set by pytest-qgis for the test process; a child must get its own profile instead.
_INHERITED = ("QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH", "QGIS_PLUGINPATH", "PYTHONPATH",
              "PYTHONHOME", "PYTHONSTARTUP")


def profile_dir(root: Path) -> Path:
    """The `default` profile folder under a QGIS_CUSTOM_CONFIG_PATH root."""
    return Path(root) / "profiles" / "default"


def plugins_dir(root: Path) -> Path:
    """Where QGIS installs plugins of that profile ("Install from ZIP" unzips here)."""
    return profile_dir(root) / "python" / "plugins"


def _settings_file(root: Path) -> Path:
    from qgis.core import Qgis

    name = "QGIS4.ini" if Qgis.QGIS_VERSION_INT >= 40000 else "QGIS3.ini"
    return profile_dir(root) / "QGIS" / name


def enable_plugins(root: Path, plugins: Iterable[str] = ("clearsky",)) -> Path:
    """Write `[PythonPlugins] <name>=true` into the profile's settings; return the file."""
    ini = _settings_file(root)
    ini.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[PythonPlugins]"] + [f"{name}=true" for name in plugins]
    ini.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ini


def venv_site_packages() -> Optional[str]:
    """The venv's own site-packages, or None when not running in a venv."""
    if sys.prefix == sys.base_prefix:
        return None
    return sysconfig.get_paths()["purelib"]


def qgis_process_env(
    root: Path,
    plugin_path: Optional[Path] = DEV_PLUGIN_PATH,
    venv: bool = True,
    plugins: Iterable[str] = ("clearsky",),
    extra: Optional[Dict[str, str]] = None,
) -> Dict[str, str]:
    """An environment in which `qgis_process.bin` loads Clearsky from a fresh profile at root."""
    root = Path(root)
    plugins_dir(root).mkdir(parents=True, exist_ok=True)
    enable_plugins(root, plugins)
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED}
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(root)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env.setdefault("XDG_RUNTIME_DIR", str(root / "xdg-runtime"))
    Path(env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    if plugin_path is not None:
        env["QGIS_PLUGINPATH"] = str(plugin_path)
    site = venv_site_packages() if venv else None
    if site:
        env["PYTHONPATH"] = site
    env.update(extra or {})
    return env


def run_qgis_process(
    args: Sequence[str], env: Dict[str, str], timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Run `qgis_process.bin <args>` and capture text output."""
    return subprocess.run(
        [QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )
