"""One synthetic HOI scene: anny body, object on a table, textured ground and wall, camera; rendered.

World: metric, Z up; the person stands at the origin facing -Y (towards the camera), the table and the
object are in front of them, the wall behind. ``build_scene`` is deterministic in its seed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from reconstruction import keypoints as kp
from reconstruction.render import Mesh, RenderOutput, render
from reconstruction.render.scene import ground_plane, look_at_world_to_cam
from reconstruction.synth import footwork, ik, motion, objects

logger = logging.getLogger(__name__)

HUMAN_ID, OBJECT_ID, GROUND_ID, WALL_ID, TABLE_ID = 1, 2, 3, 4, 5
TABLE_HEIGHT = 0.72
TABLE_CENTRE = (0.0, -0.47)
TABLE_SIZE = (1.3, 0.6)  # x (width), y (depth)
HUG_DROP, HUG_GAP = 0.16, 0.03  # object_lost: object top under the shoulders, gap to the torso (m)

SKIN_TONES = ((0.96, 0.80, 0.69), (0.87, 0.67, 0.52), (0.72, 0.52, 0.38), (0.55, 0.38, 0.26), (0.40, 0.27, 0.18))
SHIRT_COLOURS = ((0.80, 0.15, 0.15), (0.15, 0.35, 0.75), (0.15, 0.55, 0.25), (0.85, 0.75, 0.20), (0.55, 0.25, 0.60),
                 (0.95, 0.95, 0.92), (0.20, 0.60, 0.65))  # fmt: skip
TROUSER_COLOURS = ((0.12, 0.14, 0.25), (0.25, 0.22, 0.20), (0.35, 0.35, 0.38), (0.45, 0.35, 0.22), (0.10, 0.10, 0.10))
HAIR_COLOURS = ((0.10, 0.07, 0.05), (0.30, 0.18, 0.10), (0.55, 0.40, 0.20), (0.20, 0.20, 0.20))


@dataclass
class SceneConfig:
    category: str = "box"
    variant: str = "normal"
    num_frames: int = 60
    fps: float = 30.0
    width: int = 640
    height: int = 480
    seed: int = 0
    hands: str = "auto"  # auto | one | two
    ik_steps: int = 100


@dataclass
class Scene:
    config: SceneConfig
    object_spec: objects.ObjectSpec
    shape: torch.Tensor  # (6,)
    height_m: float
    pose_aa: torch.Tensor  # (T,J,3)
    trans: torch.Tensor  # (T,3)
    body_vertices: torch.Tensor  # (T,V,3) world
    body_faces: torch.Tensor
    body_colors: torch.Tensor  # (V,3)
    keypoints_world: torch.Tensor  # (T,75,3)
    object_poses_world: torch.Tensor  # (T,4,4)
    object_vertices: torch.Tensor  # (V,3) model frame
    object_faces: torch.Tensor
    object_colors: torch.Tensor
    K: np.ndarray  # (3,3)
    world_to_cam: np.ndarray  # (T,4,4)
    contact: np.ndarray  # (T,2) bool (left, right)
    static_meshes: list[Mesh] = field(default_factory=list)
    ik_report: dict = field(default_factory=dict)

    @property
    def object_vertices_world(self) -> torch.Tensor:
        rot, t = self.object_poses_world[:, :3, :3], self.object_poses_world[:, :3, 3]
        return self.object_vertices[None] @ rot.transpose(1, 2) + t[:, None]

    def meshes(self) -> list[Mesh]:
        human = _mesh(self.body_vertices, self.body_faces, self.body_colors, HUMAN_ID, smooth=True)
        obj = _mesh(self.object_vertices_world, self.object_faces, self.object_colors, OBJECT_ID, smooth=False)
        return [human, obj, *self.static_meshes]


def _mesh(vertices, faces, colors, instance_id: int, smooth: bool) -> Mesh:
    """A render Mesh; flat shading for boxy parts where the renderer supports choosing it."""
    if "smooth" in getattr(Mesh, "__dataclass_fields__", {}):
        return Mesh(vertices, faces, colors, instance_id, smooth=smooth)
    return Mesh(vertices, faces, colors, instance_id)


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ---- static scenery --------------------------------------------------------------------------------
def _box_mesh(centre, half, color) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import trimesh

    box = trimesh.creation.box(extents=2 * np.asarray(half))
    box.unmerge_vertices()
    verts = torch.tensor(np.asarray(box.vertices) + np.asarray(centre), dtype=torch.float32)
    faces = torch.tensor(np.asarray(box.faces), dtype=torch.long)
    return verts, faces, torch.tensor(color, dtype=torch.float32).expand(len(verts), 3).clone()


def _merge(parts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    verts, faces, colors, offset = [], [], [], 0
    for v, f, c in parts:
        verts.append(v)
        faces.append(f + offset)
        colors.append(c)
        offset += len(v)
    return torch.cat(verts), torch.cat(faces), torch.cat(colors)


def scenery(rng: np.random.Generator) -> list[Mesh]:
    """Checkerboard ground, a two-tone tiled wall behind the person, a table in front of them."""
    tone = rng.uniform(0.35, 0.7)
    tint = rng.uniform(-0.06, 0.06, size=3)
    light = tuple(np.clip(tone + 0.15 + tint, 0, 1))
    dark = tuple(np.clip(tone - 0.05 + tint, 0, 1))
    g_verts, g_faces, g_colors = ground_plane(size=14.0, cells=28, center=(0.0, -1.0), colors=(light, dark))
    # Wall: a checkerboard stood up at y = +1.6 (rotate the ground's xy into xz).
    wall_base = rng.uniform(0.45, 0.8, size=3)
    w_verts, w_faces, w_colors = ground_plane(
        size=14.0, cells=20, colors=(tuple(wall_base), tuple(np.clip(wall_base * 0.85, 0, 1)))
    )
    w_verts = torch.stack([w_verts[:, 0], torch.full_like(w_verts[:, 0], 1.6), w_verts[:, 1] + 7.0], dim=1)
    w_faces = w_faces[:, [0, 2, 1]]
    wood = tuple(np.clip(np.array([0.55, 0.38, 0.22]) + rng.uniform(-0.08, 0.08, size=3), 0, 1))
    (cx, cy), (sx, sy) = TABLE_CENTRE, TABLE_SIZE
    top = _box_mesh((cx, cy, TABLE_HEIGHT - 0.02), (sx / 2, sy / 2, 0.02), wood)
    legs = [
        _box_mesh((cx + dx * (sx / 2 - 0.04), cy + dy * (sy / 2 - 0.04), (TABLE_HEIGHT - 0.04) / 2),
                  (0.025, 0.025, (TABLE_HEIGHT - 0.04) / 2), tuple(np.asarray(wood) * 0.7))
        for dx in (-1, 1) for dy in (-1, 1)
    ]  # fmt: skip
    t_verts, t_faces, t_colors = _merge([top, *legs])
    return [
        _mesh(g_verts, g_faces, g_colors, GROUND_ID, smooth=False),
        _mesh(w_verts, w_faces, w_colors, WALL_ID, smooth=False),
        _mesh(t_verts, t_faces, t_colors, TABLE_ID, smooth=False),
    ]


def table_description() -> dict:
    """The table as the render config's ``scene_data`` describes static objects: its mesh (written in
    the table's own frame, origin on the floor under the centre of the top, +z up) is placed by ``rot``
    (3x3), ``pos`` (3,) and ``scale``; ``size`` (width x, depth y, height z in metres) and ``top_z`` are
    hoiweb additions for readers that want the box without loading the mesh."""
    (cx, cy), (sx, sy) = TABLE_CENTRE, TABLE_SIZE
    return {
        "name": "table",
        "scale": 1.0,
        "rot": np.eye(3).tolist(),
        "pos": [cx, cy, 0.0],
        "size": [sx, sy, TABLE_HEIGHT],
        "top_z": TABLE_HEIGHT,
        "instance_id": TABLE_ID,
    }


# ---- body appearance -------------------------------------------------------------------------------
def body_colors(
    body, vertices_rest: torch.Tensor, keypoints_rest: torch.Tensor, rng: np.random.Generator
) -> torch.Tensor:
    """Per-vertex clothing/skin colours from the zero pose: each vertex takes the label of the closest
    limb segment between keypoints (shirt on the torso and upper arms, optional sleeves, trousers on the
    legs, skin on head and hands, shoes on feet, hair on the top and back of the head)."""
    k = {name: keypoints_rest[kp.index(name)] for name in kp.BODY_LANDMARKS}
    mid_shoulder = (k["left_shoulder"] + k["right_shoulder"]) / 2
    mid_hip = (k["left_hip"] + k["right_hip"]) / 2
    head_top = (k["left_ear"] + k["right_ear"]) / 2 + torch.tensor([0.0, 0.0, 0.08])
    SHIRT, SLEEVE, TROUSERS, SKIN, SHOES, HAIR = range(6)
    segments = [
        (mid_shoulder, mid_hip, SHIRT), (k["left_shoulder"], k["right_shoulder"], SHIRT),
        (k["left_hip"], k["right_hip"], TROUSERS),
        (k["left_shoulder"], k["left_elbow"], SHIRT), (k["right_shoulder"], k["right_elbow"], SHIRT),
        (k["left_elbow"], k["left_wrist"], SLEEVE), (k["right_elbow"], k["right_wrist"], SLEEVE),
        (k["left_hip"], k["left_knee"], TROUSERS), (k["right_hip"], k["right_knee"], TROUSERS),
        (k["left_knee"], k["left_ankle"], TROUSERS), (k["right_knee"], k["right_ankle"], TROUSERS),
        (mid_shoulder + torch.tensor([0.0, 0.0, 0.12]), head_top, SKIN),
    ]  # fmt: skip
    v = vertices_rest
    best = torch.full((len(v),), float("inf"))
    label = torch.zeros(len(v), dtype=torch.long)
    segment = torch.zeros(len(v), dtype=torch.long)
    for index, (a, b, lab) in enumerate(segments):
        ab = b - a
        s = ((v - a) @ ab / (ab @ ab).clamp(min=1e-9)).clamp(0, 1)
        d = (v - (a + s[:, None] * ab)).norm(dim=-1)
        closer = d < best
        best = torch.where(closer, d, best)
        label = torch.where(closer, torch.full_like(label, lab), label)
        segment = torch.where(closer, torch.full_like(segment, index), segment)
    # The waistband is a horizontal line, not the jagged boundary between the torso and hip segments.
    trunk = segment <= 2
    waist = mid_hip[2] + 0.07
    label[trunk & (v[:, 2] < waist)] = TROUSERS
    label[trunk & (v[:, 2] >= waist)] = SHIRT
    for seg in ("left_hand", "right_hand"):
        label[body.vertex_segments[seg]] = SKIN
    for seg in ("left_foot", "right_foot"):
        label[body.vertex_segments[seg]] = SHOES
    # Hair: head vertices above the eyes, or behind the ears and above the mouth.
    eye_z = (k["left_eye"][2] + k["right_eye"][2]) / 2
    ear_y = (k["left_ear"][1] + k["right_ear"][1]) / 2
    mouth_z = (k["mouth_left"][2] + k["mouth_right"][2]) / 2
    head = label == SKIN
    head &= v[:, 2] > mid_shoulder[2] + 0.1
    hair = head & ((v[:, 2] > eye_z + 0.035) | ((v[:, 1] > ear_y + 0.01) & (v[:, 2] > mouth_z)))
    label[hair] = HAIR
    skin = np.asarray(SKIN_TONES[rng.integers(len(SKIN_TONES))])
    shirt = np.asarray(SHIRT_COLOURS[rng.integers(len(SHIRT_COLOURS))])
    sleeve = shirt if rng.random() < 0.5 else skin
    palette = np.stack(
        [shirt, sleeve, TROUSER_COLOURS[rng.integers(len(TROUSER_COLOURS))], skin, (0.08, 0.08, 0.09),
         HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]]
    )  # fmt: skip
    colors = torch.tensor(palette, dtype=torch.float32)[label]
    # Slight per-vertex variation: fabric/skin texture for trackers, deterministic in the seed.
    noise = torch.tensor(rng.uniform(-0.035, 0.035, size=(len(v), 1)), dtype=torch.float32)
    return (colors + noise).clamp(0, 1)


# ---- camera ------------------------------------------------------------------------------------------
def camera(config: SceneConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """K (3,3) and world_to_cam (T,4,4): a camera 2.6-3.4 m in front, slightly above, looking at the
    person. ``camera_shake`` drifts it 0.25-0.35 m sideways over the clip plus a 2 cm jitter."""
    focal = 600.0 * config.width / 640.0 * rng.uniform(0.95, 1.05)
    K = np.array([[focal, 0.0, config.width / 2.0], [0.0, focal, config.height / 2.0], [0.0, 0.0, 1.0]])
    distance = rng.uniform(2.6, 3.4)
    azimuth = rng.uniform(-0.25, 0.25)
    eye = np.array([distance * math.sin(azimuth), -distance * math.cos(azimuth), rng.uniform(1.45, 1.85)])
    target = np.array([0.0, -0.25, rng.uniform(0.85, 1.0)])
    eyes = np.repeat(eye[None], config.num_frames, axis=0)
    if config.variant == "camera_shake":
        t = np.linspace(0.0, 1.0, config.num_frames)[:, None]
        drift = rng.uniform(0.25, 0.35) * np.array([1.0, 0.3, 0.1])
        jitter = 0.02 * np.sin(2 * np.pi * (t * rng.uniform(2, 4, size=3) + rng.uniform(0, 1, size=3)))
        eyes = eyes + t * drift + jitter
    w2c = np.stack([look_at_world_to_cam(e, target) for e in eyes])
    return K, w2c


def camera_azimuth(world_to_cam: np.ndarray) -> float:
    """Angle about +Z from the person's facing direction at yaw 0 (-Y) to the camera centre."""
    centre = -world_to_cam[:3, :3].T @ world_to_cam[:3, 3]
    return math.atan2(centre[0], -centre[1])


