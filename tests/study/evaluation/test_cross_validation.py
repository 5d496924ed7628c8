"""Leave-one-subject-out cross-validation: the folds, their runs, the trivial predictor of a fold, and Table 1
pooled over the folds (synthetic records and data set); then a whole cross-validated reproduction (slow)."""

import csv
import math

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from components import statistics
from components.anatomy import PAPER
from components.model import make_unet, save_checkpoint
from study.cli import main
from study.config import StudyConfig
from study.data.generate import cohort_splits
from study.evaluation.comparisons import compare_strategies
from study.evaluation.cross_validation import (
    fold_config,
    fold_rows,
    folds,
    folds_markdown,
    pooled_outcomes,
    with_fold_spread,
)
from study.evaluation.measure import trivial_records
from study.evaluation.reproduce import landmark_summaries, plan, reproduce, write_plots
from study.evaluation.table import DIVERGED, TRIVIAL, Outcome, footnotes, markdown, table_1
from study.tracking.runs import RUN_NAME_TAG
from study.training.data import run_columns, split_rows
from tests.helpers import CROSS_VALIDATION_CONFIG, write_dataset

SUBJECTS = ["phantom-00000", "phantom-00001", "phantom-00002", "phantom-00003"]
SPLITS = ("novel_view", "fluoro")


@pytest.fixture(scope="module")
def config() -> StudyConfig:
    return StudyConfig.model_validate(yaml.safe_load(CROSS_VALIDATION_CONFIG))


def test_one_fold_per_training_subject_in_the_cohorts_order(config):
    planned = folds(config)
    assert [s.subject_id for s in cohort_splits(config)["train"]] == SUBJECTS
    assert [(f.number, f.held_out, f.val) for f in planned] == [(k + 1, [s], "val") for k, s in enumerate(SUBJECTS)]
    raw = config.model_dump(mode="json")
    raw["data"]["cohort"]["subjects"]["val"] = 0  # no val subjects: a fold validates on its subjects' novel views
    assert {f.val for f in folds(StudyConfig.model_validate(raw))} == {"novel_view"}


def test_a_folds_runs_are_ordinary_runs_named_after_the_fold(config):
    fold = folds(config)[1]
    one = fold_config(config, fold)
    assert one.train.fold == fold and one.report.cross_validation is None
    assert StudyConfig.model_validate_json(one.model_dump_json()) == one  # what a training worker reads back
    assert one.run_name("baseline") == "loso-baseline-fold2"
    runs = plan(config.model_copy(update={"report": config.report.model_copy(update={"seeds": [5, 6]})}))
    assert len(runs) == 2 * 4 * 2  # seeds x folds x strategies
    assert [(r["seed"], r["fold"], r["strategy"]) for r in runs[:4]] == [
        (5, 1, "baseline"),
        (5, 1, "finetune_bce"),
        (5, 2, "baseline"),
        (5, 2, "finetune_bce"),
    ]
    assert runs[-1] | {"phases": None} == {
        "seed": 6,
        "strategy": "finetune_bce",
        "name": "loso-finetune_bce-fold4-seed6",
        "init": "baseline",
        "fold": 4,
        "held_out": ["phantom-00003"],
        "val": "val",
        "phases": None,
    }


