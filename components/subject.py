"""One subject of a cohort: a CT in Hounsfield units, its affine, and its landmarks.

World frame (docs/architecture.md): millimetres, RAS+, origin at the centre of the CT voxel grid, i.e.
``affine @ ((shape - 1) / 2, 1) == (0, 0, 0, 1)``. Phantoms are made in this frame; real CTs are
moved into it by ``center_affine`` when they are loaded, together with their landmarks.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Subject:
    """A CT volume with its landmarks.

    Attributes:
        subject_id: a name unique within the cohort.
        hu: (I, J, K) float32 Hounsfield units.
        affine: (4, 4) float64 voxel index -> world mm (RAS+), centred on the voxel grid.
        landmarks: (N, 3) float64 world mm, in the order of the study's landmark set (``anatomy.LandmarkSet``);
            a row of NaN for a landmark the subject lacks (never guessed: it is left out of everything).
    """

    subject_id: str
    hu: np.ndarray
    affine: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self):
        if self.hu.ndim != 3:
            raise ValueError(f"subject {self.subject_id}: CT must be 3D, got shape {self.hu.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"subject {self.subject_id}: affine must be 4x4, got {self.affine.shape}")
        if self.landmarks.ndim != 2 or self.landmarks.shape[1] != 3 or not len(self.landmarks):
            raise ValueError(f"subject {self.subject_id}: landmarks must be (N, 3), got {self.landmarks.shape}")
        finite = np.isfinite(self.landmarks)
        if not np.all(finite.all(1) | np.isnan(self.landmarks).all(1)):
            raise ValueError(f"subject {self.subject_id}: each landmark must be 3 finite numbers, or NaN (absent)")

    @property
    def present(self) -> np.ndarray:
        """(N,) bool: the landmarks the subject has (the rest are NaN rows)."""
        return np.isfinite(self.landmarks).all(1)

    @property
    def spacing(self) -> np.ndarray:
        """(3,) voxel size in mm along each array axis."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def center_affine(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(4, 4) the affine translated so that the centre of the voxel grid is the world origin.

    This is the frame ``diffdrr.data.read`` renders in (it centres every volume the same way).
    """
    center_index = (np.asarray(shape, dtype=np.float64) - 1) / 2
    center_world = affine[:3, :3] @ center_index + affine[:3, 3]
    centered = np.array(affine, dtype=np.float64, copy=True)
    centered[:3, 3] -= center_world
    return centered


def world_to_voxel(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) continuous voxel indices of (N, 3) world points."""
    inverse = np.linalg.inv(affine)
    return points @ inverse[:3, :3].T + inverse[:3, 3]


def voxel_to_world(affine: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(N, 3) world points of (N, 3) continuous voxel indices."""
    return indices @ affine[:3, :3].T + affine[:3, 3]
