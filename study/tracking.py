"""MLflow: one run per training run, with its config, dataset hash, code version, metrics and files.

The tracking URI is ``MLFLOW_TRACKING_URI`` if set, else the config's ``tracking.uri``, else a
SQLite file ``mlflow.db`` in the working directory (artifacts beside it in ``mlartifacts/``),
which ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows.

Everything goes through ``MlflowClient`` with explicit run ids (no global active run), so that the
same code logs from a driver, a Ray Train controller or a Tune trial.
"""

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from study.config import StudyConfig

__all__ = ["RUN_NAME_TAG", "Tracker", "log_metrics", "tracking_uri"]

REPO = Path(__file__).resolve().parents[1]
RUN_NAME_TAG = "study.run_name"
PARAM_LIMIT = 6000


def tracking_uri(config: StudyConfig | None) -> str:
    """Where runs go: ``MLFLOW_TRACKING_URI``, the config's ``tracking.uri``, or ``./mlflow.db``."""
    configured = config.tracking.uri if config is not None else None
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def git_commit() -> str:
    """The code version: the git commit of the repository (with ``-dirty`` for local changes)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists and None as JSON."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, path + ".")
        else:
            flat[path] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def log_metrics(client: MlflowClient, run_id: str, metrics: dict, step: int) -> None:
    """Log the numeric entries of ``metrics`` at ``step`` in one batch (others, e.g. a status, are skipped)."""
    now = int(1000 * time.time())
    numeric = [
        Metric(key, float(value), now, step) for key, value in metrics.items() if isinstance(value, (int, float))
    ]
    client.log_batch(run_id, metrics=numeric)


class Tracker:
    """The MLflow runs of one study config."""

    def __init__(self, config: StudyConfig | None, experiment: bool = True):
        self.uri = tracking_uri(config)
        self.client = MlflowClient(self.uri)
        self.experiment_id = self.experiment(config.tracking.experiment or config.name) if experiment else None

    @classmethod
    def for_uri(cls, config: StudyConfig | None) -> "Tracker":
        """A tracker for existing runs (by id) only: it neither needs nor creates an experiment."""
        return cls(config, experiment=False)

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name).resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def find_run(self, run_name: str):
        """The latest run logged under ``run_name`` (the study's run name tag), or None."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def start_run(
        self, run_name: str, config: StudyConfig, tags: dict[str, str], parent_run_id: str | None = None
    ) -> str:
        """A run for ``run_name``: the unfinished one of that name if any (a resumed run), else a new one."""
        previous = self.find_run(run_name)
        if previous is not None and previous.info.status in ("RUNNING", "FAILED", "KILLED"):
            self.client.update_run(previous.info.run_id, status="RUNNING")
            return previous.info.run_id
        all_tags = {RUN_NAME_TAG: run_name, "mlflow.runName": run_name, "mlflow.source.git.commit": git_commit()}
        all_tags |= {key: str(value) for key, value in tags.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        params = [Param(key, value[:PARAM_LIMIT]) for key, value in flatten(config.model_dump(mode="json")).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[start : start + 100])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        log_metrics(self.client, run_id, metrics, step)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_artifacts(self, run_id: str, folder: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def log_file(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def end_run(self, run_id: str, status: str) -> None:
        """``status``: FINISHED or FAILED (a diverged run ends FINISHED with the tag ``study.status``)."""
        self.client.set_terminated(run_id, status=status)

    def download_checkpoint(self, run_id: str) -> Path:
        """The checkpoint logged by run ``run_id`` (artifact ``checkpoint``), downloaded to a temporary folder."""
        try:
            self.client.get_run(run_id)
        except Exception as error:
            raise ValueError(f"{run_id}: neither a checkpoint path nor an MLflow run at {self.uri}") from error
        folder = Path(tempfile.mkdtemp(prefix="study-init-"))
        try:
            return Path(self.client.download_artifacts(run_id, "checkpoint", str(folder)))
        except Exception as error:
            raise ValueError(f"MLflow run {run_id} has no checkpoint artifact (did it finish training?)") from error
