"""Worker setup hook for the browser test: the pipeline's light stages, with a stage 6 that writes real media.

Light stages 1-5 (``tests/pipeline_light_stages.py``) do real, fast file I/O in the results layout. This
stage 6 additionally writes what the run page plays: a real H.264 ``recon_comparison.mp4`` (input | a
recoloured copy, side by side), ``recon_result.mp4`` and a real ScenePic page of the object mesh, so the
browser can check that the players decode and the 3D view renders. ``test_web_engine.py`` runs the real
engine's six stages.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from reconstruction.stages.base import StageContext, StageResult


def _write_mp4(path, frames: np.ndarray, fps: float) -> None:
    import av

    from reconstruction import fileio

    with fileio.atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.height, stream.width = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                image = np.ascontiguousarray(frame[: stream.height, : stream.width])
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def _read_frames(path) -> tuple[np.ndarray, float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 12)
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)]), fps


def _stage6(ctx: StageContext) -> StageResult:
    import scenepic as sp
    import trimesh

    from tests.pipeline_light_stages import make_stage

    result = make_stage(6).run(ctx)
    layout, vid = ctx.layout, ctx.video
    frames, fps = _read_frames(layout.video(vid))
    overlay = frames.copy()
    overlay[..., 1] = 255 - overlay[..., 1]
    vis = layout.result_vis(vid)
    _write_mp4(vis / "recon_result.mp4", overlay, fps)
    _write_mp4(vis / "recon_comparison.mp4", np.concatenate([frames, overlay], axis=2), fps)
    mesh = trimesh.load(str(layout.mesh(vid)), force="mesh", process=False)
    scene = sp.Scene()
    canvas = scene.create_canvas_3d(width=480, height=360)
    sp_mesh = scene.create_mesh(shared_color=sp.Color(0.2, 0.4, 0.9))
    sp_mesh.add_mesh_without_normals(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32))
    canvas.create_frame(meshes=[sp_mesh])
    from reconstruction import fileio

    with fileio.atomic_path(vis / "recon_result.html") as tmp:
        scene.save_as_html(str(tmp), title="hoiweb test scene")
    ctx.progress(1.0, "media written")
    return StageResult(files=[*result.files, vis / "recon_comparison.mp4"], metrics={"frames": float(len(frames))})


def register() -> None:
    from reconstruction import pipeline
    from tests.pipeline_light_stages import register_all

    register_all()
    pipeline.register_stage(6, SimpleNamespace(NUMBER=6, NAME="visualize_media", run=_stage6))
