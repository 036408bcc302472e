"""The real QGIS desktop (under Xvfb) loads, unloads and reloads the plugin from a fresh profile.

pytest-qgis's iface is a stub; this is QgisApp itself: its Raster menu, its Plugins
toolbar and QGIS's own plugin loader (qgis.utils.startPlugin / unloadPlugin). xvfb-run comes
from scripts/setup.sh (Debian xvfb + xauth).
"""

from __future__ import annotations

import json
import subprocess

CHECK = r"""
import json
from qgis import utils
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface


def state():
    return {
        "active": utils.isPluginLoaded("clearsky"),
        "raster": [a.text() for a in iface.rasterMenu().actions()
                   if "Clearsky" in a.text() or "Mosaic" in a.text()],
        "toolbar": [a.text() for a in iface.pluginToolBar().actions()
                    if a.text() == "Cloud-free Mosaic…"],
        "provider": QgsApplication.processingRegistry().providerById("clearsky") is not None,
    }


states = [state()]
utils.unloadPlugin("clearsky")
states.append(state())
utils.loadPlugin("clearsky")
utils.startPlugin("clearsky")
states.append(state())
with open(RESULT, "w") as f:
    json.dump(states, f)
QTimer.singleShot(0, iface.actionExit().trigger)
"""


def test_qgis_desktop_shows_menu_toolbar_and_provider(qgis_process_env, tmp_path):
    env = qgis_process_env()  # same throw-away profile set-up as for qgis_process
    env.pop("QT_QPA_PLATFORM")  # the desktop needs a (virtual) display, not offscreen
    root = env["QGIS_CUSTOM_CONFIG_PATH"]
    result = tmp_path / "states.json"
    script = tmp_path / "check.py"
    script.write_text(f"RESULT = {str(result)!r}\n" + CHECK)
    out = subprocess.run(
        ["xvfb-run", "-a", "qgis", "--profiles-path", root, "--nologo", "--noversioncheck",
         "--code", str(script)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.exists(), out.stdout + out.stderr
    loaded, unloaded, reloaded = json.loads(result.read_text())
    # one Raster menu entry with a verb and an ellipsis, no "Clearsky > Clearsky" sub-menu
    shown = {"active": True, "raster": ["Cloud-free Mosaic…"], "toolbar": ["Cloud-free Mosaic…"],
             "provider": True}
    assert loaded == shown
    assert unloaded == {"active": False, "raster": [], "toolbar": [], "provider": False}
    assert reloaded == shown
    assert "Traceback" not in out.stdout + out.stderr
