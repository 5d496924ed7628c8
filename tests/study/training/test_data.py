"""A run's rows: whole splits, or one fold's, which never hold its held-out subjects (a synthetic data set)."""

import numpy as np
import pytest
import yaml

from components.dataset import DatasetError
from study.config import FoldConfig, StudyConfig
from study.training.data import (
    ROLES,
    rows_to_test,
    run_columns,
    run_splits,
    run_subjects,
    split_columns,
    split_rows,
    splits_to_test,
)
from tests.helpers import CROSS_VALIDATION_CONFIG, write_dataset

TRAIN = ["phantom-00000", "phantom-00001", "phantom-00002", "phantom-00003"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 training subjects (train and novel views, fluoro), one val subject, one novel subject."""
    config = StudyConfig.model_validate(yaml.safe_load(CROSS_VALIDATION_CONFIG))
    views = {
        "train": dict.fromkeys(TRAIN, 3),
        "novel_view": dict.fromkeys(TRAIN, 2),
        "fluoro": dict.fromkeys(TRAIN, 2) | {"phantom-00005": 2},
        "val": {"phantom-00004": 4},
        "novel_subject": {"phantom-00005": 2},
    }
    return write_dataset(tmp_path_factory.mktemp("data"), config, views)


def poses_of(columns: dict) -> set[tuple]:
    """The rows, each told apart by its pose."""
    return {tuple(pose) for pose in columns["pose"]}


def poses_of_subjects(data, split: str, subjects: list[str]) -> set[tuple]:
    rows = split_rows(data, split)
    return {tuple(pose) for pose, subject in zip(rows.pose, rows.subject_id) if subject in subjects}


def test_without_a_fold_a_run_has_the_whole_splits(data):
    for role in ROLES:
        assert run_columns(data, role) is split_columns(data, role)
        assert run_subjects(data, role) == sorted(set(split_rows(data, role).subject_id))
    assert splits_to_test(data, ("novel_view", "novel_subject", "fluoro")) == ["novel_view", "novel_subject", "fluoro"]
    ids, columns = rows_to_test(data, "fluoro")
    assert len(ids["subject_id"]) == len(columns["image"]) == 10


@pytest.mark.parametrize("held_out", TRAIN)
def test_a_fold_trains_on_every_other_subject_and_validates_on_the_val_split(data, held_out):
    fold = FoldConfig(number=1, held_out=[held_out], val="val")
    others = [subject for subject in TRAIN if subject != held_out]
    train = run_columns(data, "train", fold)
    assert poses_of(train) == poses_of_subjects(data, "train", others) and len(train["image"]) == 9
    assert {name: column.shape[1:] for name, column in train.items()} == {
        name: column.shape[1:] for name, column in split_columns(data, "train").items()
    }
    assert run_subjects(data, "train", fold) == others
    assert poses_of(run_columns(data, "val", fold)) == poses_of(split_columns(data, "val"))
    assert run_subjects(data, "val", fold) == ["phantom-00004"]
    assert {role: len(columns["pose"]) for role, columns in run_splits(data, fold).items()} == {"train": 9, "val": 4}


def test_without_val_subjects_a_fold_validates_on_its_training_subjects_novel_views(data):
    fold = FoldConfig(number=3, held_out=["phantom-00002"], val="novel_view")
    others = ["phantom-00000", "phantom-00001", "phantom-00003"]
    val = run_columns(data, "val", fold)
    assert poses_of(val) == poses_of_subjects(data, "novel_view", others) and len(val["image"]) == 6
    assert run_subjects(data, "val", fold) == others
    assert not poses_of(val) & poses_of(run_columns(data, "train", fold))


def test_a_fold_is_tested_on_its_held_out_subjects_rows_of_every_split_that_has_them(data):
    fold = FoldConfig(number=2, held_out=["phantom-00001"])
    assert splits_to_test(data, ("novel_view", "novel_subject", "fluoro"), fold) == ["novel_view", "fluoro"]
    for split in ("novel_view", "fluoro"):
        ids, columns = rows_to_test(data, split, fold)
        assert set(ids["subject_id"]) == {"phantom-00001"} and set(ids["split"]) == {split}
        assert poses_of(columns) == poses_of_subjects(data, split, ["phantom-00001"])
        assert list(ids["view_id"]) == [100, 101]  # the subject's novel views (the fluoro split repeats them)


def test_bad_folds_name_the_subject(data):
    with pytest.raises(DatasetError, match=r"train.fold.held_out \['phantom-00004'\] are not subjects of the train"):
        run_columns(data, "train", FoldConfig(number=1, held_out=["phantom-00004"]))
    with pytest.raises(DatasetError, match="fold 1 leaves no train rows"):
        run_columns(data, "train", FoldConfig(number=1, held_out=TRAIN))
    with pytest.raises(ValueError, match="role 'test'"):
        run_columns(data, "test")
    assert np.isin(split_rows(data, "val").subject_id, TRAIN).sum() == 0  # val subjects are in no fold
