import dataclasses

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from components.anatomy import DEEPFLUORO, LANDMARK_SETS, PAPER, LandmarkSet
from components.phantom import (
    DEFORMATION_BUMPS,
    DRAWN_LIPSCHITZ,
    IMPLANTS,
    MAX_GAS_POCKETS,
    METAL_HU,
    PARAM_RANGES,
    PHANTOM_LANDMARKS,
    TABLE_RAIL_HU,
    PhantomParams,
    clinical_ct,
    lipschitz_bound,
    make_phantom,
    phantom_deformation,
    phantom_landmarks,
    phantom_subject,
    sample_phantom_params,
    sampling_ranges,
)
from components.shape import procrustes_spread
from components.subject import center_affine, world_to_voxel

SEEDS = (0, 1, 2, 3)
BONE_HU = 300.0
CANCELLOUS_BONE_HU = 200.0  # the femoral head's centre is cancellous bone: 350 HU times the density (0.8 to 1.2)
L_ASIS, L_IOF, L_MOF, SPS, IPS, R_MOF, R_IOF, R_ASIS = range(8)

# Strong but valid: bumps at the right foramen, the left ASIS and the symphysis (bound about 0.37).
STRONG_DEFORMATION = (
    (48.0, 25.0, -60.0, 60.0, 0.0, 0.0, -12.0),
    (-120.0, 36.0, 55.0, 50.0, -8.0, 8.0, 0.0),
    (0.0, 40.0, -30.0, 45.0, 6.0, 0.0, 6.0),
)


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


def extreme_params(sign: float, ranges=PARAM_RANGES, **overrides) -> PhantomParams:
    """Every scalar parameter at the top (sign +1) or bottom (sign -1) of its range."""
    values = {name: (high if sign > 0 else low) for name, (low, high) in ranges.items()}
    return PhantomParams(**{**values, **overrides})


def world_points(subject, mask: np.ndarray) -> np.ndarray:
    """(N, 3) world mm of the voxels where ``mask`` holds."""
    indices = np.argwhere(mask)
    return indices * np.diag(subject.affine)[:3] + subject.affine[:3, 3]


def test_same_seed_gives_the_same_subject(subjects):
    again = phantom_subject(0)
    first = subjects[0]
    assert again.subject_id == first.subject_id == "phantom-00000"
    assert again.hu.dtype == np.float32
    assert again.hu.tobytes() == first.hu.tobytes()
    assert np.array_equal(again.affine, first.affine)
    assert np.array_equal(again.landmarks, first.landmarks)
    assert sample_phantom_params(0) == sample_phantom_params(0) == sample_phantom_params(0, shift=0.0)


def test_different_seeds_give_different_subjects(subjects):
    for seed in SEEDS[1:]:
        a, b = subjects[0], subjects[seed]
        shift = np.linalg.norm(a.landmarks - b.landmarks, axis=1)
        assert shift.mean() > 4.0, f"seed {seed}: landmarks moved only {shift.mean():.1f} mm on average"
        assert a.hu.shape != b.hu.shape or not np.array_equal(a.hu, b.hu)


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_sampled_params_are_in_range_and_vary(shift):
    params = [sample_phantom_params(seed, shift) for seed in range(200)]
    for name, (low, high) in sampling_ranges(shift).items():
        values = np.array([getattr(p, name) for p in params])
        assert values.min() >= low and values.max() <= high, name
        # Uniform draws: 200 of them cover most of the range.
        assert values.max() - values.min() > 0.8 * (high - low), name
    female = np.array([p.female for p in params])
    # Both sexes, each far from the nominal 0.5 (the degree is at least 0.4 at shift 0, 0.75 at shift 1).
    assert 70 < (female > 0.5).sum() < 130
    assert np.all(np.abs(2 * female - 1) >= (0.4 if shift == 0 else 0.75) - 1e-9)
    pocket_counts = {len(p.gas_pockets) for p in params}
    assert pocket_counts == set(range(MAX_GAS_POCKETS + 1))
    for p in params:
        bumps = np.array(p.deformation)
        assert bumps.shape == (DEFORMATION_BUMPS, 7)
        assert lipschitz_bound(bumps[:, 3], bumps[:, 4:]) <= DRAWN_LIPSCHITZ + 1e-9
    assert {p.implant for p in params} == set(IMPLANTS)
    assert {p.table for p in params} == {False, True}


