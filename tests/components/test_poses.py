import math

import pytest
import torch

from components import geometry
from components.poses import PoseRanges, sample_pose, sample_poses

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
