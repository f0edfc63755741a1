"""Stage 1 import of the reference pipeline's own files (GEM body + WiLoR hands, SMPL-X), read as they are.

Two native sources, per video (``<d>/<c>/<v>``), looked up in a results dir laid out as the reference's:

- the stage-1 output ``<hmr_dir>/<d>/<c>/<v>.npz`` (keys ``motion_global`` and ``motion_incam``, each a
  pickled dict): ``poses`` (T,165) = global orient (3), 21 body joints (63), left hand (45), right hand
  (45), zeros; ``betas`` (10,) or (T,10); ``trans`` (T,3) SMPL-X ``transl``; ``left_hand_pose`` /
  ``right_hand_pose`` (T,45) (flat-hand mean); ``predicted_body_height``; ``model`` ("smplx"; "soma" is
  refused: hoiweb has no SOMA body). ``motion_incam`` adds ``vitpose`` (T,17,3) COCO-17 x, y, confidence;
  ``hand_keypoints_2d`` (T,32,3): left then right hand, 16 each in SMPL-X order (wrist, index, middle,
  pinky, ring, thumb, 3 joints each) taken from WiLoR's 21 keypoints; ``foot_contact_probs`` (T,4) or None.
- without it, GEM's body-only cache ``<hmr_cache_dir>/<d>/<c>/<v>/gem_smpl_pred.pt``: ``smpl_params_incam``
  and ``smpl_params_global`` ({``body_pose`` (T,63) or (T,21,3), ``global_orient`` (T,3), ``transl`` (T,3),
  ``betas`` (T,10)}), ``vitpose`` (T,17,3), ``foot_contact_probs`` (1,T,4) or (T,4). The reference runs
  WiLoR afresh each time (it caches no hand output), so hands stay at the flat pose with no hand keypoints.

Only the camera-frame motion is used: the reference's ``motion_global`` lives in GEM's own gravity-aligned
frame, not the render's world, so hoiweb's ``motion_global`` is ``motion_incam`` moved by the render camera
(the same relation its own stage 1 keeps). Every array is checked (shape, frame count, finite); an error
names the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import roma
import torch

from reconstruction.keypoints import LEFT_HAND_SLICE, NUM_BODY, RIGHT_HAND_SLICE, index
from reconstruction.layout import Layout, VideoId
from reconstruction.stages.base import StageInputError

NUM_KEYPOINTS = NUM_BODY + 42
COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
    "left_ankle", "right_ankle",
)  # fmt: skip
COCO17_TO_KEYPOINTS = np.array([index(name) for name in COCO17])
# The reference's 16 hand slots come from WiLoR's 21 keypoints (OpenPose order, which is MediaPipe's hand
# order too) in this order; fingertips (4, 8, 12, 16, 20) are not kept.
HAND_SLOT_TO_LANDMARK = np.array([0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3])
Y_UP_TO_Z_UP = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))  # SMPL-X's frame -> the engine's


def native_output_path(layout: Layout, vid: VideoId) -> Path:
    """The reference's stage-1 output: ``<hmr_dir>/<dataset>/<category>/<video>.npz``."""
    return layout.reference_hmr_output(vid)


def gem_cache_path(layout: Layout, vid: VideoId) -> Path:
    return layout.reference_gem_cache(vid)


@dataclass
class CameraFrameSmplx:
    """SMPL-X parameters in the camera frame (SMPL-X's own conventions) and the 2D keypoints of one video."""

    global_orient: torch.Tensor  # (T,3) axis-angle
    body_pose: torch.Tensor  # (T,21,3)
    left_hand_pose: torch.Tensor  # (T,15,3)
    right_hand_pose: torch.Tensor  # (T,15,3)
    betas: torch.Tensor  # (10,)
    transl: torch.Tensor  # (T,3)
    keypoints_2d: np.ndarray  # (T,75,3) x_px, y_px, confidence in reconstruction.keypoints order
    predicted_body_height: float | None
    foot_contact_probs: np.ndarray | None  # (T,4)
    source: Path

    @property
    def num_frames(self) -> int:
        return int(self.transl.shape[0])