def test_the_shift_moves_the_distribution():
    near = [sample_phantom_params(seed) for seed in range(200)]
    far = [sample_phantom_params(seed, shift=1.0) for seed in range(200)]

    def mean(params, field):
        return np.mean([getattr(p, field) for p in params])

    assert mean(far, "scale") > mean(near, "scale") + 0.04  # larger
    assert mean(far, "bone_density") < mean(near, "bone_density") - 0.15  # older: less dense
    assert mean(far, "fat_thickness") > mean(near, "fat_thickness") + 5
    metal_near = np.mean([p.implant != "none" for p in near])
    metal_far = np.mean([p.implant != "none" for p in far])
    assert 0.1 < metal_near < 0.3 and metal_far > metal_near + 0.2
    # Each concept keeps its own stream: a subject's shape moves, its gas pockets stay.
    assert all(a.gas_pockets == b.gas_pockets for a, b in zip(near, far))
    assert sample_phantom_params(7, shift=0.5) != sample_phantom_params(7)


@pytest.mark.parametrize("shift", [-0.1, 1.5, float("nan"), float("inf"), "1", True, None])
def test_a_bad_shift_is_refused(shift):
    with pytest.raises(ValueError, match="shift must be a number in"):
        sample_phantom_params(0, shift=shift)


@pytest.mark.parametrize("seed", SEEDS)
def test_landmarks_lie_on_bone_inside_the_volume(subjects, seed):
    subject = subjects[seed]
    indices = world_to_voxel(subject.affine, subject.landmarks)
    assert np.all(indices >= 0) and np.all(indices <= np.array(subject.hu.shape) - 1)
    for name, landmark in zip(PAPER.names, subject.landmarks):
        assert max_hu_near(subject, landmark) > BONE_HU, f"seed {seed}: {name} is not on bone"


@pytest.mark.parametrize("seed", SEEDS)
def test_landmark_anatomy(subjects, seed):
    points = subjects[seed].landmarks
    x, z = points[:, 0], points[:, 2]
    midline = (x[L_ASIS] + x[R_ASIS]) / 2
    for left, right in PAPER.pair_slots:
        assert x[left] < -10 and x[right] > 10  # RAS+: the patient's left is -x
        # Mirror images up to the asymmetries and the deformation (a few mm).
        assert abs((x[left] - midline) + (x[right] - midline)) < 0.5 * abs(x[left] - midline)
        assert np.abs(points[left, 1:] - points[right, 1:]).max() < 20
    assert np.all(np.abs(x[list(PAPER.midline)] - midline) < 15)
    for asis, iof, mof in ((L_ASIS, L_IOF, L_MOF), (R_ASIS, R_IOF, R_MOF)):
        assert z[asis] > z[mof] + 40 and z[asis] > z[iof] + 60
        assert z[iof] < z[mof] - 10  # the inferior point of the foramen is below its medial point
        assert abs(x[mof] - midline) < abs(x[iof] - midline) < abs(x[asis] - midline)
    assert z[SPS] > z[IPS] + 20
    assert 170 < x[R_ASIS] - x[L_ASIS] < 300  # inter-ASIS distance, small to large adults


