"""The training loop on a Ray Train worker (DDP): ``ray_train_loop_with(splits)`` is its entry point.

``RayTrainWorker`` gives the loop (``study.training.loop.train_loop``) its rank, rows, resumed
state and a place to report to: all of the run's rows, as the driver read them and put them into
Ray's object store once (``study.training.data.run_splits``; each worker trains on its share of every
batch), checkpoints handed to Ray Train (which keeps the latest and the best in the run folder).
Its twin in this process is ``study.training.workers.LocalWorker``. Only the Ray Train launcher
imports this module.
"""

import logging
from collections.abc import Callable

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from components.model import load_checkpoint
from study.training.loop import train_loop

__all__ = ["ray_train_loop_with"]


def quiet_report_logs() -> None:
    """Drop Ray Train's INFO line per report: its module logs under its file path, not ``ray.train``,
    so ``LoggingConfig`` does not reach it (Ray 2.60)."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


class RayTrainWorker:
    """A Ray Train worker's rank, rows, resumed state and reports."""

    def __init__(self, splits: dict[str, dict[str, np.ndarray]]):
        self.splits = splits
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.scratch = None  # the system's temporary folder: Ray Train copies the checkpoint into its storage

    def rows(self, role: str) -> dict[str, np.ndarray]:
        """All of the run's ``role`` rows, in the order the driver read them (writable copies of the object
        store's arrays)."""
        return {name: np.array(column) for name, column in self.splits[role].items()}

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


def ray_train_loop_with(splits: ray.ObjectRef) -> Callable[[dict], dict]:
    """The entry point of a Ray Train worker, on the rows ``run_splits`` gave (an object ref: each worker fetches
    them from the object store, once)."""

    def ray_train_loop(loop_config: dict) -> dict:
        quiet_report_logs()
        return train_loop(loop_config, RayTrainWorker(ray.get(splits)))

    return ray_train_loop
