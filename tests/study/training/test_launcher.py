"""Where ``study train`` trains: in process on a machine without GPUs (no Ray), else as the config or caller says."""

import pytest
import torch

from study.config import ConfigError, load_config
from study.training.driver import resolve_launcher


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine trains on Ray Train by default")
def test_auto_trains_in_process_on_a_machine_without_gpus(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_launcher(load_config("demo")) == "process"


@pytest.mark.parametrize("launcher", ["process", "ray_train"])
def test_the_config_or_the_caller_forces_a_launcher(launcher):
    assert resolve_launcher(load_config("demo", [f"train.launcher={launcher}"])) == launcher
    assert resolve_launcher(load_config("demo"), launcher) == launcher


def test_an_unknown_launcher_is_refused():
    with pytest.raises(ConfigError, match="launcher 'slurm': expected one of auto, process, ray_train"):
        resolve_launcher(load_config("demo"), "slurm")
    with pytest.raises(ConfigError, match=r"train\.launcher"):
        load_config("demo", ["train.launcher=slurm"])
