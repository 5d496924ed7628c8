import dataclasses

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from components.anatomy import LANDMARK_NAMES, LEFT_RIGHT_PAIRS, MIDLINE
from components.phantom import (
    MAX_GAS_POCKETS,
    PARAM_RANGES,
    PhantomParams,
    make_phantom,
    phantom_subject,
    sample_phantom_params,
)
from components.subject import center_affine, world_to_voxel

SEEDS = (0, 1, 2, 3)
BONE_HU = 300.0
L_ASIS, L_IOF, L_MOF, SPS, IPS, R_MOF, R_IOF, R_ASIS = range(8)


@pytest.fixture(scope="module")
def subjects():
    return {seed: phantom_subject(seed) for seed in SEEDS}


def ball_offsets(radius: float, step: float = 0.5) -> np.ndarray:
    """(N, 3) offsets in mm on a grid of ``step`` within a ball of ``radius``."""
    axis = np.arange(-radius, radius + 1e-9, step)
    offsets = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    return offsets[np.linalg.norm(offsets, axis=1) <= radius]


def max_hu_near(subject, point: np.ndarray, radius: float = 2.0) -> float:
    """The largest trilinearly interpolated HU within ``radius`` mm of a world point."""
    indices = world_to_voxel(subject.affine, point + ball_offsets(radius))
    return float(map_coordinates(subject.hu, indices.T, order=1).max())


def extreme_params(sign: float, **overrides) -> PhantomParams:
    """Every scalar parameter at the top (sign +1) or bottom (sign -1) of its range."""
    values = {name: (high if sign > 0 else low) for name, (low, high) in PARAM_RANGES.items()}
    return PhantomParams(**{**values, **overrides})


def test_same_seed_gives_the_same_subject(subjects):
    again = phantom_subject(0)
    first = subjects[0]
    assert again.subject_id == first.subject_id == "phantom-00000"
    assert again.hu.dtype == np.float32
    assert again.hu.tobytes() == first.hu.tobytes()
    assert np.array_equal(again.affine, first.affine)
    assert np.array_equal(again.landmarks, first.landmarks)
    assert sample_phantom_params(0) == sample_phantom_params(0)


def test_different_seeds_give_different_subjects(subjects):
    for seed in SEEDS[1:]:
        a, b = subjects[0], subjects[seed]
        shift = np.linalg.norm(a.landmarks - b.landmarks, axis=1)
        assert shift.mean() > 4.0, f"seed {seed}: landmarks moved only {shift.mean():.1f} mm on average"
        assert a.hu.shape != b.hu.shape or not np.array_equal(a.hu, b.hu)


def test_sampled_params_are_in_range_and_vary():
    params = [sample_phantom_params(seed) for seed in range(200)]
    for name, (low, high) in PARAM_RANGES.items():
        values = np.array([getattr(p, name) for p in params])
        assert values.min() >= low and values.max() <= high
        # Uniform draws: 200 of them cover most of the range.
        assert values.max() - values.min() > 0.8 * (high - low), name
    pocket_counts = {len(p.gas_pockets) for p in params}
    assert pocket_counts == set(range(MAX_GAS_POCKETS + 1))


@pytest.mark.parametrize("seed", SEEDS)
def test_landmarks_lie_on_bone_inside_the_volume(subjects, seed):
    subject = subjects[seed]
    indices = world_to_voxel(subject.affine, subject.landmarks)
    assert np.all(indices >= 0) and np.all(indices <= np.array(subject.hu.shape) - 1)
    for name, landmark in zip(LANDMARK_NAMES, subject.landmarks):
        assert max_hu_near(subject, landmark) > BONE_HU, f"seed {seed}: {name} is not on bone"


@pytest.mark.parametrize("seed", SEEDS)
def test_landmark_anatomy(subjects, seed):
    points = subjects[seed].landmarks
    x, z = points[:, 0], points[:, 2]
    for left, right in LEFT_RIGHT_PAIRS:
        assert x[left] < -10 and x[right] > 10  # RAS+: the patient's left is -x
        # Mirror images up to the left-right asymmetry (at most 3 % each way).
        assert abs(x[left] + x[right]) < 0.07 * abs(x[left])
        assert np.allclose(points[left, 1:], points[right, 1:])
    assert np.allclose(x[list(MIDLINE)], 0.0)
    for asis, iof, mof in ((L_ASIS, L_IOF, L_MOF), (R_ASIS, R_IOF, R_MOF)):
        assert z[asis] > z[mof] + 40 and z[asis] > z[iof] + 60
        assert z[iof] < z[mof] - 10  # the inferior point of the foramen is below its medial point
        assert abs(x[mof]) < abs(x[iof]) < abs(x[asis])
    assert z[SPS] > z[IPS] + 25
    assert 170 < x[R_ASIS] - x[L_ASIS] < 290  # inter-ASIS distance, small to large adults


@pytest.mark.parametrize("seed", SEEDS)
def test_hounsfield_units_and_frame(subjects, seed):
    subject = subjects[seed]
    hu, shape = subject.hu, subject.hu.shape
    assert hu.dtype == np.float32
    assert hu.min() >= -1000.0 and hu.max() < 2000.0
    assert (hu > 1000).sum() > 1000  # cortical bone
    assert hu[0, 0, 0] == -1000.0 and hu[-1, -1, -1] == -1000.0  # air in the corners
    assert np.allclose(subject.affine, center_affine(subject.affine, shape))
    assert np.allclose(subject.affine[:3, :3], 2.0 * np.eye(3))
    assert np.allclose(subject.affine @ np.r_[(np.array(shape) - 1) / 2, 1.0], [0, 0, 0, 1])
    assert shape[0] <= 180 and shape[1] <= 135 and shape[2] <= 160


