"""Table 1, the comparisons and the claims' verdicts from synthetic per-image records (no training)."""

import math

import numpy as np
import pytest
import yaml

from components.anatomy import DEEPFLUORO, PAPER
from study.config import StudyConfig
from study.evaluation import paper
from study.evaluation.comparisons import claims, compare_strategies, comparison_markdown, default_pairs
from study.evaluation.reproduce import why_div
from study.evaluation.table import DIVERGED, TRIVIAL, Outcome, columns, footnotes, markdown, table_1
from study.training.run_folder import TrainResult
from tests.helpers import TRAIN_CONFIG

SUBJECTS, VIEWS = 8, 5


def config_of(landmarks: str) -> StudyConfig:
    raw = yaml.safe_load(TRAIN_CONFIG)
    raw["report"] = {"bootstrap_resamples": 200}
    raw["data"]["landmarks"] = landmarks
    return StudyConfig.model_validate(raw)


@pytest.fixture(scope="module")
def config() -> StudyConfig:
    return config_of("paper")


def records(scale: float, seed: int, factor_of_subject=None, landmarks=PAPER) -> list[dict]:
    """Argmax records of both test splits: errors ~ scale * |N(0, 1)| (times a per-subject factor), landmark k
    scaled by (k + 1) / 4 so that the landmarks differ; novel views 1.5x harder than novel subjects."""
    rng = np.random.default_rng(seed)
    count = len(landmarks)
    out = []
    for split, base in (("novel_view", 1.5), ("novel_subject", 1.0)):
        for subject in range(SUBJECTS):
            factor = factor_of_subject(subject) if factor_of_subject else 1.0
            for view in range(VIEWS):
                errors = factor * base * scale * np.abs(rng.normal(size=count)) * (np.arange(count) + 1) / 4
                record = {"split": split, "subject_id": f"s{subject}", "view_id": float(view), "method": "argmax"}
                record |= {f"error_px_{name}": float(e) for name, e in zip(landmarks.names, errors)}
                record |= {"rotation_deg": 1.0, "translation_mm": 2.0, "mtre_mm": 3.0}
                out.append(record)
    return out


def study(finetune_scale: float, pose_only_div: bool = True, landmarks=PAPER) -> list[Outcome]:
    """Three seeds of baseline, composite (2.2x), pose_only and finetune (``finetune_scale`` x baseline)."""
    outcomes = []
    for seed in range(3):
        outcomes.append(Outcome("baseline", seed, records(1.0, seed, landmarks=landmarks)))
        outcomes.append(Outcome("composite", seed, records(2.2, seed, landmarks=landmarks)))
        div = "did not learn" if pose_only_div else None
        outcomes.append(Outcome("pose_only", seed, records(9.0, 100 + seed, landmarks=landmarks), div))
        outcomes.append(Outcome("finetune", seed, records(finetune_scale, seed, landmarks=landmarks)))
    return outcomes


@pytest.mark.parametrize("landmarks", [PAPER, DEEPFLUORO], ids=lambda landmarks: landmarks.name)
def test_the_papers_mean_is_the_mean_of_its_per_landmark_rmses(landmarks):
    config = config_of(landmarks.name)
    one = [Outcome("baseline", 0, records(1.0, 0, landmarks=landmarks))]
    row = table_1(one, records(3.0, 9, landmarks=landmarks), config, splits=("novel_view",))[0]
    assert f"L{len(landmarks) + 1}" not in row
    landmarks = [row[f"L{i + 1}"] for i in range(len(landmarks))]
    assert row["mean"] == pytest.approx(np.mean(landmarks), rel=1e-12)
    assert row["pooled"] == pytest.approx(np.sqrt(np.mean(np.square(landmarks))), rel=1e-12)  # equal counts
    assert row["pooled"] > row["mean"] * 1.05  # the landmarks differ, so the two definitions do
    assert row["mean_low"] < row["mean"] < row["mean_high"]


