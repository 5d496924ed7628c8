import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from components import geometry
from components.dataset import SPLITS, DatasetError, read_split
from components.manifest import read_manifest
from study.cli import main
from study.config import load_config
from study.data.generate import generate, plan_shards
from tests.helpers import REPO, TINY_CONFIG

pytestmark = pytest.mark.slow  # trains models or starts Ray

PHANTOM_SPLITS = tuple(s for s in SPLITS if s != "real")  # a phantom cohort has no real X-rays


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, ray_session):
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "tiny.yaml").write_text(TINY_CONFIG)
    config = load_config(str(folder / "tiny.yaml"))
    generate(config, folder / "data")
    return config, folder / "data"


def test_manifest_counts_rows_per_split(tiny_dataset):
    config, folder = tiny_dataset
    manifest = read_manifest(folder)
    assert manifest["status"] == "complete"
    assert manifest["rows"] == {"train": 8, "novel_view": 4, "val": 3, "novel_subject": 3, "fluoro": 7, "real": 0}
    assert len(manifest["shards"]) == len(plan_shards(config))
    assert all(len(shard["sha256"]) == 64 for shard in manifest["shards"])


def test_plain_pyarrow_reads_every_column(tiny_dataset):
    _, folder = tiny_dataset
    shard = next((folder / "train").glob("*.parquet"))
    table = pq.read_table(shard)
    assert table.column_names == [
        "subject_id",
        "view_id",
        "split",
        "image",
        "landmarks_2d",
        "visible",
        "landmarks_3d",
        "pose",
        "intrinsics",
    ]
    image = table.column("image").combine_chunks().to_numpy_ndarray()
    assert image.shape == (2, 48, 48) and image.dtype == np.uint16
    assert image.max() == 65535 and image.min() == 0
    assert table.column("visible").to_pylist()[0] == [True] * 8


def test_landmarks_are_exact_projections_of_the_stored_pose(tiny_dataset):
    config, folder = tiny_dataset
    camera = config.data.render_camera()
    for split in PHANTOM_SPLITS:
        rows = read_split(folder, split)
        expected = geometry.project(torch.from_numpy(rows.landmarks_3d), torch.from_numpy(rows.pose), camera)
        assert torch.allclose(torch.from_numpy(rows.landmarks_2d), expected, atol=1e-9)
        assert np.allclose(rows.intrinsics, geometry.make_k(camera).numpy())


def test_splits_follow_the_design(tiny_dataset):
    _, folder = tiny_dataset
    rows = {split: read_split(folder, split) for split in PHANTOM_SPLITS}
    subjects = {split: set(rows[split].subject_id) for split in PHANTOM_SPLITS}
    assert subjects["novel_view"] == subjects["train"]
    assert not subjects["val"] & subjects["train"] and not subjects["novel_subject"] & (
        subjects["train"] | subjects["val"]
    )
    train_views = set(zip(rows["train"].subject_id, rows["train"].view_id))
    novel_views = set(zip(rows["novel_view"].subject_id, rows["novel_view"].view_id))
    assert not train_views & novel_views
    assert len(train_views) == len(rows["train"])
    poses = np.concatenate([rows[s].pose for s in PHANTOM_SPLITS if s != "fluoro"])
    assert len(np.unique(poses.round(9), axis=0)) == len(poses)


def test_the_fluoro_split_is_the_test_views_again_through_the_fluoroscope(tiny_dataset):
    _, folder = tiny_dataset
    fluoro = read_split(folder, "fluoro")
    clean = [read_split(folder, split) for split in ("novel_view", "novel_subject")]
    keys = lambda rows: list(zip(rows.subject_id, rows.view_id))  # noqa: E731
    assert keys(fluoro) == keys(clean[0]) + keys(clean[1])
    for name in ("pose", "landmarks_2d", "visible", "landmarks_3d"):
        assert np.array_equal(getattr(fluoro, name), np.concatenate([getattr(rows, name) for rows in clean]))
    images, twins = fluoro.image.astype(float), np.concatenate([rows.image for rows in clean]).astype(float)
    # the shutters (10% per side, always in) blank the border; the displayed image is another one
    assert np.all(fluoro.image[:, :4, :] == 65535) and np.all(fluoro.image[:, :, -4:] == 65535)
    inner = (slice(None), slice(8, 40), slice(8, 40))
    assert all(np.abs(a - b).mean() > 1000 for a, b in zip(images[inner], twins[inner]))  # not the clean image
    assert all(image.std() > 2000 for image in images[inner])  # nor a blank one


