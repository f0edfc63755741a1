"""Refit stage 1's body to its saved 2D keypoints under other FitSettings and score the arms against the truth.

Reads each video's stage-1 keypoints (``hmr_keypoints``: MediaPipe 2D + 3D landmarks, so no detection is
re-run), refits with the defaults and with every ``--variant`` (a JSON object of FitSettings fields), and
prints per video and variant: body MPJPE, the hand-joint error over the ground-truth contact frames and the
signed camera-depth error (> 0 too far) of the wrists and elbows over those frames (cm).

    PYTHONPATH=. python benchmarks/stage1_sweep.py --results_dir R --variant '{"w_pose_prior": 100}'
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from reconstruction import keypoints as kp
from reconstruction.body import load_body_model
from reconstruction.eval.evaluate import contact_hand_error, keypoint_metrics, videos_with_ground_truth
from reconstruction.eval.metrics import project_points
from reconstruction.layout import Layout, VideoId
from reconstruction.render_config import load_cam_k, load_character_data, load_render_config
from reconstruction.stages.fit_body import FitSettings, fit_body
from reconstruction.stages.human_pose import first_frame_body
from reconstruction.synth.ground_truth import load_ground_truth

ARM_POINTS = {"wrist": ("left_wrist", "right_wrist"), "elbow": ("left_elbow", "right_elbow")}


def arm_depth_bias(pred: np.ndarray, gt: np.ndarray, contact: np.ndarray) -> dict[str, float]:
    """Mean signed depth error (m) of each arm point over the frames its hand is in contact."""
    out = {}
    for part, names in ARM_POINTS.items():
        errors = [pred[contact[:, h], kp.index(n), 2] - gt[contact[:, h], kp.index(n), 2] for h, n in enumerate(names)]
        joined = np.concatenate(errors)
        out[part] = float(joined.mean()) if joined.size else float("nan")
    return out


def refit(
    layout: Layout, vid: VideoId, settings: FitSettings, model, oracle_2d: np.ndarray | None = None
) -> np.ndarray:
    """Stage 1's fit of ``vid`` under ``settings``: (T,75,3) camera-frame keypoints. ``oracle_2d`` (T,75,2):
    fit these pixel positions (every keypoint seen) instead of MediaPipe's."""
    with np.load(layout.hmr_keypoints(vid)) as data:
        keypoints_2d = torch.as_tensor(data["keypoints_2d"], dtype=torch.float32)
        body_3d = torch.as_tensor(data["body_landmarks_3d"], dtype=torch.float32)
    if oracle_2d is not None:
        keypoints_2d = torch.cat(
            [torch.as_tensor(oracle_2d, dtype=torch.float32), torch.ones_like(keypoints_2d[..., :1])], -1
        )
    render_config = load_render_config(layout.render_config(vid))
    cam_k_path = layout.cam_k(vid)
    K = torch.as_tensor(
        load_cam_k(cam_k_path) if cam_k_path.exists() else render_config.intrinsics(), dtype=torch.float32
    )
    character = load_character_data(layout.character_data(vid))
    shape, pose_cam0, trans_cam0, world_to_cam = first_frame_body(model, character, render_config)
    fit = fit_body(
        model, keypoints_2d, K, pose_cam0[0], trans_cam0[0], shape, settings, body_3d=body_3d, up=world_to_cam[:3, 2]
    )
    return fit.keypoints_3d.numpy().astype(float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results_dir", required=True)
    parser.add_argument("--videos", nargs="*", default=None, help="dataset/category/name (default: all with gt)")
    parser.add_argument("--variant", action="append", default=[], help="JSON object of FitSettings overrides")
    parser.add_argument("--json", default=None, help="write every row here")
    parser.add_argument(
        "--oracle_2d",
        action="store_true",
        help="fit the true keypoints' projections (the fit's floor, not MediaPipe's)",
    )
    args = parser.parse_args()
    layout = Layout.create(args.results_dir)
    vids = [VideoId.parse(v) for v in args.videos] if args.videos else videos_with_ground_truth(layout)
    vids = [v for v in vids if layout.hmr_keypoints(v).exists()]
    variants = [("default", {})] + [(text, json.loads(text)) for text in args.variant]
    model = load_body_model("anny", device="cpu")
    rows = []
    for vid in vids:
        gt = load_ground_truth(layout.ground_truth(vid))
        for name, overrides in variants:
            started = time.perf_counter()
            oracle = project_points(gt.keypoints_3d_cam, gt.K) if args.oracle_2d else None
            pred = refit(layout, vid, replace(FitSettings(), **overrides), model, oracle)
            scores = keypoint_metrics(pred, gt.keypoints_3d_cam)
            in_contact = contact_hand_error(pred, gt.keypoints_3d_cam, gt.contact)
            bias = arm_depth_bias(pred, gt.keypoints_3d_cam, gt.contact)
            row = {
                "video": str(vid),
                "variant": name,
                "mpjpe_cm": 100 * scores["body_mpjpe_m"],
                "hand_contact_cm": 100 * in_contact if in_contact is not None else float("nan"),
                "wrist_dz_cm": 100 * bias["wrist"],
                "elbow_dz_cm": 100 * bias["elbow"],
                "seconds": time.perf_counter() - started,
            }
            rows.append(row)
            print(
                f"{row['video']:40s} {name[:50]:50s} mpjpe {row['mpjpe_cm']:5.2f} hand@contact {row['hand_contact_cm']:5.2f}"
                f" wrist dz {row['wrist_dz_cm']:+6.2f} elbow dz {row['elbow_dz_cm']:+6.2f} ({row['seconds']:.0f} s)",
                flush=True,
            )
    print("\nmeans over videos:")
    for name, _ in variants:
        mine = [r for r in rows if r["variant"] == name]
        means = {
            k: np.nanmean([r[k] for r in mine]) for k in ("mpjpe_cm", "hand_contact_cm", "wrist_dz_cm", "elbow_dz_cm")
        }
        print(f"  {name[:60]:60s} " + " ".join(f"{k} {v:6.2f}" for k, v in means.items()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