def test_the_phantom_places_every_landmark_of_every_registered_set():
    for landmarks in LANDMARK_SETS.values():
        assert set(landmarks.names) <= set(PHANTOM_LANDMARKS), landmarks.name
        assert phantom_landmarks(PhantomParams(), landmarks).shape == (len(landmarks), 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_deepfluoros_landmarks_lie_on_bone_each_left_of_its_right_partner(subjects, seed):
    subject = subjects[seed]  # the volume does not depend on the landmark set
    points = phantom_landmarks(sample_phantom_params(seed), DEEPFLUORO)
    for name, landmark in zip(DEEPFLUORO.names, points):
        threshold = CANCELLOUS_BONE_HU if name.endswith("_FH") else BONE_HU
        assert max_hu_near(subject, landmark, radius=3.0) > threshold, f"seed {seed}: {name} is not on bone"
    for left, right in DEEPFLUORO.pair_slots:  # RAS+: the patient's left is -x
        assert points[left, 0] < points[right, 0] - 4, f"seed {seed}: {DEEPFLUORO.names[left]}"
    by_name = dict(zip(DEEPFLUORO.names, points))
    for side in "LR":
        assert by_name[f"{side}_SPS"][2] > by_name[f"{side}_IPS"][2] + 20  # top and bottom of the pubic body
        assert by_name[f"{side}_GSN"][1] < by_name[f"{side}_FH"][1] - 15  # the notch lies behind the hip joint
        assert abs(by_name[f"{side}_FH"][2] - by_name[f"{side}_MOF"][2]) < 60


@pytest.mark.parametrize("seed", SEEDS)
def test_a_landmark_has_the_same_place_in_every_set(seed):
    params = sample_phantom_params(seed)
    paper, deepfluoro = phantom_landmarks(params, PAPER), phantom_landmarks(params, DEEPFLUORO)
    for slot, name in enumerate(PAPER.names):
        if name in DEEPFLUORO.names:
            assert np.array_equal(paper[slot], deepfluoro[DEEPFLUORO.index(name)]), name
    mine = LandmarkSet("mine", ("R_FH", "SPS", "L_GSN", "R_ASIS"))
    mine_points = phantom_landmarks(params, mine)
    assert np.array_equal(mine_points[1], paper[PAPER.index("SPS")])
    assert np.array_equal(mine_points[0], deepfluoro[DEEPFLUORO.index("R_FH")])


def test_a_set_with_a_landmark_the_phantom_cannot_place_is_refused_naming_it():
    mine = LandmarkSet("mine", ("L_ASIS", "R_ASIS", "L_PSIS", "COCCYX"))
    with pytest.raises(ValueError, match=r"cannot place landmark\(s\) L_PSIS, COCCYX of the landmark set 'mine'"):
        phantom_landmarks(PhantomParams(), mine)
    with pytest.raises(ValueError, match=r"cannot place landmark\(s\) L_PSIS"):
        make_phantom(PhantomParams(), voxel_size=8.0, landmarks=mine)


@pytest.mark.parametrize("seed", SEEDS)
def test_hounsfield_units_and_frame(subjects, seed):
    subject = subjects[seed]
    hu, shape = subject.hu, subject.hu.shape
    assert hu.dtype == np.float32
    assert hu.min() >= -1024.0 and hu.max() <= 3071.0  # the DRR's clip range
    assert (hu > 1000).sum() > 1000  # cortical bone
    assert hu[0, -1, 0] == -1000.0 and hu[-1, -1, -1] == -1000.0  # air in the anterior corners
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
        landmarks = phantom_landmarks(PhantomParams(tilt_deg=tilt_deg))
        return landmarks[L_ASIS, 1] - landmarks[SPS, 1]

    assert asis_ahead_of_symphysis(10.0) > asis_ahead_of_symphysis(0.0) + 5 > asis_ahead_of_symphysis(-10.0) + 10


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_extreme_subjects_keep_landmarks_on_bone_in_a_capped_grid(sign):
    subject = make_phantom(extreme_params(sign, table=True, deformation=STRONG_DEFORMATION))
    assert subject.hu.shape[0] <= 180 and subject.hu.shape[1] <= 135 and subject.hu.shape[2] <= 160
    indices = world_to_voxel(subject.affine, subject.landmarks)
    assert np.all(indices >= 0) and np.all(indices <= np.array(subject.hu.shape) - 1)
    for name, landmark in zip(PAPER.names, subject.landmarks):
        assert max_hu_near(subject, landmark) > BONE_HU, name


def test_skipping_the_voxels_far_from_the_bone_changes_no_hounsfield_unit(monkeypatch):
    from components import phantom

    params = dataclasses.replace(sample_phantom_params(5, shift=1.0), deformation=STRONG_DEFORMATION)
    skipped = make_phantom(params, voxel_size=3.0)
    monkeypatch.setattr(phantom, "SKIP_BLOCK", 1)  # one voxel per block: every voxel evaluated
    full = make_phantom(params, voxel_size=3.0)
    assert np.abs(skipped.hu - full.hu).max() < 0.01


# ----------------------------------------------------------------------------- deformation


def test_the_inverse_map_inverts_the_forward_map():
    deformation = phantom_deformation(PhantomParams(deformation=STRONG_DEFORMATION, scale=1.1))
    assert 0.3 < deformation.lipschitz_bound < 0.5
    rng = np.random.default_rng(0)
    points = rng.uniform((-180, -135, -160), (180, 135, 160), size=(5000, 3))
    moved = deformation.forward(points)
    assert np.linalg.norm(moved - points, axis=1).max() > 8  # it does move them
    assert np.abs(deformation.inverse(moved) - points).max() < 0.01
    assert np.abs(deformation.forward(deformation.inverse(points)) - points).max() < 0.01


def test_a_zero_deformation_is_the_identity():
    still = tuple((x, y, z, w, 0.0, 0.0, 0.0) for x, y, z, w, *_ in STRONG_DEFORMATION)
    plain, zero = (make_phantom(PhantomParams(deformation=d), voxel_size=4.0) for d in ((), still))
    assert zero.hu.tobytes() == plain.hu.tobytes()
    assert np.array_equal(zero.landmarks, plain.landmarks)


def test_the_deformation_moves_the_bone_and_its_landmarks_together():
    plain = make_phantom(PhantomParams())
    params = PhantomParams(deformation=STRONG_DEFORMATION)
    bent = make_phantom(params)
    moved = np.linalg.norm(bent.landmarks - plain.landmarks, axis=1)
    assert moved.max() > 8 and moved[[R_IOF, L_ASIS]].min() > 5
    for name, landmark in zip(PAPER.names, bent.landmarks):
        assert max_hu_near(bent, landmark) > BONE_HU, f"{name} is off the deformed bone"
    # The deformed bone is the plain bone carried by the map: read the plain volume at D^-1(y).
    bone = bent.hu > 600
    points = world_points(bent, bone)
    undeformed = phantom_deformation(params).inverse(points)
    carried = map_coordinates(plain.hu, world_to_voxel(plain.affine, undeformed).T, order=1)
    unmoved = map_coordinates(plain.hu, world_to_voxel(plain.affine, points).T, order=1)
    assert (carried > BONE_HU).mean() > 0.97
    far = np.linalg.norm(undeformed - points, axis=1) > 6.0  # where the bone moved by more than 6 mm
    assert far.sum() > 1000
    assert (carried[far] > BONE_HU).mean() > 0.97 and (unmoved[far] > BONE_HU).mean() < 0.7


# ----------------------------------------------------------------------------- sex, asymmetry, slope


def test_a_female_pelvis_is_wider_and_lower_with_a_wider_subpubic_arch():
    male, female = (phantom_landmarks(PhantomParams(female=f)) for f in (0.0, 1.0))

    def ratios(points):
        asis_width = points[R_ASIS, 0] - points[L_ASIS, 0]
        subpubic = points[R_IOF, 0] - points[L_IOF, 0]
        height = points[[L_ASIS, R_ASIS], 2].mean() - points[[L_IOF, R_IOF], 2].mean()
        arms = points[[L_IOF, R_IOF]] - points[IPS]
        cosine = arms[0] @ arms[1] / np.linalg.norm(arms, axis=1).prod()
        return subpubic / asis_width, height / asis_width, np.degrees(np.arccos(cosine))

    (male_arch, male_height, male_angle), (female_arch, female_height, female_angle) = ratios(male), ratios(female)
    assert female_arch > male_arch + 0.03
    assert female_height < male_height - 0.03
    assert female_angle > male_angle + 5  # at IPS, between the IOFs (130° male, 139° female)
    male_symphysis, female_symphysis = (p[SPS, 2] - p[IPS, 2] for p in (male, female))
    assert female_symphysis < male_symphysis - 3


def test_the_foramina_differ_left_and_right():
    points = phantom_landmarks(PhantomParams(foramen_asymmetry=0.1, foramen_height_asymmetry=3.0))
    right = np.linalg.norm(points[R_IOF] - points[R_MOF])
    left = np.linalg.norm(points[L_IOF] - points[L_MOF])
    assert right > 1.1 * left
    assert points[R_MOF, 2] > points[L_MOF, 2] + 4


def test_the_sacral_slope_turns_the_sacrum_forward_at_the_top():
    def upper_sacrum_y(slope):
        subject = make_phantom(PhantomParams(sacral_slope_deg=slope), voxel_size=4.0)
        points = world_points(subject, subject.hu > 300)
        upper_midline = points[(np.abs(points[:, 0]) < 20) & (points[:, 1] < -30) & (points[:, 2] > 55)]
        return upper_midline[:, 1].mean(), subject.landmarks

    (forward, landmarks_forward), (back, landmarks_back) = upper_sacrum_y(8.0), upper_sacrum_y(-8.0)
    assert forward > back + 3
    assert np.array_equal(landmarks_forward, landmarks_back)  # the hip bones, which carry them, stay


# ----------------------------------------------------------------------------- scene: table and metal


def test_the_table_lies_under_the_patients_back():
    params = PhantomParams(table=True, table_thickness=24.0, table_hu=150.0, table_rail_offset=110.0)
    subject, bare = make_phantom(params), make_phantom(dataclasses.replace(params, table=False))
    i, _, k = (np.array(subject.hu.shape) - 1) // 2
    column = subject.hu[i, :, k]  # posterior (index 0) to anterior, through the midline
    table = np.flatnonzero(np.isclose(column, 150.0, atol=1.0))
    body = np.flatnonzero(column > -150.0)
    body = body[~np.isin(body, table)]
    assert len(table) * 2.0 == pytest.approx(24.0, abs=2.0)
    assert table.max() < body.min()  # the slab is behind (posterior to) all of the body
    assert column[0] == -1000.0  # air below it
    rail = world_to_voxel(subject.affine, np.array([[110.0, 0.0, 0.0]]))[0].round().astype(int)
    rail_column = subject.hu[rail[0], :, k]
    assert np.isclose(rail_column, TABLE_RAIL_HU, atol=1.0).sum() >= 4  # 10 mm rails under the slab
    assert np.flatnonzero(np.isclose(rail_column, TABLE_RAIL_HU, atol=1.0)).max() < table.min()
    assert not np.isclose(bare.hu[i, :, k], 150.0, atol=1.0).any()
    assert subject.hu.shape[1] > bare.hu.shape[1]  # the field reaches back to hold the table


@pytest.mark.parametrize("implant", IMPLANTS)
def test_metal_appears_exactly_with_an_implant(implant):
    subject = make_phantom(PhantomParams(implant=implant), voxel_size=2.0)
    metal = subject.hu >= METAL_HU
    assert metal.any() == (implant != "none")
    assert subject.hu.max() <= 3071.0
    if implant.endswith("_hip"):
        side = 1.0 if implant == "right_hip" else -1.0
        hip_center = np.array([[side * 88.0, 20.0, 10.0]])  # HIP_CENTER + PELVIS_OFFSET of the nominal subject
        head = world_to_voxel(subject.affine, hip_center)[0].round().astype(int)
        assert subject.hu[tuple(head)] == pytest.approx(METAL_HU)  # the prosthetic head
        assert metal[: metal.shape[0] // 2].any() == (side < 0)  # only on its side (x < 0 is the left)


def test_metal_appears_exactly_for_the_subjects_drawn_with_an_implant(subjects):
    kinds = {sample_phantom_params(seed).implant for seed in SEEDS}
    assert "none" in kinds and len(kinds) > 1  # both kinds of subject among the seeds
    for seed, subject in subjects.items():
        assert (subject.hu >= METAL_HU).any() == (sample_phantom_params(seed).implant != "none"), seed


# ----------------------------------------------------------------------------- the cohort's shape spread


def test_the_cohort_varies_like_adult_pelvises():
    spread = procrustes_spread(np.stack([phantom_landmarks(sample_phantom_params(seed)) for seed in range(200)]))
    assert 5.0 <= spread.rms <= 7.5
    assert spread.per_landmark.min() >= 2.5
    novel = procrustes_spread(np.stack([phantom_landmarks(sample_phantom_params(s, 1.0)) for s in range(200)]))
    assert novel.rms > spread.rms + 1.0  # the shifted cohort holds more extreme shapes


# ----------------------------------------------------------------------------- validation


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
        ("foramen_asymmetry", 0.3),
        ("foramen_height_asymmetry", -12.0),
        ("female", 1.5),
        ("female", -0.1),
        ("sacral_slope_deg", 25.0),
        ("bone_density", 3.0),
        ("fat_thickness", -1.0),
        ("soft_tissue_extra", 100.0),
        ("table_thickness", 5.0),
        ("table_hu", 1000.0),
        ("table_rail_offset", 10.0),
    ],
)
def test_out_of_range_params_are_rejected(field, value):
    with pytest.raises(ValueError, match=f"PhantomParams.{field} must be in"):
        PhantomParams(**{field: value})


