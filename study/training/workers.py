"""Where the training loop runs: a Ray Train worker (DDP) or this process.

Both give the loop (``study.training.loop.train_loop``) its rank, rows, resumed state and a place
to report to:

- ``RayTrainWorker``: rows streamed once from the Ray Dataset shard the trainer gave this worker,
  checkpoints handed to Ray Train (which keeps the latest and the best in the run folder);
- ``LocalWorker``: rows read from the Parquet shards with pyarrow, checkpoints kept in the run
  folder as ``latest_checkpoint/`` (to resume) and ``best_checkpoint/`` (by the selection metric).
"""

import logging
import math
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from components import training
from components.dataset import read_split
from components.model import CHECKPOINT_FILE, load_checkpoint
from study.files import replace_folder
from study.training.loop import train_loop
from study.training.run_folder import BEST_CHECKPOINT, LATEST_CHECKPOINT

__all__ = ["LocalWorker", "ray_train_loop"]


def quiet_report_logs() -> None:
    """Drop Ray Train's INFO line per report: its module logs under its file path, not ``ray.train``,
    so ``LoggingConfig`` does not reach it (Ray 2.60)."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


class RayTrainWorker:
    """A Ray Train worker's rank, rows, resumed state and reports."""

    def __init__(self):
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def rows(self, split: str) -> dict[str, np.ndarray]:
        shard = ray.train.get_dataset_shard(split)
        return training.collect_rows(shard.iter_batches(batch_size=256, batch_format="numpy"))

    def resumed_state(self) -> dict:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return {}
        with checkpoint.as_directory() as folder:
            return load_checkpoint(folder)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)

    def report(self, metrics: dict, folder: str | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)


def ray_train_loop(loop_config: dict) -> dict:
    """The entry point of a Ray Train worker."""
    quiet_report_logs()
    return train_loop(loop_config, RayTrainWorker())


class LocalWorker:
    """Training in this process, without Ray Train (e.g. a sweep trial); every report also goes to ``on_report``."""

    def __init__(self, run_folder: Path, data_dir: Path, metric: str, use_gpu: bool, cpus: float, on_report):
        self.rank, self.world_size = 0, 1
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.run_folder, self.data_dir, self.metric, self.on_report = run_folder, data_dir, metric, on_report
        best = run_folder / BEST_CHECKPOINT / CHECKPOINT_FILE
        self.best_value = load_checkpoint(best.parent)["metrics"][metric] if best.is_file() else math.inf  # resumed run
        torch.set_num_threads(max(1, int(cpus)))

    def rows(self, split: str) -> dict[str, np.ndarray]:
        return training.columns_of(read_split(self.data_dir, split))

    def resumed_state(self) -> dict:
        latest = self.run_folder / LATEST_CHECKPOINT
        return load_checkpoint(latest) if (latest / CHECKPOINT_FILE).is_file() else {}

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def report(self, metrics: dict, folder: str | None) -> None:
        if folder is not None:
            if metrics[self.metric] < self.best_value:
                self.best_value = metrics[self.metric]
                replace_folder(folder, self.run_folder / BEST_CHECKPOINT)
            replace_folder(folder, self.run_folder / LATEST_CHECKPOINT)
        self.on_report(metrics)
