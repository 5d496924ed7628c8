"""How much a cohort's anatomy varies: the landmarks' spread after similarity (Procrustes) alignment.

Size, position and orientation say nothing of shape: ``procrustes_spread`` aligns every subject's
landmarks to their mean shape by the similarity (rotation, uniform scale, translation) that fits
best (Umeyama's least squares), iterates the mean (generalised Procrustes analysis), and reports
how far each aligned landmark lies from its mean position, RMS over subjects, in the units of the
input (mm), the mean shape kept at the cohort's mean size.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["ShapeSpread", "procrustes_spread", "similarity_fit"]


@dataclass(frozen=True)
class ShapeSpread:
    """``rms``: over all landmarks and subjects; ``per_landmark``: (L,) RMS over subjects; ``mean_shape``: (L, 3)."""

    rms: float
    per_landmark: np.ndarray
    mean_shape: np.ndarray


def similarity_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(L, 3) ``source`` moved by the similarity that best fits it onto ``target`` (both (L, 3)), least squares."""
    source_mean, target_mean = source.mean(0), target.mean(0)
    a, b = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(b.T @ a)
    reflection = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ reflection @ vt
    scale = np.trace(np.diag(singular) @ reflection) / (a**2).sum()
    return scale * a @ rotation.T + target_mean


def centroid_size(shape: np.ndarray) -> float:
    return float(np.sqrt(((shape - shape.mean(0)) ** 2).sum()))


def procrustes_spread(landmarks: np.ndarray, iterations: int = 20) -> ShapeSpread:
    """The spread of (N, L, 3) landmarks (N >= 2 subjects, L >= 3 landmarks) after similarity alignment."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[0] < 2 or landmarks.shape[1] < 3 or landmarks.shape[2] != 3:
        raise ValueError(f"landmarks must be (subjects >= 2, landmarks >= 3, 3), got {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise ValueError("landmarks must be finite")
    size = np.mean([centroid_size(shape) for shape in landmarks])
    mean = landmarks[0] - landmarks[0].mean(0)
    for _ in range(iterations):
        aligned = np.stack([similarity_fit(shape, mean) for shape in landmarks])
        updated = aligned.mean(0)
        updated = (updated - updated.mean(0)) * size / centroid_size(updated)
        converged = np.abs(updated - mean).max() < 1e-10 * size
        mean = updated
        if converged:
            break
    aligned = np.stack([similarity_fit(shape, mean) for shape in landmarks])
    squared = ((aligned - mean) ** 2).sum(-1)  # (N, L)
    return ShapeSpread(float(np.sqrt(squared.mean())), np.sqrt(squared.mean(0)), mean)