@pytest.mark.parametrize("field, value", [("table", "yes"), ("table", 1), ("implant", "knee"), ("implant", None)])
def test_bad_scene_params_are_rejected(field, value):
    with pytest.raises(ValueError, match=f"PhantomParams.{field} must be"):
        PhantomParams(**{field: value})


@pytest.mark.parametrize(
    "bumps, message",
    [
        (((0.0, 0.0, 0.0, 60.0, 1.0, 1.0, 1.0),) * 13, "at most"),
        (((0.0, 0.0, 0.0, 60.0, 1.0, 1.0),), "7 finite numbers"),
        (((0.0, 0.0, 0.0, 60.0, 1.0, 1.0, float("nan")),), "7 finite numbers"),
        (((0.0, 0.0, 400.0, 60.0, 1.0, 1.0, 1.0),), "centre"),
        (((0.0, 0.0, 0.0, 10.0, 1.0, 1.0, 1.0),), "width"),
        (((0.0, 0.0, 0.0, 100.0, 30.0, 0.0, 0.0),), "amplitude"),
        (((0.0, 0.0, 0.0, 40.0, 18.0, 0.0, 0.0), (50.0, 0.0, 0.0, 40.0, 0.0, 18.0, 0.0)), "Lipschitz"),
    ],
)
def test_bad_deformations_are_rejected(bumps, message):
    with pytest.raises(ValueError, match=f"PhantomParams.deformation.*{message}"):
        PhantomParams(deformation=bumps)


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
@pytest.mark.parametrize("make", [make_phantom, clinical_ct])
def test_bad_voxel_size_is_rejected(voxel_size, make):
    with pytest.raises(ValueError, match="voxel_size"):
        make(PhantomParams(), voxel_size=voxel_size)


