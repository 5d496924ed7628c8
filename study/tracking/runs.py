"""MLflow runs: one per training run, reproduction or sweep, with its parameters, config, system tags,
description, metrics and files.

The tracking URI is ``MLFLOW_TRACKING_URI`` if set, else the config's ``tracking.uri``, else a
SQLite file ``mlflow.db`` in the working directory (artifacts beside it in ``mlartifacts/``),
which ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows.

A run has MLflow's system tags (user, source, git commit: a child run copies its parent's, so a
sweep trial on a Ray worker names the command that started the sweep), a description
(``mlflow.note.content``), the flat parameters that tell it apart (``study.tracking.params``) and
the full resolved config as the artifact ``config.yaml``. A run is found again by its identity,
the tag ``study.run_name``; its display name may be shorter (a sweep trial's ``t03-48b65ca8``).

Everything goes through ``MlflowClient`` with explicit run ids (no global active run; only
``log_model`` needs one, see ``study.tracking.models``), so that the same code logs from a
driver, a Ray Train controller or a Tune trial.
"""

import functools
import getpass
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from components.model import CHECKPOINT_FILE
from study.config import StudyConfig
from study.tracking.datasets import SplitDataset
from study.tracking.links import link_line

__all__ = [
    "CHECKPOINT_ARTIFACT",
    "DESCRIPTION_TAG",
    "RUN_NAME_TAG",
    "Tracker",
    "log_metrics",
    "system_tags",
    "tracking_uri",
]

REPO = Path(__file__).resolve().parents[2]
RUN_NAME_TAG = "study.run_name"
DESCRIPTION_TAG = "mlflow.note.content"  # what the UI shows as a run's or experiment's description
SOURCE_TAGS = (
    "mlflow.user",
    "mlflow.source.name",
    "mlflow.source.type",
    "mlflow.source.git.commit",
    "mlflow.source.git.branch",
    "study.command",
)
PARAM_LIMIT = 6000
LINKED: set[str] = set()  # stores this process has printed a link to (the UI's start command is said once)
CHECKPOINT_ARTIFACT = "checkpoint"  # the checkpoint that stands for a run (tag study.checkpoint: last or best)


def tracking_uri(config: StudyConfig | None) -> str:
    """Where runs go: ``MLFLOW_TRACKING_URI``, the config's ``tracking.uri``, or ``./mlflow.db``."""
    configured = config.tracking.uri if config is not None else None
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