# ---- the scene -----------------------------------------------------------------------------------
def _object_pose_initial(
    spec: objects.ObjectSpec, two_handed: bool, rng: np.random.Generator, across: bool = False
) -> np.ndarray:
    """Object on the table in front of the person: centred for two hands, in front of the right
    shoulder for one. Model +x points to the person's right (world -X), model +y away (world -Y);
    ``across`` (grasp across the depth): a quarter turn more, model +x away and +y to the left."""
    pose = np.eye(4)
    pose[:3, :3] = _rot_z(math.pi + rng.uniform(-0.2, 0.2) + (math.pi / 2 if across else 0.0))
    x = rng.uniform(-0.03, 0.03) if two_handed else -rng.uniform(0.13, 0.2)
    pose[:3, 3] = (x, -rng.uniform(0.4, 0.45), TABLE_HEIGHT)
    return pose


def _hand_targets(spec: objects.ObjectSpec, pose: torch.Tensor, sites: tuple) -> list[ik.HandTarget]:
    rot, t = pose[:3, :3], pose[:3, 3]
    return [
        ik.HandTarget(
            site.hand,
            (rot @ torch.as_tensor(site.point, dtype=pose.dtype) + t)[None],
            (rot @ torch.as_tensor(site.normal, dtype=pose.dtype))[None],
            (rot @ torch.as_tensor(site.finger_dir, dtype=pose.dtype))[None],
        )
        for site in sites
    ]


