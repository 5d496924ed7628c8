"""Fixtures shared by the study tests: a tiny study with a train section and its generated data set."""

import pytest
import yaml

from study.config import StudyConfig
from study.data.generate import generate
from tests.helpers import TRAIN_CONFIG


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
