"""Where the tests find data that lives outside the repository.

The real Earth Search / Planetary Computer STAC fixtures sit in the project's shared folder,
`../shared/real-stac` beside the repository root; CLEARSKY_REAL_STAC points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REAL_STAC = Path(os.environ.get("CLEARSKY_REAL_STAC") or REPO.parent / "shared" / "real-stac")
