"""Stage 2 (preprocess) on a rendered synthetic scene: masks vs GT instances, depth cache, bad input."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from reconstruction.backends import depth_align
from reconstruction.stages import preprocess
from reconstruction.stages.base import StageContext, StageInputError
from reconstruction.stages.scene_inputs import load_masks_cache, masks_to_tensors
from tests.stage23_scene import make_scene, mask_iou


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage2")
    layout, vid, truth = make_scene(root, num_frames=12)
    ctx = StageContext(video=vid, layout=layout, config={}, verbose=True)
    result = preprocess.run(ctx)
    return layout, vid, truth, result


def _copy_scene(scene, tmp_path: Path):
    layout, vid, truth, _ = scene
    shutil.copytree(layout.results_dir, tmp_path / "results")
    from reconstruction.layout import Layout

    return Layout.create(tmp_path / "results"), vid, truth


def test_masks_cache_format_and_iou(scene):
    layout, vid, truth, result = scene
    path = layout.masks_cache(vid)
    assert path in result.files
    with np.load(path, allow_pickle=True) as data:
        assert list(data.keys()) == ["masks"]
        masks = data["masks"].item()
    assert sorted(masks) == list(range(12))
    assert set(masks[5]) == {0, 1}
    assert masks[5][0].dtype == bool and masks[5][0].shape == (240, 320)
    object_masks, human_masks = masks_to_tensors(load_masks_cache(path, (240, 320)))
    object_iou = mask_iou(object_masks, truth.object_masks)
    human_iou = mask_iou(human_masks, truth.human_masks)
    # Frame 0 is the given mask; later frames are tracked (the hand covers part of the small object).
    assert object_iou[0] == 1.0 and human_iou[0] == 1.0
    assert np.median(object_iou) >= 0.75, object_iou
    assert np.median(human_iou) >= 0.9, human_iou
    assert not (object_masks & human_masks).any()


def test_depth_cache_static_backend(scene):
    layout, vid, truth, _ = scene
    depth = torch.load(layout.depth_cache(vid), weights_only=True)
    assert isinstance(depth, list) and len(depth) == 12
    assert all(d.dtype == torch.float32 and d.shape == (240, 320) for d in depth)
    gt = cv2.imread(str(layout.depth_gt(vid)), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
    with np.load(layout.masks_cache(vid), allow_pickle=True) as data:
        masks = data["masks"].item()
    for t in (0, 6, 11):
        d = depth[t].numpy()
        foreground = masks[t][0] | masks[t][1] | masks[0][0] | masks[0][1]
        assert (d[foreground] == 0).all()  # foreground (now or at frame 0) is unknown
        known = d > 0
        assert known.sum() > 0.3 * d.size
        np.testing.assert_allclose(d[known], gt[known], atol=1e-5)


def test_verbose_writes_debug_videos(scene):
    layout, vid, _, result = scene
    from reconstruction.video import read_video

    for path in (layout.masks_debug_video(vid), layout.depth_debug_video(vid)):
        assert path in result.files
        frames, _ = read_video(path)
        assert frames.shape == (12, 240, 320, 3)


def test_align_depth_recovers_known_scale_and_shift():
    rng = np.random.default_rng(0)
    gt = torch.tensor(rng.uniform(0.5, 5.0, (60, 80)), dtype=torch.float32)
    gt[:5] = 80.0  # beyond 65 m: must be ignored
    gt[5:8] = 0.05  # below 0.1 m: must be ignored
    scale = torch.tensor([1.7, 0.6, 2.5], dtype=torch.float64)
    shift = torch.tensor([0.3, -0.2, 1.1], dtype=torch.float64)
    estimate = ((gt.double()[None] - shift[:, None, None]) / scale[:, None, None]).float()
    estimate[:, :5] = 123.0  # garbage where GT is out of range
    foreground = torch.zeros(3, 60, 80, dtype=torch.bool)
    foreground[0, 20:30, 20:30] = True  # frame-0 foreground: excluded from every frame
    foreground[1, 40:50, 0:40] = True
    estimate[:, 20:30, 20:30] = 50.0  # garbage under frame 0's foreground
    estimate[1, 40:50, 0:40] = 50.0  # garbage under frame 1's own foreground
    result = depth_align.align_depth(estimate, gt, foreground)
    torch.testing.assert_close(result.scale, scale, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(result.shift, shift, rtol=1e-4, atol=1e-4)
    assert result.aligned.all()
    clean = (gt > 0.1) & (gt < 65) & ~foreground[0] & (estimate[2] > 0)
    torch.testing.assert_close(result.depth[2][clean], gt[clean], rtol=1e-4, atol=1e-4)


def test_align_depth_leaves_frames_with_few_pixels_unaligned():
    gt = torch.linspace(1.0, 3.0, 400).reshape(20, 20)
    estimate = (gt * 2.0)[None].repeat(2, 1, 1)
    foreground = torch.zeros(2, 20, 20, dtype=torch.bool)
    foreground[1, :, :] = True
    foreground[1, :9, :10] = False  # 90 valid pixels < 100
    result = depth_align.align_depth(estimate, gt, foreground)
    assert result.aligned.tolist() == [True, False]
    assert abs(float(result.scale[0]) - 0.5) < 1e-6
    assert result.scale[1] == 1.0 and result.shift[1] == 0.0
    assert torch.equal(result.depth[1], estimate[1])


# ---- bad input ------------------------------------------------------------------------------------
def _sentinel_caches(layout, vid) -> dict[Path, bytes]:
    saved = {}
    for path in (layout.masks_cache(vid), layout.depth_cache(vid)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"previous cache")
        saved[path] = path.read_bytes()
    return saved


def _run_expecting(layout, vid, match: str, config=None) -> None:
    saved = _sentinel_caches(layout, vid)
    with pytest.raises(StageInputError, match=match):
        preprocess.run(StageContext(video=vid, layout=layout, config=config or {}))
    for path, content in saved.items():
        assert path.read_bytes() == content, f"{path} was overwritten"


def test_video_that_does_not_decode(scene, tmp_path):
    layout, vid, _ = _copy_scene(scene, tmp_path)
    layout.video(vid).write_bytes(b"this is not an mp4")
    _run_expecting(layout, vid, str(layout.video(vid)).replace(".", r"\."))


def test_video_with_zero_frames(scene, tmp_path):
    layout, vid, _ = _copy_scene(scene, tmp_path)
    with av.open(str(layout.video(vid)), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        container.start_encoding()  # header only, no frames
        for packet in stream.encode(None):
            container.mux(packet)
    _run_expecting(layout, vid, "zero frames|not a decodable|no video")


def test_mask_of_wrong_size(scene, tmp_path):
    layout, vid, _ = _copy_scene(scene, tmp_path)
    cv2.imwrite(str(layout.first_human_mask(vid)), np.zeros((120, 160), np.uint8))
    _run_expecting(layout, vid, "human_masks/000000.png.*size 160x120")


def test_empty_first_object_mask(scene, tmp_path):
    layout, vid, _ = _copy_scene(scene, tmp_path)
    cv2.imwrite(str(layout.first_object_mask(vid)), np.zeros((240, 320), np.uint8))
    _run_expecting(layout, vid, "masks/000000.png: first-frame object mask is empty")


def test_sam2_without_checkpoint_names_the_setting(scene, tmp_path, monkeypatch):
    layout, vid, _ = _copy_scene(scene, tmp_path)
    monkeypatch.delenv("SAM2_CHECKPOINT", raising=False)
    _run_expecting(layout, vid, "preprocess.sam2_checkpoint", {"preprocess": {"mask_backend": "sam2"}})
    _run_expecting(
        layout, vid, "SAM 2 checkpoint not found.*preprocess.sam2_checkpoint",
        {"preprocess": {"mask_backend": "sam2", "sam2_checkpoint": str(tmp_path / "none.pt")}},
    )  # fmt: skip
    checkpoint = tmp_path / "sam2.pt"
    checkpoint.write_bytes(b"x")
    # The package is installed (Makefile); a None entry in sys.modules makes its import fail as if absent.
    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)
    _run_expecting(
        layout, vid, "'sam2' package.*preprocess.sam2_checkpoint",
        {"preprocess": {"mask_backend": "sam2", "sam2_checkpoint": str(checkpoint)}},
    )  # fmt: skip


# SAM 2 with random weights: the smallest packaged model at 128 px instead of 1024 (plumbing, not quality).
SAM2_TEST_SECTION = {"sam2_model_cfg": "configs/sam2.1/sam2.1_hiera_t.yaml"}
SAM2_TEST_OVERRIDES = ("++model.image_size=128",)


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint in SAM 2's own format ({"model": state_dict}) holding randomly initialised weights."""
    from reconstruction.backends import sam2_masks

    torch.manual_seed(0)
    model = sam2_masks.build_predictor(SAM2_TEST_SECTION, "cpu", None, SAM2_TEST_OVERRIDES)
    path = tmp_path_factory.mktemp("sam2") / "sam2_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def test_sam2_predictor_tracks_both_masks_on_tiny_frames(sam2_checkpoint):
    from reconstruction.backends import sam2_masks

    section = {**SAM2_TEST_SECTION, "sam2_checkpoint": str(sam2_checkpoint)}
    predictor = sam2_masks.build_predictor(section, "cpu", sam2_masks.resolve_checkpoint(section), SAM2_TEST_OVERRIDES)
    saved = torch.load(sam2_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(value, saved[name]) for name, value in predictor.state_dict().items())
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    first_object = np.zeros((48, 64), bool)
    first_object[8:24, 8:24] = True
    first_human = np.zeros((48, 64), bool)
    first_human[16:44, 34:60] = True
    object_masks, human_masks = sam2_masks.track_masks(frames, first_object, first_human, section, predictor=predictor)
    assert object_masks.shape == human_masks.shape == (3, 48, 64)
    assert object_masks.dtype == human_masks.dtype == bool
    # frame 0 is the prompt itself (SAM 2 passes a mask prompt through), resized to 128 px and back
    assert mask_iou(object_masks[:1], first_object[None])[0] > 0.9
    assert mask_iou(human_masks[:1], first_human[None])[0] > 0.9
    assert not (object_masks & human_masks).any()