@pytest.mark.parametrize("landmarks", [PAPER, DEEPFLUORO], ids=lambda landmarks: landmarks.name)
def test_cells_are_the_mean_and_sd_over_seeds_and_div_seeds_leave_the_row(landmarks):
    config = config_of(landmarks.name)
    outcomes = study(0.9, landmarks=landmarks)
    rows = {(r["split"], r["strategy"]): r for r in table_1(outcomes, records(3.0, 9, landmarks=landmarks), config)}
    per_seed = [table_1([o], None, config)[0]["mean"] for o in outcomes if o.strategy == "baseline"]
    baseline = rows[("novel_view", "baseline")]
    assert baseline["mean"] == pytest.approx(np.mean(per_seed)) and baseline["mean_sd"] == pytest.approx(
        np.std(per_seed, ddof=1)
    )
    assert rows[("novel_view", "pose_only")]["diverged"] == 3 and math.isnan(rows[("novel_view", "pose_only")]["mean"])
    assert rows[("novel_subject", TRIVIAL)]["seeds"] == 1
    text = markdown(list(rows.values()), footnotes(outcomes, config), [0, 1, 2], "last", landmarks)
    assert text.splitlines()[0] == "| " + " | ".join(["split", "strategy", *columns(landmarks)]) + " |"
    assert f"| L{len(landmarks)} | pooled |" in text.splitlines()[0]
    legend = ", ".join(f"L{i + 1} {name}" for i, name in enumerate(landmarks.names))
    assert (
        f"the mean of the {len(landmarks)} per-landmark RMSEs of the landmark set '{landmarks.name}' ({legend})" in text
    )
    pose_only_line = next(line for line in text.splitlines() if "| pose_only |" in line)
    assert pose_only_line.count(DIVERGED) == len(landmarks) + 7  # every column
    assert "[1] pose_only seed 0: DIV, did not learn; its mean RMSE: novel_view" in text
    assert "| novel_view | trivial |" in text


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (TrainResult("r", "s", "finished", 2, "b", {"val_rmse_px": 1.0}, {"val_rmse_px": 2.0}, None, "l"), None),
        (
            TrainResult("r", "s", "finished", 2, "b", {"val_rmse_px": 1.0}, {"val_rmse_px": 20.0}, None, "l"),
            "no better",
        ),
        (TrainResult("r", "s", "finished", 2, "b", {}, {"val_rmse_px": math.nan}, None, "l"), "no better"),
        (TrainResult("r", "s", "diverged", 2, "b", {}, {}, None, "l"), "diverged"),
        (TrainResult("r", "s", "finished", 2, None, {}, {}, None, None), "no checkpoint"),
    ],
)
def test_a_run_that_does_not_learn_is_div(config, result, expected):
    """Trivial predictor's val RMSE 12 px: a final val RMSE of 20 px (or NaN, or a diverged loss) is DIV."""
    reason = why_div(result, config, trivial_val_rmse=12.0)
    assert (reason is None) if expected is None else (expected in reason)


def test_comparisons_carry_intervals_and_per_subject_tests(config):
    comparisons = compare_strategies(study(0.8), config)
    pairs = {(c["split"], c["a"], c["b"]): c for c in comparisons}
    assert set(pairs) == {
        (s, a, "baseline") for s in ("novel_view", "novel_subject") for a in ("composite", "pose_only", "finetune")
    }
    finetune = pairs[("novel_subject", "finetune", "baseline")]
    assert finetune["high"] < 0 and finetune["low"] < finetune["difference"] < finetune["high"]
    assert finetune["subjects"] == SUBJECTS and finetune["p_value"] == pytest.approx(2 / 2**SUBJECTS)
    assert finetune["ratio"] == pytest.approx(0.8, rel=1e-9)  # the same draws, scaled
    assert pairs[("novel_view", "pose_only", "baseline")]["div"]


