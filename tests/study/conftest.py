"""Fixtures shared by the study tests: a tiny study with a train section and its generated data set, and the
miniature reproduction and sweep that run on it (their tests, and the MLflow UI's, read them)."""

import pytest
import yaml

from study.config import StudyConfig
from study.data.generate import generate
from study.evaluation.reproduce import reproduce
from study.sweeps.driver import sweep
from tests.helpers import FINETUNE_SPACE, REPRODUCED_STRATEGIES, TRAIN_CONFIG, sweep_config, write


@pytest.fixture(scope="session")
def train_study(tmp_path_factory, ray_session):
    """The config (runs and MLflow in a temporary folder) and its generated data set."""
    folder = tmp_path_factory.mktemp("train")
    raw = yaml.safe_load(TRAIN_CONFIG)
    raw["train"]["storage"] = str(folder / "runs")
    raw["tracking"]["uri"] = f"sqlite:///{folder / 'mlflow.db'}"
    config = StudyConfig.model_validate(raw)
    generate(config, folder / "data")
    return config, folder / "data"


@pytest.fixture(scope="session")
def reproduction(train_study, tmp_path_factory):
    """``study reproduce`` of five strategies, one seed: (config, report folder, Table 1's rows)."""
    config, data = train_study
    report = config.report.model_copy(update={"strategies": REPRODUCED_STRATEGIES})
    config = config.model_copy(update={"report": report})
    out = tmp_path_factory.mktemp("report")
    return config, out, reproduce(config, data, out)


@pytest.fixture(scope="session")
def finetune_sweep(train_study, tmp_path_factory):
    """A 3-trial fine-tune sweep (in-process trials): (config, SweepResult)."""
    folder = tmp_path_factory.mktemp("sweep")
    config = sweep_config(train_study, folder)
    space = write(folder, "finetune.yaml", FINETUNE_SPACE)
    return config, sweep(config, space, trials=3, data_dir=train_study[1])
