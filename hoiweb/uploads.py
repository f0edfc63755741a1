"""Upload validation and storage: every file is type-checked by decoding it, then moved into the results layout.

Security rules (see docs in the final report):
- The server never unpickles an uploaded file with the standard unpickler. A render config may be given as
  JSON or YAML (preferred) or as a pickle that is read by ``RestrictedUnpickler``, which only allows the
  classes NumPy needs to rebuild arrays and scalars; anything else (os.system, builtins.eval, ...) is
  refused. The server then writes the pickle itself from the validated values.
- Destination paths come only from a validated video id through ``reconstruction.layout.Layout``;
  ``ensure_within`` double-checks that nothing escapes the results root.
- Files are staged and validated first; the Video row and the moves happen in one transaction, and a
  failure removes every file already moved (no half-created Video).
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

MAX_MESH_VERTICES = 2_000_000
MESH_EXTENT_RANGE_M = (1e-3, 10.0)  # object size sanity: 1 mm .. 10 m


class UploadError(ValueError):
    """A rejected upload; ``field`` names the form field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def ensure_within(root: Path, path: Path) -> Path:
    """``path`` resolved, or ValueError when it is not inside ``root`` (no traversal, no symlink escape)."""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise ValueError(f"path {path} escapes {root}")
    return path_r


# ---- validators (each decodes the file) ------------------------------------------------------------------
@dataclass
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int


def validate_video(path: Path) -> VideoInfo:
    import av

    try:
        with av.open(str(path)) as container:
            if "mp4" not in container.format.name:
                raise UploadError("video", f"must be an MP4 container, got {container.format.long_name}")
            if not container.streams.video:
                raise UploadError("video", "the file has no video stream")
            stream = container.streams.video[0]
            frames = 0
            width = height = 0
            for frame in container.decode(stream):
                if frames == 0:
                    width, height = frame.width, frame.height
                frames += 1
            fps = float(stream.average_rate or stream.guessed_rate or 0)
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder error means "not a video"
        raise UploadError("video", f"not a decodable video ({type(exc).__name__}: {exc})") from exc
    if frames == 0:
        raise UploadError("video", "the video has no decodable frames")
    if fps <= 0:
        raise UploadError("video", "the video has no frame rate")
    return VideoInfo(num_frames=frames, fps=fps, width=width, height=height)