# ---- reading ----------------------------------------------------------------------------------------
def _array(value: Any, path: Path, key: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``value`` as float64 of ``shape`` (None = any size), finite; else an error naming file and key."""
    if value is None:
        raise StageInputError(f"{path}: {key} is missing")
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StageInputError(f"{path}: {key} is not numeric ({exc})") from exc
    expected = "(" + ", ".join("T" if s is None else str(s) for s in shape) + ")"
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape, strict=True)):
        raise StageInputError(f"{path}: {key} must have shape {expected}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise StageInputError(f"{path}: {key} holds NaN or infinite values")
    return array


def _frames(arrays: dict[str, np.ndarray], path: Path) -> int:
    counts = {key: a.shape[0] for key, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise StageInputError(f"{path}: frame counts disagree: {counts}")
    num_frames = next(iter(counts.values()))
    if num_frames == 0:
        raise StageInputError(f"{path}: no frames")
    return num_frames


def _betas(value: Any, path: Path, key: str) -> np.ndarray:
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        if np.ndim(value) == 2:  # per-frame betas (GEM): the reference keeps frame 0
            return _array(value, path, key, (None, 10))[0]
    return _array(value, path, key, (10,))


def _keypoints(vitpose: np.ndarray, hands: np.ndarray | None) -> np.ndarray:
    num_frames = vitpose.shape[0]
    keypoints = np.zeros((num_frames, NUM_KEYPOINTS, 3), dtype=np.float32)
    keypoints[:, COCO17_TO_KEYPOINTS] = vitpose
    if hands is not None:
        keypoints[:, LEFT_HAND_SLICE.start + HAND_SLOT_TO_LANDMARK] = hands[:, :16]
        keypoints[:, RIGHT_HAND_SLICE.start + HAND_SLOT_TO_LANDMARK] = hands[:, 16:]
    return keypoints


def _foot_contact(value: Any, path: Path, key: str, num_frames: int) -> np.ndarray | None:
    if value is None:
        return None
    if np.ndim(value) == 3:  # GEM keeps a batch axis: (1, T, 4)
        value = _array(value, path, key, (1, num_frames, 4))[0]
    return _array(value, path, key, (num_frames, 4))


def read_native_output(path: Path) -> CameraFrameSmplx:
    """The reference's stage-1 ``.npz`` -> validated camera-frame SMPL-X parameters and 2D keypoints."""
    try:
        with np.load(path, allow_pickle=True) as archive:  # the operator's own results dir, as for pickles
            missing = [key for key in ("motion_incam", "motion_global") if key not in archive.files]
            if missing:
                raise StageInputError(f"{path}: missing {', '.join(missing)} (found {', '.join(archive.files)})")
            motions = {key: archive[key].item() for key in ("motion_incam", "motion_global")}
    except StageInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any read failure is a bad cache file
        raise StageInputError(f"{path}: not a readable stage-1 npz ({exc})") from exc
    for key, motion in motions.items():
        if not isinstance(motion, dict):
            raise StageInputError(f"{path}: {key} must be a dict, got {type(motion).__name__}")
        model = str(motion.get("model", "smplx"))
        if model not in ("smplx", "g1_smplx"):
            raise StageInputError(f"{path}: {key}.model is {model!r}; hoiweb imports SMPL-X stage-1 output only")
    incam = motions["motion_incam"]
    arrays = {
        "poses": _array(incam.get("poses"), path, "motion_incam.poses", (None, 165)),
        "trans": _array(incam.get("trans"), path, "motion_incam.trans", (None, 3)),
        "left_hand_pose": _array(incam.get("left_hand_pose"), path, "motion_incam.left_hand_pose", (None, 45)),
        "right_hand_pose": _array(incam.get("right_hand_pose"), path, "motion_incam.right_hand_pose", (None, 45)),
        "vitpose": _array(incam.get("vitpose"), path, "motion_incam.vitpose", (None, 17, 3)),
        "hand_keypoints_2d": _array(incam.get("hand_keypoints_2d"), path, "motion_incam.hand_keypoints_2d", (None, 32, 3)),
    }  # fmt: skip
    num_frames = _frames({f"motion_incam.{k}": v for k, v in arrays.items()}, path)
    glob = motions["motion_global"]
    # motion_global is not used (GEM's own frame) but must be as sound as motion_incam
    _frames(
        {
            "motion_incam.poses": arrays["poses"],
            "motion_global.poses": _array(glob.get("poses"), path, "motion_global.poses", (None, 165)),
            "motion_global.trans": _array(glob.get("trans"), path, "motion_global.trans", (None, 3)),
        },
        path,
    )
    height = incam.get("predicted_body_height", glob.get("predicted_body_height"))
    poses = torch.as_tensor(arrays["poses"], dtype=torch.float32)
    return CameraFrameSmplx(
        global_orient=poses[:, :3],
        body_pose=poses[:, 3:66].reshape(num_frames, 21, 3),
        left_hand_pose=torch.as_tensor(arrays["left_hand_pose"], dtype=torch.float32).reshape(num_frames, 15, 3),
        right_hand_pose=torch.as_tensor(arrays["right_hand_pose"], dtype=torch.float32).reshape(num_frames, 15, 3),
        betas=torch.as_tensor(_betas(incam.get("betas"), path, "motion_incam.betas"), dtype=torch.float32),
        transl=torch.as_tensor(arrays["trans"], dtype=torch.float32),
        keypoints_2d=_keypoints(arrays["vitpose"], arrays["hand_keypoints_2d"]),
        predicted_body_height=None if height is None else float(_array(height, path, "predicted_body_height", ())),
        foot_contact_probs=_foot_contact(
            incam.get("foot_contact_probs"), path, "motion_incam.foot_contact_probs", num_frames
        ),
        source=path,
    )


def read_gem_cache(path: Path) -> CameraFrameSmplx:
    """GEM's ``gem_smpl_pred.pt`` (body only) -> validated camera-frame SMPL-X parameters and keypoints."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any read failure is a bad cache file
        raise StageInputError(f"{path}: not a readable GEM cache ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("smpl_params_incam"), dict):
        raise StageInputError(f"{path}: expected a dict with smpl_params_incam")
    params = data["smpl_params_incam"]
    body_pose = params.get("body_pose")
    if body_pose is not None and np.ndim(body_pose) == 3:
        body_pose = _array(body_pose, path, "smpl_params_incam.body_pose", (None, 21, 3)).reshape(-1, 63)
    arrays = {
        "smpl_params_incam.body_pose": _array(body_pose, path, "smpl_params_incam.body_pose", (None, 63)),
        "smpl_params_incam.global_orient": _array(
            params.get("global_orient"), path, "smpl_params_incam.global_orient", (None, 3)
        ),
        "smpl_params_incam.transl": _array(params.get("transl"), path, "smpl_params_incam.transl", (None, 3)),
        "vitpose": _array(data.get("vitpose"), path, "vitpose", (None, 17, 3)),
    }
    num_frames = _frames(arrays, path)
    zeros = torch.zeros(num_frames, 15, 3)
    return CameraFrameSmplx(
        global_orient=torch.as_tensor(arrays["smpl_params_incam.global_orient"], dtype=torch.float32),
        body_pose=torch.as_tensor(arrays["smpl_params_incam.body_pose"], dtype=torch.float32).reshape(-1, 21, 3),
        left_hand_pose=zeros,
        right_hand_pose=zeros.clone(),
        betas=torch.as_tensor(_betas(params.get("betas"), path, "smpl_params_incam.betas"), dtype=torch.float32),
        transl=torch.as_tensor(arrays["smpl_params_incam.transl"], dtype=torch.float32),
        keypoints_2d=_keypoints(arrays["vitpose"], None),
        predicted_body_height=None,
        foot_contact_probs=_foot_contact(data.get("foot_contact_probs"), path, "foot_contact_probs", num_frames),
        source=path,
    )


def find_native(layout: Layout, vid: VideoId) -> Path | None:
    """The reference's stage-1 file for ``vid`` in ``layout`` (output npz first, then GEM's cache), or None."""
    for path in (native_output_path(layout, vid), gem_cache_path(layout, vid)):
        if path.exists():
            return path
    return None


def read_native(path: Path) -> CameraFrameSmplx:
    return read_native_output(path) if path.suffix == ".npz" else read_gem_cache(path)


# ---- conversion -------------------------------------------------------------------------------------
def engine_pose(body, native: CameraFrameSmplx) -> tuple[torch.Tensor, torch.Tensor]:
    """hoiweb SMPL-X ``pose_aa`` (T,55,3) and ``trans`` (T,3) of the camera-frame body.

    SMPL-X rotates its root about the shaped rest pelvis and adds ``transl``; the engine's SMPL-X turns its
    Y-up frame to Z-up first and puts the pelvis at ``trans`` (``reconstruction.body.smplx_body``). Here the
    camera frame itself is the target frame, so root = global_orient @ up^T and trans = transl + pelvis."""
    num_frames = native.num_frames
    dtype = torch.float32
    up = torch.tensor(Y_UP_TO_Z_UP, dtype=dtype)
    # the engine's native_global_orient(r) is up^T R(r) up: check that convention before relying on it
    probe = torch.tensor([[0.3, -0.2, 0.5]])
    expected = roma.rotmat_to_rotvec(up.T @ roma.rotvec_to_rotmat(probe) @ up)
    if not torch.allclose(body.native_global_orient(probe).cpu().to(dtype), expected, atol=1e-5):
        raise RuntimeError("the SMPL-X body's frame convention changed: update grail_stage1.engine_pose")
    root = roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(native.global_orient) @ up.T)
    pelvis = -body.native_transl(native.betas, torch.zeros(1, 3)).cpu().to(dtype)  # rest pelvis, shaped
    pose = torch.zeros(num_frames, 55, 3, dtype=dtype)
    pose[:, 0] = root
    pose[:, 1:22] = native.body_pose
    pose[:, 25:40] = native.left_hand_pose
    pose[:, 40:55] = native.right_hand_pose
    return pose, native.transl + pelvis
