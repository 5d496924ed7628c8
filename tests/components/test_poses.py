import math

import numpy as np
import pytest
import torch

from components import geometry
from components.drr import landmark_visibility
from components.geometry import Camera
from components.phantom import phantom_landmarks, sample_phantom_params
from components.poses import POSE_LEVELS, PoseRanges, pose_bounds, pose_of, sample_pose, sample_poses

RANGES = PoseRanges(rotation_deg=(20.0, 10.0, 5.0), translation_mm=(15.0, 40.0, 25.0), source_to_isocenter=800.0)


def test_same_seed_subject_view_gives_the_same_pose():
    assert torch.equal(sample_pose(7, "phantom-00001", 3, RANGES), sample_pose(7, "phantom-00001", 3, RANGES))


@pytest.mark.parametrize("other", [(8, "phantom-00001", 3), (7, "phantom-00002", 3), (7, "phantom-00001", 4)])
def test_any_change_of_seed_subject_or_view_changes_the_pose(other):
    assert not torch.allclose(sample_pose(7, "phantom-00001", 3, RANGES), sample_pose(*other, RANGES))


def test_poses_stay_within_the_configured_ranges_and_fill_them():
    poses = sample_poses(0, "s", range(400), RANGES)
    angles, translation = geometry.pose_to_euler_zxy(poses)
    degrees = torch.rad2deg(angles).abs()
    offsets = (translation - torch.tensor([0.0, 800.0, 0.0], dtype=torch.float64)).abs()
    for axis in range(3):
        assert degrees[:, axis].max() <= RANGES.rotation_deg[axis] + 1e-9
        assert degrees[:, axis].max() >= 0.9 * RANGES.rotation_deg[axis]
        assert offsets[:, axis].max() <= RANGES.translation_mm[axis] + 1e-9
        assert offsets[:, axis].max() >= 0.9 * RANGES.translation_mm[axis]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(rotation_deg=(10.0, -1.0, 0.0)), "rotation_deg must be 3 finite values >= 0"),
        (dict(rotation_deg=(100.0, 0.0, 0.0)), "at most 90 degrees"),
        (dict(translation_mm=(1.0, 2.0)), "translation_mm must be 3 finite values"),
        (dict(translation_mm=(0.0, math.nan, 0.0)), "translation_mm must be 3 finite"),
        (dict(source_to_isocenter=30.0), "source_to_isocenter"),
    ],
)
def test_bad_ranges_are_refused(arguments, message):
    values = dict(rotation_deg=(1.0, 1.0, 1.0), translation_mm=(1.0, 50.0, 1.0), source_to_isocenter=800.0) | arguments
    with pytest.raises(ValueError, match=message):
        PoseRanges(**values)


@pytest.mark.parametrize(
    "ranges",
    [
        RANGES,
        PoseRanges(rotation_deg=(15.0, 15.0, 15.0), translation_mm=(20.0, 40.0, 20.0), source_to_isocenter=800.0),
        PoseRanges(rotation_deg=(60.0, 45.0, 30.0), translation_mm=(0.0, 0.0, 0.0), source_to_isocenter=500.0),
    ],
    ids=["uneven", "paper", "wide"],
)
def test_pose_bounds_contain_every_sampled_pose_and_little_more(ranges):
    low, high = (torch.tensor(b, dtype=torch.float64) for b in pose_bounds(ranges))
    poses = sample_poses(3, "s", range(2000), ranges)
    assert ((poses >= low) & (poses <= high)).all()
    # the Euler box's corners, where the rotation is largest
    corners = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0], dtype=torch.float64)] * 3)
    for sign in corners:
        pose = pose_of(sign.numpy() * np.radians(ranges.rotation_deg), sign.numpy() * ranges.translation_mm, 0.0)
        pose[4] += ranges.source_to_isocenter
        assert ((pose >= low) & (pose <= high)).all()
    center = torch.tensor([0.0, ranges.source_to_isocenter, 0.0], dtype=torch.float64)
    offsets = torch.tensor(ranges.translation_mm, dtype=torch.float64)
    assert torch.equal(low[3:], center - offsets) and torch.equal(high[3:], center + offsets)  # exact
    # the rotation box: at least the largest sampled component, at most 3 degrees wider (grid margin)
    widest = torch.rad2deg(torch.maximum(high[:3], -low[:3]))
    sampled = torch.rad2deg(poses[:, :3].abs().max(0).values)
    assert (widest >= sampled).all() and (widest <= sampled + max(ranges.rotation_deg) * 0.1 + 3.0).all()


def test_pose_bounds_of_no_rotation_pin_it_at_zero():
    ranges = PoseRanges(rotation_deg=(0.0, 0.0, 0.0), translation_mm=(1.0, 2.0, 3.0), source_to_isocenter=100.0)
    low, high = pose_bounds(ranges)
    assert low == (0.0, 0.0, 0.0, -1.0, 98.0, -3.0) and high == (0.0, 0.0, 0.0, 1.0, 102.0, 3.0)


def test_the_difficulty_levels_are_the_papers_then_wider():
    assert POSE_LEVELS["paper"] == ((15.0, 15.0, 15.0), (20.0, 40.0, 20.0))
    assert POSE_LEVELS["hard"] == ((45.0, 45.0, 15.0), (50.0, 50.0, 50.0))  # the paper's lab's code
    medium = POSE_LEVELS["medium"]
    assert all(p <= m for p, m in zip(POSE_LEVELS["paper"][1], medium[1]))
    assert medium[0] == (30.0, 30.0, 30.0)


def test_hard_poses_take_landmarks_out_of_the_field_and_paper_poses_keep_them():
    """The demo's detector (431 mm, 64 px): at the hard level some landmarks leave the image (marked
    invisible, never guessed), at the paper's hardly any."""
    camera, _, _ = geometry.rescale(Camera(sdd=1020.0, height=1436, width=1436, delx=0.3, dely=0.3), 64)
    landmarks = torch.from_numpy(phantom_landmarks(sample_phantom_params(0)))
    fraction = {}
    for level, (rotation, translation) in POSE_LEVELS.items():
        poses = sample_poses(0, "phantom-00000", range(300), PoseRanges(rotation, translation, 800.0))
        points = landmarks.expand(len(poses), -1, -1)
        projected = geometry.project(points, poses, camera)
        depth = geometry.to_camera_frame(points, poses)[..., 2]
        fraction[level] = 1 - landmark_visibility(projected, depth, camera).double().mean().item()
    assert fraction["paper"] < 0.01 < fraction["hard"] and fraction["medium"] <= fraction["hard"], fraction