def test_sam2_config_follows_the_checkpoint_and_a_mismatch_names_the_setting(sam2_checkpoint, tmp_path):
    from reconstruction.backends import sam2_masks

    # the official checkpoint names pick their config (the package's own table); the setting wins
    assert sam2_masks.model_config_for({}, Path("sam2_hiera_large.pt")) == "configs/sam2/sam2_hiera_l.yaml"
    assert sam2_masks.model_config_for({}, Path("sam2.1_hiera_tiny.pt")) == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert sam2_masks.model_config_for({}, Path("mine.pt")) == sam2_masks.DEFAULT_CONFIG
    assert (
        sam2_masks.model_config_for(SAM2_TEST_SECTION, Path("sam2_hiera_large.pt"))
        == SAM2_TEST_SECTION["sam2_model_cfg"]
    )
    # tiny weights into the small model; a file that is no checkpoint; a config the package lacks
    small = {"sam2_model_cfg": "configs/sam2.1/sam2.1_hiera_s.yaml"}
    with pytest.raises(StageInputError, match=f"{sam2_checkpoint.name}: not a SAM 2 checkpoint.*sam2_model_cfg"):
        sam2_masks.build_predictor(small, "cpu", sam2_checkpoint, SAM2_TEST_OVERRIDES)
    garbage = tmp_path / "sam2_hiera_small.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(StageInputError, match="sam2_hiera_small.pt: not a SAM 2 checkpoint"):
        sam2_masks.build_predictor({}, "cpu", garbage, SAM2_TEST_OVERRIDES)
    with pytest.raises(StageInputError, match="preprocess.sam2_model_cfg: 'configs/nope.yaml'"):
        sam2_masks.build_predictor({"sam2_model_cfg": "configs/nope.yaml"}, "cpu", sam2_checkpoint)


