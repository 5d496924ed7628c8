"""Evaluation of a landmark model on a split, as the paper's Table 1 does, plus pose metrics.

``per_image_results`` gives one record per (image, method) — method ``argmax`` (the paper's) or
``soft_argmax`` — with the error of every landmark of the study's set (``error_px_<name>``, px, NaN
where invisible or absent) and the pose registered from that method's landmarks. ``summarise`` turns
the records of one split and method into RMSEs (per landmark and pooled over all landmarks; the
paper's "Mean" is ``statistics.paper_mean``), in px, in mm at the detector and in mm at the isocentre, with a
bootstrap 95% confidence interval that resamples subjects, and the pose errors and success rate.
"""

import math

import numpy as np
import torch

from components import metrics, registration, training
from components.anatomy import LandmarkSet
from components.geometry import Camera

METHODS = ("argmax", "soft_argmax")


def per_image_results(predictions: training.Predictions, rows: dict, ids: dict, landmarks: LandmarkSet) -> list[dict]:
    """One record per image and method.

    Args:
        predictions: the model's landmarks and the poses registered from them.
        rows: the rows' training columns (``training.COLUMNS``).
        ids: (B,) arrays ``subject_id``, ``view_id`` and ``split``.
        landmarks: the set of the rows' (and predictions') landmarks, which names the records' keys.
    """
    truth = torch.from_numpy(rows["landmarks_2d"]).double()
    visible = torch.from_numpy(rows["visible"])
    pose = torch.from_numpy(rows["pose"]).double()
    landmarks_3d = torch.from_numpy(rows["landmarks_3d"]).double()
    records = []
    for method, points, poses in (
        ("argmax", predictions.argmax, predictions.pose),
        ("soft_argmax", predictions.soft_argmax, predictions.soft_pose),
    ):
        errors = metrics.landmark_squared_errors(points.double(), truth).sqrt().masked_fill(~visible, math.nan)
        poses = poses.double()
        rotation = metrics.rotation_error_deg(poses, pose)
        translation = metrics.translation_error_mm(poses, pose)
        mtre = metrics.mean_target_registration_error_mm(poses, pose, landmarks_3d)
        for index in range(len(truth)):
            record = {
                "split": str(ids["split"][index]),
                "subject_id": str(ids["subject_id"][index]),
                "view_id": int(ids["view_id"][index]),
                "method": method,
            }
            record |= {f"error_px_{name}": errors[index, slot].item() for slot, name in enumerate(landmarks.names)}
            record |= {
                f"predicted_{axis}_{name}": points[index, slot, k].item()
                for slot, name in enumerate(landmarks.names)
                for k, axis in enumerate("uv")
            }
            record |= {
                "rotation_deg": rotation[index].item(),
                "translation_mm": translation[index].item(),
                "mtre_mm": mtre[index].item(),
            }
            records.append(record)
    return records


def mean_position_predictions(
    train_rows: dict[str, np.ndarray], rows: dict[str, np.ndarray], camera: Camera, min_landmarks: int
) -> training.Predictions:
    """The trivial predictor: every landmark of every row at its mean visible position in ``train_rows``, and
    the poses registered from those points (the floor a model has to beat; a pose failure with fewer than
    ``min_landmarks`` visible)."""
    points = training.mean_positions(train_rows).expand(len(rows["landmarks_2d"]), -1, -1).contiguous()
    landmarks_3d = torch.from_numpy(rows["landmarks_3d"]).double()
    weights = torch.from_numpy(rows["visible"]).double()
    pose = registration.solve(landmarks_3d, points, camera, weights=weights, min_landmarks=min_landmarks).pose
    return training.Predictions(points.float(), points.float(), pose, pose)


def error_matrix(records: list[dict], landmarks: LandmarkSet) -> np.ndarray:
    """(B, N) landmark errors (px) of the records, NaN where invisible, for the landmarks of the set."""
    return np.array([[record[f"error_px_{name}"] for name in landmarks.names] for record in records], dtype=float)


def summarise(
    records: list[dict],
    landmarks: LandmarkSet,
    camera: Camera,
    source_to_isocenter: float,
    success_mm: float = 10.0,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """The metrics of the records of one split and method (see the module docstring for the keys; per landmark
    ``rmse_px_<name>`` for each of the set's)."""
    errors = error_matrix(records, landmarks)
    subjects = np.array([record["subject_id"] for record in records])
    detector_mm, isocenter_mm = metrics.px_to_mm(camera, source_to_isocenter)
    rmse = metrics.pooled_rmse(errors)
    low, high = metrics.bootstrap_ci(errors, subjects, resamples, seed)
    summary = {
        "images": float(len(records)),
        "subjects": float(len(np.unique(subjects))),
        "rmse_px": rmse,
        "rmse_px_ci_low": low,
        "rmse_px_ci_high": high,
        "rmse_detector_mm": rmse * detector_mm,
        "rmse_isocenter_mm": rmse * isocenter_mm,
    }
    for name, value in zip(landmarks.names, metrics.per_landmark_rmse(errors)):
        summary[f"rmse_px_{name}"] = float(value)
        summary[f"rmse_isocenter_mm_{name}"] = float(value) * isocenter_mm
    mtre = np.array([record["mtre_mm"] for record in records])
    solved = np.isfinite(mtre)
    for key in ("rotation_deg", "translation_mm", "mtre_mm"):
        values = np.array([record[key] for record in records])[solved]
        summary[f"{key}_mean"] = float(values.mean()) if values.size else math.nan
        summary[f"{key}_median"] = float(np.median(values)) if values.size else math.nan
    summary["success_rate"] = metrics.success_rate(mtre, success_mm)
    summary["pose_failures"] = float((~solved).sum())
    return summary


def per_image_rmse(records: list[dict], landmarks: LandmarkSet) -> np.ndarray:
    """(B,) RMSE over each record's visible landmarks, px."""
    errors = error_matrix(records, landmarks)
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.nanmean(errors**2, axis=1))
