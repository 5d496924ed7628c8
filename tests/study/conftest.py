"""Fixtures shared by the study tests: a tiny study with a train section and its generated data set."""

import pytest
import yaml

from study.config import StudyConfig
from study.generate import generate

TRAIN_CONFIG = """
name: trainee
seed: 3
data:
  cohort:
    kind: phantom
    subjects: {train: 3, val: 1, novel_subject: 1}
    voxel_size_mm: 4.0
  views: {train: 16, novel_view: 2, val: 8, novel_subject: 2}
  detector: {sdd: 1020.0, height: 1436, delx: 0.3}
  image_size: 64
  poses:
    rotation_deg: [15.0, 15.0, 15.0]
    translation_mm: [20.0, 40.0, 20.0]
    source_to_isocenter: 800.0
  renderer: {name: trilinear}
  shard_size: 8
train:
  model: {encoder: resnet18, encoder_depth: 3}
  loss: {radius: 2.5, pos_weight: 20.0}
  batch_size: 4
  workers: 2
  cpus_per_worker: 0.5
  max_failures: 1
  strategies:
    baseline: {phases: [{losses: {bce: 1.0}, epochs: 20, learning_rate: 0.003}]}
    short: {phases: [{losses: {bce: 1.0}, epochs: 4, learning_rate: 0.003}]}
    finetune: {init: baseline, phases: [{losses: {pose: 1.0}, epochs: 1, learning_rate: 0.0001}]}
    composite: {phases: [{losses: {bce: 1.0, pose: 0.001}, epochs: 2, learning_rate: 0.003}]}
    pose_only: {phases: [{losses: {pose: 1.0}, epochs: 2, learning_rate: 0.003}]}
    exploding: {phases: [{losses: {bce: 1.0}, epochs: 2, optimizer: sgd, learning_rate: 1.0e+30}]}
tracking: {overlays: 2}
report: {bootstrap_resamples: 50, examples: 2}
"""


@pytest.fixture(scope="session")
def train_study(tmp_path_factory, ray_session):
    """The config (runs and MLflow in a temporary folder) and its generated data set."""
    folder = tmp_path_factory.mktemp("train")
    raw = yaml.safe_load(TRAIN_CONFIG)
    raw["train"]["storage"] = str(folder / "runs")
    raw["tracking"]["uri"] = f"sqlite:///{folder / 'mlflow.db'}"
    config = StudyConfig.model_validate(raw)
    generate(config, folder / "data")
    return config, folder / "data"
