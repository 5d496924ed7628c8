import nibabel as nib
import numpy as np
import pytest

from components import phantom
from components.anatomy import DEEPFLUORO, PAPER
from components.cohort import SubjectSource, annotated_landmarks, assign_splits, folder_cohort, phantom_cohort
from components.dicom import write_series
from components.volumes import VolumeError


def test_phantom_cohort_is_reproducible_and_distinct():
    first, again = phantom_cohort(5, seed=1), phantom_cohort(5, seed=1)
    assert first == again
    assert len({s.phantom_seed for s in first}) == 5
    assert [s.subject_id for s in first] == [f"phantom-{i:05d}" for i in range(5)]
    assert phantom_cohort(5, seed=2) != first


def test_assign_splits_in_order_for_phantoms_and_shuffled_for_real_subjects():
    sources = phantom_cohort(6, seed=0)
    splits = assign_splits(sources, {"train": 3, "val": 1, "novel_subject": 2}, seed=0, shuffle=False)
    assert [s.subject_id for s in splits["train"]] == ["phantom-00000", "phantom-00001", "phantom-00002"]
    shuffled = assign_splits(sources, {"train": 3, "val": 1, "novel_subject": 2}, seed=0, shuffle=True)
    every = [s.subject_id for split in ("train", "val", "novel_subject") for s in shuffled[split]]
    assert sorted(every) == [s.subject_id for s in sources] and every != [s.subject_id for s in sources]


@pytest.mark.parametrize(
    "counts, message",
    [
        ({"train": 5, "val": 1, "novel_subject": 1}, "has 6 subjects, but the splits ask for 7"),
        ({"test": 1}, "unknown split"),
    ],
)
def test_assign_splits_errors(counts, message):
    with pytest.raises(ValueError, match=message):
        assign_splits(phantom_cohort(6, seed=0), counts, seed=0, shuffle=False)


def write_ct(path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)


def test_folder_cohort_pairs_cts_with_landmark_files(tmp_path):
    write_ct(tmp_path / "a.nii.gz")
    (tmp_path / "a.csv").write_text("name,x,y,z\n")
    write_ct(tmp_path / "b.nii")
    (tmp_path / "b.mrk.json").write_text("{}")
    sources = folder_cohort(tmp_path, coordinates="lps")
    assert [(s.subject_id, s.kind, s.coordinates) for s in sources] == [("a", "files", "lps"), ("b", "files", "lps")]
    assert sources[1].landmarks_path.endswith("b.mrk.json")


@pytest.mark.parametrize("plausibility", ["error", "off"])
def test_folder_subjects_are_checked_for_plausibility_as_they_load(tmp_path, plausibility):
    write_ct(tmp_path / "a.nii.gz")  # all 0 HU: no landmark is near bone
    rows = [f"{name},1.5,1.5,1.5" for name in PAPER.names]
    (tmp_path / "a.csv").write_text("\n".join(["name,x,y,z", *rows]) + "\n")
    [source] = folder_cohort(tmp_path, plausibility=plausibility)
    assert source.plausibility == plausibility
    if plausibility == "off":
        assert source.load(PAPER).landmarks.shape == (8, 3)
    else:
        with pytest.raises(
            VolumeError, match=r"^subject a: landmark file .*a\.csv: \d+ implausible finding\(s\): L_ASIS"
        ):
            source.load(PAPER)


def test_folder_cohort_takes_dicom_folders_beside_nifti_files(tmp_path):
    write_ct(tmp_path / "a.nii.gz")
    (tmp_path / "a.csv").write_text("name,x,y,z\n")
    write_series(tmp_path / "b", np.zeros((4, 4, 3), np.float32), np.diag([-1.0, -1.0, 2.0, 1.0]))
    (tmp_path / "b.fcsv").write_text("")
    (tmp_path / ".cache").mkdir()  # hidden: not a subject
    sources = folder_cohort(tmp_path)
    assert [(s.subject_id, s.ct_path, s.landmarks_path) for s in sources] == [
        ("a", str(tmp_path / "a.nii.gz"), str(tmp_path / "a.csv")),
        ("b", str(tmp_path / "b"), str(tmp_path / "b.fcsv")),
    ]


