"""The command line as a person sees it: one-line errors, the study's lines on the terminal, the rest in study.log."""

import os
import re
import subprocess
import sys

import pytest

from study import console
from study.cli import build_parser, main
from tests.helpers import REPO


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {image_size: 3}\n")
    assert main(["generate", "--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {bad}") and "data.image_size" in error and "\n" not in error


def test_resume_takes_the_folder_only(capsys):
    assert main(["sweep", "--resume", "sweeps/x", "--preset", "demo"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --resume takes the sweep folder only: its config and search space are stored there"
    )


def test_an_unknown_search_space_lists_the_shipped_ones(tmp_path, capsys):
    arguments = ["sweep", "--preset", "demo", "--space", "finetuning", "--set", f"sweep.storage={tmp_path}"]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert "finetuning: neither a search space file nor a shipped search space" in error
    assert "composite, finetune, strategy" in error and "\n" not in error


@pytest.mark.parametrize(
    "command", ["generate", "preview", "train", "evaluate", "reproduce", "sweep", "predict", "demo"]
)
def test_every_command_takes_verbose(command):
    required = {
        "generate": ["--preset", "demo"],
        "preview": ["--data", "d"],
        "train": ["--preset", "demo", "--strategy", "baseline"],
        "evaluate": ["--run", "r"],
        "reproduce": ["--preset", "demo"],
        "predict": ["--model", "m", "image.png"],
    }
    args = build_parser().parse_args([command, *required.get(command, []), "--verbose"])
    assert args.verbose is True


STUDY_LINE = re.compile(r"^(data set: |rendering: )")


@pytest.mark.slow
@pytest.mark.timeout(900)  # above the two commands' 300 s each
def test_generate_shows_its_own_lines_and_logs_the_rest(tmp_path, tiny_config_path, ray_session):
    environment = os.environ | {"RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "study", "generate", "--config", str(tiny_config_path)]

    run = {"env": environment, "capture_output": True, "text": True, "timeout": 300}
    quiet = subprocess.run([*command, "--out", str(tmp_path / "quiet")], **run)
    assert quiet.returncode == 0, quiet.stderr
    lines = quiet.stdout.splitlines()
    assert lines and all(STUDY_LINE.match(line) for line in lines), quiet.stdout
    assert quiet.stderr == ""
    log = (tmp_path / "quiet" / console.LOG_NAME).read_text()
    assert "===== " in log and "study generate --config" in log
    assert re.search(r"Ray cluster|Ray instance", log), log[-2000:]  # Ray's own INFO lines, kept in the log

    one_subject = "--set=data.cohort.subjects={train: 1, val: 0, novel_subject: 0}"  # Ray's lines, at the least cost
    verbose = subprocess.run([*command, "--out", str(tmp_path / "verbose"), "--verbose", one_subject], **run)
    assert verbose.returncode == 0, verbose.stderr
    assert re.search(r"Ray cluster|Ray instance", verbose.stdout + verbose.stderr)
    assert not (tmp_path / "verbose" / console.LOG_NAME).exists()


@pytest.mark.slow
def test_a_diverged_run_says_so_and_where_it_is_recorded(train_study, tmp_path, capsys, monkeypatch):
    """The run diverges in its first epoch, whose line is its last. (A run on Ray Train relays its epochs to this
    terminal the same way: tests/study/training/test_driver.py, on its run of 'short'.)"""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config, data = train_study
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config.model_dump_json())  # JSON is YAML
    name = "exploding-from-the-cli"
    command = ["train", "--config", str(config_path), "--strategy", "exploding", "--data", str(data), "--name", name]
    assert main(command) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("data set: ") and lines[1].startswith(f"{name}: training 'exploding' in this process")
    assert lines[2].startswith("exploding epoch 1/2: diverged"), lines
    assert lines[3].startswith(f"{name}: diverged after 1 epoch(s)")
    assert lines[4].startswith(f"{name}: diverged (recorded as such in MLflow run ") and len(lines) == 5, lines
