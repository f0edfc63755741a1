"""Mask backend ``sam2``: SAM 2 video propagation of the first-frame object and human masks.

Uses the PyPI ``sam2`` package (sdist, no weights). The checkpoint comes from
``preprocess.sam2_checkpoint`` or ``SAM2_CHECKPOINT``; the model config (a name inside the package,
e.g. ``configs/sam2.1/sam2.1_hiera_s.yaml``) from ``preprocess.sam2_model_cfg``, else from an official
checkpoint's file name (the reference's ``sam2_hiera_large.pt`` -> ``configs/sam2/sam2_hiera_l.yaml``).
A missing package or checkpoint, or weights that do not fit the config, raise an error naming the
setting - never a silent fallback to another backend.

Only SAM 2's video predictor is used: it imports neither torchvision (which sam2 declares, for its image
predictor and automatic mask generator) nor the optional CUDA extension (hole filling is off here), so the
package is installed with ``--no-deps`` beside the engine's own torch (see the Makefile).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from reconstruction.stages.base import StageInputError

logger = logging.getLogger(__name__)

SETTING = "preprocess.sam2_checkpoint (or the SAM2_CHECKPOINT environment variable)"
DEFAULT_CONFIG = "configs/sam2.1/sam2.1_hiera_s.yaml"
OBJECT_ID, HUMAN_ID = 1, 2


def resolve_checkpoint(section: dict[str, Any]) -> Path:
    value = section.get("sam2_checkpoint") or os.environ.get("SAM2_CHECKPOINT")
    if not value:
        raise StageInputError(f"mask backend 'sam2' needs a checkpoint: set {SETTING}")
    path = Path(value).expanduser()
    if not path.exists():
        raise StageInputError(f"SAM 2 checkpoint not found: {path} (from {SETTING})")
    return path


def build_predictor(
    section: dict[str, Any], device: str, checkpoint: Path | None, hydra_overrides: tuple[str, ...] = ()
) -> Any:
    """SAM 2 video predictor. ``checkpoint=None`` (random weights) and ``hydra_overrides`` (e.g. a smaller
    ``++model.image_size``) are only for plumbing tests."""
    try:
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError as exc:
        raise StageInputError(
            f"mask backend 'sam2' needs the 'sam2' package and its dependencies (make setup installs them; "
            f"import failed: {exc}) and a checkpoint from {SETTING}"
        ) from exc
    config_name = model_config_for(section, checkpoint)
    try:
        return build_sam2_video_predictor(
            config_name,
            str(checkpoint) if checkpoint else None,
            device=device,
            apply_postprocessing=False,
            hydra_overrides_extra=list(hydra_overrides),
        )
    except Exception as exc:  # noqa: BLE001 - hydra, torch.load and load_state_dict failures alike
        if isinstance(exc, torch.OutOfMemoryError):
            raise
        if type(exc).__name__ == "MissingConfigException":
            raise StageInputError(
                f"preprocess.sam2_model_cfg: {config_name!r} is not a model config of the sam2 package "
                f"(e.g. {DEFAULT_CONFIG})"
            ) from exc
        if checkpoint is None:
            raise
        detail = (str(exc).strip().splitlines() or [""])[0][:200]  # load_state_dict lists every key
        raise StageInputError(
            f"{checkpoint}: not a SAM 2 checkpoint for the model config {config_name!r} ({type(exc).__name__}: "
            f"{detail}); set preprocess.sam2_model_cfg to the config it was trained with"
        ) from exc


def get_predictor(
    models: dict[Any, Any], section: dict[str, Any], device: str, hydra_overrides: tuple[str, ...] = ()
) -> Any:
    """The predictor for this checkpoint, config and device, built once per process (``ctx.models``)."""
    checkpoint = resolve_checkpoint(section)
    key = ("sam2_predictor", str(checkpoint.resolve()), section.get("sam2_model_cfg"), str(device))
    if key not in models:
        models[key] = build_predictor(section, device, checkpoint, hydra_overrides)
    return models[key]


def model_config_for(section: dict[str, Any], checkpoint: Path | None) -> str:
    """``preprocess.sam2_model_cfg``; else the config the package pairs with an official checkpoint file
    name (e.g. ``sam2_hiera_large.pt`` -> ``configs/sam2/sam2_hiera_l.yaml``); else ``DEFAULT_CONFIG``."""
    explicit = section.get("sam2_model_cfg")
    if explicit:
        return str(explicit)
    if checkpoint is not None:
        from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

        by_file = {file_name: config for config, file_name in HF_MODEL_ID_TO_FILENAMES.values()}
        if checkpoint.name in by_file:
            return by_file[checkpoint.name]
    return DEFAULT_CONFIG


def track_masks(
    frames: np.ndarray,
    first_object: np.ndarray,
    first_human: np.ndarray,
    section: dict[str, Any],
    device: str = "cpu",
    predictor: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Propagate both first-frame masks through the video -> object (T,H,W) bool, human (T,H,W) bool."""
    if predictor is None:
        predictor = build_predictor(section, device, resolve_checkpoint(section))
    num_frames, height, width, _ = frames.shape
    object_masks = np.zeros((num_frames, height, width), dtype=bool)
    human_masks = np.zeros_like(object_masks)
    with tempfile.TemporaryDirectory(prefix="sam2_frames_") as folder:
        # SAM 2's video loader reads a folder of numbered JPEGs.
        for index, frame in enumerate(frames):
            cv2.imwrite(str(Path(folder) / f"{index:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        with torch.inference_mode():
            state = predictor.init_state(video_path=folder, offload_video_to_cpu=True)
            predictor.add_new_mask(state, frame_idx=0, obj_id=OBJECT_ID, mask=first_object)
            predictor.add_new_mask(state, frame_idx=0, obj_id=HUMAN_ID, mask=first_human)
            for frame_index, object_ids, mask_logits in predictor.propagate_in_video(state):
                logits = mask_logits[:, 0].float().cpu().numpy()
                for obj_id, logit in zip(object_ids, logits, strict=True):
                    target = object_masks if obj_id == OBJECT_ID else human_masks
                    target[frame_index] = logit > 0.0
    # The object wins where both claim a pixel only if the human does not occlude it: SAM 2 tracks each
    # instance independently, so resolve overlaps in favour of the (occluding) human.
    object_masks &= ~human_masks
    return object_masks, human_masks