def test_stage2_with_sam2_backend_writes_the_masks_cache(sam2_checkpoint, tmp_path):
    from reconstruction.backends import sam2_masks

    layout, vid, truth = make_scene(tmp_path, num_frames=4)
    section = {**SAM2_TEST_SECTION, "mask_backend": "sam2", "sam2_checkpoint": str(sam2_checkpoint)}
    models = {}  # the worker's per-process cache: the stage reuses the (small, 128 px) predictor built here
    predictor = sam2_masks.get_predictor(models, section, "cpu", SAM2_TEST_OVERRIDES)
    ctx = StageContext(video=vid, layout=layout, config={"preprocess": section}, models=models)
    result = preprocess.run(ctx)
    assert list(models.values()) == [predictor]
    assert layout.masks_cache(vid) in result.files and layout.depth_cache(vid) in result.files
    object_masks, human_masks = masks_to_tensors(load_masks_cache(layout.masks_cache(vid), (240, 320)))
    assert object_masks.shape == (4, 240, 320) and object_masks.dtype == bool
    # frame 0 is the prompt passed through SAM 2's 32x32 low-resolution mask (128 px model): the small
    # object loses its edges, the large human hardly anything
    assert mask_iou(object_masks[:1], truth.object_masks[:1])[0] > 0.7
    assert mask_iou(human_masks[:1], truth.human_masks[:1])[0] > 0.9
    assert not (object_masks & human_masks).any()
    assert len(torch.load(layout.depth_cache(vid), weights_only=True)) == 4


