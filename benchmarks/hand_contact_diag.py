"""Where the hand error during contact comes from: wrist placement vs finger articulation, stage 1 vs stage 4.

For every synthetic video under ``--results_dir`` (or ``--videos``), per hand over the ground-truth contact
frames (camera frame, cm): the absolute 21-keypoint error (``contact_hand_error``), the wrist's error split
into image-plane (x, y) and depth (z) parts, the wrist-relative error (articulation + hand orientation) and the
hand-frame error (each hand expressed in its own wrist / index / pinky knuckle frame: finger articulation
alone), and the fingertips' distance to the true object surface (negative inside). Also the stage-1 2D hand
keypoints' pixel error against the projected truth. ``--per_frame`` prints one row per contact frame.

    PYTHONPATH=. python benchmarks/hand_contact_diag.py --results_dir R [--per_frame]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from reconstruction import keypoints as kp
from reconstruction.eval import metrics
from reconstruction.layout import Layout
from reconstruction.render_config import load_pickle
from reconstruction.synth.ground_truth import load_ground_truth

HANDS = (("left", kp.LEFT_HAND_SLICE), ("right", kp.RIGHT_HAND_SLICE))
TIPS = [4, 8, 12, 16, 20]
PALM = [0, 5, 9, 17]  # wrist, index, middle and pinky knuckles: their mean is the palm centre


def hand_frame(hand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 21, 3) -> rotation (..., 3, 3) columns x (pinky->index), y, z and origin (wrist)."""
    wrist, index_mcp, pinky_mcp = hand[..., 0, :], hand[..., 5, :], hand[..., 17, :]
    x = index_mcp - pinky_mcp
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    forward = (index_mcp + pinky_mcp) / 2 - wrist
    z = np.cross(x, forward)
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=-1), wrist


def in_hand_frame(hand: np.ndarray) -> np.ndarray:
    rot, origin = hand_frame(hand)
    return np.einsum("...ji,...nj->...ni", rot, hand - origin[..., None, :])


def posed_keypoints_cam(hoi_path: Path, w2c: np.ndarray) -> np.ndarray:
    from reconstruction.body import load_body_model

    data = load_pickle(hoi_path)
    human = data["human_data"]
    body = load_body_model(human.get("body_model", "anny"), device="cpu")
    poses = torch.as_tensor(np.asarray(human["poses"]), dtype=torch.float32)
    T = poses.shape[0]
    poses = poses.reshape(T, -1, 3)
    shape = torch.as_tensor(np.asarray(human["betas"]), dtype=torch.float32).reshape(-1)[: body.num_shape]
    trans = torch.as_tensor(np.asarray(human["trans"]), dtype=torch.float32).reshape(T, 3)
    with torch.no_grad():
        kw = body.forward(poses, shape, trans).keypoints.double().numpy()
    return np.einsum("tij,tnj->tni", w2c[:, :3, :3], kw) + w2c[:, None, :3, 3]


def tip_surface_distance(tips_cam: np.ndarray, gt, mesh) -> np.ndarray:
    """(T, 5, 3) fingertips in the camera frame -> signed distance (T, 5) to the TRUE object surface (m)."""
    from reconstruction.eval.geometry import point_mesh_signed_distance

    verts, faces = mesh
    poses = gt.object_poses_cam
    local = np.einsum("tji,tnj->tni", poses[:, :3, :3], tips_cam - poses[:, None, :3, 3])
    flat = torch.as_tensor(local.reshape(-1, 3))
    return point_mesh_signed_distance(flat, verts, faces).numpy().reshape(local.shape[:2])


