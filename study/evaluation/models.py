"""Where a trained model comes from: a checkpoint folder, or the ``best_checkpoint`` of an MLflow run.

The study config comes with it: every checkpoint of ``study train`` holds the config it was
trained with (a config given on the command line is used only for a checkpoint without one).
"""

from pathlib import Path

from components.model import load_checkpoint
from study.config import ConfigError, StudyConfig
from study.tracking.runs import Tracker

__all__ = ["resolve_model"]


def config_of_checkpoint(checkpoint: str | Path) -> StudyConfig | None:
    """The study config a checkpoint was trained with (None for a checkpoint that does not hold one)."""
    state = load_checkpoint(checkpoint)
    return StudyConfig.model_validate_json(state["config"]) if "config" in state else None


def resolve_model(reference: str, config: StudyConfig | None) -> tuple[Path, str | None, StudyConfig]:
    """(checkpoint folder, MLflow run id or None, study config) of a checkpoint path or an MLflow run id."""
    if Path(reference).exists():
        checkpoint, run_id = Path(reference), None
    else:
        tracker = Tracker.for_uri(config)
        checkpoint, run_id = tracker.download_checkpoint(reference), reference
    config = config_of_checkpoint(checkpoint) or config
    if config is None:
        raise ConfigError(f"{reference}: the checkpoint holds no study config; name one with --preset")
    return checkpoint, run_id, config