def test_moge_without_checkpoint_names_the_setting(scene, tmp_path, monkeypatch):
    layout, vid, _ = _copy_scene(scene, tmp_path)
    monkeypatch.delenv("MOGE_CHECKPOINT", raising=False)
    _run_expecting(layout, vid, "preprocess.moge_checkpoint", {"preprocess": {"depth_backend": "moge"}})
    _run_expecting(
        layout,
        vid,
        "MoGe checkpoint not found",
        {"depth": {"method": "moge"}, "preprocess": {"moge_checkpoint": str(tmp_path / "none.pt")}},
    )
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"x")
    # The package is installed (Makefile); None entries in sys.modules make its imports fail as if absent.
    monkeypatch.setitem(sys.modules, "moge.model.v2", None)
    monkeypatch.setitem(sys.modules, "moge.model.v1", None)
    _run_expecting(
        layout, vid, "'dlr-moge' package.*preprocess.moge_checkpoint",
        {"preprocess": {"depth_backend": "moge", "moge_checkpoint": str(checkpoint)}},
    )  # fmt: skip


# MoGe-2's architecture, scaled down (ViT-S/14 backbone, narrow heads, few tokens), with random weights.
MOGE_TEST_CONFIG = {
    "encoder": {"backbone": "dinov2_vits14", "intermediate_layers": 4, "dim_out": 64},
    "neck": {"dim_in": [66, 2, 2, 2, 2], "dim_res_blocks": [64, 32, 32, 32, 32], "dim_out": [None] * 5,
             "resamplers": ["bilinear"] * 4},
    "points_head": {"dim_in": [64, 32, 32, 32, 32], "dim_res_blocks": [64, 32, 32, 32, 32],
                    "dim_out": [None] * 4 + [3], "resamplers": ["bilinear"] * 4},
    "mask_head": {"dim_in": [64, 32, 32, 32, 32], "dim_res_blocks": [64, 32, 32, 32, 32],
                  "dim_out": [None] * 4 + [1], "resamplers": ["bilinear"] * 4},
    "scale_head": {"dims": [384, 32, 1]},
    "remap_output": "exp",
    "num_tokens_range": [16, 64],
}  # fmt: skip


def test_moge_checkpoint_that_is_not_one_is_named(tmp_path):
    from moge.model.v2 import MoGeModel

    from reconstruction.backends import moge_depth

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(StageInputError, match="garbage.pt: not a MoGe checkpoint.*preprocess.moge_checkpoint"):
        moge_depth.load_model(garbage, "cpu")
    no_config = tmp_path / "no_config.pt"
    torch.save({"model": {}}, no_config)
    with pytest.raises(StageInputError, match="no_config.pt: not a MoGe checkpoint.*model_config"):
        moge_depth.load_model(no_config, "cpu")
    foreign = tmp_path / "foreign.pt"  # MoGe-2's config with another network's weights
    torch.save({"model_config": MOGE_TEST_CONFIG, "model": torch.nn.Linear(2, 2).state_dict()}, foreign)
    with pytest.raises(StageInputError, match=r"foreign.pt: its weights fit only 0 of \d+ tensors"):
        moge_depth.load_model(foreign, "cpu")
    good = tmp_path / "model.pt"
    torch.save({"model_config": MOGE_TEST_CONFIG, "model": MoGeModel(**MOGE_TEST_CONFIG).state_dict()}, good)
    assert isinstance(moge_depth.load_model(good, "cpu"), MoGeModel)


def test_stage2_with_moge_backend_writes_an_aligned_depth_cache(tmp_path, monkeypatch):
    from moge.model.v2 import MoGeModel

    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pt"  # MoGe's own checkpoint format
    torch.save({"model_config": MOGE_TEST_CONFIG, "model": MoGeModel(**MOGE_TEST_CONFIG).state_dict()}, checkpoint)
    layout, vid, truth = make_scene(tmp_path / "results", num_frames=3)
    monkeypatch.setenv("MOGE_CHECKPOINT", str(checkpoint))
    models = {}
    result = preprocess.run(StageContext(video=vid, layout=layout, config={"depth": {"method": "moge"}}, models=models))
    assert result.info["depth_backend"] == "moge"
    # loaded once per worker process, then reused
    assert len([key for key in models if isinstance(key, tuple) and key[0] == "moge_model"]) == 1
    depth = torch.load(layout.depth_cache(vid), weights_only=True)
    assert len(depth) == 3 and all(d.dtype == torch.float32 and d.shape == (240, 320) for d in depth)
    assert all(bool(torch.isfinite(d).all()) for d in depth)
    # every frame had enough background to be least-squares aligned to the first-frame GT depth
    assert result.metrics["depth_aligned_frames"] == 3.0
    assert result.metrics["depth_known_frac_mean"] > 0.5


def test_unknown_backend_is_refused(scene, tmp_path):
    layout, vid, _ = _copy_scene(scene, tmp_path)
    _run_expecting(layout, vid, "preprocess.mask_backend", {"preprocess": {"mask_backend": "magic"}})


