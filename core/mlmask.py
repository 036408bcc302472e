"""Optional machine-learning cloud and shadow mask: ukis-csmask's ONNX models (Apache-2.0),
run offline with onnxruntime on L2A reflectance at 20 m or coarser.

Both packages are optional: nothing here imports them until a mask is asked for, and
`require()` says how to install them. The model (4 bands blue, green, red, nir, or 6 with
swir16 and swir22) and its weights ship inside the ukis-csmask wheel; one inference session
per model is kept per process. Inputs are cut into chunks of at most CHUNK pixels a side,
so memory stays bounded whatever the grid.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import threading
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from rasterio.enums import Resampling

from .errors import InvalidParameterError
from .grid import Grid, pixel_size_m
from .io import read_to_grid
from .scene import Scene

MODEL_RESOLUTION = 20.0  # metres: the model is run at 20 m, or at the grid's if coarser
CHUNK = 1024  # input pixels per side of one inference call
BANDS4 = ("blue", "green", "red", "nir")
BANDS6 = BANDS4 + ("swir16", "swir22")
CLOUD_CLASS, SHADOW_CLASS = 1, 2
PACKAGES = ("ukis_csmask", "onnxruntime")
INSTALL_HINT = ("The ML cloud mask needs the optional packages ukis-csmask and onnxruntime: "
                "install them into QGIS's Python with `python -m pip install "
                "ukis-csmask==1.0.0 onnxruntime` (scipy and numpy come with QGIS; do not "
                "let pip replace them), then restart QGIS. Or choose another CLOUD_MASK.")

_SESSIONS: Dict[str, Tuple[object, dict]] = {}
_LOCK = threading.Lock()


def missing() -> Tuple[str, ...]:
    """The optional packages that are not installed."""
    return tuple(p for p in PACKAGES if importlib.util.find_spec(p) is None)


def available() -> bool:
    return not missing()


def require() -> None:
    """InvalidParameterError with the install hint when a package is missing."""
    absent = missing()
    if absent:
        raise InvalidParameterError(f"{INSTALL_HINT} Missing: {', '.join(absent)}.")


def _model(bands: Sequence[str]) -> Tuple[object, dict]:
    """(onnxruntime session, model metadata) of the L2A model for these bands, cached."""
    name = "6b" if set(BANDS6) <= set(bands) else "4b"
    with _LOCK:
        if name not in _SESSIONS:
            require()
            import onnxruntime
            spec = importlib.util.find_spec("ukis_csmask")
            assert spec is not None and spec.origin is not None
            folder = Path(spec.origin).parent
            meta = json.loads((folder / f"model_{name}_l2a.json").read_text())
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = min(4, os.cpu_count() or 1)
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(
                str(folder / f"model_{name}_l2a.onnx"), sess_options=options,
                providers=["CPUExecutionProvider"])
            _SESSIONS[name] = (session, meta)
        return _SESSIONS[name]


def classify(image: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Classes per pixel (0 clear, 1 cloud, 2 cloud shadow) of an (h, w, bands) float32
    L2A reflectance image whose bands are named `bands`, chunk by chunk."""
    session, meta = _model(bands)
    data = meta["data"]
    order = [list(bands).index(b) for b in data["dataset_statistics"]["band_names"]]
    mean, std = (np.asarray(v, "float32") for v in data["dataset_statistics"]["img"])
    h, w = image.shape[:2]
    out = np.zeros((h, w), "uint8")
    for r in range(0, h, CHUNK):
        for c in range(0, w, CHUNK):
            chunk = (image[r:r + CHUNK, c:c + CHUNK][..., order] - mean) / std
            out[r:r + CHUNK, c:c + CHUNK] = _predict(session, chunk.astype("float32"),
                                                     tuple(data["target_size"]))
    return out


def _predict(session, image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """ukis-csmask's own tiling (20 % overlap, smooth blending) around one session."""
    from scipy.special import softmax
    from ukis_csmask.utils import tile_array, untile_array

    h, w, _ = image.shape
    pad_h, pad_w = max(0, size[0] - h), max(0, size[1] - w)
    if pad_h or pad_w:  # smaller than one model tile: mirror it up to one
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    tiles = np.moveaxis(tile_array(image, xsize=size[0], ysize=size[1], overlap=0.2), -1, 1)
    name = session.get_inputs()[0].name
    probs = np.concatenate([softmax(session.run(None, {name: tiles[i:i + 1]})[0], axis=1)
                            for i in range(len(tiles))])
    probs = untile_array(np.moveaxis(probs, 1, -1), (*image.shape[:2], probs.shape[1]),
                         overlap=0.2, smooth_blending=True)
    return np.argmax(probs, axis=2).astype("uint8")[:h, :w]


def model_grid(grid: Grid) -> Tuple[Grid, int]:
    """The grid the model runs on (pixels `factor` times the grid's, >= 20 m) and factor."""
    factor = max(1, int(round(MODEL_RESOLUTION / pixel_size_m(grid))))
    coarse = Grid(grid.crs, grid.transform * Affine.scale(factor),
                  int(math.ceil(grid.width / factor)), int(math.ceil(grid.height / factor)))
    return coarse, factor


def cloud_and_shadow(scene: Scene, grid: Grid, *, allow_local: bool = False,
                     cancelled: Optional[Callable[[], bool]] = None) -> Optional[np.ndarray]:
    """True where the model sees cloud or cloud shadow on `grid`; None when the scene
    lacks the four bands or has no data there."""
    bands = BANDS6 if all(b in scene.assets for b in BANDS6) else BANDS4
    if not all(b in scene.assets for b in bands):
        return None
    coarse, factor = model_grid(grid)
    layers = []
    for band in bands:
        dn = read_to_grid(scene.assets[band], coarse, resampling=Resampling.average,
                          allow_local=allow_local, cancelled=cancelled)
        if dn is None:
            return None
        layers.append(dn)
    stack = np.stack(layers, axis=-1)
    valid = np.all(stack > 0, axis=-1)
    if not valid.any():
        return None
    image = np.clip(scene.radiometry.reflectance(stack), 0.0, 1.5).astype("float32")
    classes = classify(image, bands)
    found = np.isin(classes, (CLOUD_CLASS, SHADOW_CLASS)) & valid
    if factor > 1:
        found = np.repeat(np.repeat(found, factor, axis=0), factor, axis=1)
    return found[:grid.height, :grid.width]