def test_default_pairs_compare_finetune_with_its_controls():
    names = ["baseline", "composite", "finetune", "finetune_bce", "finetune_landmark"]
    assert default_pairs(names) == [
        ("composite", "baseline"),
        ("finetune", "baseline"),
        ("finetune_bce", "baseline"),
        ("finetune_landmark", "baseline"),
        ("finetune", "finetune_bce"),
        ("finetune", "finetune_landmark"),
    ]


def verdicts(outcomes, config) -> dict[str, str]:
    return {row["claim"]: row["verdict"] for row in claims(outcomes, compare_strategies(outcomes, config), config)}


def test_a_change_to_the_numbers_flips_a_verdict(config):
    better, worse = verdicts(study(0.8), config), verdicts(study(1.25), config)
    claim = "fine-tune beats the baseline on novel_subject"
    assert better[claim] == "holds" and worse[claim] == "does not hold"
    assert better["composite is about 2.1-2.4x the baseline's error on novel_view"] == "holds"
    assert better["pose-only training is DIV"] == "holds"
    assert verdicts(study(0.8, pose_only_div=False), config)["pose-only training is DIV"] == "does not hold"
    assert better["baseline: novel subjects are easier than novel views"] == "holds"  # 1.0 vs 1.5 in records()


def test_an_effect_of_one_subject_is_inconclusive(config):
    outcomes = [Outcome("baseline", s, records(1.0, s)) for s in range(3)]
    outcomes += [
        Outcome("finetune", s, records(1.0, s, lambda subject: 0.7 if subject == 0 else 1.0)) for s in range(3)
    ]
    assert verdicts(outcomes, config)["fine-tune beats the baseline on novel_subject"] == "inconclusive"


def test_a_claim_about_a_strategy_that_never_learned_is_not_testable_and_says_why(config):
    outcomes = [
        o if o.strategy != "composite" else Outcome(o.strategy, o.seed, o.records, "did not learn") for o in study(0.8)
    ]
    rows = {row["claim"]: row for row in claims(outcomes, compare_strategies(outcomes, config), config)}
    ratio = rows["composite is about 2.1-2.4x the baseline's error on novel_view"]
    assert (ratio["verdict"], ratio["ours"]) == ("not testable", "composite DIV in 3/3 seeds")
    splits = rows["composite: novel subjects are easier than novel views"]
    assert (splits["verdict"], splits["ours"]) == ("not testable", "composite DIV in 3/3 seeds")
    assert rows["fine-tune beats the baseline on novel_view"]["verdict"] == "holds"  # the others are still tested


def test_comparison_report_sets_the_papers_table_beside_ours(config):
    outcomes = study(0.8)
    rows = table_1(outcomes, records(3.0, 9), config)
    comparisons = compare_strategies(outcomes, config)
    text = comparison_markdown(rows, comparisons, claims(outcomes, comparisons, config), config)
    assert "| novel_view | baseline | paper | 8.58 | 1.00 | 11.49 |" in text
    assert "| novel_subject | pose_only | paper | DIV |" in text
    assert text.count("| | | ours |") == 8
    assert "**holds**" in text and "## Comparisons" in text
    assert paper.TABLE_1["novel_view"]["finetune"][0] == 10.27
    assert "| split | strategy | source | mean | ÷ baseline | L1 |" in text and "| L8 |" in text


def test_a_study_of_another_set_compares_the_means_with_the_papers_not_the_landmarks():
    config = config_of("deepfluoro")
    outcomes = study(0.8, landmarks=DEEPFLUORO)
    rows = table_1(outcomes, records(3.0, 9, landmarks=DEEPFLUORO), config)
    comparisons = compare_strategies(outcomes, config)
    text = comparison_markdown(rows, comparisons, claims(outcomes, comparisons, config), config)
    assert "| split | strategy | source | mean | ÷ baseline |\n|---|---|---|---|---|\n" in text
    assert "| novel_view | baseline | paper | 8.58 | 1.00 |\n" in text
    assert "landmark set 'deepfluoro' is not the paper's 8: the means are compared" in text
    assert verdicts(outcomes, config)["fine-tune beats the baseline on novel_subject"] == "holds"
