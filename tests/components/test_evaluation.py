import math

import numpy as np
import pytest
import torch

from components import evaluation, geometry, training
from components.anatomy import DEEPFLUORO, PAPER, LandmarkSet
from components.geometry import Camera

CAMERA = Camera(sdd=1020.0, height=64, width=64, delx=6.7, dely=6.7)
POSE = [0.1, -0.05, 0.02, 5.0, 800.0, -3.0]
MINE = LandmarkSet("mine", ("L_FH", "R_FH", "SPS", "IPS", "L_ASIS", "R_ASIS"), (("L_FH", "R_FH"), ("L_ASIS", "R_ASIS")))


def rows_of(landmarks, count=4, absent=()):
    """Exact 2D landmarks of random 3D ones (N of the set) under one pose; ``absent`` slots are NaN and invisible."""
    generator = np.random.default_rng(len(landmarks))
    landmarks_3d = generator.normal(0, 50, (count, len(landmarks), 3))
    landmarks_3d[:, list(absent)] = np.nan
    pose = torch.tensor([POSE] * count, dtype=torch.float64)
    points = geometry.project(torch.from_numpy(landmarks_3d), pose, CAMERA).numpy()
    return {
        "image": np.zeros((count, 64, 64), dtype=np.uint16),
        "landmarks_2d": points,
        "visible": np.isfinite(points).all(-1),
        "landmarks_3d": landmarks_3d,
        "pose": pose.numpy(),
    }


def ids_of(count):
    return {"subject_id": np.array(["a", "a", "b", "b"][:count]), "view_id": np.arange(count), "split": ["x"] * count}


@pytest.mark.parametrize("landmarks", [PAPER, DEEPFLUORO, MINE], ids=lambda landmarks: landmarks.name)
def test_records_and_summaries_name_every_landmark_of_the_set(landmarks):
    rows = rows_of(landmarks, absent=(1,))
    truth = torch.from_numpy(rows["landmarks_2d"])
    moved = truth + torch.tensor([3.0, 4.0], dtype=torch.float64)  # every landmark 5 px off
    pose = torch.tensor([POSE] * 4, dtype=torch.float64)
    records = evaluation.per_image_results(training.Predictions(moved, moved, pose, pose), rows, ids_of(4), landmarks)
    assert len(records) == 8  # 4 images, argmax and soft-argmax
    errors = evaluation.error_matrix(records, landmarks)
    assert errors.shape == (8, len(landmarks))
    assert np.isnan(errors[:, 1]).all()  # absent: never counted
    assert np.allclose(np.delete(errors, 1, axis=1), 5.0)
    summary = evaluation.summarise(records[:4], landmarks, CAMERA, 800.0, resamples=10)
    assert summary["rmse_px"] == pytest.approx(5.0)
    assert {f"rmse_px_{name}" for name in landmarks.names} <= set(summary)
    assert math.isnan(summary[f"rmse_px_{landmarks.names[1]}"])
    assert summary[f"rmse_px_{landmarks.names[0]}"] == pytest.approx(5.0)
    assert summary["mtre_mm_median"] == pytest.approx(0.0, abs=1e-9)  # the poses are the truth


def test_an_error_matrix_needs_the_records_set():
    records = [{"error_px_SPS": 1.0}]
    with pytest.raises(KeyError, match="error_px_L_FH"):
        evaluation.error_matrix(records, DEEPFLUORO)


@pytest.mark.parametrize("minimum, solved", [(4, 4), (6, 0)])
def test_the_trivial_predictor_registers_with_the_configured_minimum(minimum, solved):
    rows = rows_of(MINE, absent=(2,))  # 5 of the 6 landmarks
    predictions = evaluation.mean_position_predictions(rows, rows, CAMERA, minimum)
    assert predictions.argmax.shape == (4, 6, 2)
    assert int(torch.isfinite(predictions.pose).all(-1).sum()) == solved
    assert torch.isnan(predictions.argmax[:, 2]).all()  # no position for a landmark never seen