def _revealed_spot_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[slice, slice]]:
    """A brown-shirted person beside a blue block on a small brown table in front of a many-coloured
    wall; the block is lifted off at frame 2, revealing table whose colour the class histograms call
    human (the shirt is all that colour, the background mostly other colours)."""
    height, width, frames = 60, 80, 6
    table, shirt, block = (130, 80, 40), (134, 82, 42), (30, 60, 200)
    tiles = np.random.default_rng(0).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    wall = np.repeat(np.repeat(tiles, 4, axis=0), 4, axis=1)
    video = np.repeat(wall[None], frames, axis=0)
    video[:, 30:50, 40:70] = table
    video[:, 5:40, 5:20] = shirt  # the person, standing still
    spot = (slice(36, 46), slice(50, 60))
    video[:2, spot[0], spot[1]] = block
    video[2:, 8:18, 50:60] = block  # lifted onto the wall, clear of its spot
    first_object = np.zeros((height, width), dtype=bool)
    first_object[spot] = True
    first_human = np.zeros_like(first_object)
    first_human[5:40, 5:20] = True
    return video, first_object, first_human, spot


def test_revealed_object_spot_becomes_background_not_human():
    from reconstruction.backends.classical_masks import ClassicalMaskConfig, track_masks

    video, first_object, first_human, spot = _revealed_spot_scene()
    inner = (slice(spot[0].start + 2, spot[0].stop - 2), slice(spot[1].start + 2, spot[1].stop - 2))
    track = track_masks(video, first_object, first_human, ClassicalMaskConfig(use_selfie=False))
    assert not track.human_masks[-1][inner].any()
    assert not track.object_masks[-1][inner].any()
    assert track.human_masks[-1][10:35, 8:17].all()  # the person is still found
    # Without the guess from the surrounding table, the spot's colour reads as the person's.
    without = track_masks(video, first_object, first_human, ClassicalMaskConfig(use_selfie=False, fill_sigma_px=0))
    assert without.human_masks[-1][inner].mean() > 0.5


