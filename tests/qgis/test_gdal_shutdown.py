"""Reading rasters in QGIS's own threads must not crash QGIS when it exits.

A GDAL dataset still open when QGIS shuts GDAL down is closed at interpreter exit and
segfaults; the engine keeps datasets open only in its worker threads, which end with
each run.
"""

import subprocess
import sys
import textwrap


def test_reads_in_the_main_thread_leave_nothing_open_at_qgis_exit(tmp_path):
    script = textwrap.dedent(
        f"""
        import numpy as np, rasterio
        from affine import Affine
        from qgis.core import QgsApplication
        from clearsky.core.grid import Grid
        from clearsky.core import io

        app = QgsApplication([], False)
        app.initQgis()
        path = r"{tmp_path / 'small.tif'}"
        grid = Grid("EPSG:32633", Affine(10, 0, 400000, 0, -10, 5800000), 64, 64)
        io.write_cog(path, grid, np.ones((1, 64, 64), "uint16"), dtype="uint16")
        out = io.read_to_grid(path, grid, allow_local=True)
        assert out is not None and out.sum() == 64 * 64
        app.exitQgis()
        print("read and exited")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "read and exited" in done.stdout
