"""Errors of landmarks and C-arm poses against the truth, and their summaries (RMSE, bootstrap intervals)."""

import math
import warnings

import numpy as np
import torch

from components import geometry
from components.geometry import Camera


def rotation_error_deg(pose: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) geodesic angle between the rotations of (B, 6) poses, degrees (accurate near 0)."""
    relative = geometry.rotation_vector_to_matrix(pose[..., :3]).transpose(-1, -2) @ geometry.rotation_vector_to_matrix(
        reference[..., :3]
    )
    return torch.rad2deg(geometry.matrix_to_rotation_vector(relative).norm(dim=-1))


def translation_error_mm(pose: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) distance between the translations ``t`` of (B, 6) poses, mm."""
    return (pose[..., 3:] - reference[..., 3:]).norm(dim=-1)


def mean_target_registration_error_mm(
    pose: torch.Tensor, reference: torch.Tensor, landmarks_3d: torch.Tensor
) -> torch.Tensor:
    """(B,) mean over the landmarks of the distance between where the two poses put them, mm.

    Each pose maps a (B, N, 3) world landmark into the C-arm's frame; the TRE of a landmark is the
    distance between its two images there. A landmark the subject lacks (NaN) is left out of the mean.
    """
    moved = geometry.to_camera_frame(landmarks_3d, pose)
    expected = geometry.to_camera_frame(landmarks_3d, reference)
    return (moved - expected).norm(dim=-1).nanmean(-1)


def landmark_squared_errors(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(B, N) squared distance (px²) between (B, N, 2) predicted and true 2D landmarks."""
    return (predicted - truth).pow(2).sum(-1)


def landmark_rmse(predicted: torch.Tensor, truth: torch.Tensor, visible: torch.Tensor) -> float:
    """``pooled_rmse`` of (B, N, 2) points over the visible landmarks; NaN if none."""
    errors = landmark_squared_errors(predicted, truth).sqrt().masked_fill(~visible, math.nan)
    return pooled_rmse(errors.detach().cpu().numpy())


def pooled_rmse(errors: np.ndarray) -> float:
    """RMSE over every finite entry of (B, N) errors, all landmarks at once (not the paper's "Mean", which is
    the mean of the per-landmark RMSEs: ``statistics.paper_mean``)."""
    finite = errors[np.isfinite(errors)]
    return float(np.sqrt(np.mean(finite**2))) if finite.size else math.nan


def per_landmark_rmse(errors: np.ndarray) -> np.ndarray:
    """(N,) RMSE of each landmark over the images where it is visible; NaN for one visible in none."""
    squared = np.where(np.isfinite(errors), errors**2, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "Mean of empty slice" for a landmark never visible
        return np.sqrt(np.nanmean(squared, axis=0)) if len(errors) else np.full(errors.shape[1], math.nan)


def bootstrap_ci(
    errors: np.ndarray, subjects: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the pooled RMSE when whole subjects are resampled with replacement.

    Images of one subject are not independent, so subjects (not images) are the resampled unit.
    With one subject the interval is that subject's RMSE twice (nothing to resample).
    """
    unique = np.unique(subjects)
    groups = [errors[subjects == subject] for subject in unique]
    generator = np.random.default_rng(seed)
    statistics = [
        pooled_rmse(np.concatenate([groups[i] for i in generator.integers(0, len(groups), len(groups))]))
        for _ in range(resamples)
    ]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(statistics, tail)), float(np.percentile(statistics, 100 - tail))


def px_to_mm(camera: Camera, source_to_isocenter: float) -> tuple[float, float]:
    """(mm at the detector, mm at the isocentre) per pixel: the pixel size, and it over the magnification sdd / sid."""
    pixel = (camera.delx + camera.dely) / 2
    return pixel, pixel * source_to_isocenter / camera.sdd


def success_rate(mtre_mm: np.ndarray, threshold_mm: float = 10.0) -> float:
    """Share of the images whose mTRE is below ``threshold_mm``; an unsolved (NaN) image counts as a failure."""
    mtre_mm = np.asarray(mtre_mm, dtype=float)
    return float((np.nan_to_num(mtre_mm, nan=np.inf) < threshold_mm).mean()) if mtre_mm.size else math.nan
