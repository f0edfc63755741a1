"""Generate synthetic videos into a results dir (the CLI ``python -m reconstruction.synth`` wraps this)."""

from __future__ import annotations

import logging
import time

from reconstruction.layout import Layout, VideoId
from reconstruction.synth.ground_truth import VARIANTS
from reconstruction.synth.objects import CATEGORIES

logger = logging.getLogger(__name__)


def video_name(category: str, variant: str, seed: int, index: int) -> str:
    return f"{category}_{variant}_s{seed}_{index:03d}"


def generate(
    results_dir: str,
    dataset: str,
    category: str,
    num_videos: int,
    num_frames: int,
    seed: int,
    variant: str = "normal",
    width: int = 640,
    height: int = 480,
    hands: str = "auto",
    ik_steps: int = 100,
    device: str = "cpu",
) -> list[VideoId]:
    """Generate ``num_videos`` videos; video ``i`` uses seed ``seed + i``. Returns their ids."""
    from reconstruction.body import load_body_model
    from reconstruction.synth.scene import SceneConfig, build_scene, render_scene
    from reconstruction.synth.writer import write_video_files

    if category not in CATEGORIES:
        raise ValueError(f"--category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    if variant not in VARIANTS:
        raise ValueError(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    layout = Layout.create(results_dir)
    body = load_body_model("anny")
    ids = []
    for index in range(num_videos):
        start = time.perf_counter()
        config = SceneConfig(
            category=category, variant=variant, num_frames=num_frames, width=width, height=height,
            seed=seed + index, hands=hands, ik_steps=ik_steps,
        )  # fmt: skip
        vid = VideoId(dataset, category, video_name(category, variant, seed, index))
        scene = build_scene(config, body)
        rendered = render_scene(scene, device=device)
        write_video_files(layout, vid, scene, rendered)
        ids.append(vid)
        logger.info("wrote %s (%d frames) in %.1f s", vid, num_frames, time.perf_counter() - start)
    return ids
