"""A DeepFluoro study end to end on a small file in the release's layout: the specimens' DRRs and their real
X-rays (the ``real`` split) generated, a model trained, and ``study evaluate --split real`` writing Table 1's
rows of the real X-rays beside the trivial predictor's."""

import csv

import numpy as np
import pytest
import torch
import yaml

from components import geometry
from components.anatomy import DEEPFLUORO
from components.dataset import read_split
from components.geometry import Camera
from study.cli import main
from tests.deepfluoro_file import write_deepfluoro_file

pytestmark = pytest.mark.slow  # trains a model and starts Ray

# The test file's 96 px X-rays cropped by 8 px to 80 px at 3.1 mm (the release: 50 px, to 1436 px at 0.194 mm)
STUDY = """
name: dfstudy
seed: 3
data:
  cohort: {{kind: deepfluoro, path: {path}, crop: 8, subjects: {{train: 1, val: 1, novel_subject: 0}}}}
  landmarks: deepfluoro
  views: {{train: 8, novel_view: 2, val: 4, novel_subject: 0}}
  detector: {{sdd: 1020.0, height: 80, delx: 3.1}}
  image_size: 40
  poses: {{rotation_deg: [15.0, 15.0, 15.0], translation_mm: [20.0, 40.0, 20.0], source_to_isocenter: 700.0}}
  renderer: {{name: trilinear}}
  shard_size: 4
train:
  model: {{encoder: resnet18, encoder_depth: 3}}
  loss: {{radius: 2.0, pos_weight: 20.0}}
  batch_size: 4
  launcher: process
  strategies:
    baseline: {{phases: [{{losses: {{bce: 1.0}}, epochs: 1, learning_rate: 0.003}}]}}
tracking: {{uri: "sqlite:///{folder}/mlflow.db"}}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_session):
    """(config path, folder, data set, the written file) after ``study generate``."""
    folder = tmp_path_factory.mktemp("deepfluoro")
    written = write_deepfluoro_file(folder / "ipcai_2020_full_res_data.h5", offsets_mm=(0.0, 0.0))
    config = folder / "dfstudy.yaml"
    config.write_text(STUDY.format(path=written.path, folder=folder))
    data = folder / "data"
    assert main(["generate", "--config", str(config), "--out", str(data)]) == 0
    return config, folder, data, written


def test_the_real_split_holds_every_specimens_xrays_with_their_true_poses(study):
    _, _, data, written = study
    rows = read_split(data, "real")
    assert len(rows) == len(written.projections) and rows.landmarks_2d.shape[1:] == (len(DEEPFLUORO), 2)
    camera, _, _ = geometry.rescale(Camera(sdd=1020.0, height=80, width=80, delx=3.1, dely=3.1), 40)
    for projection in written.projections:
        index = [
            i
            for i, (s, v) in enumerate(zip(rows.subject_id, rows.view_id))
            if (s, v) == (projection.specimen_id, int(projection.name))
        ]
        (row,) = index
        np.testing.assert_allclose(rows.pose[row], projection.pose.numpy(), atol=1e-6)
        # the specimen's 3D landmarks, projected with the row's pose, land on its 2D landmarks
        landmarks_3d = torch.from_numpy(rows.landmarks_3d[row])
        present = torch.isfinite(landmarks_3d).all(-1)
        projected = geometry.project(landmarks_3d[present][None], torch.from_numpy(rows.pose[row])[None], camera)[0]
        np.testing.assert_allclose(projected.numpy(), rows.landmarks_2d[row][present.numpy()], atol=1e-3)
        assert not rows.visible[row][~present.numpy()].any()  # a landmark the specimen lacks is never visible
    assert rows.image.std() > 0


def test_evaluate_split_real_writes_table_1s_rows_of_the_real_xrays(study, monkeypatch):
    config, folder, data, written = study
    monkeypatch.chdir(folder)
    assert main(["train", "--config", str(config), "--strategy", "baseline", "--data", str(data)]) == 0
    out = folder / "evaluation"
    checkpoint = folder / "runs" / "dfstudy-baseline" / "latest_checkpoint"
    arguments = ["evaluate", "--config", str(config), "--run", str(checkpoint), "--data", str(data)]
    assert main([*arguments, "--split", "real", "--out", str(out)]) == 0
    with open(out / "per_image.csv") as stream:
        records = list(csv.DictReader(stream))
    assert {r["split"] for r in records} == {"real"} and len(records) == 2 * len(written.projections)
    table = (out / "table1.md").read_text().splitlines()
    header = table[0].split(" | ")
    assert [c for c in header if c.startswith("L")] == [f"L{i + 1}" for i in range(len(DEEPFLUORO))]
    assert sum(line.startswith("| real |") for line in table) == 2  # the model and the trivial predictor
    assert any(line.startswith("| real | trivial |") for line in table)


def test_a_detector_that_is_not_the_files_is_refused_naming_both(study, capsys):
    config, folder, _, _ = study
    raw = yaml.safe_load(config.read_text())
    raw["data"]["detector"]["delx"] = 3.0
    other = folder / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    assert main(["generate", "--config", str(other), "--out", str(folder / "other-data")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "differs from data.detector's at 40 px" in error and "projection 000" in error
