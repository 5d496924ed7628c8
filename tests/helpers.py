"""What several test modules share: tiny study configs, file writers, MLflow queries.

Test modules import these from here, never from each other.
"""

from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from study.config import StudyConfig
from study.tracking import RUN_NAME_TAG

REPO = Path(__file__).resolve().parents[1]

TINY_CONFIG = """
name: tiny
seed: 3
data:
  cohort:
    kind: phantom
    subjects: {train: 2, val: 1, novel_subject: 1}
    voxel_size_mm: 4.0
  views: {train: 4, novel_view: 2, val: 3, novel_subject: 3}
  detector: {sdd: 1020.0, height: 1436, delx: 0.3}
  image_size: 48
  poses:
    rotation_deg: [15.0, 15.0, 15.0]
    translation_mm: [20.0, 40.0, 20.0]
    source_to_isocenter: 800.0
  renderer: {name: trilinear}
  shard_size: 2
"""

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
  batch_size: 8
  workers: 2
  cpus_per_worker: 0.5
  max_failures: 1
  strategies:
    baseline: {phases: [{losses: {bce: 1.0}, epochs: 20, learning_rate: 0.003}]}
    short: {phases: [{losses: {bce: 1.0}, epochs: 4, learning_rate: 0.003}]}
    finetune: {init: baseline, phases: [{losses: {pose: 1.0}, epochs: 1, learning_rate: 0.0001}]}
    finetune_bce: {init: baseline, phases: [{losses: {bce: 1.0}, epochs: 1, learning_rate: 0.0001}]}
    composite: {phases: [{losses: {bce: 1.0, pose: 0.001}, epochs: 2, learning_rate: 0.003}]}
    pose_only: {phases: [{losses: {pose: 1.0}, epochs: 2, learning_rate: 0.003}]}
    exploding: {phases: [{losses: {bce: 1.0}, epochs: 2, optimizer: sgd, learning_rate: 1.0e+30}]}
tracking: {overlays: 2}
report: {bootstrap_resamples: 50, examples: 2}
"""


def write_dicom(path, pixels, monochrome1=False, slope=1.0, intercept=0.0):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # computed radiography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 16, 16, 15
    dataset.PixelRepresentation = 0
    dataset.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)


def sweep_config(train_study, folder: Path, tracking: str | None = None, **sweep_settings) -> StudyConfig:
    """The training tests' config, with sweeps stored in ``folder`` (and MLflow at ``tracking``)."""
    config, _ = train_study
    raw = config.model_dump(mode="json")
    raw["sweep"] |= {
        "storage": str(folder / "sweeps"),
        "workers_per_trial": 1,
        "cpus_per_worker": 1.0,
        "seed": 7,
    } | sweep_settings
    if tracking:
        raw["tracking"]["uri"] = tracking
    return StudyConfig.model_validate(raw)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def runs_named(client: MlflowClient, config: StudyConfig, name: str) -> list:
    experiment = client.get_experiment_by_name(config.tracking.experiment or config.name)
    return client.search_runs([experiment.experiment_id], f"tags.`{RUN_NAME_TAG}` = '{name}'")


def children(client: MlflowClient, parent_run_id: str) -> list:
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
