"""Where the training loop runs: a Ray Train worker (DDP) or this process.

Both give the loop (``study.training.loop.train_loop``) its rank, rows, resumed state and a place
to report to:

- ``RayTrainWorker``: every split streamed once from the Ray Dataset the trainer gave every worker
  (each trains on its share of every batch), checkpoints handed to Ray Train (which keeps the
  latest and the best in the run folder);
- ``LocalWorker``: rows from ``study.training.data`` (read once per process, or shared by a sweep's
  driver), checkpoints kept in the run folder as ``latest_checkpoint/`` (to resume) and
  ``best_checkpoint/`` (by the selection metric).
"""

import logging
import math
from pathlib import Path

import numpy as np
import torch

from components import training
from components.model import CHECKPOINT_FILE, load_checkpoint
from study.files import replace_folder
from study.training.data import split_columns
from study.training.loop import train_loop
from study.training.run_folder import BEST_CHECKPOINT, LATEST_CHECKPOINT

__all__ = ["LocalWorker", "ray_train_loop"]


def quiet_report_logs() -> None:
    """Drop Ray Train's INFO line per report: its module logs under its file path, not ``ray.train``,
    so ``LoggingConfig`` does not reach it (Ray 2.60)."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


class RayTrainWorker:
    """A Ray Train worker's rank, rows, resumed state and reports (Ray is imported here only: a run in
    process never loads it)."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.scratch = None  # the system's temporary folder: Ray Train copies the checkpoint into its storage

    def rows(self, split: str) -> dict[str, np.ndarray]:
        import ray.train

        shard = ray.train.get_dataset_shard(split)
        return training.collect_rows(shard.iter_batches(batch_size=256, batch_format="numpy"))

    def resumed_state(self) -> dict:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return {}
        with checkpoint.as_directory() as folder:
            return load_checkpoint(folder)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def report(self, metrics: dict, folder: str | None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)


def ray_train_loop(loop_config: dict) -> dict:
    """The entry point of a Ray Train worker."""
    quiet_report_logs()
    return train_loop(loop_config, RayTrainWorker())


class LocalWorker:
    """Training in this process, without Ray Train; every report also goes to ``on_report``.

    PyTorch keeps its default threads: all the machine's cores, or the CPUs Ray gave a Tune trial.
    """

    def __init__(self, run_folder: Path, data_dir: Path, metric: str, use_gpu: bool, on_report):
        self.rank, self.world_size = 0, 1
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.run_folder, self.data_dir, self.metric, self.on_report = run_folder, data_dir, metric, on_report
        self.scratch = str(run_folder)
        best = run_folder / BEST_CHECKPOINT / CHECKPOINT_FILE
        self.best_value = load_checkpoint(best.parent)["metrics"][metric] if best.is_file() else math.inf  # resumed run

    def rows(self, split: str) -> dict[str, np.ndarray]:
        return split_columns(self.data_dir, split)

    def resumed_state(self) -> dict:
        latest = self.run_folder / LATEST_CHECKPOINT
        return load_checkpoint(latest) if (latest / CHECKPOINT_FILE).is_file() else {}

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def report(self, metrics: dict, folder: str | None) -> None:
        """``folder`` (made in ``scratch``, the run folder) becomes the latest checkpoint, and the best one when
        it is: hard links, no copy."""
        if folder is not None:
            if metrics[self.metric] < self.best_value:
                self.best_value = metrics[self.metric]
                replace_folder(folder, self.run_folder / BEST_CHECKPOINT, link=True)
            replace_folder(folder, self.run_folder / LATEST_CHECKPOINT, link=True)
        self.on_report(metrics)