def test_same_config_again_renders_nothing(tiny_dataset):
    config, folder = tiny_dataset
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}
    manifest = generate(config, folder)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.parquet")} == before
    assert manifest["dataset_hash"] == read_manifest(folder)["dataset_hash"]


def test_another_config_refuses_the_folder(tiny_dataset, capsys):
    config, folder = tiny_dataset
    other = config.model_copy(update={"seed": 4})
    with pytest.raises(DatasetError, match=r"holds a data set of another config .*seed"):
        generate(other, folder)


def test_killed_run_resumes_to_the_same_data_set(tiny_dataset, tiny_config_path, tmp_path, ray_session):
    """Killed after its first shards, the same command finishes the data set the module's uninterrupted run made."""
    config = load_config(str(tiny_config_path))
    total = len(plan_shards(config))
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "study",
            "generate",
            "--config",
            str(tiny_config_path),
            "--out",
            str(killed),
        ],
        cwd=REPO,
        env=os.environ | {"RAY_ADDRESS": ray_session.get_runtime_context().gcs_address},  # no Ray of its own to start
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while len(list(killed.glob("*/*.parquet"))) < 3:
            assert process.poll() is None, "generate ended before it could be interrupted"
            assert time.monotonic() < deadline, "generate wrote no shard in time"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    written_before_resume = len(list(killed.glob("*/*.parquet")))
    assert 0 < written_before_resume < total
    assert read_manifest(killed)["status"] == "in_progress"

    resumed = generate(config, killed)
    uninterrupted = read_manifest(tiny_dataset[1])  # the same config, never interrupted
    assert resumed["dataset_hash"] == uninterrupted["dataset_hash"]
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in uninterrupted["shards"]]
    rows = np.concatenate([read_split(killed, split).view_id for split in PHANTOM_SPLITS])
    assert len(rows) == sum(resumed["rows"].values()) == sum(p.rows for p in plan_shards(config))
    assert not list(killed.rglob("*.tmp"))


def write_real_cohort(folder: Path, seed: int, landmark_names=None):
    """A folder cohort made of a phantom saved as a NIfTI CT plus a CSV of its landmarks (world RAS), labelled
    ``landmark_names`` (default: the paper's; a name None leaves that landmark out of the file)."""
    import nibabel as nib

    from components.anatomy import PAPER
    from components.phantom import phantom_subject

    subject = phantom_subject(seed, voxel_size=4.0)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(subject.hu, subject.affine), folder / f"ct{seed}.nii.gz")
    names = landmark_names or PAPER.names
    points = [(n, point) for n, point in zip(names, subject.landmarks) if n is not None]
    lines = ["name,x,y,z"] + [f"{n},{x},{y},{z}" for n, (x, y, z) in points]
    (folder / f"ct{seed}.csv").write_text("\n".join(lines) + "\n")
    return subject


def folder_config(cohort: Path, subjects: str, plausibility: str = "warn"):
    cohort = f"kind: folder, path: {cohort}, coordinates: ras, subjects: {subjects}, plausibility: {plausibility}"
    return [f"data.cohort={{{cohort}}}"]