def _person_over_wall(
    height: int, width: int, wall, shirt, lower, shirt_cols: tuple[int, int], lower_cols: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A standing person in front of a plain wall, for the carried-object scenes: float (H,W,3) image (shirt on
    rows 10-40, trousers or legs on rows 40-115, in the given column ranges) and the person's (H,W) mask."""
    image = np.empty((height, width, 3), dtype=np.float64)
    image[:] = wall
    human = np.zeros((height, width), dtype=bool)
    for rows, cols, colour in ((slice(10, 40), shirt_cols, shirt), (slice(40, 115), lower_cols, lower)):
        image[rows, cols[0] : cols[1]] = colour
        human[rows, cols[0] : cols[1]] = True
    return image, human


def _black_on_black_scene(hide: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A drill-like object (yellow handle, black base) carried from beside a person until its base is
    in front of the person's black trousers, or (``hide``) on until it is wholly behind them (from
    frame 12). Returns video, first masks, true object masks."""
    frames, height, width = 16, 120, 160
    wall, shirt, black, yellow = (150, 110, 115), (40, 70, 200), (22, 22, 26), (235, 185, 30)
    rng = np.random.default_rng(0)
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    truth = np.zeros((frames, height, width), dtype=bool)
    backdrop, human = _person_over_wall(height, width, wall, shirt, black, (80, 130), (85, 125))
    for t in range(frames):
        image = backdrop.copy()
        obj = np.zeros((height, width), dtype=bool)
        # From x=40 (over the wall) to x=80 (its base over the trousers), or on to x=100 (behind them).
        x = 40 + min(t, 15 if hide else 10) * 4
        obj[50:80, x + 3 : x + 11] = True  # handle
        obj[80:92, x : x + 14] = True  # base
        paint = obj & ~human if hide else obj
        image[50:80, x + 3 : x + 11][paint[50:80, x + 3 : x + 11]] = yellow
        image[80:92, x : x + 14][paint[80:92, x : x + 14]] = black
        video[t] = np.clip(image + rng.normal(0, 1.5, image.shape), 0, 255).astype(np.uint8)
        truth[t] = paint
    first_human = human & ~truth[0]
    return video, truth[0], first_human, truth


def test_black_part_in_front_of_black_trousers_is_carried_with_the_object():
    """Colour cannot tell the black base from the black trousers behind it; the rigid carry of the
    sure (yellow) pixels can. The base ends over the trousers."""
    from reconstruction.backends.classical_masks import ClassicalMaskConfig, track_masks

    video, first_object, first_human, truth = _black_on_black_scene(hide=False)
    config = ClassicalMaskConfig(use_selfie=False)
    track = track_masks(video, first_object, first_human, config)
    base_over_trousers = np.zeros_like(first_object)
    base_over_trousers[80:92, 85:94] = True  # the base's part in front of the trousers at the end
    assert (truth[-1] & base_over_trousers).sum() > 80
    recovered = track.object_masks[-1][truth[-1] & base_over_trousers].mean()
    iou = (track.object_masks[-1] & truth[-1]).sum() / (track.object_masks[-1] | truth[-1]).sum()
    # Carried by the dense flow instead (the rule off), the base is left behind on the trousers' edge.
    flow_only = track_masks(video, first_object, first_human, ClassicalMaskConfig(use_selfie=False, rigid_carry=False))
    flow_recovered = flow_only.object_masks[-1][truth[-1] & base_over_trousers].mean()
    flow_iou = (flow_only.object_masks[-1] & truth[-1]).sum() / (flow_only.object_masks[-1] | truth[-1]).sum()
    assert recovered > 0.5 and recovered > flow_recovered + 0.4, (recovered, flow_recovered)
    assert iou > 0.8 and iou > flow_iou + 0.15, (iou, flow_iou)


def test_object_hidden_behind_the_person_gets_no_mask_from_its_shape():
    """The same object carried on behind the trousers: once no sure-coloured pixel is left, no shape
    is carried, so the object's mask is not painted onto the trousers that hide it (stage 5's lost-
    object check depends on that)."""
    from reconstruction.backends.classical_masks import ClassicalMaskConfig, track_masks

    video, first_object, first_human, truth = _black_on_black_scene(hide=True)
    assert not truth[12:].any()  # wholly hidden
    track = track_masks(video, first_object, first_human, ClassicalMaskConfig(use_selfie=False))
    invented = track.object_masks[12:].reshape(4, -1).sum(1)
    # Two frames of lag: what the flow carried from the last frame with a shape fades, then nothing.
    assert (invented[:2] < 0.1 * truth[0].sum()).all() and (invented[2:] == 0).all(), invented
    assert track.object_masks[5][truth[5]].mean() > 0.9  # tracked while it was in view


def _still_person_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A still person (red shirt, legs the colour of the floor below them) with blended outline columns
    (half shirt, half wall), beside a still blue block, in six frames of camera noise."""
    height, width, frames = 60, 80, 6
    shirt, legs, block = np.array((200, 60, 60)), (132, 81, 41), (30, 60, 200)
    tiles = np.random.default_rng(0).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    wall = np.repeat(np.repeat(tiles, 4, axis=0), 4, axis=1)
    video = np.repeat(wall[None], frames, axis=0).astype(np.float32)
    video[:, 40:60, :] = (130, 80, 40)  # the floor
    video[:, 5:25, 30:40] = shirt
    video[:, 25:50, 30:40] = legs
    for col in (29, 40):
        video[:, 5:50, col] = 0.5 * video[:, 5:50, col] + 0.5 * shirt
    video[:, 10:16, 60:70] = block
    person = np.zeros((height, width), dtype=bool)
    person[5:50, 30:40] = True
    first_object = np.zeros_like(person)
    first_object[10:16, 60:70] = True
    noisy = video + np.random.default_rng(1).normal(0.0, 1.0, video.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), first_object, person


def test_person_unchanged_since_frame_0_keeps_its_mask():
    """Where the background behind the person is unknown, the colour models decide, and they call legs the
    floor's colour background and the blended outline either way; pixels that look as they did at frame 0
    keep frame 0's (exact) label."""
    from reconstruction.backends.classical_masks import ClassicalMaskConfig, track_masks

    video, first_object, person = _still_person_scene()

    def iou(masks: np.ndarray) -> np.ndarray:
        return (masks & person).sum((1, 2)) / (masks | person).sum((1, 2))

    track = track_masks(video, first_object, person, ClassicalMaskConfig(use_selfie=False))
    assert (iou(track.human_masks) == 1.0).all()
    assert (track.object_masks[1:] == first_object).all()
    without = track_masks(video, first_object, person, ClassicalMaskConfig(use_selfie=False, unchanged_band_px=0))
    assert iou(without.human_masks)[1:].max() < 0.85  # the legs are lost


def test_classical_mask_settings_come_from_the_config_and_a_typo_is_named():
    from reconstruction.backends.classical_masks import ClassicalMaskConfig
    from reconstruction.config import ConfigError, load_config

    config = load_config().merge({"preprocess": {"classical": {"unchanged_band_px": 0, "diff_threshold": 9.0}}})
    settings = ClassicalMaskConfig.from_section(config.section("preprocess"))
    assert (settings.unchanged_band_px, settings.diff_threshold) == (0, 9.0)
    with pytest.raises(
        ConfigError, match=r"preprocess\.classical\.diff_treshold: unknown key; did you mean 'diff_threshold'"
    ):
        load_config().merge({"preprocess": {"classical": {"diff_treshold": 9.0}}})


