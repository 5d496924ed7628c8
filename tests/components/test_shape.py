"""The Procrustes spread: zero for one shape under similarities, the size of the noise otherwise."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from components.shape import procrustes_spread, similarity_fit

TEMPLATE = np.array(
    [
        [-120, 20, 60],
        [-45, 30, -40],
        [-20, 40, -30],
        [0, 60, -10],
        [0, 60, -45],
        [20, 40, -30],
        [45, 30, -40],
        [120, 20, 60],
    ],
    dtype=float,
)


def similar_copies(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rotations = Rotation.random(count, random_state=seed).as_matrix()
    scales, shifts = rng.uniform(0.7, 1.4, count), rng.uniform(-50, 50, (count, 3))
    return np.stack([s * TEMPLATE @ r.T + t for r, s, t in zip(rotations, scales, shifts, strict=True)])


def test_similarity_fit_undoes_a_similarity():
    moved = similar_copies(1, seed=1)[0]
    assert np.allclose(similarity_fit(moved, TEMPLATE), TEMPLATE, atol=1e-9)


def test_one_shape_under_rotation_scale_and_shift_has_no_spread():
    spread = procrustes_spread(similar_copies(30, seed=2))
    assert spread.rms < 1e-8 and spread.per_landmark.max() < 1e-8


@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_noise_of_sigma_mm_per_coordinate_gives_about_sigma_root_3(sigma):
    rng = np.random.default_rng(3)
    shapes = TEMPLATE + rng.normal(0, sigma, (400, 8, 3))
    spread = procrustes_spread(shapes)
    # the alignment absorbs 7 of the 24 degrees of freedom: sqrt(3 * (1 - 7/24)) sigma, about 1.46 sigma
    assert spread.rms == pytest.approx(sigma * np.sqrt(3 * (1 - 7 / 24)), rel=0.05)


def test_the_landmark_that_varies_is_the_one_with_the_spread():
    rng = np.random.default_rng(5)
    shapes = np.repeat(TEMPLATE[None], 200, axis=0)
    shapes[:, 3] += rng.normal(0, 4.0, (200, 3))
    spread = procrustes_spread(shapes)
    assert (
        int(np.argmax(spread.per_landmark)) == 3
        and spread.per_landmark[3] > 3 * np.delete(spread.per_landmark, 3).max()
    )


@pytest.mark.parametrize("shape", [(1, 8, 3), (5, 2, 3), (5, 8, 2), (8, 3)])
def test_bad_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="landmarks must be"):
        procrustes_spread(np.zeros(shape))
