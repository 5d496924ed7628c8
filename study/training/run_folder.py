"""A training run's folder, ``<train.storage>/<run name>/``: whose it is, its checkpoints, its result.

- ``study_run.json`` (``IDENTITY_FILE``): the config, strategy and start that own the folder; a
  run of anything else under the same name is refused, with the keys that differ;
- ``study_result.json`` (``RESULT_FILE``): the ``TrainResult`` of a finished run, which is then
  returned as it is instead of trained again;
- checkpoints: Ray Train's ``checkpoint_*`` folders, or ``best_checkpoint/`` and
  ``latest_checkpoint/`` of a run in this process; and the command's log file ``study.log``.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.manifest import differing_keys
from study.config import ConfigError, StudyConfig
from study.files import write_json

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_FOLDERS",
    "IDENTITY_FILE",
    "LATEST_CHECKPOINT",
    "TrainResult",
    "claim_run_folder",
    "read_result",
    "run_folder",
    "run_identity",
    "storage_folder",
    "write_result",
]

RESULT_FILE = "study_result.json"
IDENTITY_FILE = "study_run.json"
BEST_CHECKPOINT = "best_checkpoint"
LATEST_CHECKPOINT = "latest_checkpoint"
CHECKPOINT_FOLDERS = {"last": LATEST_CHECKPOINT, "best": BEST_CHECKPOINT}  # a run in this process, by train.checkpoint


@dataclass
class TrainResult:
    """What a finished training run left behind (also written as ``<run folder>/study_result.json``).

    ``status`` is ``finished`` or ``diverged``; ``epochs`` counts the epochs run, the last one cut
    short when the run diverged; ``last_metrics`` are those of the last report; ``best_checkpoint``
    is the folder of the best checkpoint by the selection metric and ``last_checkpoint`` that of the
    last epoch (None when the run diverged before its first epoch ended).
    """

    run_name: str
    strategy: str
    status: str
    epochs: int
    best_checkpoint: str | None
    best_metrics: dict = field(default_factory=dict)
    last_metrics: dict = field(default_factory=dict)
    run_id: str | None = None
    last_checkpoint: str | None = None
    model_id: str | None = None  # the run's logged MLflow model (``unet-<strategy>``)

    def checkpoint(self, which: str) -> str | None:
        """The folder of the run's ``"last"`` (end of training) or ``"best"`` checkpoint (``train.checkpoint``)."""
        if which not in ("last", "best"):
            raise ValueError(f"checkpoint {which!r}: expected 'last' or 'best'")
        return self.last_checkpoint if which == "last" else self.best_checkpoint

    def checkpoint_metrics(self, which: str) -> dict:
        """The metrics reported with that checkpoint."""
        return self.last_metrics if which == "last" else self.best_metrics


def storage_folder(config: StudyConfig) -> str:
    """``train.storage`` as an absolute folder (or the URI it is)."""
    storage = config.train.storage
    return storage if "://" in storage else str(Path(storage).resolve())


def run_folder(config: StudyConfig, name: str) -> Path:
    """The folder of the run ``name`` in a local ``train.storage``."""
    return Path(storage_folder(config)) / name


def run_identity(config: StudyConfig, strategy: str, init: str | None, launcher: str) -> dict:
    """What makes a run this run: the config that defines training (not tracking or reporting), strategy, start
    and launcher (whose checkpoints are kept differently)."""
    resolved = config.model_dump(mode="json", exclude={"tracking", "report", "sweep"})
    resolved["train"]["seed"] = config.training_seed()  # "no training seed" and "the study's seed" are one run
    return {"config": resolved, "strategy": strategy, "init": init, "launcher": launcher}


def claim_run_folder(folder: Path, identity: dict) -> None:
    """Make ``folder`` the home of this run, or check that the run there is this one."""
    path = folder / IDENTITY_FILE
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing != identity:
            differing = ", ".join(sorted(differing_keys(existing, identity)))
            raise ConfigError(
                f"{folder}: a run of another config or strategy has this name (differs in: {differing}); "
                f"choose another --name or delete the folder"
            )
        return
    write_json(identity, path)


def read_result(folder: Path) -> TrainResult | None:
    """The result of the finished run in ``folder``, or None."""
    path = folder / RESULT_FILE
    return TrainResult(**json.loads(path.read_text())) if path.is_file() else None


def write_result(folder: Path, result: TrainResult) -> None:
    write_json(asdict(result), folder / RESULT_FILE)
