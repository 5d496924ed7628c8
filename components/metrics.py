"""Errors of estimated C-arm poses against true ones."""

import torch

from components import geometry


def rotation_error_deg(pose: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) geodesic angle between the rotations of (B, 6) poses, degrees (accurate near 0)."""
    relative = geometry.rotation_vector_to_matrix(pose[..., :3]).transpose(-1, -2) @ geometry.rotation_vector_to_matrix(reference[..., :3])
    return torch.rad2deg(geometry.matrix_to_rotation_vector(relative).norm(dim=-1))


def translation_error_mm(pose: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) distance between the translations ``t`` of (B, 6) poses, mm."""
    return (pose[..., 3:] - reference[..., 3:]).norm(dim=-1)


def mean_target_registration_error_mm(pose: torch.Tensor, reference: torch.Tensor, landmarks_3d: torch.Tensor) -> torch.Tensor:
    """(B,) mean over the landmarks of the distance between where the two poses put them, mm.

    Each pose maps a (B, N, 3) world landmark into the C-arm's frame; the TRE of a landmark is the
    distance between its two images there.
    """
    moved = geometry.to_camera_frame(landmarks_3d, pose)
    expected = geometry.to_camera_frame(landmarks_3d, reference)
    return (moved - expected).norm(dim=-1).mean(-1)


def landmark_squared_errors(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(B, N) squared distance (px²) between (B, N, 2) predicted and true 2D landmarks."""
    return (predicted - truth).pow(2).sum(-1)


def landmark_rmse(predicted: torch.Tensor, truth: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Root of the mean squared distance over the visible landmarks of (B, N, 2) points; NaN if none."""
    mask = visible.to(predicted.dtype)
    return ((landmark_squared_errors(predicted, truth) * mask).sum() / mask.sum()).sqrt()