def test_params_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample_phantom_params(0).scale = 2.0


def test_phantom_landmarks_are_those_of_the_built_subject():
    params = sample_phantom_params(11)
    assert np.array_equal(phantom_landmarks(params), make_phantom(params, voxel_size=6.0).landmarks)


CLINICAL_PARAMS = dataclasses.replace(sample_phantom_params(4), table=True, implant="left_hip")


def test_a_clinical_ct_is_the_phantom_in_lps_voxel_order():
    """On the phantom's own grid and untilted, only the voxel order differs: i and j run the other way."""
    phantom = make_phantom(CLINICAL_PARAMS, voxel_size=4.0)
    ct = clinical_ct(CLINICAL_PARAMS, shape=phantom.hu.shape, voxel_size=4.0, tilt_deg=(0.0, 0.0))
    assert ct.hu.dtype == np.float32 and ct.hu.shape[2] > 32  # made in several slabs
    # D^-1 is interpolated from each slab's own coarse grid: bone surfaces move by hundredths of a mm
    difference = np.abs(ct.hu[::-1, ::-1] - phantom.hu)
    assert difference.max() < 5.0 and difference.mean() < 0.05
    np.testing.assert_allclose(ct.affine[:3, :3], np.diag([-4.0, -4.0, 4.0]))
    np.testing.assert_allclose(ct.affine @ [0, 0, 0, 1], phantom.affine @ [*np.array(phantom.hu.shape[:2]) - 1, 0, 1])
    np.testing.assert_array_equal(ct.landmarks, phantom.landmarks)