@functools.cache
def git(*arguments: str) -> str:
    """A git command's output in the repository, asked once per process ('' when git or the repository is
    missing, e.g. in a Ray job's copy of the working directory)."""
    try:
        done = subprocess.run(["git", *arguments], cwd=REPO, capture_output=True, text=True, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def git_commit() -> str:
    """The code version: the git commit of the repository (with ``-dirty`` for local changes), or ``unknown``."""
    sha = git("rev-parse", "HEAD")
    if not sha:
        return "unknown"
    return sha + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def command_line() -> str:
    """This process's command as a person typed it: ``study reproduce --preset demo``."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("study", "__main__.py") or program.endswith("study"):
        program = "study"
    return " ".join([program, *sys.argv[1:]])[:500]


def system_tags() -> dict[str, str]:
    """MLflow's system tags for a run this process starts: who, from what command, at which commit."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    command = command_line()
    tags = {
        "mlflow.user": user,
        "mlflow.source.name": " ".join(command.split()[:2]),  # e.g. "study reproduce"
        "mlflow.source.type": "JOB"
        if os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_JOB_SUBMISSION_ID")
        else "LOCAL",
        "mlflow.source.git.commit": git_commit(),
        "study.command": command,
    }
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    return tags | ({"mlflow.source.git.branch": branch} if branch else {})


def log_metrics(
    client: MlflowClient,
    run_id: str,
    metrics: dict,
    step: int,
    dataset: SplitDataset | None = None,
    model_id: str | None = None,
) -> None:
    """Log the numeric entries of ``metrics`` at ``step`` in one batch (others, e.g. a status, are skipped),
    measured on ``dataset`` with the logged model ``model_id`` where given."""
    now = int(1000 * time.time())
    link = {"model_id": model_id}
    if dataset is not None:
        link |= {"dataset_name": dataset.name, "dataset_digest": dataset.digest}
    numeric = [
        Metric(key, float(value), now, step, **link)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    client.log_batch(run_id, metrics=numeric)


class Tracker:
    """The MLflow runs of one study config."""

    def __init__(self, config: StudyConfig | None, experiment: bool = True):
        self.uri = tracking_uri(config)
        self.client = MlflowClient(self.uri)
        self.experiment_id = self.experiment(config) if experiment else None

    @classmethod
    def for_uri(cls, config: StudyConfig | None) -> "Tracker":
        """A tracker for existing runs (by id) only: it neither needs nor creates an experiment."""
        return cls(config, experiment=False)

    def experiment(self, config: StudyConfig) -> str:
        """The study's experiment (``tracking.experiment``, default the study's name), created with its
        description the first time."""
        name = config.tracking.experiment or config.name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name).resolve().as_uri()
        description = (
            f"Study '{config.name}': U-Net heatmaps of {config.data.landmarks.in_words()} on DRRs, soft-argmax, 2D/3D "
            "registration (Enhanced Landmark Detection Model in Pelvic Fluoroscopy using 2D/3D Registration Loss). "
            "Parent runs: "
            "'study reproduce' (Table 1 and the comparisons; its children are the strategy runs, one per strategy and "
            "training seed) and 'study sweep' (its children are the trials). Compare runs on the parameters "
            "strategy and phase<i>.*; the full config of every run is its config.yaml artifact."
        )
        return self.client.create_experiment(name, artifact_location=location, tags={DESCRIPTION_TAG: description})

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
        self,
        run_name: str,
        config: StudyConfig,
        params: dict[str, str],
        tags: dict[str, str],
        description: str,
        parent_run_id: str | None = None,
        display_name: str | None = None,
    ) -> str:
        """A run for ``run_name``: the unfinished one of that name if any (a resumed run), else a new one with
        ``params``, ``tags``, the system tags (a child's are its parent's), ``description`` and ``config.yaml``."""
        previous = self.find_run(run_name)
        if previous is not None and previous.info.status in ("RUNNING", "FAILED", "KILLED"):
            self.client.update_run(previous.info.run_id, status="RUNNING")
            return previous.info.run_id
        inherited = self.client.get_run(parent_run_id).data.tags if parent_run_id else {}
        source = {key: inherited[key] for key in SOURCE_TAGS if key in inherited}
        if "mlflow.source.name" not in source:  # no parent, or one logged without them
            source = system_tags() | source
        display_name = display_name or run_name
        all_tags = source | {RUN_NAME_TAG: run_name, "mlflow.runName": display_name, DESCRIPTION_TAG: description}
        all_tags |= {key: str(value) for key, value in tags.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=display_name, tags=all_tags)
        logged = [Param(key, value[:PARAM_LIMIT]) for key, value in params.items()]
        for start in range(0, len(logged), 100):
            self.client.log_batch(run.info.run_id, params=logged[start : start + 100])
        self.client.log_dict(run.info.run_id, config.model_dump(mode="json"), "config.yaml")
        return run.info.run_id

    def log_metrics(
        self,
        run_id: str,
        metrics: dict[str, float],
        step: int,
        dataset: SplitDataset | None = None,
        model_id: str | None = None,
    ) -> None:
        log_metrics(self.client, run_id, metrics, step, dataset, model_id)

    def link(self, run_id: str | None = None) -> str:
        """``MLflow: <url>`` of a run's page, or of the experiment's runs table; the first link of a process to a
        store without a server also says how to start the UI."""
        experiment_id = self.experiment_id or self.client.get_run(run_id).info.experiment_id
        line = link_line(self.uri, experiment_id, run_id, how_to_start=self.uri not in LINKED)
        LINKED.add(self.uri)
        return line

    def log_checkpoint(self, run_id: str, state: dict) -> None:
        """The checkpoint that stands for a run (its contents, ``load_checkpoint``), as its artifact ``checkpoint``:
        what a fine-tune or an evaluation reads back (weights, architecture, decoding, config, metrics), without
        the optimizer's state."""
        import torch

        lean_state = {key: value for key, value in state.items() if key != "optimizer"}
        with tempfile.TemporaryDirectory() as lean:
            torch.save(lean_state, Path(lean) / CHECKPOINT_FILE)
            self.client.log_artifacts(run_id, lean, CHECKPOINT_ARTIFACT)

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
            return Path(self.client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, str(folder)))
        except Exception as error:
            raise ValueError(f"MLflow run {run_id} has no checkpoint artifact (did it finish training?)") from error