def test_a_dicom_subject_loads_from_its_folder(tmp_path):
    params = phantom.sample_phantom_params(5)
    ct = phantom.clinical_ct(params, shape=(72, 64, 40), voxel_size=5.0, subject_id="pelvis")
    write_series(tmp_path / "pelvis", ct.hu, ct.affine)
    rows = "".join(f"{name},{x},{y},{z}\n" for name, (x, y, z) in zip(PAPER.names, ct.landmarks))
    (tmp_path / "pelvis.csv").write_text("name,x,y,z\n" + rows)
    (source,) = folder_cohort(tmp_path)
    subject = source.load(PAPER)
    assert subject.subject_id == "pelvis" and np.abs(subject.hu - ct.hu).max() <= 0.5
    np.testing.assert_allclose(subject.landmarks, ct.landmarks, atol=1e-4)


@pytest.mark.parametrize(
    "files, message",
    [
        ([], r"no CTs \(\*.nii, \*.nii.gz or DICOM series folders\)"),
        (["b/"], "no landmark file for subject 'b'"),
        (["a.nii.gz", "a/", "a.csv"], r"several CTs for one subject \(a: a, a.nii.gz\)"),
        (["a.nii.gz"], "no landmark file for subject 'a'"),
        (["a.nii.gz", "a.csv", "a.fcsv"], "several landmark files"),
    ],
)
def test_folder_cohort_errors(tmp_path, files, message):
    for name in files:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            write_ct(tmp_path / name) if name.endswith(".nii.gz") else (tmp_path / name).write_text("")
    with pytest.raises(VolumeError, match=message):
        folder_cohort(tmp_path)


def test_missing_cohort_folder(tmp_path):
    with pytest.raises(VolumeError, match="cohort folder not found"):
        folder_cohort(tmp_path / "nowhere")


@pytest.mark.parametrize("landmarks", [PAPER, DEEPFLUORO], ids=lambda landmarks: landmarks.name)
def test_phantom_source_loads_its_subject(landmarks):
    source = SubjectSource("phantom-x", "phantom", phantom_seed=4, voxel_size=8.0)
    subject = source.load(landmarks)
    assert subject.subject_id == "phantom-x" and subject.landmarks.shape == (len(landmarks), 3)


def test_annotated_landmarks_are_a_seeded_placement_error_per_subject():
    landmarks = np.arange(24, dtype=float).reshape(8, 3)
    placed = annotated_landmarks(landmarks, 2.0, seed=0, subject_id="a")
    assert np.array_equal(placed, annotated_landmarks(landmarks, 2.0, seed=0, subject_id="a"))
    assert not np.array_equal(placed, annotated_landmarks(landmarks, 2.0, seed=0, subject_id="b"))
    assert not np.array_equal(placed, annotated_landmarks(landmarks, 2.0, seed=1, subject_id="a"))
    assert annotated_landmarks(landmarks, 0.0, seed=0, subject_id="a") is landmarks
    many = np.concatenate([annotated_landmarks(landmarks, 2.0, 0, f"s{i}") - landmarks for i in range(200)])
    assert many.std() == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="annotation_noise_mm must be finite and >= 0"):
        annotated_landmarks(landmarks, -1.0, 0, "a")


def test_a_shifted_phantom_source_loads_the_shifted_subject():
    plain = SubjectSource("p", "phantom", phantom_seed=5, voxel_size=8.0)
    shifted = SubjectSource("p", "phantom", phantom_seed=5, phantom_shift=1.0, voxel_size=8.0)
    assert np.array_equal(plain.load(PAPER).landmarks, phantom.phantom_subject(5, voxel_size=8.0).landmarks)
    assert not np.array_equal(shifted.load(PAPER).landmarks, plain.load(PAPER).landmarks)
