"""The sim-to-real table from synthetic per-image records (no training)."""

import numpy as np
import pytest
import yaml

from components.anatomy import PAPER
from study.config import StudyConfig
from study.evaluation.comparisons import compare_strategies
from study.evaluation.sim_to_real import CLEAN, models, sim_to_real, sim_to_real_markdown
from study.evaluation.table import DIVERGED, TRIVIAL, Outcome, table_1
from tests.helpers import TRAIN_CONFIG

SUBJECTS, VIEWS = 6, 4


@pytest.fixture(scope="module")
def config() -> StudyConfig:
    raw = yaml.safe_load(TRAIN_CONFIG)
    raw["report"] = {"bootstrap_resamples": 200}
    return StudyConfig.model_validate(raw)


def records(scale: float, fluoro_factor: float, seed: int) -> list[dict]:
    """Argmax records of novel_view (subjects 0-2), novel_subject (3-5) and their fluoro twins (the same subject
    and view), whose errors are ``fluoro_factor`` times the clean ones."""
    rng = np.random.default_rng(seed)
    out = []
    for subject in range(SUBJECTS):
        split = "novel_view" if subject < SUBJECTS // 2 else "novel_subject"
        for view in range(VIEWS):
            errors = scale * np.abs(rng.normal(size=8)) * (1 + subject / 4)
            for name, factor in ((split, 1.0), ("fluoro", fluoro_factor)):
                record = {"split": name, "subject_id": f"s{subject}", "view_id": float(view), "method": "argmax"}
                record |= {f"error_px_{landmark}": float(factor * e) for landmark, e in zip(PAPER.names, errors)}
                out.append(record | {"rotation_deg": 1.0, "translation_mm": 2.0, "mtre_mm": 3.0})
    return out


def study(randomized_div: bool = False) -> list[Outcome]:
    """Two seeds of a baseline that fails on fluoro (4x) and its randomized twin that does not (1.25x)."""
    outcomes = []
    for seed in range(2):
        outcomes.append(Outcome("baseline", seed, records(1.0, 4.0, seed)))
        div = "did not learn" if randomized_div else None
        outcomes.append(Outcome("randomized_baseline", seed, records(1.2, 1.25, 10 + seed), div))
    return outcomes


def test_models_pair_each_strategy_with_its_randomized_twin():
    assert models(["baseline", "finetune", "randomized_finetune", "randomized_baseline", "composite"]) == [
        "baseline",
        "randomized_baseline",
        "finetune",
        "randomized_finetune",
    ]
    assert models(["baseline", "finetune"]) == []


def test_the_gap_is_fluoro_against_the_same_clean_images(config):
    table = sim_to_real(study(), records(3.0, 1.0, 99), config)
    gaps = {g["strategy"]: g for g in table["gaps"]}
    assert gaps["baseline"]["ratio"] == pytest.approx(4.0) and gaps["baseline"]["ratio_low"] == pytest.approx(4.0)
    assert gaps["randomized_baseline"]["ratio"] == pytest.approx(1.25)
    assert gaps["baseline"]["images"] == SUBJECTS * VIEWS and gaps["baseline"]["subjects"] == SUBJECTS
    clean = gaps["baseline"]["mean_b"]
    assert gaps["baseline"]["difference"] == pytest.approx(3 * clean)
    assert table["strategies"] == ["baseline", "randomized_baseline", TRIVIAL]


def test_the_clean_column_is_table_1_over_both_clean_splits(config):
    outcomes, trivial = study(), records(3.0, 1.0, 99)
    rows = {(r["split"], r["strategy"]): r for r in sim_to_real(outcomes, trivial, config)["rows"]}
    merged = [
        Outcome(o.strategy, o.seed, [r | {"split": CLEAN} for r in o.records if r["split"] != "fluoro"])
        for o in outcomes
        if o.strategy == "baseline"
    ]
    expected = table_1(merged, None, config, (CLEAN,))[0]
    assert rows[(CLEAN, "baseline")]["mean"] == pytest.approx(expected["mean"])
    assert rows[(CLEAN, TRIVIAL)]["mean"] == pytest.approx(rows[("fluoro", TRIVIAL)]["mean"])  # same points


def test_markdown_lists_every_model_and_the_twins(config):
    outcomes = study()
    comparisons = compare_strategies(outcomes, config, config.data.test_splits())
    text = sim_to_real_markdown(sim_to_real(outcomes, records(3.0, 1.0, 99), config), comparisons)
    lines = text.splitlines()
    assert any(line.startswith("| baseline | clean DRRs |") for line in lines)
    assert any(line.startswith("| baseline | randomized |") for line in lines)
    assert any(line.startswith("| trivial | - |") for line in lines)
    assert sum(line.startswith("| fluoro | randomized_baseline | baseline |") for line in lines) == 1


def test_a_twin_that_never_learned_is_div(config):
    table = sim_to_real(study(randomized_div=True), records(3.0, 1.0, 99), config)
    text = sim_to_real_markdown(table, [])
    row = next(line for line in text.splitlines() if line.startswith("| baseline | randomized |"))
    assert row.count(DIVERGED) == 6  # four splits and the gap's two columns


def test_nothing_without_a_fluoro_split_or_a_twin(config):
    clean_only = config.model_copy(update={"data": config.data.model_copy(update={"fluoro": None})})
    assert sim_to_real(study(), records(3.0, 1.0, 99), clean_only) == {}
    assert sim_to_real([o for o in study() if o.strategy == "baseline"], records(3.0, 1.0, 99), config) == {}
