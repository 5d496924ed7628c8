"""A sweep's plan: what its trials train, where, and from which start; kept in the sweep folder.

``<sweep.storage>/<name>/study_sweep.json`` holds the resolved config, the search space, the data
set, the MLflow parent run and the shared starts: everything ``study sweep --resume`` needs.
Trials read their config from the plan, so the driver settles here what the trials cannot see
from their own processes and nodes (the tracking URI, the folders, the GPUs per worker).
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from study.config import ConfigError, StudyConfig
from study.files import write_json
from study.sweeps.space import SearchSpace

__all__ = [
    "PLAN_FILE",
    "SweepPlan",
    "gpus_per_worker",
    "plan_folder",
    "read_plan",
    "sweep_folder",
    "trial_config",
    "trial_run_name",
    "write_plan",
]

PLAN_FILE = "study_sweep.json"


@dataclass
class SweepPlan:
    """What a sweep needs to run, or to be resumed (written as ``<folder>/study_sweep.json``)."""

    name: str
    config: str  # the study config, JSON
    space: str  # the search space, JSON
    space_path: str
    data_dir: str
    trials: int
    parent_run_id: str
    starts: dict[str, dict] = field(default_factory=dict)  # strategy -> {"checkpoint": path, "run_id": id}

    def study_config(self) -> StudyConfig:
        return StudyConfig.model_validate_json(self.config)

    def search_space(self) -> SearchSpace:
        return SearchSpace.model_validate_json(self.space)


def sweep_folder(config: StudyConfig, name: str) -> Path:
    """``<sweep.storage>/<name>``, a local (or shared, mounted) folder."""
    storage = config.sweep.storage
    if "://" in storage:
        raise ConfigError(f"sweep.storage '{storage}': sweeps keep their state in a local (or shared, mounted) folder")
    return Path(storage).resolve() / name


def plan_folder(plan: SweepPlan) -> Path:
    return sweep_folder(plan.study_config(), plan.name)


def trial_run_name(plan: SweepPlan, trial_id: str) -> str:
    """A trial's training run (its folder and MLflow run): ``<sweep name>-<trial id>``."""
    return f"{plan.name}-{trial_id}"


def gpus_per_worker(config: StudyConfig) -> float:
    """``sweep.gpus_per_worker``, else 1 when the Ray cluster has GPUs, else 0."""
    import ray

    if config.sweep.gpus_per_worker is not None:
        return config.sweep.gpus_per_worker
    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def trial_config(plan: SweepPlan, params: dict) -> tuple[StudyConfig, str]:
    """A trial's config (sampled values, the sweep's resources and trial storage) and strategy."""
    config, strategy = plan.search_space().trial_config(plan.study_config(), params)
    raw = config.model_dump(mode="json")
    sweep = config.sweep
    raw["train"] |= {
        "workers": sweep.workers_per_trial,
        "cpus_per_worker": sweep.cpus_per_worker,
        "use_gpu": bool(gpus_per_worker(config)),
        "storage": str(plan_folder(plan) / "trials"),
    }
    return StudyConfig.model_validate(raw), strategy


def write_plan(plan: SweepPlan, folder: Path) -> None:
    write_json(asdict(plan), folder / PLAN_FILE)


def read_plan(folder: str | Path) -> SweepPlan:
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: no {PLAN_FILE}; not a sweep folder made by 'study sweep'")
    return SweepPlan(**json.loads(path.read_text()))
