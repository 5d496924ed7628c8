"""The training loop in this process: ``LocalWorker`` gives the loop (``study.training.loop.train_loop``) its
rank, rows, resumed state and a place to report to.

Rows come from ``study.training.data`` (read once per process, or shared by a sweep's driver; a fold's
without its held-out subjects);
checkpoints are kept in the run folder as ``latest_checkpoint/`` (to resume) and
``best_checkpoint/`` (by the selection metric). Its twin on Ray Train is
``study.training.ray_worker``.
"""

import math
from pathlib import Path

import numpy as np
import torch

from components.model import CHECKPOINT_FILE, load_checkpoint
from study.config import FoldConfig
from study.files import replace_folder
from study.training.data import run_columns
from study.training.run_folder import BEST_CHECKPOINT, LATEST_CHECKPOINT

__all__ = ["LocalWorker"]


class LocalWorker:
    """Training in this process, without Ray Train; every report also goes to ``on_report``.

    PyTorch keeps its default threads: all the machine's cores, or the CPUs Ray gave a Tune trial.
    """

    def __init__(
        self, run_folder: Path, data_dir: Path, metric: str, use_gpu: bool, on_report, fold: FoldConfig | None = None
    ):
        self.rank, self.world_size, self.fold = 0, 1, fold
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.run_folder, self.data_dir, self.metric, self.on_report = run_folder, data_dir, metric, on_report
        self.scratch = str(run_folder)
        best = run_folder / BEST_CHECKPOINT / CHECKPOINT_FILE
        self.best_value = load_checkpoint(best.parent)["metrics"][metric] if best.is_file() else math.inf  # resumed run

    def rows(self, role: str) -> dict[str, np.ndarray]:
        return run_columns(self.data_dir, role, self.fold)

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
