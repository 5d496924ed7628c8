"""What several test modules share: tiny study configs, file writers, MLflow queries.

Test modules import these from here, never from each other.
"""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from study.config import StudyConfig
from study.tracking.runs import RUN_NAME_TAG

REPO = Path(__file__).resolve().parents[1]

TINY_CONFIG = """
name: tiny
seed: 3
data:
  cohort:
    kind: phantom
    subjects: {train: 2, val: 1, novel_subject: 1}
    voxel_size_mm: 4.0
    annotation_noise_mm: 2.0
  views: {train: 4, novel_view: 2, val: 3, novel_subject: 3}
  detector: {sdd: 1020.0, height: 1436, delx: 0.3}
  image_size: 48
  poses:
    rotation_deg: [15.0, 15.0, 15.0]
    translation_mm: [20.0, 40.0, 20.0]
    source_to_isocenter: 800.0
  renderer: {name: trilinear}
  shard_size: 2
  fluoro: {shutters: {fraction: [0.1, 0.1], probability: 1.0}}
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
  fluoro: {}
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
    randomized_finetune:
      init: baseline
      phases: [{losses: {pose: 1.0}, epochs: 1, learning_rate: 0.0001}]
      randomize: {}
    composite: {phases: [{losses: {bce: 1.0, pose: 0.001}, epochs: 2, learning_rate: 0.003}]}
    pose_only: {phases: [{losses: {pose: 1.0}, epochs: 2, learning_rate: 0.003}]}
    exploding: {phases: [{losses: {bce: 1.0}, epochs: 2, optimizer: sgd, learning_rate: 1.0e+30}]}
tracking: {overlays: 2}
report: {bootstrap_resamples: 50, examples: 2}
"""

# A leave-one-subject-out study of 4 training subjects (tests/study/evaluation/test_cross_validation.py): a tiny
# model, a one-epoch baseline and a fine-tune from it, in process (too short to learn: every fold's runs are DIV).
CROSS_VALIDATION_CONFIG = """
name: loso
seed: 5
data:
  cohort:
    kind: phantom
    subjects: {train: 4, val: 1, novel_subject: 1}
    voxel_size_mm: 4.0
  views: {train: 4, novel_view: 2, val: 2, novel_subject: 1}
  detector: {sdd: 1020.0, height: 1436, delx: 0.3}
  image_size: 48
  poses:
    rotation_deg: [15.0, 15.0, 15.0]
    translation_mm: [20.0, 40.0, 20.0]
    source_to_isocenter: 800.0
  renderer: {name: trilinear}
  shard_size: 8
  fluoro: {}
train:
  model: {encoder: resnet18, encoder_depth: 3}
  loss: {radius: 2.5, pos_weight: 20.0}
  batch_size: 4
  launcher: process
  strategies:
    baseline: {phases: [{losses: {bce: 1.0}, epochs: 1, learning_rate: 0.003}]}
    finetune_bce: {init: baseline, phases: [{losses: {bce: 1.0}, epochs: 1, learning_rate: 0.0001}]}
tracking: {overlays: 1}
report: {cross_validation: leave_one_subject_out, bootstrap_resamples: 50, examples: 2}
"""

# the strategies of the session's miniature reproduction (tests/study/conftest.py)
REPRODUCED_STRATEGIES = ["baseline", "composite", "pose_only", "finetune", "finetune_bce", "randomized_finetune"]

# the session's miniature fine-tune sweep (tests/study/conftest.py)
FINETUNE_SPACE = """
strategy: finetune
metric: val_rmse_soft_px
fixed: {train.strategies.finetune.phases.0.losses: {bce: 1.0, pose: 0.01}}
parameters:
  pose_weight: {path: train.strategies.finetune.phases.0.losses.pose, distribution: loguniform, low: 0.001, high: 0.1}
  epochs: {path: train.strategies.finetune.phases.0.epochs, distribution: int, low: 1, high: 2}
"""


def write_dataset(folder: Path, config: StudyConfig, views: dict[str, dict[str, int]]) -> Path:
    """A small complete data set in ``folder`` without rendering: ``views[split][subject]`` rows per subject, tiny
    blank images, each subject's own 3D landmarks, poses drawn from (seed, subject, view) within the config's
    ranges, and the exact 2D landmarks projected with them; one shard per split and subject, and a manifest with
    the rows and subjects per split as ``study generate`` writes it."""
    import torch

    from components import geometry
    from components.dataset import DRRRows, write_shard
    from components.manifest import dataset_hash, file_sha256, write_manifest
    from components.poses import sample_poses

    camera, shards = config.data.render_camera(), []
    size = config.data.image_size
    for split, subjects in views.items():
        for subject, count in subjects.items():
            first = 100 if split in ("novel_view", "fluoro") else 0  # novel views follow the training views
            view_ids = list(range(first, first + count))
            anatomy = np.random.default_rng(sum(map(ord, subject))).normal(0.0, 60.0, (8, 3))
            poses = sample_poses(config.seed, subject, view_ids, config.data.poses.ranges())
            landmarks_2d = geometry.project(torch.from_numpy(anatomy)[None].expand(count, -1, -1), poses, camera)
            rows = DRRRows(
                subject_id=np.full(count, subject, dtype=object),
                view_id=np.asarray(view_ids, dtype=np.int32),
                split=np.full(count, split, dtype=object),
                image=np.zeros((count, size, size), dtype=np.uint16),
                landmarks_2d=landmarks_2d.numpy(),
                visible=np.ones((count, 8), dtype=bool),
                landmarks_3d=np.broadcast_to(anatomy, (count, 8, 3)).copy(),
                pose=poses.numpy(),
                intrinsics=np.broadcast_to(geometry.make_k(camera).numpy(), (count, 3, 3)).copy(),
            )
            path = f"{split}/{subject}.parquet"
            write_shard(rows, folder / path)
            shards.append({"path": path, "split": split, "subject_id": subject, "rows": count})
            shards[-1]["sha256"] = file_sha256(folder / path)
    splits = ("train", "val", "novel_view", "novel_subject", "fluoro")
    manifest = {
        "status": "complete",
        "shards": shards,
        "rows": {split: sum(s["rows"] for s in shards if s["split"] == split) for split in splits},
        "subjects": {split: sorted({s["subject_id"] for s in shards if s["split"] == split}) for split in splits},
        "dataset_hash": dataset_hash(shards),
    }
    write_manifest(folder, manifest)
    return folder


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:  # it answers (e.g. 401 without the Ray token): it is up
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {seconds} s")


@contextmanager
def child_process_group(command: list[str], environment: dict, log: Path):
    """Run ``command`` in its own process group; on exit end that group (SIGTERM, then SIGKILL)."""
    with open(log, "w") as stream:
        process = subprocess.Popen(
            command, env=environment, start_new_session=True, stdout=stream, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