def validate_mesh(path: Path) -> dict[str, Any]:
    import trimesh

    try:
        mesh = trimesh.load(str(path), file_type="obj", force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001
        raise UploadError("mesh", f"not a readable OBJ mesh ({type(exc).__name__}: {exc})") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise UploadError("mesh", "the OBJ has no faces (is it really a mesh?)")
    vertices = np.asarray(mesh.vertices)
    if len(vertices) > MAX_MESH_VERTICES:
        raise UploadError("mesh", f"{len(vertices)} vertices; at most {MAX_MESH_VERTICES} allowed")
    if not np.all(np.isfinite(vertices)):
        raise UploadError("mesh", "vertex coordinates must be finite (found NaN or inf)")
    if int(np.asarray(mesh.faces).max()) >= len(vertices):
        raise UploadError("mesh", "faces index vertices that do not exist")
    extent = float(np.max(vertices.max(axis=0) - vertices.min(axis=0)))
    lo, hi = MESH_EXTENT_RANGE_M
    if not lo <= extent <= hi:
        raise UploadError("mesh", f"object size {extent:.4g} m is outside {lo}-{hi} m (the mesh must be in metres)")
    return {"vertices": len(vertices), "faces": len(mesh.faces), "extent_m": extent}


def _open_image(path: Path, field_name: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as probe:
            probe.verify()
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UploadError(field_name, f"not a readable image ({exc})") from exc
    if image.format != "PNG":
        raise UploadError(field_name, f"must be a PNG image, got {image.format}")
    return image


def validate_mask(path: Path, field_name: str, size: tuple[int, int]) -> dict[str, Any]:
    image = _open_image(path, field_name)
    if image.size != size:
        raise UploadError(
            field_name, f"size {image.size[0]}x{image.size[1]} differs from the video's {size[0]}x{size[1]}"
        )
    pixels = np.asarray(image.convert("L"))
    covered = int((pixels > 127).sum())
    if covered == 0:
        raise UploadError(field_name, "the mask is empty (no pixel > 127)")
    return {"pixels": covered}


def validate_depth(path: Path, size: tuple[int, int]) -> dict[str, Any]:
    image = _open_image(path, "depth")
    if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise UploadError("depth", f"must be a 16-bit PNG in millimetres, got mode {image.mode}")
    if image.size != size:
        raise UploadError("depth", f"size {image.size[0]}x{image.size[1]} differs from the video's {size[0]}x{size[1]}")
    depth_mm = np.asarray(image, dtype=np.int64)
    valid = depth_mm[depth_mm > 0]
    if valid.size == 0:
        raise UploadError("depth", "no pixel has a depth (all zero)")
    return {"median_m": float(np.median(valid)) / 1000.0}


def validate_cam_k(data: bytes) -> np.ndarray:
    try:
        K = np.loadtxt(io.StringIO(data.decode("utf-8")), dtype=np.float64).reshape(3, 3)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UploadError("cam_k", f"must be a text file with a 3x3 matrix of numbers ({exc})") from exc
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise UploadError("cam_k", "intrinsics must be finite, with positive focal lengths and last row 0 0 1")
    return K


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and NumPy arrays/scalars: any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("codecs", "encode"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an uploaded pickle")
        if module.startswith("numpy._core") and not hasattr(np, "_core"):
            module = module.replace("numpy._core", "numpy.core", 1)
        return super().find_class(module, name)


def parse_render_config(data: bytes, filename: str = ""):
    """JSON, YAML or (restricted) pickle -> validated ``RenderConfig``."""
    from reconstruction.render_config import RenderConfig

    raw: Any
    if filename.endswith((".pickle", ".pkl")) or data[:1] == b"\x80":
        try:
            raw = RestrictedUnpickler(io.BytesIO(data)).load()
        except Exception as exc:  # noqa: BLE001
            raise UploadError("render_config", f"pickle refused: {exc}") from exc
    else:
        try:
            text = data.decode("utf-8")
            raw = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
        except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise UploadError("render_config", f"must be JSON or YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise UploadError(
            "render_config", f"must be a mapping of keys (obj_R, obj_t, cam_R, ...), got {type(raw).__name__}"
        )
    try:
        return RenderConfig.from_dict(raw, source="render config")
    except ValueError as exc:
        raise UploadError("render_config", str(exc)) from exc


def parse_character_data(data: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UploadError("character_data", f"must be JSON ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("height_m"), int | float):
        raise UploadError("character_data", "must be a JSON object with a numeric height_m")
    return raw


# ---- storing a validated upload --------------------------------------------------------------------------
@dataclass
class UploadBundle:
    """Staged, validated files of one video upload (paths inside a private staging folder)."""

    video_id: str
    staging: Path
    files: dict[str, Path] = field(default_factory=dict)  # layout method name -> staged file
    info: VideoInfo | None = None
    moved: list[Path] = field(default_factory=list)  # final paths, once committed


def stage_upload(video_id: str, uploads: dict[str, Any], render_config_text: str = "") -> UploadBundle:
    """Copy uploaded files to a staging folder, validate each by decoding it; raises UploadError."""
    from reconstruction import fileio
    from reconstruction.render_config import save_cam_k, save_render_config

    staging_root = Path(settings.UPLOAD_STAGING_DIR)
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="upload-", dir=staging_root))
    bundle = UploadBundle(video_id=video_id, staging=staging)
    limit = settings.MAX_UPLOAD_MB * 1024 * 1024
    try:

        def save(field_name: str, target_name: str) -> Path | None:
            upload = uploads.get(field_name)
            if upload is None:
                return None
            if upload.size > limit:
                raise UploadError(
                    field_name, f"{upload.size / 1e6:.1f} MB exceeds the {settings.MAX_UPLOAD_MB} MB limit"
                )
            path = staging / target_name
            with open(path, "wb") as out:
                for chunk in upload.chunks():
                    out.write(chunk)
            return path

        video = save("video", "video.mp4")
        if video is None:
            raise UploadError("video", "a video file is required")
        bundle.info = validate_video(video)
        bundle.files["video"] = video
        size = (bundle.info.width, bundle.info.height)

        mesh = save("mesh", "mesh.obj")
        if mesh is None:
            raise UploadError("mesh", "an object mesh (.obj) is required")
        validate_mesh(mesh)
        bundle.files["own_mesh"] = mesh

        for field_name, layout_name in (("object_mask", "first_object_mask"), ("human_mask", "first_human_mask")):
            path = save(field_name, f"{field_name}.png")
            if path is None:
                raise UploadError(field_name, "a first-frame mask (PNG) is required")
            validate_mask(path, field_name, size)
            bundle.files[layout_name] = path

        depth = save("depth", "depth.png")
        if depth is None:
            raise UploadError("depth", "a first-frame depth map (16-bit PNG, millimetres) is required")
        validate_depth(depth, size)
        bundle.files["depth_gt"] = depth

        if uploads.get("render_config") is not None:
            upload = uploads["render_config"]
            if upload.size > 10 * 1024 * 1024:
                raise UploadError("render_config", "larger than 10 MB")
            render_config = parse_render_config(upload.read(), upload.name or "")
        elif render_config_text.strip():
            render_config = parse_render_config(render_config_text.encode("utf-8"))
        else:
            raise UploadError("render_config", "a render config (JSON/YAML text or file) is required")
        if (render_config.frame_width, render_config.frame_height) != size:
            raise UploadError(
                "render_config",
                f"frame size {render_config.frame_width}x{render_config.frame_height} differs from the video's {size[0]}x{size[1]}",
            )
        bundle.files["render_config"] = save_render_config(staging / "first_frame_pose.pickle", render_config)

        if uploads.get("cam_k") is not None:
            K = validate_cam_k(uploads["cam_k"].read())
        else:
            K = render_config.intrinsics()
        bundle.files["cam_k"] = save_cam_k(staging / "cam_K.txt", K)

        if uploads.get("character_data") is not None:
            character = parse_character_data(uploads["character_data"].read())
            bundle.files["character_data"] = fileio.write_json(staging / "character_data.json", character)
        return bundle
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def commit_upload(bundle: UploadBundle, user=None):
    """Create the Video row and move the staged files into the results layout, all or nothing."""
    from hoiweb.models import Video

    moved: list[Path] = []
    try:
        with transaction.atomic():
            video, created = Video.get_or_create_for_id(
                bundle.video_id,
                source=Video.SOURCE_UPLOAD,
                num_frames=bundle.info.num_frames if bundle.info else None,
                fps=bundle.info.fps if bundle.info else None,
                width=bundle.info.width if bundle.info else None,
                height=bundle.info.height if bundle.info else None,
                created_by=user,
            )
            if not created:
                raise UploadError("name", f"video {bundle.video_id} already exists")
            layout, vid = video.layout(), video.vid()
            root = video.results_root()
            root.mkdir(parents=True, exist_ok=True)
            targets = {name: ensure_within(root, getattr(layout, name)(vid)) for name in bundle.files}
            clashes = [str(t) for t in targets.values() if t.exists()]
            if clashes:
                raise UploadError("name", f"files already exist for {bundle.video_id}: {', '.join(clashes)}")
            for name, staged in bundle.files.items():
                target = targets[name]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(staged), str(target))
                moved.append(target)
            bundle.moved = list(moved)
            return video
    except BaseException:
        for path in moved:
            try:
                path.unlink()
            except OSError:
                log.warning("could not remove %s after a failed upload", path)
        raise
    finally:
        shutil.rmtree(bundle.staging, ignore_errors=True)


def discard_committed(bundle: UploadBundle) -> None:
    """Remove the files of a committed upload whose surrounding transaction was rolled back."""
    for path in bundle.moved:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    bundle.moved = []


def remove_empty_parents(path: Path, stop: Path) -> None:
    path = path.parent
    while path != stop and stop in path.parents:
        try:
            os.rmdir(path)
        except OSError:
            return
        path = path.parent