def test_the_dry_run_lists_every_folds_runs(capsys):
    overrides = ["--set", "report.cross_validation=leave_one_subject_out", "--set", "report.seeds=[0]"]
    assert main(["reproduce", "--preset", "demo", *overrides, "--dry-run"]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    runs, strategies = document["runs"], document["settings"]["report"]["strategies"]
    assert document["settings"]["report"]["cross_validation"] == {"kind": "leave_one_subject_out"}
    assert len(runs) == 6 * len(strategies)  # the demo's 6 training subjects
    assert sorted({r["held_out"][0] for r in runs}) == [f"phantom-{i:05d}" for i in range(6)]
    assert {r["name"] for r in runs if r["fold"] == 3} == {f"demo-{s}-fold3" for s in strategies}


def test_a_folds_trivial_predictor_knows_only_its_training_rows(config, tmp_path):
    views = {
        "train": dict.fromkeys(SUBJECTS, 3),
        "novel_view": dict.fromkeys(SUBJECTS, 2),
        "fluoro": dict.fromkeys(SUBJECTS, 2),
        "val": {"phantom-00004": 4},
        "novel_subject": {"phantom-00005": 2},
    }
    data = write_dataset(tmp_path, config, views)
    for fold in folds(config):
        records, val_rmse = trivial_records(fold_config(config, fold), data)
        assert {(r["split"], r["subject_id"]) for r in records} == {(s, fold.held_out[0]) for s in SPLITS}
        train = split_rows(data, "train")
        others = ~np.isin(train.subject_id, fold.held_out)
        mean = train.landmarks_2d[others].mean(0)  # (8, 2): every landmark is visible
        predicted = np.array(
            [[r[f"predicted_{axis}_{name}"] for name in PAPER.names for axis in "uv"] for r in records]
        )
        assert np.allclose(predicted, mean.reshape(-1), atol=1e-4)
        val = split_rows(data, "val").landmarks_2d
        assert val_rmse == pytest.approx(np.sqrt(((val - mean) ** 2).sum(-1).mean()), rel=1e-6)


# --- pooling -----------------------------------------------------------------------------------------------------


def fold_records(subject: str, scale: float, seed: int) -> list[dict]:
    """Argmax records of one held-out subject on both test splits: errors ~ scale * |N(0, 1)|, landmark k scaled
    by (k + 1) / 4."""
    rng = np.random.default_rng([seed, sum(map(ord, subject))])
    out = []
    for split in SPLITS:
        for view in range(5):
            errors = scale * np.abs(rng.normal(size=8)) * (np.arange(8) + 1) / 4
            record = {"split": split, "subject_id": subject, "view_id": float(view), "method": "argmax"}
            record |= {f"error_px_{name}": float(e) for name, e in zip(PAPER.names, errors)}
            record |= {"rotation_deg": 1.0, "translation_mm": 2.0, "mtre_mm": 3.0 + view}
            out.append(record)
    return out


def fold_outcomes(config, div_folds: dict | None = None) -> tuple[list[Outcome], list[Outcome]]:
    """Baseline and fine-tune (0.8x) for seeds 0 and 1 on each of the 4 folds (fold k: 1 + k/4 times harder), and
    each fold's trivial predictor; ``div_folds[(strategy, seed)]``: the folds that are DIV."""
    div_folds = div_folds or {}
    outcomes, trivial = [], []
    for fold in folds(config):
        subject, hard = fold.held_out[0], 1 + fold.number / 4
        trivial.append(Outcome(TRIVIAL, 0, fold_records(subject, 5.0, 99), fold=fold))
        for seed in (0, 1):
            for strategy, scale in (("baseline", 1.0), ("finetune", 0.8)):
                div = "did not learn" if fold.number in div_folds.get((strategy, seed), ()) else None
                outcomes.append(Outcome(strategy, seed, fold_records(subject, hard * scale, seed), div, fold))
    return outcomes, trivial


def errors_of(records: list[dict], split: str) -> np.ndarray:
    chosen = [r for r in records if r["split"] == split]
    return np.array([[r[f"error_px_{name}"] for name in PAPER.names] for r in chosen])


def subjects_of(records: list[dict], split: str) -> np.ndarray:
    return np.array([r["subject_id"] for r in records if r["split"] == split])


def test_the_pooled_table_is_recomputed_by_hand_from_the_folds_records(config):
    outcomes, trivial = fold_outcomes(config)
    pooled = pooled_outcomes(outcomes)
    assert [(o.strategy, o.seed, o.div) for o in pooled] == [
        ("baseline", 0, None),
        ("finetune", 0, None),
        ("baseline", 1, None),
        ("finetune", 1, None),
    ]
    rows = table_1(pooled, [r for t in trivial for r in t.records], config, SPLITS)
    row = next(r for r in rows if (r["split"], r["strategy"]) == ("novel_view", "baseline"))
    by_seed = []  # each seed's records: its 4 folds', every image once
    for seed in (0, 1):
        records = [r for o in outcomes if (o.strategy, o.seed) == ("baseline", seed) for r in o.records]
        by_seed.append(errors_of(records, "novel_view"))
        assert sorted(set(subjects_of(records, "novel_view"))) == SUBJECTS and len(by_seed[-1]) == 4 * 5
    per_seed = [np.mean(np.sqrt(np.nanmean(errors**2, axis=0))) for errors in by_seed]  # the paper's mean
    assert row["mean"] == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert row["mean_sd"] == pytest.approx(np.std(per_seed, ddof=1), rel=1e-12)
    assert row["L8"] == pytest.approx(np.mean([np.sqrt(np.mean(e[:, 7] ** 2)) for e in by_seed]), rel=1e-12)
    assert row["mtre_mm"] == pytest.approx(5.0)  # the median of 3..7 mm, every fold alike
    # the interval: seeds, then held-out subjects (one per fold), then their images
    subjects = subjects_of([r for o in pooled[:1] for r in o.records], "novel_view")
    interval = statistics.paper_mean_interval(
        np.stack(by_seed), subjects, config.report.bootstrap_resamples, config.seed
    )
    assert (row["mean_low"], row["mean_high"]) == pytest.approx(interval, rel=1e-12)
    trivial_row = next(r for r in rows if (r["split"], r["strategy"]) == ("fluoro", TRIVIAL))
    pooled_trivial = errors_of([r for t in trivial for r in t.records], "fluoro")
    assert trivial_row["mean"] == pytest.approx(np.mean(np.sqrt(np.mean(pooled_trivial**2, axis=0))), rel=1e-12)


def test_the_per_fold_table_and_the_spread_of_the_fold_means(config):
    outcomes, trivial = fold_outcomes(config)
    per_fold = fold_rows(outcomes, trivial, config, SPLITS)
    assert len(per_fold) == 4 * len(SPLITS) * 3  # folds x splits x (baseline, finetune, trivial)
    means = []
    for fold in folds(config):
        row = next(r for r in per_fold if (r["fold"], r["split"], r["strategy"]) == (fold.number, "fluoro", "finetune"))
        assert row["held_out"] == fold.held_out[0]
        mine = [o for o in outcomes if o.fold == fold and o.strategy == "finetune"]
        by_seed = [statistics.paper_mean(errors_of(o.records, "fluoro")) for o in mine]
        assert row["mean"] == pytest.approx(np.mean(by_seed), rel=1e-12)
        means.append(row["mean"])
    rows = with_fold_spread(table_1(pooled_outcomes(outcomes), None, config, SPLITS), per_fold)
    row = next(r for r in rows if (r["split"], r["strategy"]) == ("fluoro", "finetune"))
    assert (row["folds"], row["fold_runs"], row["fold_runs_diverged"]) == (4, 8, 0)
    assert (row["fold_min"], row["fold_median"], row["fold_max"]) == pytest.approx(
        (min(means), np.median(means), max(means)), rel=1e-12
    )
    assert row["fold_sd"] == pytest.approx(np.std(means, ddof=1), rel=1e-12)
    assert means == sorted(means)  # fold k is harder than fold k - 1
    text = folds_markdown(per_fold, SPLITS, ["baseline", "finetune"], [0, 1])
    assert len([line for line in text.splitlines() if line.startswith("| fluoro | finetune |")]) == 4
    assert "| novel_view | trivial | 4 | phantom-00003 |" in text
    table = markdown(rows, [], [0, 1], "last", PAPER, folds=4)
    assert table.splitlines()[0].endswith("| success | folds |")
    assert f"| {min(means):.2f} / {np.median(means):.2f} / {max(means):.2f} |" in table
    assert "Leave-one-subject-out cross-validation, 4 folds" in table


def test_a_div_fold_leaves_its_subject_out_of_its_seeds_pool(config):
    outcomes, trivial = fold_outcomes(config, {("baseline", 1): {2}, ("finetune", 0): {1, 2, 3, 4}})
    pooled = {(o.strategy, o.seed): o for o in pooled_outcomes(outcomes)}
    assert set(subjects_of(pooled[("baseline", 1)].records, "novel_view")) == set(SUBJECTS) - {"phantom-00001"}
    assert pooled[("finetune", 0)].div == "DIV in all 4 folds" and pooled[("finetune", 0)].records is None
    notes = footnotes(outcomes, config, SPLITS)
    assert len(notes) == 5 and notes[0].startswith("finetune seed 0, fold 1 (phantom-00000 held out): DIV, did not")
    assert any(note.startswith("baseline seed 1, fold 2 (phantom-00001 held out): DIV") for note in notes)
    per_fold = fold_rows(outcomes, trivial, config, SPLITS)
    rows = with_fold_spread(table_1(list(pooled.values()), None, config, SPLITS), per_fold)
    baseline = next(r for r in rows if (r["split"], r["strategy"]) == ("novel_view", "baseline"))
    assert (baseline["seeds"], baseline["diverged"], baseline["fold_runs"], baseline["fold_runs_diverged"]) == (
        2,
        0,
        8,
        1,
    )
    table = markdown(rows, notes, [0, 1], "last", PAPER, folds=4)
    assert "(1 of 8 DIV)" in table
    fold_2 = next(r for r in per_fold if (r["fold"], r["split"], r["strategy"]) == (2, "novel_view", "baseline"))
    assert (fold_2["seeds"], fold_2["diverged"]) == (2, 1)  # its mean: seed 0 alone
    assert fold_2["mean"] == pytest.approx(
        statistics.paper_mean(errors_of(next(o for o in outcomes if o.fold == folds(config)[1]).records, "novel_view"))
    )
    assert not math.isnan(baseline["mean"])
    assert next(line for line in table.splitlines() if "| finetune |" in line).count(DIVERGED) == 1 + 15


def test_comparisons_pair_each_folds_models_on_their_own_subject(config):
    outcomes, _ = fold_outcomes(config)
    pooled = pooled_outcomes(outcomes)
    comparison = next(c for c in compare_strategies(pooled, config, SPLITS) if c["split"] == "novel_view")
    assert (comparison["a"], comparison["b"], comparison["subjects"]) == ("finetune", "baseline", 4)

    def by_seed(strategy):
        return np.stack([errors_of(o.records, "novel_view") for o in pooled if o.strategy == strategy])

    subjects = subjects_of(pooled[0].records, "novel_view")
    again = statistics.compare(
        by_seed("finetune"), by_seed("baseline"), subjects, config.report.bootstrap_resamples, config.seed, True
    )
    assert (comparison["difference"], comparison["low"], comparison["high"]) == pytest.approx(
        (again.difference, again.low, again.high), rel=1e-12
    )
    assert comparison["difference"] == pytest.approx(-0.2 * comparison["mean_b"], rel=1e-9)  # the same draws, x 0.8


def test_the_plots_of_a_cross_validation_draw_a_folds_model_on_its_subject(config, tmp_path):
    views = {"train": dict.fromkeys(SUBJECTS, 2), "novel_view": dict.fromkeys(SUBJECTS, 3), "val": {"phantom-00004": 2}}
    data = write_dataset(tmp_path / "data", config, views)
    settings = config.train.model
    checkpoint = save_checkpoint(
        tmp_path / "model", make_unet(settings, PAPER), settings, config.train.loss.decoding(), PAPER
    )
    outcomes, _ = fold_outcomes(config)
    pooled = pooled_outcomes(outcomes)
    rows = table_1(pooled, None, config, SPLITS)
    summaries = landmark_summaries(rows, PAPER)
    assert summaries["finetune"]["fluoro"]["argmax"]["rmse_px_R_ASIS"] == next(
        r["L8"] for r in rows if (r["split"], r["strategy"]) == ("fluoro", "finetune")
    )
    models, examples = {"baseline": checkpoint.parent}, ("novel_view", ["phantom-00002"])
    histories = {outcomes[0].label(): {"train_loss": [(1, 0.5), (2, 0.4)], "val_rmse_px": [(1, 3.0), (2, 2.5)]}}
    seeded = config.model_copy(update={"report": config.report.model_copy(update={"seeds": [0, 1]})})
    files = write_plots(seeded, pooled, summaries, models, examples, histories, data, tmp_path)
    assert [f.name for f in files] == ["per_landmark_rmse.png", "error_cdf.png", "examples.png", "training_curves.png"]
    assert all(f.stat().st_size > 1000 for f in files)


# --- a whole cross-validated reproduction (slow) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def loso(tmp_path_factory, ray_session):
    """``study reproduce`` of ``CROSS_VALIDATION_CONFIG``, twice: (config, folder, Table 1's rows, the child runs
    after the first reproduction, the rows of the second)."""
    folder = tmp_path_factory.mktemp("loso")
    raw = yaml.safe_load(CROSS_VALIDATION_CONFIG)
    raw["train"]["storage"] = str(folder / "runs")
    raw["tracking"]["uri"] = f"sqlite:///{folder / 'mlflow.db'}"
    config = StudyConfig.model_validate(raw)
    rows = reproduce(config, folder / "data", folder / "report")
    first = fold_runs(config)
    results = {path: path.stat().st_mtime_ns for path in (folder / "runs").glob("*/study_result.json")}
    again = reproduce(config, folder / "data", folder / "report")
    assert {path: path.stat().st_mtime_ns for path in (folder / "runs").glob("*/study_result.json")} == results
    return config, folder, rows, first, again


def fold_runs(config) -> dict[str, object]:
    """The strategy runs of the study by name."""
    client = MlflowClient(config.tracking.uri)
    experiment = client.get_experiment_by_name(config.name)
    runs = client.search_runs([experiment.experiment_id], "tags.`study.strategy` != ''")
    return {run.data.tags[RUN_NAME_TAG]: run for run in runs}


def read_csv(path) -> list[dict]:
    with open(path) as stream:
        return [r | {"view_id": float(r["view_id"])} for r in csv.DictReader(stream) if r["method"] == "argmax"]


@pytest.mark.slow
def test_four_folds_each_trained_and_validated_without_its_subject(loso):
    config, folder, _, runs, _ = loso
    assert sorted(runs) == sorted(f"loso-{s}-fold{k}" for s in ("baseline", "finetune_bce") for k in range(1, 5))
    client = MlflowClient(config.tracking.uri)
    parent = client.search_runs([runs["loso-baseline-fold1"].info.experiment_id], "tags.`study.kind` = 'reproduce'")
    for fold in folds(config):
        subject, others = fold.held_out[0], [s for s in SUBJECTS if s not in fold.held_out]
        for strategy in ("baseline", "finetune_bce"):
            tags = runs[f"loso-{strategy}-fold{fold.number}"].data.tags
            assert (tags["study.fold"], tags["study.held_out"]) == (str(fold.number), subject)
            assert tags["study.train_subjects"] == ",".join(others) and tags["study.val_subjects"] == "phantom-00004"
            assert tags["mlflow.parentRunId"] in {p.info.run_id for p in parent}
        # the fine-tune of a fold starts from that fold's baseline
        init = runs[f"loso-finetune_bce-fold{fold.number}"].data.tags["study.init"]
        assert init == str(folder / "runs" / f"loso-baseline-fold{fold.number}" / "latest_checkpoint")
        # the rows it trains on: the other subjects' train rows, all of them
        data, train = folder / "data", split_rows(folder / "data", "train")
        mine = run_columns(data, "train", fold)
        assert len(mine["pose"]) == 3 * config.data.views.train
        assert not {tuple(p) for p in mine["pose"]} & {tuple(p) for p in train.pose[train.subject_id == subject]}


@pytest.mark.slow
def test_the_pooled_table_comes_from_the_four_folds_records(loso):
    config, folder, rows, runs, _ = loso
    assert [(r["split"], r["strategy"]) for r in rows] == [
        (split, strategy) for split in SPLITS for strategy in ("baseline", "finetune_bce", TRIVIAL)
    ]  # no novel_subject: its subject is in no fold
    per_image = folder / "report" / "per_image"
    for strategy in ("baseline", "finetune_bce", TRIVIAL):
        records, div = [], 0
        for fold in folds(config):
            name = f"{TRIVIAL}-fold{fold.number}" if strategy == TRIVIAL else f"{strategy}-seed5-fold{fold.number}"
            mine = read_csv(per_image / f"{name}.csv")
            assert {(r["split"], r["subject_id"]) for r in mine} == {(s, fold.held_out[0]) for s in SPLITS}
            if strategy != TRIVIAL and "study.div" in runs[f"loso-{strategy}-fold{fold.number}"].data.tags:
                div += 1
            else:
                records += mine
        for split in SPLITS:
            row = next(r for r in rows if (r["split"], r["strategy"]) == (split, strategy))
            assert (row["fold_runs"], row["fold_runs_diverged"]) == (4, div)
            if div == 4:  # DIV in every fold: a DIV row, and a footnote per fold
                assert row["diverged"] == row["seeds"] == 1 and math.isnan(row["mean"])
                continue
            assert row["mean"] == pytest.approx(statistics.paper_mean(errors_of(records, split)), rel=1e-9)
            assert len(set(subjects_of(records, split))) == 4 - div
    table = (folder / "report" / "table1.md").read_text()
    notes = [line for line in table.splitlines() if line.startswith("[")]
    assert len(notes) == sum("study.div" in run.data.tags for run in runs.values())


@pytest.mark.slow
def test_the_per_fold_table_has_a_row_per_fold(loso):
    config, folder, rows, _, _ = loso
    with open(folder / "report" / "folds.csv") as stream:
        per_fold = list(csv.DictReader(stream))
    for split in SPLITS:
        for strategy in ("baseline", "finetune_bce", TRIVIAL):
            mine = [r for r in per_fold if (r["split"], r["strategy"]) == (split, strategy)]
            assert [(r["fold"], r["held_out"]) for r in mine] == [(str(k + 1), s) for k, s in enumerate(SUBJECTS)]
    trivial = [r for r in per_fold if (r["split"], r["strategy"]) == ("novel_view", TRIVIAL)]
    for fold, row in zip(folds(config), trivial):
        records = read_csv(folder / "report" / "per_image" / f"{TRIVIAL}-fold{fold.number}.csv")
        assert float(row["mean"]) == pytest.approx(statistics.paper_mean(errors_of(records, "novel_view")), rel=1e-9)
    means = [float(r["mean"]) for r in trivial]
    pooled = next(r for r in rows if (r["split"], r["strategy"]) == ("novel_view", TRIVIAL))
    assert (pooled["fold_min"], pooled["fold_median"], pooled["fold_max"]) == pytest.approx(
        (min(means), np.median(means), max(means)), rel=1e-9
    )
    text = (folder / "report" / "folds.md").read_text()
    assert len([line for line in text.splitlines() if line.startswith("| novel_view | baseline |")]) == 4
    client = MlflowClient(config.tracking.uri)
    experiment = client.get_experiment_by_name(config.name)
    parent = client.search_runs([experiment.experiment_id], "tags.`study.kind` = 'reproduce'")[0]
    assert parent.data.params["cross_validation"] == "leave_one_subject_out" and parent.data.params["folds"] == "4"
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "table1")}
    assert {"table1/folds.md", "table1/folds.csv", "table1/table1.md"} <= logged
    per_image = {a.path for a in client.list_artifacts(parent.info.run_id, "per_image")}
    assert f"per_image/{TRIVIAL}-fold4.csv" in per_image and "per_image/baseline-seed5-fold3.csv" in per_image


@pytest.mark.slow
def test_a_second_run_reuses_the_finished_folds(loso):
    config, _, rows, first, again = loso
    assert {name: run.info.run_id for name, run in fold_runs(config).items()} == {
        name: run.info.run_id for name, run in first.items()
    }
    np.testing.assert_equal(again, rows)  # the same models on the same images: the same Table 1
