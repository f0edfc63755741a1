"""Every path of a results dir, in one place (see ../shared/grail_contract.md section 2).

A video is named by its id ``<dataset>/<category>/<name>``. All paths below are derived from the
results dir and that id; nothing else in the engine builds result paths by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Default relative folders of the reference pipeline's ``paths`` config section.
DEFAULT_PATHS: dict[str, str] = {
    "video_dir": "generation/videos_kling",
    "mesh_dir": "generation/mesh",
    "foundation_pose_dir": "generation/foundation_pose",
    "depth_gt_dir": "generation/depth_maps",
    "hmr_dir": "generation/hmr",
    "hmr_cache_dir": "generation/hmr4d_cache",
    "recon_cache_dir": "generation/4dhoi_recon_cache",
    "foundation_pose_output_dir": "generation/foundation_pose_output",
    "output_dir": "generation/4dhoi_recon",
    "valid_dir": "generation/4dhoi_recon_smplx_valid",
    "vis_scenepic_dir": "generation/vis_html",
    # hoiweb extension: ground truth of synthetic scenes (never read by stages 1-6).
    "ground_truth_dir": "generation/ground_truth",
}

STAGE_NAMES: dict[int, str] = {
    1: "human_pose",
    2: "preprocess",
    3: "object_pose",
    4: "optimize",
    5: "filter",
    6: "visualize",
}


@dataclass(frozen=True)
class VideoId:
    dataset: str
    category: str
    name: str

    @classmethod
    def parse(cls, text: str) -> VideoId:
        parts = text.strip("/").split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"video id must be <dataset>/<category>/<name>, got {text!r}")
        for part in parts:
            if part in (".", "..") or "\\" in part:
                raise ValueError(f"invalid video id component {part!r} in {text!r}")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.dataset}/{self.category}/{self.name}"

    @property
    def rel(self) -> Path:
        return Path(self.dataset, self.category, self.name)


@dataclass(frozen=True)
class Layout:
    """Paths of one results dir. ``paths`` overrides entries of DEFAULT_PATHS (config ``paths``)."""

    results_dir: Path
    paths: tuple[tuple[str, str], ...] = ()

    @classmethod
    def create(cls, results_dir: str | Path, paths: dict[str, str] | None = None) -> Layout:
        overrides = tuple(sorted((paths or {}).items()))
        unknown = [k for k, _ in overrides if k not in DEFAULT_PATHS]
        if unknown:
            raise ValueError(f"unknown paths key(s): {', '.join(unknown)}")
        return cls(Path(results_dir), overrides)

    def dir(self, key: str) -> Path:
        rel = dict(self.paths).get(key, DEFAULT_PATHS[key])
        path = Path(rel)
        return path if path.is_absolute() else self.results_dir / path

    # ---- inputs (from the render) -------------------------------------------------------------
    def video(self, vid: VideoId) -> Path:
        return self.dir("video_dir") / vid.dataset / vid.category / f"{vid.name}.mp4"

    def mesh(self, vid: VideoId) -> Path:
        """The object mesh: ``<mesh_dir>/<dataset>/<category>/<name>.obj``, else the category's only .obj."""
        folder = self.dir("mesh_dir") / vid.dataset / vid.category
        own = folder / f"{vid.name}.obj"
        if own.exists():
            return own
        candidates = sorted(folder.glob("*.obj"))
        if len(candidates) == 1:
            return candidates[0]
        return own

    def own_mesh(self, vid: VideoId) -> Path:
        """Where a video's own object mesh is written: ``<mesh_dir>/<dataset>/<category>/<name>.obj``."""
        return self.dir("mesh_dir") / vid.dataset / vid.category / f"{vid.name}.obj"

    def render_input_dir(self, vid: VideoId) -> Path:
        return self.dir("foundation_pose_dir") / vid.rel

    def render_config(self, vid: VideoId) -> Path:
        return self.render_input_dir(vid) / "first_frame_pose.pickle"

    def scene_mesh(self, vid: VideoId, name: str) -> Path:
        """A static scene object's mesh (e.g. the table) named by the render config's ``scene_data``."""
        return self.render_input_dir(vid) / "scene" / f"{name}.obj"

    def character_data(self, vid: VideoId) -> Path:
        return self.render_input_dir(vid) / "character_data.json"

    def cam_k(self, vid: VideoId) -> Path:
        return self.render_input_dir(vid) / "cam_K.txt"

    def first_object_mask(self, vid: VideoId) -> Path:
        return self.render_input_dir(vid) / "masks" / "000000.png"

    def first_human_mask(self, vid: VideoId) -> Path:
        return self.render_input_dir(vid) / "human_masks" / "000000.png"

    def depth_gt(self, vid: VideoId) -> Path:
        return self.dir("depth_gt_dir") / vid.dataset / vid.category / f"{vid.name}.png"

    def ground_truth(self, vid: VideoId) -> Path:
        return self.dir("ground_truth_dir") / vid.rel / "ground_truth.npz"

    # ---- stage caches ---------------------------------------------------------------------------
    def hmr_result(self, vid: VideoId) -> Path:
        """Stage 1: ``motion_incam`` / ``motion_global`` and body model name (torch.save dict)."""
        return self.dir("hmr_dir") / vid.rel / "hmr_results.pt"

    def hmr_keypoints(self, vid: VideoId) -> Path:
        """Stage 1: 2D body and hand keypoints with confidences (npz)."""
        return self.dir("hmr_cache_dir") / vid.rel / "keypoints.npz"

    def hmr_debug_video(self, vid: VideoId) -> Path:
        """Stage 1 ``--verbose``: detected and fitted keypoints drawn over the input video."""
        return self.dir("hmr_cache_dir") / vid.rel / "debug_keypoints.mp4"

    def reference_hmr_output(self, vid: VideoId) -> Path:
        """Stage 1 as the reference writes it (GEM + WiLoR, SMPL-X): npz ``motion_global``/``motion_incam``."""
        return self.dir("hmr_dir") / vid.dataset / vid.category / f"{vid.name}.npz"

    def reference_gem_cache(self, vid: VideoId) -> Path:
        """The reference's GEM body-only cache (torch.save dict ``smpl_params_incam`` ...)."""
        return self.dir("hmr_cache_dir") / vid.rel / "gem_smpl_pred.pt"

    def masks_cache(self, vid: VideoId) -> Path:
        return self.dir("recon_cache_dir") / "masks" / f"{vid}.npz"

    def depth_cache(self, vid: VideoId) -> Path:
        return self.dir("recon_cache_dir") / "depth" / f"{vid}.pt"

    def masks_debug_video(self, vid: VideoId) -> Path:
        """Stage 2 ``--verbose``: masks over the input, beside the masks cache."""
        return self.dir("recon_cache_dir") / "masks" / f"{vid}.debug.mp4"

    def depth_debug_video(self, vid: VideoId) -> Path:
        """Stage 2 ``--verbose``: colour-mapped depth, beside the depth cache."""
        return self.dir("recon_cache_dir") / "depth" / f"{vid}.debug.mp4"

    def object_pose_debug_video(self, vid: VideoId) -> Path:
        """Stage 3 ``--verbose``: the tracked mesh outline over the input, beside the poses."""
        return self.object_poses(vid).with_name("tracking.debug.mp4")

    def object_poses(self, vid: VideoId) -> Path:
        return self.dir("foundation_pose_output_dir") / vid.rel / "pose_estimation_output" / "poses_in_cam.pkl"

    def output(self, vid: VideoId) -> Path:
        """Stage 4 raw result folder of one video."""
        return self.dir("output_dir") / vid.rel

    def raw_hoi_data(self, vid: VideoId) -> Path:
        return self.output(vid) / "hoi_data" / "hoi_data.pkl"

    def loss_history(self, vid: VideoId) -> Path:
        return self.output(vid) / "loss_history.json"

    def contact_labels(self, vid: VideoId) -> Path:
        return self.output(vid) / "contact_labels.json"

    def filter_report(self, vid: VideoId) -> Path:
        return self.output(vid) / "filter_report.json"

    def invalid_marker(self, vid: VideoId) -> Path:
        return self.output(vid) / "INVALID.json"

    def metrics(self, vid: VideoId) -> Path:
        """Ground-truth metrics (hoiweb extension), beside the raw result."""
        return self.output(vid) / "metrics.json"

    def valid(self, vid: VideoId) -> Path:
        return self.dir("valid_dir") / vid.rel

    def valid_hoi_data(self, vid: VideoId) -> Path:
        return self.valid(vid) / "hoi_data" / "hoi_data.pkl"

    def valid_mesh_dir(self, vid: VideoId) -> Path:
        return self.valid(vid) / "mesh_data"

    def result_vis(self, vid: VideoId) -> Path:
        """Stage 6 artefacts. Inside the valid folder when accepted, else beside the raw result."""
        if self.valid(vid).exists():
            return self.valid(vid) / "result_vis"
        return self.output(vid) / "result_vis"

    def scenepic_page(self, vid: VideoId) -> Path:
        return self.dir("vis_scenepic_dir") / vid.rel / "recon_result.html"

    def manifest(self, vid: VideoId, stage: int) -> Path:
        return self.results_dir / "generation" / "manifests" / vid.rel / f"stage{stage}_{STAGE_NAMES[stage]}.json"

    # ---- enumeration ----------------------------------------------------------------------------
    def list_videos(self, dataset: str | None = None, category: str | None = None) -> list[VideoId]:
        """Video ids found under video_dir, sorted (the order sharding relies on)."""
        root = self.dir("video_dir")
        found = []
        for path in sorted(root.glob("*/*/*.mp4")):
            vid = VideoId(path.parent.parent.name, path.parent.name, path.stem)
            if dataset and vid.dataset != dataset:
                continue
            if category and vid.category != category:
                continue
            found.append(vid)
        return found
