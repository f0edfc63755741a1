"""Object pose backend ``foundation_pose``: import FoundationPose outputs made by the reference pipeline.

Accepted sources (config ``object_pose.import_dir``; default: the stage-3 cache path itself):
- ``poses_in_cam.pkl``: an array (T,4,4) or a list of 4x4 matrices (object -> camera);
- a folder holding ``poses_in_cam.pkl`` (directly or under ``pose_estimation_output/``);
- a folder of per-frame ``*.txt`` files, each a 4x4 matrix, ordered by the number in the name.
Every matrix is validated (shape, finite, orthonormal rotation); an error names the file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from reconstruction.stages.base import StageInputError
from reconstruction.stages.scene_inputs import load_object_poses, validate_object_poses

logger = logging.getLogger(__name__)

POSES_FILE = "poses_in_cam.pkl"


def _frame_number(path: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[-1]) if digits else -1, path.name)


def load_pose_txt(path: Path) -> np.ndarray:
    try:
        matrix = np.loadtxt(path, dtype=np.float64)
    except ValueError as exc:
        raise StageInputError(f"{path}: not a 4x4 matrix of numbers ({exc})") from exc
    if matrix.size != 16:
        raise StageInputError(f"{path}: expected a 4x4 matrix, got {matrix.size} numbers")
    return validate_object_poses(matrix.reshape(4, 4), str(path))[0]


def import_poses(source: Path) -> np.ndarray:
    """FoundationPose output at ``source`` -> validated float64 (T,4,4) object->camera poses."""
    source = Path(source)
    if source.is_dir():
        for candidate in (source / POSES_FILE, source / "pose_estimation_output" / POSES_FILE):
            if candidate.exists():
                return load_object_poses(candidate)
        texts = sorted(source.glob("*.txt"), key=_frame_number)
        if not texts:
            raise StageInputError(f"{source}: no {POSES_FILE} and no per-frame .txt pose files")
        poses = np.stack([load_pose_txt(path) for path in texts])
        logger.info("imported %d per-frame poses from %s", len(poses), source)
        return poses
    if not source.exists():
        raise StageInputError(f"FoundationPose output not found: {source} (object_pose.import_dir)")
    return load_object_poses(source)
