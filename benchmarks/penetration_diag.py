"""Which body vertices penetrate the object after stage 4, where on the body, in which frames, and why the
optimiser's penetration term did not push them out.

For every synthetic video under ``--results_dir`` (or ``--videos``): the stage-4 body (hoi_data.pkl) is posed in
full and every vertex's exact depth inside the object mesh at the stage-4 object pose is taken (the measure of
``reconstruction.eval.evaluate.body_penetration``). Per video: the maximum, the frames whose deepest vertex is over
``--min_cm``, with the contact labels stage 4 used (L/R), the true contact, the body part of the deepest vertex
(the bone with the largest skinning weight) and whether the optimiser's penetration term can see it: among the
vertices the optimiser poses (400 per hand, a sparse body cover of 600), its signed distance on the optimiser's
grid (``geometry.mesh_sdf_grid``) and, for comparison, by the sample SDF the term used before the grid
(``losses.signed_distance`` over 512 surface samples; it judged points under a bottle's shoulder outside).

    PYTHONPATH=. python benchmarks/penetration_diag.py --results_dir R [--min_cm 0.5]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from reconstruction.eval.geometry import depth_inside
from reconstruction.layout import Layout
from reconstruction.optim import geometry, losses
from reconstruction.optim import optimizer as opt
from reconstruction.render_config import load_pickle
from reconstruction.synth.ground_truth import load_ground_truth

SAMPLE_SDF_POINTS = 512  # the samples of the penetration term's SDF before the grid


def part_of(bone: str) -> str:
    name = bone.lower()
    for key, part in (
        ("finger1", "thumb"), ("finger2", "index"), ("finger3", "middle"), ("finger4", "ring"), ("finger5", "pinky"),
        ("metacarpal", "palm"), ("wrist", "palm"), ("lowerarm", "forearm"), ("upperarm", "upper arm"),
        ("shoulder", "shoulder"), ("clavicle", "shoulder"), ("spine", "torso"), ("pelvis", "hips"), ("root", "hips"),
        ("upperleg", "thigh"), ("lowerleg", "shin"), ("foot", "foot"), ("toe", "foot"), ("neck", "neck"),
    ):  # fmt: skip
        if key in name:
            side = ".l" in name and "L " or ".r" in name and "R " or ""
            return side + part
    return bone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results_dir", required=True)
    parser.add_argument("--videos", nargs="*", default=None)
    parser.add_argument("--min_cm", type=float, default=0.5, help="list frames whose deepest vertex is deeper")
    parser.add_argument("--output_dir", default=None, help="stage 4 outputs (paths.output_dir) if not the default")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from reconstruction.body import load_body_model
    from reconstruction.eval.evaluate import _load_mesh, videos_with_ground_truth
    from reconstruction.layout import VideoId

    layout = Layout.create(args.results_dir, {"output_dir": args.output_dir} if args.output_dir else None)
    vids = [VideoId.parse(v) for v in args.videos] if args.videos else videos_with_ground_truth(layout)
    body = load_body_model("anny", device="cpu")
    bone_names = list(body.joint_names)
    vertex_bone = body.skinning_weights.argmax(1)
    vertex_part = [part_of(bone_names[b]) for b in vertex_bone.tolist()]
    hand_sets = [set(body.vertex_segments[s].tolist()) for s in ("left_hand", "right_hand")]
    hand_sub = [
        set(ids[geometry.subsample_indices(len(ids), opt.HAND_POINTS_PER_HAND)].tolist())
        for ids in (torch.as_tensor(body.vertex_segments[s]) for s in ("left_hand", "right_hand"))
    ]
    body_sub = set(opt.body_cover_ids(body.vertex_segments, body.num_vertices).tolist())
    summary = {}
    for vid in vids:
        hoi = layout.raw_hoi_data(vid)
        if not hoi.exists():
            continue
        gt = load_ground_truth(layout.ground_truth(vid))
        verts, faces = _load_mesh(Path(gt.object_mesh_path) if Path(gt.object_mesh_path).exists() else layout.mesh(vid))
        data = load_pickle(hoi)
        human, obj = data["human_data"], data["obj_data"]
        T = np.asarray(human["poses"]).shape[0]
        poses = torch.as_tensor(np.asarray(human["poses"]), dtype=torch.float32).reshape(T, -1, 3)
        shape = torch.as_tensor(np.asarray(human["betas"]), dtype=torch.float32).reshape(-1)[: body.num_shape]
        trans = torch.as_tensor(np.asarray(human["trans"]), dtype=torch.float32).reshape(T, 3)
        with torch.no_grad():
            vw = body.forward(poses, shape, trans).vertices.double()
        R = torch.as_tensor(np.asarray(obj["obj_R"]), dtype=torch.float64).reshape(T, 3, 3)
        t = torch.as_tensor(np.asarray(obj["obj_t"]), dtype=torch.float64).reshape(T, 3)
        scale = float(np.asarray(obj.get("obj_scale", 1.0)).reshape(-1)[0])
        mv = verts * scale
        local = (vw - t[:, None]) @ R
        depth = depth_inside(local, mv, faces)  # (T, V)
        labels_file = layout.contact_labels(vid)
        labels = (
            np.asarray(json.loads(labels_file.read_text())["frames"], dtype=bool)
            if labels_file.exists()
            else np.zeros((T, 2), bool)
        )
        # the optimiser's view: the grid SDF it uses, and the 512-sample SDF it used before
        pts, nrm = geometry.sample_surface(mv.float(), faces, 1000, seed=0)
        pts, nrm = pts[:SAMPLE_SDF_POINTS], geometry.outward_normals(pts, nrm)[:SAMPLE_SDF_POINTS]
        grid = geometry.mesh_sdf_grid(mv.float(), faces)
        cell = torch.tensor([grid.cell])
        per_frame = depth.amax(1)
        print(
            f"{vid}: max {per_frame.max() * 100:.2f} cm at frame {int(per_frame.argmax())}; frames with any "
            f"penetration {int((per_frame > 0).sum())}/{T}; over {args.min_cm} cm: {int((per_frame * 100 > args.min_cm).sum())}"
        )
        rows, parts = [], Counter()
        for f in range(T):
            if per_frame[f] * 100 <= args.min_cm:
                continue
            deep = (depth[f] * 100 > args.min_cm).nonzero().flatten()
            v = int(depth[f].argmax())
            hand = 0 if v in hand_sets[0] else 1 if v in hand_sets[1] else -1
            if hand >= 0:
                candidate = "hand400" if v in hand_sub[hand] else "hand(not posed)"
            else:
                candidate = "body" if v in body_sub else "none"
            point = local[f, v].float()[None]
            sd = losses.signed_distance(point, pts, nrm)[0]
            grid_sd = losses.grid_signed_distance(point[None], grid.values[None], grid.origin[None], cell)[0, 0]
            parts.update(vertex_part[int(u)] for u in deep)
            row = {
                "frame": f,
                "depth_cm": round(float(per_frame[f]) * 100, 2),
                "n_over": int(deep.numel()),
                "part": vertex_part[v],
                "label": labels[f].astype(int).tolist(),
                "gt": gt.contact[f].astype(int).tolist(),
                "candidate": candidate,
                "sample_sd_cm": round(float(sd) * 100, 2),
                "grid_sd_cm": round(float(grid_sd) * 100, 2),
            }
            rows.append(row)
            print(
                f"  t={f:2d} {row['depth_cm']:5.2f} cm ({row['n_over']:3d} verts) {row['part']:10s} label L/R {row['label']} "
                f"gt {row['gt']} | {candidate:15s} grid sd {row['grid_sd_cm']:+6.2f} sample sd {row['sample_sd_cm']:+6.2f}"
            )
        print(f"  parts over {args.min_cm} cm (vertex-frames): {dict(parts.most_common())}")
        summary[str(vid)] = {"max_cm": float(per_frame.max()) * 100, "frames": rows, "parts": dict(parts)}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
