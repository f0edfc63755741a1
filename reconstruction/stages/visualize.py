"""Stage 6: overlay, top-view and side-by-side videos and a ScenePic page of a stage-4 result.

Outputs in ``layout.result_vis(vid)``: ``input.mp4`` (copy), ``recon_result.mp4`` (meshes over the
input), ``recon_result_top_view.mp4`` (orthographic top view with grid, camera and trails),
``recon_comparison.mp4`` (input | overlay | side view with frame number and contact state) and
``recon_result.html``. Every MP4 has the input's frame count: frames past the end of the
reconstruction show the input only, marked as such.

Settings (config ``visualization``, GRAIL's keys): ``enable``, ``render_video``, ``vis_html``,
``extra_views`` (``top``), ``vis_contact``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reconstruction import fileio
from reconstruction.render import Mesh, composite, render
from reconstruction.render.hoi_result import HoiResultError, HoiSequence, load_hoi_result
from reconstruction.render.overlay import (
    BODY_COLOR,
    TopView,
    blend_over,
    body_colors,
    camera_center_and_forward,
    contact_text,
    draw_points,
    draw_top_view_overlay,
    object_colors,
    put_lines,
    side_view_camera,
    to_uint8,
    top_view_for,
)
from reconstruction.render.proximity import Proximity, SurfaceSDF, body_object_proximity
from reconstruction.render.scene import ground_plane, is_closed_outward
from reconstruction.render.scenepic_export import export_scenepic
from reconstruction.render_config import load_cam_k, load_pickle, load_render_config
from reconstruction.stages.base import StageContext, StageInputError, StageResult
from reconstruction.video import VideoWriter, read_video

NUMBER = 6
NAME = "visualize"

log = logging.getLogger(__name__)

OUTPUT_NAMES = {
    "input": "input.mp4",
    "overlay": "recon_result.mp4",
    "top": "recon_result_top_view.mp4",
    "comparison": "recon_comparison.mp4",
    "html": "recon_result.html",
}
FRAMES_PER_CHUNK = 16  # frames rendered together: bounds memory (about 40 MB per view at 640x480)
GROUND_Z = 0.0  # the render world's floor
PENETRATION_RGB = (255, 0, 0)
TOP_LIGHT = (0.2, -0.3, -1.0)  # top view: light from above the (downward-looking) camera


@dataclass
class VisualizationOptions:
    enable: bool = True
    render_video: bool = True
    vis_html: bool = True
    extra_views: list[str] = field(default_factory=lambda: ["top"])
    vis_contact: bool = True
    overlay_alpha: float = 0.65

    @classmethod
    def from_config(cls, config: Any) -> VisualizationOptions:
        """Accepts a ReconConfig (``.vis``), a dict with a ``visualization`` section, or None."""
        section: Any = None
        if config is None:
            return cls()
        if hasattr(config, "vis"):
            section = config.vis
        elif isinstance(config, dict):
            section = config.get("visualization")
        if section is None:
            return cls()
        get = section.get if isinstance(section, dict) else lambda k, d: getattr(section, k, d)
        defaults = cls()
        return cls(
            enable=bool(get("enable", defaults.enable)),
            render_video=bool(get("render_video", defaults.render_video)),
            vis_html=bool(get("vis_html", defaults.vis_html)),
            extra_views=list(get("extra_views", defaults.extra_views) or []),
            vis_contact=bool(get("vis_contact", defaults.vis_contact)),
        )


def _configured_body_model(config: Any) -> str | None:
    if config is None:
        return None
    human = getattr(config, "human_model", None)
    if human is not None:
        return getattr(human, "body_model", None)
    if isinstance(config, dict):
        return (config.get("human_model") or {}).get("body_model")
    return None


def _object_mesh_path(ctx: StageContext, hoi_path: Path) -> Path:
    """``meta.obj_path`` when it exists, else the video's mesh in the results dir's mesh folder."""
    try:
        meta = load_pickle(hoi_path).get("meta") or {}
    except Exception as exc:  # noqa: BLE001 - reported with the file name
        raise StageInputError(f"{hoi_path}: not a readable pickle ({exc})") from exc
    recorded = meta.get("obj_path")
    if recorded:
        candidate = Path(recorded)
        candidate = candidate if candidate.is_absolute() else hoi_path.parent / candidate
        if candidate.exists():
            return candidate
    fallback = ctx.layout.mesh(ctx.video)
    if fallback.exists():
        return fallback
    raise StageInputError(f"object mesh not found: meta['obj_path']={recorded!r} in {hoi_path}, nor {fallback}")


def run(ctx: StageContext) -> StageResult:
    started = time.perf_counter()
    options = VisualizationOptions.from_config(ctx.config)
    layout, vid = ctx.layout, ctx.video
    if not options.enable:
        log.info("%s: visualization disabled in the config", vid)
        return StageResult(files=[], seconds=0.0, info={"skipped": "visualization.enable is false"})

    video_path = layout.video(vid)
    hoi_path = layout.raw_hoi_data(vid)
    for required in (video_path, hoi_path, layout.cam_k(vid), layout.render_config(vid)):
        if not required.exists():
            raise StageInputError(f"stage 6 input missing: {required}")
    try:
        frames, fps = read_video(video_path)
        K = load_cam_k(layout.cam_k(vid))
        world_to_cam = load_render_config(layout.render_config(vid)).world_to_cam()
        sequence = load_hoi_result(
            hoi_path,
            body_model=_configured_body_model(ctx.config),
            object_mesh_path=_object_mesh_path(ctx, hoi_path),
            device=ctx.device,
        )
    except (ValueError, FileNotFoundError, HoiResultError) as exc:
        raise StageInputError(str(exc)) from exc
    num_video_frames = frames.shape[0]
    if sequence.num_frames > num_video_frames:
        raise StageInputError(
            f"{hoi_path}: {sequence.num_frames} reconstructed frames but the video {video_path} has {num_video_frames}"
        )
    timings = {"load_s": time.perf_counter() - started}
    ctx.progress(0.05, "loaded inputs")
    ctx.check_cancelled()

    out_dir = layout.result_vis(vid)
    views = _prepare_views(sequence, world_to_cam, frames.shape[1:3], options, ctx.device)
    timings["proximity_s"] = time.perf_counter() - started - sum(timings.values())
    ctx.progress(0.1, "contacts and penetration")
    files: list[Path] = []
    fileio.write_bytes(out_dir / OUTPUT_NAMES["input"], video_path.read_bytes())
    files.append(out_dir / OUTPUT_NAMES["input"])
    if options.render_video:
        files += _write_videos(ctx, frames, fps, K, world_to_cam, sequence, views, options, out_dir)
    timings["videos_s"] = time.perf_counter() - started - sum(timings.values())
    if options.vis_html:
        ctx.progress(0.9, "scenepic page")
        html = export_scenepic(
            out_dir / OUTPUT_NAMES["html"],
            sequence.body_vertices,
            sequence.body_faces,
            sequence.object_rest_vertices,
            sequence.object_faces,
            sequence.object_poses.cpu().numpy().astype(np.float64),
            views.held,
            views.contact_points,
            views.penetration_points,
            world_to_cam,
            K,
            frames.shape[1:3],
            fps,
            title=f"{vid} reconstruction",
            ground_z=GROUND_Z,
        )
        files.append(html)
        # GRAIL also keeps its ScenePic pages together under ``vis_scenepic_dir``.
        files.append(fileio.write_bytes(layout.scenepic_page(vid), html.read_bytes()))
    timings["html_s"] = time.perf_counter() - started - sum(timings.values())
    seconds = time.perf_counter() - started
    penetrating = views.proximity.num_penetrating
    depth = -views.proximity.signed_distance.clamp(max=0)
    metrics = {
        "frames": float(num_video_frames),
        "reconstructed_frames": float(sequence.num_frames),
        "frames_with_penetration": float((penetrating > 0).sum()),
        "max_penetration_depth_m": float(depth.max()) if depth.numel() else 0.0,
        "frames_held": float(views.held.sum()),
        "html_bytes": float((out_dir / OUTPUT_NAMES["html"]).stat().st_size) if options.vis_html else 0.0,
    }
    log.info("%s: stage 6 wrote %d files in %.1f s", vid, len(files), seconds)
    ctx.progress(1.0, "done")
    return StageResult(
        files=files, seconds=seconds, metrics=metrics, info={"output_dir": str(out_dir), "timings": timings}
    )


@dataclass
class _Views:
    proximity: Proximity
    held: np.ndarray  # (T,) bool
    touching: np.ndarray  # (T,2) bool per hand
    body_colors: torch.Tensor  # (T,V,3)
    object_colors: torch.Tensor  # (T,Vo,3)
    contact_points: list[np.ndarray]
    penetration_points: list[np.ndarray]
    side_world_to_cam: np.ndarray
    top: TopView
    ground: Mesh
    body_closed: bool  # watertight with outward winding: back faces can be culled
    object_closed: bool


def _prepare_views(sequence: HoiSequence, world_to_cam, image_size, options, device) -> _Views:
    sdf = SurfaceSDF(sequence.object_rest_vertices.cpu(), sequence.object_faces.cpu()).to(device)
    proximity = body_object_proximity(sequence.body_vertices, sequence.object_poses, sdf, sequence.hand_vertex_ids)
    touching = sequence.contact_labels if sequence.contact_labels is not None else proximity.hand_touching
    held = touching.any(1)
    num_frames, num_vertices = proximity.penetrating.shape
    if options.vis_contact:
        colors = body_colors(proximity)
        contact_points = [sequence.body_vertices[t][proximity.hand_contact[t]].cpu().numpy() for t in range(num_frames)]
        penetration_points = [
            sequence.body_vertices[t][proximity.penetrating[t]].cpu().numpy() for t in range(num_frames)
        ]
    else:
        colors = torch.tensor(BODY_COLOR, device=device).expand(num_frames, num_vertices, 3)
        contact_points = penetration_points = [np.zeros((0, 3), np.float32)] * num_frames
    obj_colors = object_colors(held, sequence.object_rest_vertices.shape[0], device)
    body_xy = sequence.body_root[:, :2].cpu().numpy()
    object_xy = sequence.object_center[:, :2].cpu().numpy()
    cam_center, _ = camera_center_and_forward(world_to_cam)
    top = top_view_for(np.concatenate([body_xy, object_xy, cam_center[None, :2]]), image_size)
    scene_center = np.r_[np.concatenate([body_xy, object_xy]).mean(0), GROUND_Z + 0.9]
    side = side_view_camera(world_to_cam, scene_center)
    size = float(np.ceil(max(top.extent_m * 2.5, 8.0)))
    center = np.round(top.center_xy / 0.5) * 0.5  # keep checker squares on the 0.5 m grid
    gv, gf, gc = ground_plane(size=size, cells=int(size / 0.5), center=tuple(center), height=GROUND_Z)
    ground = Mesh(gv.to(device), gf.to(device), gc.to(device), instance_id=3, smooth=False)
    body_closed = is_closed_outward(sequence.body_vertices[0].cpu(), sequence.body_faces.cpu())
    object_closed = is_closed_outward(sequence.object_rest_vertices.cpu(), sequence.object_faces.cpu())
    return _Views(
        proximity, held, touching, colors, obj_colors, contact_points, penetration_points, side, top, ground,
        body_closed, object_closed,
    )  # fmt: skip


def _write_videos(ctx, frames, fps, K, world_to_cam, sequence, views, options, out_dir) -> list[Path]:
    height, width = frames.shape[1:3]
    num_video, num_recon = frames.shape[0], sequence.num_frames
    with_top = "top" in options.extra_views
    cam_center, cam_forward = camera_center_and_forward(world_to_cam)
    body_xy = sequence.body_root[:, :2].cpu().numpy()
    object_xy = sequence.object_center[:, :2].cpu().numpy()
    num_penetrating = views.proximity.num_penetrating
    object_vertices = sequence.object_vertices
    device = sequence.body_vertices.device
    paths = {key: out_dir / OUTPUT_NAMES[key] for key in ("overlay", "comparison") + (("top",) if with_top else ())}
    white = (1.0, 1.0, 1.0)
    side_ground = render([views.ground], K, views.side_world_to_cam, (height, width), background=white, device=device)
    top_ground = render(
        [views.ground], views.top.K, views.top.world_to_cam, (height, width), background=white, orthographic=True,
        light_dir=TOP_LIGHT, device=device,
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        # Each writer publishes its file only if the whole loop succeeds (atomic, see VideoWriter).
        writers = {key: stack.enter_context(VideoWriter(path, fps)) for key, path in paths.items()}
        for start in range(0, num_video, FRAMES_PER_CHUNK):
            ctx.check_cancelled()
            stop = min(num_video, start + FRAMES_PER_CHUNK)
            chunk_frames = frames[start:stop]
            recon = np.arange(start, min(stop, num_recon))  # frames with a reconstruction
            overlay = chunk_frames.copy()
            side = np.full_like(chunk_frames, 255)
            top = np.full_like(chunk_frames, 255)
            if recon.size:
                sel = torch.as_tensor(recon, device=device)
                body = Mesh(
                    sequence.body_vertices[sel], sequence.body_faces, views.body_colors[sel], 1,
                    cull_backfaces=views.body_closed,
                )  # fmt: skip
                obj = Mesh(
                    object_vertices[sel], sequence.object_faces, views.object_colors[sel], 2,
                    cull_backfaces=views.object_closed,
                )  # fmt: skip
                n = recon.size
                main = render([body, obj], K, world_to_cam, (height, width), ambient=0.5, device=device)
                overlay[:n] = blend_over(chunk_frames[:n], main.rgb, main.instance > 0, options.overlay_alpha)
                penetration = [views.penetration_points[i] for i in recon]
                draw_points(overlay[:n], penetration, K, world_to_cam, PENETRATION_RGB)
                # The ground is static: rendered once per view, then depth-composited per frame.
                side_view = composite(
                    render([body, obj], K, views.side_world_to_cam, (height, width), device=device), side_ground
                )
                side[:n] = to_uint8(side_view.rgb)
                draw_points(side[:n], penetration, K, views.side_world_to_cam, PENETRATION_RGB)
                if with_top:
                    top_view = render(
                        [body, obj], views.top.K, views.top.world_to_cam, (height, width), orthographic=True,
                        light_dir=TOP_LIGHT, device=device,
                    )  # fmt: skip
                    top[:n] = to_uint8(composite(top_view, top_ground).rgb)
                    draw_top_view_overlay(top[:n], views.top, recon, body_xy, object_xy, cam_center, cam_forward)
            for k, index in enumerate(range(start, stop)):
                if index >= num_recon:
                    for image in (overlay[k], side[k], top[k]):
                        put_lines(image, ["no reconstruction for this frame"], origin=(8, height - 8))
            if with_top:
                writers["top"].write(top)
            writers["overlay"].write(overlay)
            panels = [chunk_frames.copy(), overlay.copy(), side]
            for k, index in enumerate(range(start, stop)):
                put_lines(panels[0][k], ["input"])
                put_lines(panels[2][k], ["side view"])
                if index < num_recon:
                    lines = contact_text(
                        index, num_video, views.touching[index], bool(views.held[index]), int(num_penetrating[index])
                    )
                else:
                    lines = [f"frame {index + 1}/{num_video}"]
                put_lines(panels[1][k], lines)
            writers["comparison"].write(np.concatenate(panels, axis=2))
            ctx.progress(0.1 + 0.8 * stop / num_video, f"rendered {stop}/{num_video} frames")
    return list(paths.values())
