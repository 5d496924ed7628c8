"""``study reproduce --dry-run``: the resolved settings and the planned runs, checked against the paper."""

import yaml

from study.cli import main


def dry_run(capsys, preset: str) -> dict:
    assert main(["reproduce", "--preset", preset, "--dry-run"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_the_demo_plans_six_strategies_for_three_seeds(capsys):
    document = dry_run(capsys, "demo")
    runs = document["runs"]
    assert len(runs) == 18 and [r["seed"] for r in runs[::6]] == [0, 1, 2]
    assert [r["strategy"] for r in runs[:6]] == document["settings"]["report"]["strategies"]
    assert next(r for r in runs if r["strategy"] == "finetune_bce")["init"] == "baseline"
    assert document["settings"]["data"]["cohort"]["subjects"]["novel_subject"] >= 8