def test_a_clinical_ct_fills_a_fixed_field_on_a_tilted_grid():
    shape, tilt = (96, 96, 60), (3.0, 2.0)
    ct = clinical_ct(CLINICAL_PARAMS, shape=shape, voxel_size=4.0, tilt_deg=tilt)
    upright = clinical_ct(CLINICAL_PARAMS, shape=shape, voxel_size=4.0, tilt_deg=(0.0, 0.0))
    assert ct.hu.shape == shape and np.array_equal(ct.hu, upright.hu)  # the grid turns with the anatomy
    np.testing.assert_allclose(ct.affine @ [*(np.array(shape) - 1) / 2, 1], [0, 0, 0, 1], atol=1e-9)  # centred
    directions = ct.affine[:3, :3] / 4.0
    np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-12)
    angles = np.degrees(np.arccos(np.abs(np.diag(directions))))
    assert np.all(angles > 1.9) and np.all(angles < 3.7)  # oblique: no axis along a world axis
    assert directions[0, 0] < 0 and directions[1, 1] < 0 and directions[2, 2] > 0  # i to the left, j posterior
    indices = world_to_voxel(ct.affine, ct.landmarks)
    np.testing.assert_allclose(indices, world_to_voxel(upright.affine, upright.landmarks), atol=1e-9)
    # the field cuts through the table: it reaches both edges, below the body (large j: posterior)
    table_rows = np.flatnonzero(np.median(ct.hu[[0, -1]], axis=(0, 2)) > -500)
    assert len(table_rows) and table_rows.min() > shape[1] // 2
    assert ct.hu.max() == METAL_HU and ct.hu.min() == -1000.0
