import logging
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from components import phantom
from components.anatomy import PAPER, LandmarkSet
from components.plausibility import ADULT_DISTANCES_MM, PlausibilityChecks, describe, largest_hu_near
from components.volumes import VolumeError, load_subject

CHECKS = PlausibilityChecks()
SWAPPED = [PAPER.mirror_index(slot) for slot in range(len(PAPER))]  # each landmark's partner (midline: itself)


@pytest.fixture(scope="module")
def subject():
    """A phantom subject as a real one: its CT a NIfTI (centred affine), its landmarks a CSV in RAS."""
    return phantom.phantom_subject(0, voxel_size=4.0, subject_id="case")


@pytest.fixture(scope="module")
def ct_path(subject, tmp_path_factory):
    path = tmp_path_factory.mktemp("ct") / "case.nii"
    nib.save(nib.Nifti1Image(subject.hu, subject.affine), path)
    return path


def write_csv(path, names, points):
    rows = [f"{name},{x!r},{y!r},{z!r}" for name, (x, y, z) in zip(names, points.tolist())]
    path.write_text("\n".join(["name,x,y,z", *rows]) + "\n")
    return path


def named(findings) -> set[str]:
    return {name for finding in findings for name in finding.landmarks}


def checked(ct_path, landmarks_path):
    subject = load_subject(ct_path, landmarks_path, plausibility="off")
    return subject, CHECKS.findings(subject, str(landmarks_path))


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_the_phantoms_own_subjects_pass_every_check(shift):
    for seed in range(10):  # 10 subjects of each distribution: the training one and the shifted one
        subject = phantom.make_phantom(phantom.sample_phantom_params(seed, shift), voxel_size=4.0)
        assert CHECKS.findings(subject, "phantom") == [], f"seed {seed}"


def test_the_unchanged_file_passes(subject, ct_path, tmp_path, caplog):
    landmarks = write_csv(tmp_path / "case.csv", PAPER.names, subject.landmarks)
    with caplog.at_level(logging.WARNING):
        loaded = load_subject(ct_path, landmarks, plausibility="error")
    assert np.allclose(loaded.landmarks, subject.landmarks) and not caplog.records
    assert CHECKS.findings(loaded, str(landmarks)) == []


def test_a_file_whose_first_four_landmarks_are_lps_is_caught_naming_them(subject, ct_path, tmp_path):
    points = subject.landmarks.copy()
    points[:4, :2] *= -1  # L_ASIS, L_IOF, L_MOF, SPS given in LPS, the rest in RAS: all still inside the volume
    landmarks = write_csv(tmp_path / "case.csv", PAPER.names, points)
    loaded, findings = checked(ct_path, landmarks)
    assert np.allclose(loaded.landmarks, points)  # it loads without a word but for the checks
    assert set(PAPER.names[:4]) <= named(findings)
    sides = {finding.landmarks for finding in CHECKS.sides(loaded, "f")}
    assert sides == set(PAPER.pairs)  # each mirrored left point lands beside (not left of) its partner
    assert {f.landmarks for f in CHECKS.near_bone(loaded, "f")} >= {("L_ASIS",), ("L_IOF",), ("L_MOF",)}
    assert ("SPS", "IPS") in {f.landmarks for f in CHECKS.distances(loaded, "f")}  # SPS lands on the sacrum
    assert all(f.subject_id == "case" and f.source == str(landmarks) for f in findings)


def test_left_and_right_swapped_is_caught(subject, ct_path, tmp_path):
    landmarks = write_csv(tmp_path / "case.csv", [PAPER.names[slot] for slot in SWAPPED], subject.landmarks)
    _, findings = checked(ct_path, landmarks)
    assert [f.landmarks for f in findings] == list(PAPER.pairs)  # the sides check, nothing else
    assert "L_ASIS lies" in findings[0].problem and "to the patient's right of R_ASIS" in findings[0].problem
    assert "left and right swapped" in findings[0].problem


def test_a_landmark_moved_25_mm_into_soft_tissue_is_caught(subject, ct_path, tmp_path):
    points = subject.landmarks.copy()
    points[PAPER.index("SPS"), 1] += 25.0  # 25 mm anterior of the symphysis: muscle
    nearest = np.round(np.linalg.solve(subject.affine[:3, :3], points[3] - subject.affine[:3, 3])).astype(int)
    assert -150 < subject.hu[tuple(nearest)] < 150  # soft tissue, not air
    landmarks = write_csv(tmp_path / "case.csv", PAPER.names, points)
    _, findings = checked(ct_path, landmarks)
    assert [f.landmarks for f in findings] == [("SPS",)]
    assert "expected bone (>= 200 HU)" in findings[0].problem


