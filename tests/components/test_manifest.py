import pytest

from components.anatomy import DEEPFLUORO, PAPER, LandmarkSet, landmark_record
from components.dataset import DatasetError
from components.manifest import (
    MANIFEST_NAME,
    check_landmarks,
    claim_folder,
    config_hash,
    dataset_hash,
    manifest_landmarks,
    read_manifest,
    write_manifest,
)


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_dataset_hash_depends_on_paths_and_contents_not_order():
    shards = [{"path": "a", "sha256": "1"}, {"path": "b", "sha256": "2"}]
    assert dataset_hash(shards) == dataset_hash(shards[::-1])
    assert dataset_hash(shards) != dataset_hash([{"path": "a", "sha256": "1"}, {"path": "b", "sha256": "3"}])


def test_claim_creates_then_resumes(tmp_path):
    folder = tmp_path / "data"
    manifest = claim_folder(folder, {"seed": 1})
    assert manifest["status"] == "in_progress" and read_manifest(folder) == manifest
    assert claim_folder(folder, {"seed": 1}) == manifest


def test_claim_refuses_another_config_naming_the_keys(tmp_path):
    claim_folder(tmp_path, {"seed": 1, "data": {"image_size": 64, "views": 3}})
    with pytest.raises(DatasetError, match=r"differs in: data\.image_size, seed"):
        claim_folder(tmp_path, {"seed": 2, "data": {"image_size": 128, "views": 3}})


def test_claim_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"not empty, but has no manifest\.json"):
        claim_folder(tmp_path, {"seed": 1})


def test_broken_manifest(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{broken")
    with pytest.raises(DatasetError, match="not a valid manifest"):
        read_manifest(tmp_path)


def test_write_leaves_no_temporary(tmp_path):
    write_manifest(tmp_path, {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]


@pytest.mark.parametrize("landmarks", [PAPER, DEEPFLUORO, LandmarkSet("mine", ("SPS", "IPS", "L_FH", "R_FH"))])
def test_a_data_set_is_refused_by_a_study_of_another_landmark_set(tmp_path, landmarks):
    write_manifest(tmp_path, {"status": "complete", "landmarks": landmark_record(landmarks)})
    assert manifest_landmarks(read_manifest(tmp_path)).names == landmarks.names
    check_landmarks(tmp_path, landmarks)
    other = DEEPFLUORO if landmarks is PAPER else PAPER
    with pytest.raises(DatasetError, match=f"{tmp_path}: a data set of the landmark set '{landmarks.name}'") as error:
        check_landmarks(tmp_path, other)
    assert f"the study asks for '{other.name}'" in str(error.value) and "\n" not in str(error.value)


def test_a_data_set_made_before_sets_were_recorded_holds_the_papers(tmp_path):
    write_manifest(tmp_path, {"status": "complete"})
    assert manifest_landmarks(read_manifest(tmp_path)) is PAPER
    check_landmarks(tmp_path, PAPER)
    with pytest.raises(DatasetError, match="landmark set 'paper'"):
        check_landmarks(tmp_path, DEEPFLUORO)
    with pytest.raises(DatasetError, match=r"no manifest\.json"):
        check_landmarks(tmp_path / "elsewhere", PAPER)