def summarise(name: str, pred: np.ndarray, gt_kp: np.ndarray, contact: np.ndarray, sd_fn, per_frame: bool) -> dict:
    out = {}
    for h, (hand, sl) in enumerate(HANDS):
        frames = np.flatnonzero(contact[:, h])
        if frames.size == 0:
            continue
        p, g = pred[frames][:, sl], gt_kp[frames][:, sl]
        wrist = p[:, 0] - g[:, 0]
        rel = (p - p[:, :1]) - (g - g[:, :1])
        frame_err = np.linalg.norm(in_hand_frame(p) - in_hand_frame(g), axis=-1).mean()
        rot_p, rot_g = hand_frame(p)[0], hand_frame(g)[0]
        cos = (np.einsum("tij,tij->t", rot_p, rot_g) - 1) / 2
        rot_deg = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        palm_deg = np.degrees(np.arccos(np.clip((rot_p[..., 2] * rot_g[..., 2]).sum(-1), -1, 1)))
        tips_sd = sd_fn(p[:, TIPS], frames)
        gt_tips_sd = sd_fn(g[:, TIPS], frames)
        palm_sd = sd_fn(p[:, PALM].mean(1, keepdims=True), frames)[:, 0]
        gt_palm_sd = sd_fn(g[:, PALM].mean(1, keepdims=True), frames)[:, 0]
        row = {
            "abs": metrics.hand_joint_error(p, g) * 100,
            "wrist": np.linalg.norm(wrist, axis=-1).mean() * 100,
            "wrist_xy": np.linalg.norm(wrist[:, :2], axis=-1).mean() * 100,
            "wrist_z": np.abs(wrist[:, 2]).mean() * 100,
            "wrist_z_signed": wrist[:, 2].mean() * 100,
            "rel": np.linalg.norm(rel, axis=-1).mean() * 100,
            "handframe": frame_err * 100,
            "rot_deg": float(rot_deg.mean()),
            "palm_deg": float(palm_deg.mean()),
            "tip_sd_med": float(np.median(tips_sd)) * 100,
            "gt_tip_sd_med": float(np.median(gt_tips_sd)) * 100,
            "palm_sd_med": float(np.median(palm_sd)) * 100,
            "gt_palm_sd_med": float(np.median(gt_palm_sd)) * 100,
            "gt_tip_sd_each": (np.median(gt_tips_sd, axis=0) * 100).round(2).tolist(),
            "n": int(frames.size),
        }
        out[hand] = row
        print(
            f"  {name:3s} {hand:5s} n={row['n']:2d} abs {row['abs']:5.2f} | wrist {row['wrist']:5.2f} "
            f"(xy {row['wrist_xy']:5.2f}, |z| {row['wrist_z']:5.2f}, z {row['wrist_z_signed']:+6.2f}) | "
            f"wrist-rel {row['rel']:5.2f} | rot {row['rot_deg']:4.1f} deg (palm normal {row['palm_deg']:4.1f}) | hand-frame {row['handframe']:5.2f} | tips sd med {row['tip_sd_med']:+5.2f} "
            f"(gt {row['gt_tip_sd_med']:+5.2f} {row['gt_tip_sd_each']}) | palm sd {row['palm_sd_med']:+5.2f} (gt {row['gt_palm_sd_med']:+5.2f})"
        )
        if per_frame:
            for i, t in enumerate(frames):
                e = np.linalg.norm(p[i] - g[i], axis=-1).mean() * 100
                r = np.linalg.norm(rel[i], axis=-1).mean() * 100
                print(
                    f"      t={t:2d} abs {e:5.2f} wrist d=({wrist[i, 0] * 100:+5.1f},{wrist[i, 1] * 100:+5.1f},"
                    f"{wrist[i, 2] * 100:+5.1f}) rel {r:5.2f} rot {rot_deg[i]:4.0f} palm {palm_deg[i]:4.0f} tips sd {np.round(tips_sd[i] * 100, 1)}"
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results_dir", required=True)
    parser.add_argument("--videos", nargs="*", default=None, help="dataset/category/name (default: all with gt)")
    parser.add_argument("--per_frame", action="store_true")
    parser.add_argument("--json", default=None, help="write the summary here")
    parser.add_argument("--output_dir", default=None, help="stage 4 outputs (paths.output_dir) if not the default")
    args = parser.parse_args()
    from reconstruction.eval.evaluate import _load_mesh, videos_with_ground_truth
    from reconstruction.layout import VideoId

    layout = Layout.create(args.results_dir, {"output_dir": args.output_dir} if args.output_dir else None)
    vids = [VideoId.parse(v) for v in args.videos] if args.videos else videos_with_ground_truth(layout)
    summary = {}
    for vid in vids:
        gt = load_ground_truth(layout.ground_truth(vid))
        mesh = _load_mesh(Path(gt.object_mesh_path) if Path(gt.object_mesh_path).exists() else layout.mesh(vid))

        def sd_fn(points: np.ndarray, frames: np.ndarray, gt=gt, mesh=mesh) -> np.ndarray:
            sub = type("G", (), {"object_poses_cam": gt.object_poses_cam[frames]})
            return tip_surface_distance(points, sub, mesh)

        print(f"{vid}: contact frames L {int(gt.contact[:, 0].sum())} R {int(gt.contact[:, 1].sum())}")
        entry = {}
        hmr = layout.hmr_result(vid)
        if hmr.exists():
            s1 = np.asarray(torch.load(hmr, map_location="cpu", weights_only=False)["keypoints_3d_cam"], dtype=float)
            entry["s1"] = summarise("S1", s1, gt.keypoints_3d_cam, gt.contact, sd_fn, args.per_frame)
            kp_file = layout.hmr_keypoints(vid)
            if kp_file.exists():
                with np.load(kp_file) as data:
                    k2 = np.asarray(data["keypoints_2d"], dtype=float)
                gt_xy = metrics.project_points(gt.keypoints_3d_cam, gt.K)
                for h, (hand, sl) in enumerate(HANDS):
                    frames = np.flatnonzero(gt.contact[:, h])
                    seen = k2[frames][:, sl, 2] > 0.3
                    err = np.linalg.norm(k2[frames][:, sl, :2] - gt_xy[frames][:, sl], axis=-1)
                    s1_xy = metrics.project_points(s1[frames][:, sl], gt.K)
                    fit = np.linalg.norm(s1_xy - gt_xy[frames][:, sl], axis=-1)
                    if frames.size:
                        print(
                            f"  2D  {hand:5s} seen {seen.mean():.2f} MediaPipe px median {np.median(err[seen]) if seen.any() else np.nan:5.1f}"
                            f" (tips {np.median(err[:, TIPS][seen[:, TIPS]]) if seen[:, TIPS].any() else np.nan:5.1f}); "
                            f"S1 fit reprojected vs truth px median {np.median(fit):5.1f} (tips {np.median(fit[:, TIPS]):5.1f})"
                        )
        hoi = layout.raw_hoi_data(vid)
        if hoi.exists():
            s4 = posed_keypoints_cam(hoi, np.asarray(gt.world_to_cam, dtype=float))
            entry["s4"] = summarise("S4", s4, gt.keypoints_3d_cam, gt.contact, sd_fn, args.per_frame)
        summary[str(vid)] = entry
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
