"""mesh_tracker: the image evidence held for a video is bounded however long the video (long GRAIL
videos), and building it frame by frame on demand gives the same poses as holding it all."""

from __future__ import annotations

import numpy as np

from reconstruction.backends import mesh_tracker
from tests.test_mesh_tracker_colour import _scene


def _video(num_frames: int, size: tuple[int, int] = (120, 160)):
    rng = np.random.default_rng(0)
    masks = np.zeros((num_frames, *size), dtype=bool)
    for t in range(num_frames):  # an object moving across the whole frame (a wide colour box)
        x = 5 + (t * 37) % (size[1] - 40)
        masks[t, 40:70, x : x + 30] = True
    human = np.roll(masks, 25, axis=2) & ~masks
    depth = rng.uniform(1, 3, (num_frames, *size)).astype(np.float32)
    images = rng.integers(0, 255, (num_frames, *size, 3), dtype=np.uint8)
    return masks, human, depth, images


def test_evidence_memory_is_bounded_per_frame_not_per_video():
    cache = 4
    config = mesh_tracker.TrackerConfig(evidence_cache_frames=cache)
    held = {}
    for num_frames in (10, 60):
        masks, human, depth, images = _video(num_frames)
        source = mesh_tracker.EvidenceSource(masks, human, depth, config, "cpu", images=images)
        one_frame = None
        for start in range(0, num_frames, config.window):  # a pass over the video, window by window
            window = source.take(slice(start, start + config.window))
            assert window.signed_distance.shape[0] == min(config.window, num_frames - start)
            one_frame = one_frame or source.cached_bytes() / min(config.window, num_frames)
        assert source.cached_bytes() <= cache * one_frame
        # Kept for every frame: the outline samples only (a few KB), not images.
        assert source.kept_bytes() / num_frames < 0.02 * one_frame
        held[num_frames] = source.cached_bytes() + source.kept_bytes()
    # Six times the frames, about the same memory.
    assert held[60] < 1.1 * held[10]


def test_a_small_evidence_cache_gives_the_same_poses():
    vertices, faces, poses, K, images, masks = _scene()

    def track(cache_frames: int) -> np.ndarray:
        config = mesh_tracker.TrackerConfig(evidence_cache_frames=cache_frames)
        return mesh_tracker.track_object(
            vertices, faces, K, poses[0], masks, np.zeros_like(masks), None, config, images=images
        ).poses

    assert np.array_equal(track(2), track(64))