def _hand_over_legs_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A still person (skin-coloured face, red shirt, dark-blue trousers) in front of a wall of random tiles
    above a wooden floor; from frame 1 a skin-coloured hand slides down over the trousers. The background
    behind the person is never seen, and skin is nearer the floor's colour than anything the person showed at
    frame 0 but the small face."""
    height, width, frames = 60, 80, 8
    shirt, trousers, skin, floor = (200, 60, 60), (30, 30, 90), (190, 140, 110), (170, 120, 95)
    tiles = np.random.default_rng(0).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    wall = np.repeat(np.repeat(tiles, 4, axis=0), 4, axis=1)
    video = np.repeat(wall[None], frames, axis=0).astype(np.float32)
    video[:, 40:60, :] = floor
    video[:, 2:8, 31:39] = skin
    video[:, 8:25, 28:42] = shirt
    video[:, 25:55, 28:42] = trousers
    person = np.zeros((height, width), dtype=bool)
    person[2:8, 31:39] = True
    person[8:55, 28:42] = True
    hand = np.zeros((frames, height, width), dtype=bool)
    for t in range(1, frames):
        hand[t, 26 + 2 * t : 34 + 2 * t, 30:38] = True
    video[hand] = skin
    video[:, 10:16, 60:70] = (30, 60, 200)  # a still blue block
    first_object = np.zeros_like(person)
    first_object[10:16, 60:70] = True
    noisy = video + np.random.default_rng(1).normal(0.0, 1.0, video.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), first_object, person, hand


def test_hand_moving_over_the_person_stays_foreground_where_the_background_is_unknown():
    from reconstruction.backends.classical_masks import ClassicalMaskConfig, track_masks

    video, first_object, person, hand = _hand_over_legs_scene()
    track = track_masks(video, first_object, person, ClassicalMaskConfig(use_selfie=False))
    for t in range(1, len(video)):
        assert track.human_masks[t][hand[t]].mean() > 0.95, t
        assert (track.human_masks[t] & person).sum() / (track.human_masks[t] | person).sum() > 0.98, t
        assert not track.object_masks[t][hand[t]].any()
    # Without the carried foreground the hand's skin reads as the floor: a hole in the person.
    without = track_masks(
        video, first_object, person, ClassicalMaskConfig(use_selfie=False, keep_foreground_margin=None)
    )
    assert max(without.human_masks[t][hand[t]].mean() for t in range(1, len(video))) < 0.2


def _shaded_head_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A drill-like yellow object (handle and head) carried from beside a person onto their olive-brown legs;
    from frame 4 its head is turned from the light: the same yellow at 0.4 of its brightness, which in Lab
    is nearer the legs than anything the object showed at frame 0. Returns video, first masks, true object
    masks and the head's true masks."""
    frames, height, width = 14, 120, 160
    wall, shirt, legs, yellow = (100, 140, 150), (40, 150, 60), (80, 70, 42), np.array((235, 185, 30))
    rng = np.random.default_rng(0)
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    truth = np.zeros((frames, height, width), dtype=bool)
    head = np.zeros_like(truth)
    backdrop, human = _person_over_wall(height, width, wall, shirt, legs, (80, 130), (85, 125))
    for t in range(frames):
        image = backdrop.copy()
        x = 50 + min(t, 10) * 4  # from over the wall to over the legs
        truth[t, 60:90, x + 3 : x + 11] = True  # handle
        head[t, 50:60, x : x + 16] = True
        image[truth[t]] = yellow
        image[head[t]] = yellow if t < 4 else 0.4 * yellow
        truth[t] |= head[t]
        video[t] = np.clip(image + rng.normal(0, 1.5, image.shape), 0, 255).astype(np.uint8)
    return video, truth[0], human & ~truth[0], truth, head


def test_shaded_face_of_the_object_stays_the_objects():
    """Lab calls the shaded head surely human (the legs' colour); its chromaticity is the object's, and the
    rigid carry puts it where the object's shape is."""
    from reconstruction.backends.classical_masks import ClassicalMaskConfig, track_masks

    video, first_object, first_human, truth, head = _shaded_head_scene()
    track = track_masks(video, first_object, first_human, ClassicalMaskConfig(use_selfie=False))
    for t in range(5, len(video)):
        assert track.object_masks[t][head[t]].mean() > 0.9, t
        assert track.human_masks[t][head[t]].mean() < 0.05, t
        iou = (track.object_masks[t] & truth[t]).sum() / (track.object_masks[t] | truth[t]).sum()
        assert iou > 0.95, (t, iou)
    # Without the rule the shaded head goes to the person.
    without = track_masks(
        video, first_object, first_human, ClassicalMaskConfig(use_selfie=False, shade_chroma_margin=None)
    )
    assert max(without.object_masks[t][head[t]].mean() for t in range(5, len(video))) < 0.1
    assert min(without.human_masks[t][head[t]].mean() for t in range(5, len(video))) > 0.9


