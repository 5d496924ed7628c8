import math

import pytest
import torch

from components import geometry, metrics


def pose(rotvec, translation):
    return torch.tensor([[*rotvec, *translation]], dtype=torch.float64)


@pytest.mark.parametrize("degrees", [0.0, 1e-7, 10.0, 90.0, 179.0])
def test_rotation_error_is_the_angle_between(degrees):
    turned = pose([0.0, 0.0, math.radians(degrees)], [0, 800, 0])
    assert metrics.rotation_error_deg(turned, pose([0, 0, 0], [0, 800, 0])).item() == pytest.approx(degrees, abs=1e-9)


def test_rotation_error_is_about_the_relative_rotation():
    a = pose([0.3, 0.0, 0.0], [0, 0, 0])
    b = pose([0.3, 0.0, 0.0], [0, 0, 0])
    b_turned = geometry.matrix_to_pose(
        geometry.pose_to_matrix(b) @ geometry.pose_to_matrix(pose([0.0, 0.2, 0.0], [0, 0, 0]))
    )
    assert metrics.rotation_error_deg(a, b).item() == pytest.approx(0.0, abs=1e-9)
    assert metrics.rotation_error_deg(a, b_turned).item() == pytest.approx(math.degrees(0.2), abs=1e-9)


def test_translation_error():
    assert metrics.translation_error_mm(
        pose([0.1, 0, 0], [3, 4, 0]), pose([0.2, 0, 0], [0, 0, 12])
    ).item() == pytest.approx(13.0)


def test_mean_tre_of_a_shift_is_the_shift():
    points = torch.tensor([[[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]]], dtype=torch.float64)
    tre = metrics.mean_target_registration_error_mm(pose([0, 0, 0], [0, 800, 5]), pose([0, 0, 0], [0, 800, 0]), points)
    assert tre.item() == pytest.approx(5.0)


def test_mean_tre_of_a_turn_about_the_isocentre():
    # 90 degrees about z: the origin stays, a point 100 mm out moves by 100 * sqrt(2).
    points = torch.tensor([[[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]]], dtype=torch.float64)
    tre = metrics.mean_target_registration_error_mm(
        pose([0, 0, math.pi / 2], [0, 0, 0]), pose([0, 0, 0], [0, 0, 0]), points
    )
    assert tre.item() == pytest.approx(100 * math.sqrt(2) / 2)


def test_landmark_rmse_over_visible_landmarks_by_hand():
    truth = torch.zeros(2, 3, 2, dtype=torch.float64)
    predicted = torch.tensor(
        [[[3.0, 4.0], [0.0, 1.0], [100.0, 0.0]], [[0.0, 0.0], [1.0, 1.0], [0.0, 2.0]]], dtype=torch.float64
    )
    visible = torch.tensor([[True, True, False], [True, True, True]])
    # squared errors of the visible ones: 25, 1, 0, 2, 4 -> mean 6.4
    assert metrics.landmark_rmse(predicted, truth, visible) == pytest.approx(math.sqrt(6.4))
    assert metrics.landmark_squared_errors(predicted, truth)[0, 2].item() == 10000
