"""Body models behind one seam (``BodyModel``): anny (default) and SMPL-X.

``load_body_model(name, device)`` returns a process-wide cached instance, so stages, the optimiser and the
scene generator share one copy of the model data per device.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from reconstruction.body.base import BodyModel, BodyOutput

__all__ = ["BodyModel", "BodyOutput", "BodyModelError", "load_body_model", "SMPLX_MODEL_DIR_ENV"]

SMPLX_MODEL_DIR_ENV = "SMPLX_MODEL_DIR"
BODY_MODEL_NAMES = ("anny", "smplx")

_cache: dict[tuple, BodyModel] = {}
_lock = threading.Lock()


class BodyModelError(RuntimeError):
    """A body model cannot be loaded (unknown name, missing model files)."""


def _resolve_smplx_dir(model_dir: str | os.PathLike | None) -> Path:
    raw = model_dir if model_dir is not None else os.environ.get(SMPLX_MODEL_DIR_ENV)
    if not raw:
        raise BodyModelError(
            f"SMPL-X needs its licensed model files: set the environment variable {SMPLX_MODEL_DIR_ENV} "
            "(or pass model_dir / human_model.model_dir) to the folder holding SMPLX_NEUTRAL.npz"
        )
    path = Path(raw).expanduser()
    if not path.exists():
        raise BodyModelError(f"SMPL-X model dir {path} (from {SMPLX_MODEL_DIR_ENV} or model_dir) does not exist")
    return path.resolve()


def load_body_model(
    name: str = "anny",
    device: str | torch.device = "cpu",
    model_dir: str | os.PathLike | None = None,
    **options,
) -> BodyModel:
    """The body model ``name`` ("anny" | "smplx") on ``device``, built once per process and reused.

    SMPL-X reads its files from ``model_dir`` or ``$SMPLX_MODEL_DIR``; extra ``options`` (e.g. ``gender``)
    are passed to ``SmplxBody`` and are part of the cache key."""
    if name not in BODY_MODEL_NAMES:
        raise BodyModelError(f"unknown body model {name!r}; expected one of {BODY_MODEL_NAMES}")
    device = torch.device(device)
    if name == "anny":
        if model_dir is not None or options:
            raise BodyModelError("the anny body model takes no model_dir or options (its data ship with the package)")
        key: tuple = ("anny", str(device))
    else:
        resolved = _resolve_smplx_dir(model_dir)
        key = ("smplx", str(device), str(resolved), tuple(sorted(options.items())))
    with _lock:
        model = _cache.get(key)
        if model is None:
            if name == "anny":
                from reconstruction.body.anny_body import AnnyBody

                model = AnnyBody(device=device)
            else:
                from reconstruction.body.smplx_body import SmplxBody

                model = SmplxBody(model_dir=resolved, device=device, **options)
            _cache[key] = model
    return model