def test_chromaticity_ignores_shading_and_dark_pixels():
    from reconstruction.backends.classical_masks import chromaticity_bins

    yellow = np.array([[[235, 185, 30], [94, 74, 12], [20, 16, 2], [80, 70, 42]]], dtype=np.uint8)
    chroma, bright = chromaticity_bins(yellow, 32, 60.0)
    assert chroma[0, 0] == chroma[0, 1] != chroma[0, 3]  # lit and shaded yellow alike, olive skin apart
    assert bright.tolist() == [[True, True, False, True]]


def _sleeve_between_parts_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A two-part object (a cyan part and a blue one, joined on top by a cyan bridge) carried from left to right
    over the wall; from frame 2 a sleeve of the shirt's blue reaches down through the 14-px gap between the parts.
    The object's blue is in the shirt's Lab bin's neighbour, so Lab finds the sleeve ambiguous, while its
    chromaticity (r, g) is three bins from the object's blue. Returns video, first masks, true object masks, the
    sleeve's pixels in the gap and the blue part's true masks."""
    frames, height, width, gap = 16, 120, 160, 14
    wall, shirt, trousers = (150, 120, 100), (27, 58, 162), (60, 60, 60)
    cyan, blue = (40, 150, 210), (50, 50, 160)
    rng = np.random.default_rng(0)
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    truth = np.zeros((frames, height, width), dtype=bool)
    blue_part, sleeve_in_gap = np.zeros_like(truth), np.zeros_like(truth)
    backdrop, human = _person_over_wall(height, width, wall, shirt, trousers, (95, 140), (100, 135))
    for t in range(frames):
        image = backdrop.copy()
        x = 20 + 3 * t
        truth[t, 50:95, x : x + 10] = True  # cyan part
        truth[t, 50:56, x : x + gap + 18] = True  # bridge
        blue_part[t, 56:95, x + 10 + gap : x + 18 + gap] = True
        truth[t] |= blue_part[t]
        image[truth[t]] = cyan
        image[blue_part[t]] = blue
        if t >= 2:
            image[20:56, x + 10 : x + 10 + gap] = shirt  # the arm down to the bridge
            sleeve_in_gap[t, 56:95, x + 10 : x + 10 + gap] = True
            image[sleeve_in_gap[t]] = shirt
        video[t] = np.clip(image + rng.normal(0, 1.5, image.shape), 0, 255).astype(np.uint8)
    return video, truth[0], human & ~truth[0], truth, sleeve_in_gap, blue_part


def test_sleeve_of_the_objects_blue_beside_it_is_not_carried_as_the_object():
    """The sleeve in the gap is joined to the object (an ambiguous band between its parts, outline pixels of a
    like colour) and then the carried shape keeps it; its chromaticity is the person's and it lies beyond the
    frame-0 shape, so it is not the object's. The blue part, as ambiguous in Lab but of the object's
    chromaticity, stays the object's."""
    from reconstruction.backends.classical_masks import ClassicalMaskConfig, track_masks

    video, first_object, first_human, truth, sleeve, blue_part = _sleeve_between_parts_scene()
    track = track_masks(video, first_object, first_human, ClassicalMaskConfig(use_selfie=False))
    for t in range(3, len(video)):
        assert track.object_masks[t][sleeve[t]].mean() < 0.2, t
        assert track.human_masks[t][sleeve[t]].mean() > 0.75, t
        assert track.object_masks[t][blue_part[t]].mean() > 0.9, t
        iou = (track.object_masks[t] & truth[t]).sum() / (track.object_masks[t] | truth[t]).sum()
        assert iou > 0.85, (t, iou)
    # Without the rule the whole gap is the object's from the sleeve's first frame on.
    without = track_masks(
        video, first_object, first_human, ClassicalMaskConfig(use_selfie=False, foreign_chroma_margin=None)
    )
    assert min(without.object_masks[t][sleeve[t]].mean() for t in range(3, len(video))) > 0.9
    assert (
        max(
            (without.object_masks[t] & truth[t]).sum() / (without.object_masks[t] | truth[t]).sum()
            for t in range(3, len(video))
        )
        < 0.7
    )