def test_warn_logs_one_warning_listing_every_finding(subject, ct_path, tmp_path, caplog):
    landmarks = write_csv(tmp_path / "case.csv", [PAPER.names[slot] for slot in SWAPPED], subject.landmarks)
    with caplog.at_level(logging.WARNING, logger="components.volumes"):
        load_subject(ct_path, landmarks)  # warn is the default
    [record] = caplog.records
    message = record.getMessage()
    assert message.startswith(f"subject case: landmark file {landmarks}: 3 implausible finding(s): ")
    assert all(f"{left}, {right}: " in message for left, right in PAPER.pairs)


def test_error_raises_naming_the_findings_and_off_is_silent(subject, ct_path, tmp_path, caplog):
    landmarks = write_csv(tmp_path / "case.csv", [PAPER.names[slot] for slot in SWAPPED], subject.landmarks)
    with pytest.raises(VolumeError, match=r"^subject case: landmark file .*case\.csv: 3 implausible .*L_ASIS, R_ASIS"):
        load_subject(ct_path, landmarks, plausibility="error")
    with caplog.at_level(logging.DEBUG):
        load_subject(ct_path, landmarks, plausibility="off")
    assert not caplog.records


def test_distances_out_of_the_adult_range_are_caught(subject):
    points = subject.landmarks.copy()
    left, right = PAPER.index("L_ASIS"), PAPER.index("R_ASIS")
    middle = (points[left] + points[right]) / 2
    points[[left, right]] = middle + (points[[left, right]] - middle) * 0.5  # a child's pelvis: ASIS ~120 mm apart
    findings = CHECKS.distances(replace(subject, landmarks=points), "f")
    assert [f.landmarks for f in findings] == [("L_ASIS", "R_ASIS")]
    assert "expected 150-350 mm in an adult pelvis" in findings[0].problem


def test_a_landmark_not_annotated_is_skipped(subject):
    points = subject.landmarks.copy()
    points[PAPER.index("L_ASIS")] = np.nan
    points[PAPER.index("L_IOF"), 1] += 25.0  # and a real finding elsewhere
    findings = CHECKS.findings(replace(subject, landmarks=points), "f")
    assert [f.landmarks for f in findings] == [("L_IOF",)]


def test_only_the_pairs_a_set_has_are_checked(subject):
    swapped = replace(subject, landmarks=subject.landmarks[SWAPPED])
    unpaired = LandmarkSet("unpaired", PAPER.names)  # the same names, no pairs: nothing to tell left from right
    assert CHECKS.findings(swapped, "f", unpaired) == []
    renamed = LandmarkSet("renamed", tuple(f"P{slot}" for slot in range(8)))  # names in no row of the table
    shrunk = replace(subject, landmarks=subject.landmarks * 0.3)
    assert CHECKS.distances(shrunk, "f", renamed) == [] and CHECKS.distances(shrunk, "f") != []
    with pytest.raises(ValueError, match=r"expected \(3, 3\) for the landmark set 'three'"):
        CHECKS.sides(subject, "f", LandmarkSet("three", ("A", "B", "C")))


def test_the_table_names_pairs_of_a_shipped_set_each_in_a_range():
    from components.anatomy import LANDMARK_SETS

    names = {name for landmark_set in LANDMARK_SETS.values() for name in landmark_set.names}
    for (a, b), (shortest, longest) in ADULT_DISTANCES_MM.items():
        assert {a, b} <= names and 0 <= shortest < longest


def test_largest_hu_near_sees_the_ball_and_the_nearest_voxel():
    hu = np.zeros((9, 9, 9), np.float32)
    hu[4, 4, 7] = 500.0  # 6 mm from the centre voxel at 2 mm voxels
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    centre = np.array([8.0, 8.0, 8.0])
    assert largest_hu_near(hu, affine, centre, 5.0) == 0.0
    assert largest_hu_near(hu, affine, centre, 6.0) == 500.0
    assert largest_hu_near(hu, affine, np.array([8.0, 8.0, 13.2]), 0.1) == 500.0  # the nearest voxel only


def test_describe_names_the_subject_the_file_and_each_finding(subject):
    findings = CHECKS.sides(replace(subject, landmarks=subject.landmarks[SWAPPED]), "case.csv")
    text = describe(findings)
    assert text.startswith("subject case: landmark file case.csv: 3 implausible finding(s): L_ASIS, R_ASIS: ")
    assert text.count("; ") == 2 and "\n" not in text


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"bone_hu": float("nan")}, "bone_hu"),
        ({"bone_radius_mm": -1.0}, "bone_radius_mm"),
        ({"max_pair_tilt_deg": 120.0}, "max_pair_tilt_deg"),
        ({"side_tolerance_mm": "3"}, "side_tolerance_mm"),
    ],
)
def test_bad_settings_name_the_setting(settings, field):
    with pytest.raises(ValueError, match=rf"PlausibilityChecks\.{field} must be a number in"):
        PlausibilityChecks(**settings)


def test_an_unknown_mode_names_the_setting(ct_path, tmp_path):
    with pytest.raises(ValueError, match=r"plausibility='loud', expected one of \('warn', 'error', 'off'\)"):
        load_subject(ct_path, tmp_path / "case.csv", plausibility="loud")
