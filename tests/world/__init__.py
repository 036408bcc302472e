"""The offline Sentinel-2 L2A test world: truth API (`World`) and archive (`build_archive`).

    from world import World, build_archive
    w = World(extent_km=6.0, seed=2024)       # region centred on (13.52, 52.34), 4 real tiles
    build_archive(tmp_path / "archive", w)    # COGs + STAC shaped like Earth Search v1

Every band is there at its own resolution, as Earth Search has it: blue, green, red, nir at
10 m; rededge1-3, nir08, swir16, swir22 at 20 m; coastal, nir09 at 60 m (world.landscape).
Facts tests rely on (see truth.py): reflectance is quantised to 1e-4, so written DNs are
exactly round(refl * 10000) (+1000 in sentinel-2-c1-l2a) wherever `clear` is true; snow
(SCL 11) is part of the surface truth of its pass; the superseded `..._0_L2A` duplicate of
S2A_33UUU_20240603 is 3 % darker (an older calibration) so dedupe mistakes show in pixels;
item `datetime`s are a few seconds after `Pass.datetime` (the datastrip start), per tile, as
in Earth Search: group a pass by platform + `s2:datastrip_id` (or orbit + date).
"""

from .geography import Tile
from .passes import Pass
from .truth import COLLECTIONS, DEFAULT_INVALID, ItemInfo, KnownAoi, World

__all__ = ["World", "Tile", "Pass", "KnownAoi", "ItemInfo", "COLLECTIONS", "DEFAULT_INVALID",
           "build_archive"]


def build_archive(*args, **kwargs):
    """See `world.generate.build_archive` (imported lazily: it needs GDAL)."""
    from .generate import build_archive as _build

    return _build(*args, **kwargs)
