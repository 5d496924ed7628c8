"""``study reproduce --dry-run``: the resolved settings and the planned runs, checked against the paper."""

import yaml

from study.cli import main


def dry_run(capsys, preset: str) -> dict:
    assert main(["reproduce", "--preset", preset, "--dry-run"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_the_demo_plans_eight_strategies_for_three_seeds(capsys):
    document = dry_run(capsys, "demo")
    runs = document["runs"]
    assert len(runs) == 24 and [r["seed"] for r in runs[::8]] == [0, 1, 2]
    assert [r["strategy"] for r in runs[:8]] == document["settings"]["report"]["strategies"]
    assert next(r for r in runs if r["strategy"] == "finetune_bce")["init"] == "baseline"
    assert next(r for r in runs if r["strategy"] == "randomized_finetune")["init"] == "randomized_baseline"
    assert document["settings"]["data"]["fluoro"]["noise"]["dose"] == [2e4, 2e5]
    assert document["settings"]["data"]["cohort"]["subjects"]["novel_subject"] >= 8


def test_the_paper_dry_run_states_the_papers_settings(capsys):
    """Section 3.1 and Table 1 of the paper, read from the printed plan (not from the preset file)."""
    document = dry_run(capsys, "paper")
    settings, runs = document["settings"], document["runs"]
    data, train = settings["data"], settings["train"]
    assert data["cohort"]["subjects"]["train"] == 80 and data["cohort"]["subjects"]["novel_subject"] == 10
    assert data["views"]["train"] + data["views"]["novel_view"] == 100  # 100 DRRs per CT ...
    assert 80 * data["views"]["novel_view"] == 1600 and 10 * data["views"]["novel_subject"] == 1000  # ... Table 1's
    assert data["detector"]["sdd"] == 1020.0 and data["image_size"] == 256
    loss = train["loss"]
    assert loss["pos_weight"] is None  # plain BCEWithLogitsLoss
    assert (loss["solver"], loss["unrolled_optimizer"], loss["unrolled_iterations"]) == ("unrolled", "adam", 100)
    assert loss["unrolled_bounds"] and loss["soft_argmax_input"] == "probabilities"
    assert train["checkpoint"] == "last"  # evaluated at the end of training
    epochs = {r["strategy"]: sum(p["epochs"] for p in r["phases"]) for r in runs}
    assert epochs == {
        "baseline": 28,
        "composite": 28,
        "pose_only": 28,
        "finetune": 1,
        "finetune_bce": 1,
        "finetune_landmark": 1,
        "randomized_baseline": 28,  # ours: the sim-to-real twins
        "randomized_finetune": 1,
    }
    assert {p["learning_rate"] for r in runs for p in r["phases"]} == {0.001}  # one learning rate
    assert len(runs) == 8 * len(settings["report"]["seeds"])