def test_tissues_have_their_hounsfield_units():
    subject = make_phantom(PhantomParams(fat_thickness=16.0, gas_pockets=((0.0, 10.0, 60.0, 15.0, 15.0, 15.0),)))
    hu = subject.hu
    i, j, k = (np.array(hu.shape) - 1) // 2
    lateral = hu[:i, j, k]  # from the patient's left edge (x < 0) to the centre
    assert np.any(np.isclose(lateral, -100.0))  # subcutaneous fat
    assert np.any(np.isclose(lateral, 40.0))  # muscle
    gas_index = np.round(world_to_voxel(subject.affine, np.array([[0.0, 30.0, 70.0]]))[0]).astype(int)
    assert hu[tuple(gas_index)] == pytest.approx(-700.0)  # bowel gas (pocket centre, moved by the placement)


def test_bone_density_scales_bone_only():
    dense, light = (make_phantom(PhantomParams(bone_density=d), voxel_size=4.0) for d in (1.2, 0.8))
    assert dense.hu.max() == pytest.approx(1.5 * light.hu.max(), rel=0.05)
    assert np.array_equal(dense.landmarks, light.landmarks)
    assert np.array_equal(dense.hu[:4], light.hu[:4])  # 16 mm of the x < 0 flank: soft tissue only


def test_landmarks_do_not_depend_on_the_voxel_size():
    params = sample_phantom_params(7)
    fine, coarse = make_phantom(params, voxel_size=2.0), make_phantom(params, voxel_size=4.0)
    assert np.array_equal(fine.landmarks, coarse.landmarks)
    assert np.allclose(np.array(fine.hu.shape) * 2.0, np.array(coarse.hu.shape) * 4.0, atol=4.0)


def test_anterior_tilt_brings_the_asis_forward_of_the_symphysis():
    def asis_ahead_of_symphysis(tilt_deg):
        landmarks = make_phantom(PhantomParams(tilt_deg=tilt_deg), voxel_size=4.0).landmarks
        return landmarks[L_ASIS, 1] - landmarks[SPS, 1]

    assert asis_ahead_of_symphysis(10.0) > asis_ahead_of_symphysis(0.0) + 5 > asis_ahead_of_symphysis(-10.0) + 10


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_extreme_subjects_keep_landmarks_on_bone_in_a_capped_grid(sign):
    subject = make_phantom(extreme_params(sign))
    assert subject.hu.shape[0] <= 180 and subject.hu.shape[1] <= 135 and subject.hu.shape[2] <= 160
    indices = world_to_voxel(subject.affine, subject.landmarks)
    assert np.all(indices >= 0) and np.all(indices <= np.array(subject.hu.shape) - 1)
    for name, landmark in zip(LANDMARK_NAMES, subject.landmarks):
        assert max_hu_near(subject, landmark) > BONE_HU, name


def test_phantom_subject_names():
    assert phantom_subject(12, voxel_size=6.0).subject_id == "phantom-00012"
    assert phantom_subject(12, voxel_size=6.0, subject_id="case-a").subject_id == "case-a"


@pytest.mark.parametrize(
    "field, value",
    [
        ("scale", 0.5),
        ("scale", float("nan")),
        ("width_ratio", 1.5),
        ("height_ratio", 0.0),
        ("tilt_deg", 45.0),
        ("asymmetry", -0.2),
        ("wing_flare", 2.0),
        ("foramen_scale", 0.1),
        ("bone_density", 3.0),
        ("fat_thickness", -1.0),
        ("soft_tissue_extra", 100.0),
    ],
)
def test_out_of_range_params_are_rejected(field, value):
    with pytest.raises(ValueError, match=f"PhantomParams.{field} must be in"):
        PhantomParams(**{field: value})


@pytest.mark.parametrize(
    "pockets, message",
    [
        (((0.0, 0.0, 60.0, 10.0, 10.0, 10.0),) * (MAX_GAS_POCKETS + 1), "at most"),
        (((0.0, 0.0, 60.0, 10.0, 10.0),), "6 finite numbers"),
        (((0.0, 0.0, 60.0, 10.0, 10.0, float("inf")),), "6 finite numbers"),
        (((0.0, 0.0, -60.0, 10.0, 10.0, 10.0),), "outside"),
        (((0.0, 0.0, 60.0, 10.0, 1.0, 10.0),), "semi-axes"),
    ],
)
def test_bad_gas_pockets_are_rejected(pockets, message):
    with pytest.raises(ValueError, match=f"PhantomParams.gas_pockets.*{message}"):
        PhantomParams(gas_pockets=pockets)


@pytest.mark.parametrize("voxel_size", [0.0, -2.0, 20.0])
def test_bad_voxel_size_is_rejected(voxel_size):
    with pytest.raises(ValueError, match="voxel_size"):
        make_phantom(PhantomParams(), voxel_size=voxel_size)


def test_params_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample_phantom_params(0).scale = 2.0


def test_phantom_landmarks_are_those_of_the_built_subject():
    from components.phantom import make_phantom, phantom_landmarks, sample_phantom_params

    params = sample_phantom_params(11)
    assert np.array_equal(phantom_landmarks(params), make_phantom(params, voxel_size=6.0).landmarks)