def _solve_hug(
    body, shape, trans0, spec, object_pose0: torch.Tensor, sites: tuple, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(J,3) upright pose whose hands hold the object against the chest, square to the body: its top
    ``HUG_DROP`` under the shoulders (below the camera's line of sight over them), its near side
    ``HUG_GAP`` in front of the torso. Returns (pose (J,3), the object's pose there (4,4))."""
    dtype = object_pose0.dtype
    upright = torch.zeros(1, body.num_joints, 3, dtype=dtype)
    with torch.no_grad():
        out = body.forward(upright, shape, trans0)
    shoulder_z = float(out.keypoints[0, [kp.index("left_shoulder"), kp.index("right_shoulder")], 2].mean())
    # Square to the body and on its midline (the table pose's small turn would widen the object's outline).
    pose = torch.eye(4, dtype=dtype)
    turns = round(math.atan2(float(object_pose0[1, 0]), float(object_pose0[0, 0])) / (math.pi / 2))
    pose[:3, :3] = torch.as_tensor(_rot_z(turns * math.pi / 2), dtype=dtype)
    corners = torch.as_tensor(np.array(objects.build_mesh(spec).bounds), dtype=dtype)
    box = torch.cartesian_prod(corners[:, 0], corners[:, 1], corners[:, 2]) @ pose[:3, :3].T
    height = float(box[:, 2].max() - box[:, 2].min())
    z0 = shoulder_z - HUG_DROP - height
    verts = out.vertices[0]
    band = (verts[:, 2] > z0) & (verts[:, 2] < z0 + height) & (verts[:, 0].abs() < 0.15)
    front = float(verts[band, 1].min()) if bool(band.any()) else -0.15
    # World -Y is in front of the person: the object's extent towards them is box[:, 1].max().
    centre_x = -float(box[:, 0].max() + box[:, 0].min()) / 2
    pose[:3, 3] = torch.tensor([centre_x, front - HUG_GAP - float(box[:, 1].max()), z0], dtype=dtype)

    def object_sdf(points: torch.Tensor) -> torch.Tensor:
        return objects.signed_distance_world(spec, pose[None], points)

    hug = ik.solve_hand_ik(body, shape, upright, trans0, _hand_targets(spec, pose, sites), object_sdf,
                           ik.IKConfig(steps=steps))  # fmt: skip
    return hug.pose_aa[0], pose


def _solve_hug_blend(body, shape, trans0, spec, sites, holder: str, object_pose0, hug_object, timeline, plain_pose,
                     blended_pose, arm_joints, steps: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:  # fmt: skip
    """Frames with the object against the chest or on the way there: the object moves on the geodesic
    from where the grasp arms carry it to its chest-hold pose (in the unturned body frame), and on the way
    both hands are solved onto it (batched hand IK warm-started from the linearly blended arms), so neither
    hand leaves or enters the object. Returns (pose (T,J,3) with those frames' arm angles, their object
    poses in the world (B,4,4), the frame indices)."""
    import roma

    hugging = np.flatnonzero((timeline.hug > 1e-6) & timeline.held)
    pose = blended_pose.clone()
    if hugging.size == 0:
        return pose, torch.zeros(0, 4, 4, dtype=pose.dtype), hugging
    unturned_plain = plain_pose.clone()
    unturned_plain[:, 0] = 0.0
    with torch.no_grad():
        keypoints = body.forward(unturned_plain, shape, trans0.expand(len(plain_pose), 3)).keypoints
    hand = ik.hand_frame(keypoints, holder)
    carried = hand[hugging] @ (torch.linalg.inv(hand[timeline.grasp_frame]) @ object_pose0)
    weight = torch.as_tensor(timeline.hug[hugging], dtype=pose.dtype)
    relative = roma.rotmat_to_rotvec(carried[:, :3, :3].transpose(1, 2) @ hug_object[None, :3, :3])
    target = carried.clone()
    target[:, :3, :3] = carried[:, :3, :3] @ roma.rotvec_to_rotmat(weight[:, None] * relative)
    target[:, :3, 3] = (1 - weight[:, None]) * carried[:, :3, 3] + weight[:, None] * hug_object[None, :3, 3]
    # Full hold: the chest-hold pose and its object as solved; in between: hands solved onto the object.
    between = torch.as_tensor(timeline.hug[hugging] < 1 - 1e-6)
    frames = hugging[between.numpy()]
    count = len(frames)
    start = blended_pose[frames].clone()
    start[:, 0] = 0.0
    targets = [
        ik.HandTarget(
            site.hand,
            target[between, :3, :3] @ torch.as_tensor(site.point, dtype=pose.dtype) + target[between, :3, 3],
            target[between, :3, :3] @ torch.as_tensor(site.normal, dtype=pose.dtype),
            target[between, :3, :3] @ torch.as_tensor(site.finger_dir, dtype=pose.dtype),
        )
        for site in sites
    ]

    def object_sdf(points: torch.Tensor) -> torch.Tensor:
        return objects.signed_distance_world(spec, target[between], points)

    if count:
        solved = ik.solve_hand_ik(body, shape, start, trans0.expand(count, 3), targets, object_sdf,
                                  ik.IKConfig(steps=steps)).pose_aa  # fmt: skip
        arm = torch.as_tensor(arm_joints)
        pose[torch.as_tensor(frames)[:, None], arm[None]] = solved[:, arm]
    # Turn the object with the body: the root yaw is about the vertical axis through the root.
    yaw = torch.as_tensor(timeline.yaw[hugging], dtype=pose.dtype)
    turn = torch.eye(4, dtype=pose.dtype).repeat(len(hugging), 1, 1)
    c, s_ = torch.cos(yaw), torch.sin(yaw)
    turn[:, 0, 0], turn[:, 0, 1], turn[:, 1, 0], turn[:, 1, 1] = c, -s_, s_, c
    axis = trans0[0].clone()
    axis[2] = 0.0
    turn[:, :3, 3] = axis - (turn[:, :3, :3] @ axis)
    return pose, turn @ target, hugging


def build_scene(config: SceneConfig, body) -> Scene:
    """Sample, solve and animate one scene (no rendering)."""
    if config.variant not in ("normal", "static_object", "camera_shake", "object_lost"):
        raise ValueError(f"unknown variant {config.variant!r}")
    rng = np.random.default_rng(
        [config.seed, objects.CATEGORIES.index(config.category) if config.category in objects.CATEGORIES else 99]
    )
    spec = objects.make_object(config.category, rng)
    two_handed = {"auto": spec.two_handed_default, "one": False, "two": True}.get(config.hands)
    if two_handed is None:
        raise ValueError(f"hands must be auto, one or two, got {config.hands!r}")
    across = False
    if config.variant == "object_lost":
        # Held with both hands against the chest, then the person turns their back to the camera: the
        # body hides it. A box is held across its narrower side, so the torso is wider than it.
        two_handed = True
        across = spec.across_hands is not None
    sites = spec.grasps(two_handed, across)

    dtype = body.dtype
    shape = torch.tensor(
        [rng.uniform(0, 1), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.65),
         rng.uniform(0.4, 0.8), rng.uniform(0.4, 0.6)], dtype=dtype,
    )  # fmt: skip
    root_height = body.root_height_standing(shape)
    height_m = body.standing_height(shape)
    trans0 = torch.tensor([[0.0, 0.0, root_height]], dtype=dtype)

    object_pose0 = torch.tensor(_object_pose_initial(spec, two_handed, rng, across), dtype=dtype)
    lean = motion.lean_pose(body, rng.uniform(0.3, 0.45))
    targets = _hand_targets(spec, object_pose0, sites)

    def object_sdf(points: torch.Tensor) -> torch.Tensor:
        return objects.signed_distance_world(spec, object_pose0[None], points)

    solved = ik.solve_hand_ik(body, shape, lean[None], trans0, targets, object_sdf, ik.IKConfig(steps=config.ik_steps))
    arm_joints = sorted(
        {body.joint_index(n) for target in targets for n in ik.ARM_CHAINS[body.name][target.hand]}
        | {body.joint_index(n) for target in targets for n in ik.FINGER_BONES[body.name][target.hand]}
    )
    carry_yaw = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 0.6))
    K, w2c = camera(config, rng)
    # object_lost turns the back squarely to the camera (the camera is off-axis by its azimuth), in the
    # direction the carry would turn.
    away_yaw = camera_azimuth(w2c[0]) + math.copysign(math.pi, carry_yaw)
    timeline = motion.make_timeline(config.num_frames, config.variant, carry_yaw, away_yaw)
    trans = trans0.expand(config.num_frames, 3).clone()
    holder = "right" if any(target.hand == "right" for target in targets) else "left"
    motion_pose = motion.compose_motion(solved.pose_aa[0], lean, arm_joints, timeline)
    blend_frames, blend_objects = np.zeros(0, dtype=int), None
    if timeline.hug is not None:
        hug_pose, hug_object = _solve_hug(body, shape, trans0, spec, object_pose0, sites, config.ik_steps)
        motion_pose, blend_objects, blend_frames = _solve_hug_blend(
            body, shape, trans0, spec, sites, holder, object_pose0, hug_object, timeline, motion_pose,
            motion.compose_motion(solved.pose_aa[0], lean, arm_joints, timeline, hug_pose), arm_joints,
            config.ik_steps,
        )  # fmt: skip
    legs = footwork.solve_legs(body, shape, motion_pose, trans, timeline.feet)
    pose_aa = legs.pose_aa
    with torch.no_grad():
        out = body.forward(pose_aa, shape, trans)
    object_poses = motion.attach_object(ik.hand_frame(out.keypoints, holder), object_pose0, timeline)
    if blend_objects is not None:  # held against the chest (or on the way): placed where the hands hold it
        object_poses[torch.as_tensor(blend_frames, dtype=torch.long)] = blend_objects.to(object_poses.dtype)

    contact = np.zeros((config.num_frames, 2), dtype=bool)
    for target in targets:
        contact[timeline.grasp_frame : timeline.release_frame, 0 if target.hand == "left" else 1] = True

    mesh = objects.build_mesh(spec)
    with torch.no_grad():
        rest = body.forward(body.rest_pose(1), shape, torch.zeros(1, 3, dtype=dtype))
    colors = body_colors(body, rest.vertices[0].float(), rest.keypoints[0].float(), rng)
    return Scene(
        config=config,
        object_spec=spec,
        shape=shape,
        height_m=height_m,
        pose_aa=pose_aa,
        trans=trans,
        body_vertices=out.vertices.float(),
        body_faces=body.faces,
        body_colors=colors,
        keypoints_world=out.keypoints.float(),
        object_poses_world=object_poses.float(),
        object_vertices=torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32),
        object_faces=torch.tensor(np.asarray(mesh.faces), dtype=torch.long),
        object_colors=torch.tensor(np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0, dtype=torch.float32),
        K=K,
        world_to_cam=w2c,
        contact=contact,
        static_meshes=scenery(rng),
        ik_report={
            "palm_error_m": solved.palm_error,
            "min_signed_distance_m": solved.min_signed_distance,
            "closest_gap_m": solved.closest_gap,
            "two_handed": two_handed,
            "grasp_frame": timeline.grasp_frame,
            "release_frame": timeline.release_frame,
            "carry_yaw_rad": float(timeline.yaw[timeline.release_frame - 1]),
            "max_yaw_rad": float(np.abs(timeline.yaw).max()),
            "leg_ik_error_m": legs.max_error,
        },
    )


@dataclass
class RenderedScene:
    output: RenderOutput
    object_visibility: np.ndarray  # (T,) visible / unoccluded object pixels (0 when it leaves the image)


def render_scene(scene: Scene, device: str | torch.device = "cpu") -> RenderedScene:
    """Render every frame, and the object alone to measure how much of it is visible."""
    size = (scene.config.height, scene.config.width)
    full = render(scene.meshes(), scene.K, scene.world_to_cam, size, device=device, background=(0.0, 0.0, 0.0))
    obj = scene.meshes()[1]
    alone = render([obj], scene.K, scene.world_to_cam, size, device=device)
    visible = (full.instance == OBJECT_ID).sum(dim=(1, 2)).double()
    unoccluded = (alone.instance == OBJECT_ID).sum(dim=(1, 2)).double()
    visibility = torch.where(unoccluded > 0, visible / unoccluded.clamp(min=1), torch.zeros_like(visible))
    return RenderedScene(full, visibility.cpu().numpy())