def test_a_real_ct_folder_goes_through_the_same_path(tiny_config_path, tmp_path, ray_session):
    """Subject 2's file lacks SPS and IPS and holds a name of no set: they are absent in every row (NaN,
    never visible), the extra name is ignored, and subject 1 is as its file says."""
    from components.anatomy import PAPER

    lacking = tuple(None if name in ("SPS", "IPS") else name for name in PAPER.names)
    subjects = {1: write_real_cohort(tmp_path / "cohort", 1)}
    subjects[2] = write_real_cohort(tmp_path / "cohort", 2, landmark_names=lacking)
    with open(tmp_path / "cohort" / "ct2.csv", "a") as stream:
        stream.write("sacral promontory,0,-60,60\n")
    overrides = folder_config(tmp_path / "cohort", "{train: 1, val: 0, novel_subject: 1}")
    manifest = generate(load_config(str(tiny_config_path), overrides), tmp_path / "data")
    assert manifest["rows"] == {"train": 4, "val": 0, "novel_view": 2, "novel_subject": 3, "fluoro": 5, "real": 0}
    assert manifest["landmarks"]["names"] == list(PAPER.names)
    absent = [PAPER.index("SPS"), PAPER.index("IPS")]
    for split in ("train", "novel_subject"):
        rows = read_split(tmp_path / "data", split)
        seed = int(rows.subject_id[0].removeprefix("ct"))
        expected = subjects[seed].landmarks.copy()
        if seed == 2:
            expected[absent] = np.nan
            assert np.isnan(rows.landmarks_2d[:, absent]).all() and not rows.visible[:, absent].any()
        assert np.allclose(rows.landmarks_3d[0], expected, atol=1e-3, equal_nan=True)
        assert rows.image.std() > 0


@pytest.mark.parametrize(
    "problem, plausibility, message",
    [
        ("duplicated name", "warn", "duplicated landmark L_ASIS"),
        ("sides swapped", "error", "3 implausible finding(s): L_ASIS, R_ASIS: "),
    ],
)
def test_a_bad_real_subject_fails_with_one_line_naming_it(
    tiny_config_path, tmp_path, ray_session, capsys, problem, plausibility, message
):
    from components.anatomy import PAPER

    if problem == "duplicated name":
        names = ("L_ASIS", "l_asis", *PAPER.names[2:])
    else:
        names = tuple(PAPER.names[PAPER.mirror_index(slot)] for slot in range(len(PAPER)))
    write_real_cohort(tmp_path / "cohort", 1, landmark_names=names)
    overrides = folder_config(tmp_path / "cohort", "{train: 1, val: 0, novel_subject: 0}", plausibility)
    arguments = ["generate", "--config", str(tiny_config_path), "--out", str(tmp_path / "data")]
    assert main(arguments + [f"--set={o}" for o in overrides]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: subject ct1:") and message in error
    assert "\n" not in error and error.count("subject ct1") == 1


def test_annotation_noise_moves_the_train_labels_only_and_alike_in_every_view(tiny_dataset):
    _, folder = tiny_dataset
    train, novel = read_split(folder, "train"), read_split(folder, "novel_view")
    for subject in set(train.subject_id):
        placed = train.landmarks_3d[train.subject_id == subject]
        exact = novel.landmarks_3d[novel.subject_id == subject]
        assert np.all(placed == placed[0]) and np.all(exact == exact[0])  # one placement per subject
        offsets = np.linalg.norm(placed[0] - exact[0], axis=1)
        assert 0.2 < offsets.mean() < 8.0  # sigma 2 mm per axis: about 3.2 mm on average


def test_preview_draws_clean_beside_fluoro_when_the_data_set_has_the_split(tiny_dataset, tmp_path, capsys):
    from PIL import Image

    _, folder = tiny_dataset
    assert main(["preview", "--data", str(folder), "--out", str(tmp_path / "sheet.png"), "--count", "4"]) == 0
    assert "sheet_fluoro.png (clean beside fluoro)" in capsys.readouterr().out
    with Image.open(tmp_path / "sheet_fluoro.png") as sheet:
        assert sheet.width > 600 and sheet.height > 200  # 2 pairs: one line of 4 panels
