"""Shared fixtures of the web tests: tiny real input files, users with roles, isolated storage, Redis queues."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
FRAMES, WIDTH, HEIGHT, FPS = 12, 160, 120, 12


def write_tiny_video(path: Path, frames: int = FRAMES, width: int = WIDTH, height: int = HEIGHT) -> Path:
    """A real H.264 MP4: a square moving over a gradient."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
            x = 10 + 6 * i
            img[40:80, x : x + 30] = (240, 200, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def cube_obj(size: float = 0.1) -> bytes:
    h = size / 2
    verts = [(x, y, z) for x in (-h, h) for y in (-h, h) for z in (-h, h)]
    faces = [(1, 3, 4, 2), (5, 6, 8, 7), (1, 2, 6, 5), (3, 7, 8, 4), (1, 5, 7, 3), (2, 4, 8, 6)]
    lines = [f"v {x} {y} {z}" for x, y, z in verts]
    for a, b, c, d in faces:
        lines += [f"f {a} {b} {c}", f"f {a} {c} {d}"]
    return ("\n".join(lines) + "\n").encode()


def render_config_dict() -> dict:
    return {
        "obj_R": np.eye(3).tolist(),
        "obj_t": [0.0, 0.0, 0.75],
        "obj_scale": 1.0,
        "cam_R": np.eye(3).tolist(),
        "cam_t": [0.0, -2.0, 1.2],
        "frame_height": HEIGHT,
        "frame_width": WIDTH,
        "focal_length": 150.0,
        "human_R": np.eye(3).tolist(),
        "human_t": [0.0, 0.0, 0.0],
    }


def upload_files(tmp_path: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (filename, bytes) of a complete, valid upload."""
    video = write_tiny_video(tmp_path / "in.mp4").read_bytes()
    obj_mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    obj_mask[40:80, 10:40] = 255
    human_mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    human_mask[20:110, 90:130] = 255
    depth = np.full((HEIGHT, WIDTH), 2500, np.uint16)
    return {
        "video": ("in.mp4", video),
        "mesh": ("cube.obj", cube_obj()),
        "object_mask": ("obj.png", png_bytes(obj_mask)),
        "human_mask": ("human.png", png_bytes(human_mask)),
        "depth": ("depth.png", png_bytes(depth)),
        "render_config": ("render.json", json.dumps(render_config_dict()).encode()),
    }


def as_uploads(files: dict[str, tuple[str, bytes]]) -> dict:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return {k: SimpleUploadedFile(name, data) for k, (name, data) in files.items()}


def default_config_text() -> str:
    from hoiweb.engine import default_config_text as text

    return text()


@pytest.fixture
def storage(settings, tmp_path):
    """Results and media under a tmp dir (the worker subprocess gets the same paths through env)."""
    settings.RESULTS_DIR = tmp_path / "results"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.UPLOAD_STAGING_DIR = tmp_path / "media" / "staging"
    settings.EXPORT_DIR = tmp_path / "media" / "exports"
    settings.RESULTS_DIR.mkdir(parents=True)
    return tmp_path


@pytest.fixture
def rq_clean():
    """Remove RQ's data (queues, jobs, registries, worker records) from the test Redis DB before and after."""
    import django_rq

    def clean():
        conn = django_rq.get_connection("gpu")
        keys = list(conn.scan_iter("rq:*"))
        if keys:
            conn.delete(*keys)

    clean()
    yield
    clean()


def make_user(username: str, role: str | None):
    from django.contrib.auth.models import Group, User

    from hoiweb.roles import ensure_roles

    ensure_roles()
    user = User.objects.create_user(username, password="pw-" + username)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def admin_user(db):
    return make_user("alice", "admin")


@pytest.fixture
def reviewer_user(db):
    return make_user("rob", "reviewer")


@pytest.fixture
def viewer_user(db):
    return make_user("vera", None)


def make_video(video_id: str = "ds/cups/v1"):
    from hoiweb.models import Video

    video, _ = Video.get_or_create_for_id(video_id, num_frames=FRAMES, fps=FPS, width=WIDTH, height=HEIGHT)
    return video


def make_run(video=None, **fields):
    from hoiweb.models import Run

    run = Run.create_for(video or make_video(), default_config_text())
    for key, value in fields.items():
        setattr(run, key, value)
    if fields:
        run.save()
    return run


# ---- worker subprocess -------------------------------------------------------------------------------------
def worker_env(settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    from django.db import connection

    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="hoiweb.settings",
        DATABASE_URL=f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        RESULTS_DIR=str(settings.RESULTS_DIR),
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        HOIWEB_HEARTBEAT_SECONDS="0.5",
        PYTHONPATH=str(REPO),
        DEBUG="1",
        HOIWEB_DEVICE="cpu",
    )
    env.update(extra or {})
    return env


def start_worker(settings, *args: str, extra_env: dict[str, str] | None = None, log_path: Path | None = None):
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "workers", "--gpu", "cpu", *args],
        cwd=REPO,
        env=worker_env(settings, extra_env),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
