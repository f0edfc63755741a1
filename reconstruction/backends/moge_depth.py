"""Depth backend ``moge``: per-frame monocular depth from MoGe (PyPI ``dlr-moge``) with a user checkpoint.

The package ships no weights and nothing may be downloaded at run time, so the checkpoint path comes
from ``preprocess.moge_checkpoint`` in the config or the ``MOGE_CHECKPOINT`` environment variable
(MoGe's own ``model.pt``: a dict with ``model_config`` and ``model``). A missing package or checkpoint
is an error naming the setting; there is no silent fallback. The raw estimate is later aligned to the
first-frame GT depth (``depth_align.align_depth``).

The Makefile installs ``dlr-moge`` with ``--no-deps`` (its declared torchvision, gradio and moderngl are
not used by the model; ``huggingface_hub`` is imported by it but never called for a local checkpoint).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconstruction.stages.base import StageInputError

logger = logging.getLogger(__name__)

SETTING = "preprocess.moge_checkpoint (or the MOGE_CHECKPOINT environment variable)"


def resolve_checkpoint(section: dict[str, Any]) -> Path:
    value = section.get("moge_checkpoint") or os.environ.get("MOGE_CHECKPOINT")
    if not value:
        raise StageInputError(f"depth backend 'moge' needs a checkpoint: set {SETTING}")
    path = Path(value).expanduser()
    if not path.exists():
        raise StageInputError(f"MoGe checkpoint not found: {path} (from {SETTING})")
    return path


def load_model(checkpoint: Path, device: str) -> Any:
    """MoGe-1 or MoGe-2 (told apart by the checkpoint's ``model_config``) with the checkpoint's weights."""
    try:
        from moge.model import v1, v2
    except ImportError as exc:
        raise StageInputError(
            "depth backend 'moge' needs the 'dlr-moge' package (make setup installs it) "
            f"and a checkpoint from {SETTING}"
        ) from exc
    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True)
        config = dict(data["model_config"])
        # MoGe-2 nests its encoder's settings in a dict; MoGe-1 names the backbone with a string
        model_class = v2.MoGeModel if isinstance(config.get("encoder"), dict) else v1.MoGeModel
        model = model_class(**config)
        # as MoGe's own from_pretrained (strict=False), but weights that barely fit are refused
        missing = model.load_state_dict(data["model"], strict=False).missing_keys
    except Exception as exc:  # noqa: BLE001 - torch.load, a missing key, a config the model refuses alike
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise StageInputError(
            f"{checkpoint}: not a MoGe checkpoint ({type(exc).__name__}: {detail}); {SETTING}"
        ) from exc
    total = len(model.state_dict())
    if len(missing) > total // 2:
        raise StageInputError(
            f"{checkpoint}: its weights fit only {total - len(missing)} of {total} tensors of the MoGe model "
            f"its model_config describes; {SETTING}"
        )
    return model.to(device).eval()


@torch.inference_mode()
def estimate_depth(
    frames: np.ndarray,
    section: dict[str, Any],
    device: str = "cpu",
    batch_size: int = 4,
    K: np.ndarray | None = None,
    models: dict[Any, Any] | None = None,
) -> torch.Tensor:
    """uint8 (T,H,W,3) RGB -> float32 (T,H,W) metric depth estimate (0 where MoGe's mask is off).

    With the camera intrinsics ``K`` MoGe is given the known horizontal field of view instead of
    estimating it from its own point map. ``models`` (``ctx.models``) keeps the loaded model per process."""
    checkpoint = resolve_checkpoint(section)
    models = {} if models is None else models
    key = ("moge_model", str(checkpoint.resolve()), str(device))
    if key not in models:
        models[key] = load_model(checkpoint, device)
    model = models[key]
    width = frames.shape[2]
    fov_x = None if K is None else math.degrees(2.0 * math.atan(width / (2.0 * float(K[0][0]))))
    depths = []
    for start in range(0, len(frames), batch_size):
        batch = torch.from_numpy(frames[start : start + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255.0
        with warnings.catch_warnings():
            # MoGe wraps its fp32 post-processing in a CPU autocast that torch warns about on every call
            warnings.filterwarnings("ignore", message="In CPU autocast", category=UserWarning)
            # MoGe defaults to fp16 autocast, which CPU convolutions run ~20x slower than fp32
            output = model.infer(batch, fov_x=fov_x, use_fp16=torch.device(device).type == "cuda")
        depth = output["depth"].float()
        if "mask" in output:
            depth = torch.where(output["mask"].bool(), depth, torch.zeros_like(depth))
        depths.append(torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0).cpu())
    return torch.cat(depths)
