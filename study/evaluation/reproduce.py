"""``study reproduce``: the config's strategies on the same data and seeds, then Table 1 and the comparisons.

Every strategy of ``report.strategies`` (default: all of ``train``'s) is trained (or its finished
run reused) for every training seed of ``report.seeds``, as child runs of one parent MLflow run;
each run's checkpoint (``train.checkpoint``: the end of training by default, as the paper) is
evaluated on the test splits. Everything reported is computed only from the per-image records,
which are saved as CSV (``per_image/<strategy>-seed<k>.csv``, ``per_image/trivial.csv``), so
anyone can recompute it:

- ``table1.md`` / ``.csv`` / ``.json``: Table 1 (``study.evaluation.table``), with the trivial
  predictor's row and DIV footnotes;
- ``comparison.md`` / ``.json``: the paper's Table 1 beside ours, the comparisons with their
  intervals and tests, and the paper's claims with verdicts (``study.evaluation.comparisons``);
- ``sim_to_real.md`` / ``.json`` (with a fluoro split and randomized twins): clean-trained and
  randomized models on the clean test views and on the same views through the fluoroscope
  (``study.evaluation.sim_to_real``).

In MLflow, the parent run holds these files (``table1/``), the per-image CSVs (``per_image/``),
Table 1 and the comparisons as tables (``log_table``) and the comparisons as metrics; each child
logs its test metrics (``<split>_rmse_px``, ...) against the split's dataset and its model.

With ``report.cross_validation`` (``leave_one_subject_out``) every strategy and seed is trained
once per fold, each fold holding one training subject out and tested on it, and Table 1 and the
comparisons pool the folds (``study.evaluation.cross_validation``); ``folds.md`` / ``.csv`` give
each fold's result, the per-image CSVs are per fold (``per_image/<strategy>-seed<k>-fold<n>.csv``,
``per_image/trivial-fold<n>.csv``), and every fold's run is a child of the parent run, tagged with
its fold and held-out subject.

``plan`` lists the runs without training anything (``study reproduce --dry-run``).
"""

import math
import time
from pathlib import Path

import yaml

from components.anatomy import LandmarkSet
from components.dataset import TEST_SPLITS
from components.manifest import read_manifest
from study import console
from study.config import ConfigError, FoldConfig, StudyConfig
from study.data.generate import default_out_dir, generate
from study.evaluation.comparisons import claims, compare_strategies, comparison_markdown, comparisons_markdown
from study.evaluation.cross_validation import (
    fold_config,
    fold_rows,
    folds,
    folds_markdown,
    pooled_outcomes,
    with_fold_spread,
)
from study.evaluation.measure import evaluate_checkpoint, log_evaluation, trivial_records
from study.evaluation.plots import error_cdf_plot, per_landmark_plot, training_curves_plot
from study.evaluation.sim_to_real import sim_to_real, sim_to_real_markdown
from study.evaluation.table import TRIVIAL, Outcome, footnotes, markdown, table_1
from study.figures import prediction_examples
from study.files import read_csv, write_csv, write_json, write_text
from study.tracking.datasets import log_splits
from study.tracking.params import study_params
from study.tracking.runs import Tracker
from study.training.driver import train
from study.training.run_folder import TrainResult

__all__ = ["default_report_folder", "dry_run", "landmark_summaries", "plan", "reproduce", "why_div", "write_plots"]


def with_training_seed(config: StudyConfig, seed: int) -> StudyConfig:
    return config.model_copy(update={"train": config.train.model_copy(update={"seed": seed})})


def default_report_folder(config: StudyConfig) -> Path:
    return Path("reports") / config.name


def seeds_of(config: StudyConfig) -> list[int]:
    return config.report.seeds or [config.training_seed()]


def folds_of(config: StudyConfig) -> list[FoldConfig | None]:
    """The folds of a cross-validation, or ``[None]``: the data set's fixed splits."""
    return folds(config) if config.report.cross_validation is not None else [None]


def run_config(config: StudyConfig, fold: FoldConfig | None, seed: int) -> StudyConfig:
    """The config of one run: the fold's (if any), with the training seed."""
    return with_training_seed(fold_config(config, fold) if fold is not None else config, seed)


def number_of(fold: FoldConfig | None) -> int | None:
    return fold.number if fold is not None else None


def file_name(outcome: Outcome) -> str:
    """The per-image CSV of an outcome: ``<strategy>-seed<k>``, ``trivial``; ``-fold<n>`` for a fold's."""
    name = TRIVIAL if outcome.strategy == TRIVIAL else f"{outcome.strategy}-seed{outcome.seed}"
    return name + (f"-fold{outcome.fold.number}" if outcome.fold is not None else "") + ".csv"


def planned_runs(config: StudyConfig) -> list[tuple[int, FoldConfig | None, str]]:
    """(training seed, fold or None, strategy) of every run a reproduction trains: seeds, then folds, then
    strategies."""
    if config.train is None:
        raise ConfigError(f"config '{config.name}': reproduce needs a train section")
    strategies = config.reported_strategies()
    return [(seed, fold, name) for seed in seeds_of(config) for fold in folds_of(config) for name in strategies]


def plan(config: StudyConfig) -> list[dict]:
    """The runs a reproduction trains, in order: ``seed``, ``strategy``, its run ``name``, ``init`` and its
    ``phases``; in a cross-validation also ``fold``, ``held_out`` and ``val``."""
    runs = []
    for seed, fold, name in planned_runs(config):
        strategy = config.train.strategies[name]
        run = {"seed": seed, "strategy": name, "name": run_config(config, fold, seed).run_name(name)}
        run["init"] = strategy.init
        if fold is not None:
            run |= {"fold": fold.number, "held_out": list(fold.held_out), "val": fold.val}
        run["phases"] = [phase.model_dump(mode="json", exclude_none=True) for phase in strategy.phases]
        runs.append(run)
    return runs


def dry_run(config: StudyConfig) -> str:
    """YAML of the resolved config (``settings``) and of the runs ``reproduce`` would train (``runs``)."""
    document = {"settings": config.model_dump(mode="json"), "runs": plan(config)}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=120)


def why_div(result: TrainResult, config: StudyConfig, trivial_val_rmse: float) -> str | None:
    """Why a run is DIV, or None when it learned (see ``study.evaluation.table``)."""
    which = config.train.checkpoint
    if result.status == "diverged":
        return f"its loss diverged in epoch {result.epochs} (non-finite, or above the divergence factor)"
    if result.checkpoint(which) is None:
        return "it left no checkpoint"
    val = result.checkpoint_metrics(which).get("val_rmse_px", math.nan)
    if not (math.isfinite(val) and val < trivial_val_rmse):
        return f"its {which} val RMSE {val:.2f} px is no better than the trivial predictor's {trivial_val_rmse:.2f} px"
    return None


def reproduce(config: StudyConfig, data_dir: str | Path | None = None, out_dir: str | Path | None = None) -> list[dict]:
    """Train and evaluate the strategies for every seed (and fold); write, print and log Table 1 and the
    comparisons; returns Table 1's rows."""
    runs = planned_runs(config)
    data_dir = Path(data_dir or default_out_dir(config))
    out_dir = Path(out_dir or default_report_folder(config))
    (out_dir / "per_image").mkdir(parents=True, exist_ok=True)
    generate(config, data_dir)
    tracker = Tracker(config)
    parent = start_parent_run(config, tracker, data_dir)
    which, seeds = config.train.checkpoint, seeds_of(config)
    landmarks = config.data.landmarks.landmark_set()
    trivial, trivial_val = [], {}  # the trivial predictor's outcome and val RMSE per fold (by number; None: none)
    for fold in folds_of(config):
        records, trivial_val[number_of(fold)] = trivial_records(run_config(config, fold, seeds[0]), data_dir)
        path = out_dir / "per_image" / file_name(Outcome(TRIVIAL, 0, None, fold=fold))
        trivial.append(Outcome(TRIVIAL, 0, read_csv(write_csv(records, path)), fold=fold))
    outcomes, summaries, checkpoints, histories = [], {}, {}, {}
    started = time.monotonic()
    for count, (seed, fold, strategy) in enumerate(runs, 1):
        label = Outcome(strategy, seed, None, fold=fold).label()
        elapsed = console.format_duration(time.monotonic() - started)
        of_fold = f", fold {fold.number}/{len(trivial)} ({', '.join(fold.held_out)} held out)" if fold else ""
        console.say(
            f"reproduce: run {count}/{len(runs)}, strategy '{strategy}', training seed {seed}{of_fold}; "
            f"{elapsed} elapsed"
        )
        seeded = run_config(config, fold, seed)
        result = train(seeded, strategy, data_dir, parent_run_id=parent)
        tracker.set_tags(result.run_id, {"mlflow.parentRunId": parent})  # also a reused, finished run
        histories[label] = {
            key: [(m.step, m.value) for m in tracker.client.get_metric_history(result.run_id, key)]
            for key in ("train_loss", "val_rmse_px")
        }
        div, checkpoint = why_div(result, config, trivial_val[number_of(fold)]), result.checkpoint(which)
        records = None
        if checkpoint is not None:
            records, summary = evaluate_checkpoint(checkpoint, seeded, data_dir)
            path = out_dir / "per_image" / file_name(Outcome(strategy, seed, None, fold=fold))
            records = read_csv(write_csv(records, path))
            log_evaluation(tracker, result.run_id, summary, data_dir)
            if div is None:
                summaries.setdefault(strategy, summary)
                checkpoints.setdefault(number_of(fold), {}).setdefault(strategy, checkpoint)
        if div is not None:
            tracker.set_tags(result.run_id, {"study.div": div})
        outcomes.append(Outcome(strategy, seed, records, div, fold))

    folded = config.report.cross_validation is not None
    splits = [s for s in config.data.test_splits() if any(r["split"] == s for t in trivial for r in t.records)]
    if folded:  # Table 1 and the comparisons on each seed's folds pooled; each fold alone in folds.md
        pooled, trivial_pooled = pooled_outcomes(outcomes), [r for t in trivial for r in t.records]
    else:
        pooled, trivial_pooled = outcomes, trivial[0].records
    rows = table_1(pooled, trivial_pooled, config, splits)
    notes = footnotes(outcomes, config, splits)
    comparisons = compare_strategies(pooled, config, splits)
    verdicts = claims(pooled, comparisons, config, splits)
    files = []
    if folded:
        per_fold = fold_rows(outcomes, trivial, config, splits)
        rows = with_fold_spread(rows, per_fold)
        files += [
            write_text(folds_markdown(per_fold, splits, config.reported_strategies(), seeds), out_dir / "folds.md"),
            write_csv(per_fold, out_dir / "folds.csv"),
        ]
        summaries = landmark_summaries(rows, landmarks)  # the pooled per-landmark RMSEs, not one fold's
    table = markdown(rows, notes, seeds, which, landmarks, len(trivial) if folded else None)
    report = comparison_markdown(rows, comparisons, verdicts, config)
    files += [
        write_text(table, out_dir / "table1.md"),
        write_csv(rows, out_dir / "table1.csv"),
        write_json({"rows": rows, "footnotes": notes} | trivial_val_entry(trivial_val), out_dir / "table1.json"),
        write_text(report, out_dir / "comparison.md"),
        write_json({"comparisons": comparisons, "claims": verdicts}, out_dir / "comparison.json"),
    ]
    gap_table = sim_to_real(pooled, trivial_pooled, config, splits)
    if gap_table:
        gap_report = sim_to_real_markdown(gap_table, comparisons)
        files += [
            write_text(gap_report, out_dir / "sim_to_real.md"),
            write_json(gap_table, out_dir / "sim_to_real.json"),
        ]
    number = next(iter(checkpoints), None)  # None, or the first fold with a model that learned: on its subject
    shown = next((t.fold for t in trivial if number_of(t.fold) == number), None)
    examples = (TEST_SPLITS[-1], None) if shown is None else (splits[0], shown.held_out)
    models = checkpoints.get(number, {})
    files += write_plots(config, pooled, summaries, models, examples, histories, data_dir, out_dir)
    for path in files:
        tracker.log_file(parent, path, "table1")
    tracker.log_artifacts(parent, out_dir / "per_image", "per_image")
    tracker.client.log_table(parent, data=table_frame(rows), artifact_file="table1.json")
    tracker.client.log_table(parent, data=table_frame(comparisons), artifact_file="comparisons.json")
    if folded:
        tracker.client.log_table(parent, data=table_frame(per_fold), artifact_file="folds.json")
    for c in comparisons:
        prefix = f"{c['split']}_{c['a']}_vs_{c['b']}_"
        tracker.log_metrics(parent, {prefix + key: c[key] for key in ("difference", "low", "high", "p_value")}, step=0)
    tracker.set_tags(parent, {f"study.claim.{i + 1}": f"{v['claim']}: {v['verdict']}" for i, v in enumerate(verdicts)})
    tracker.end_run(parent, "FINISHED")
    console.say(table)
    console.say(comparisons_markdown(comparisons))
    console.say("\n".join(f"{v['claim']}: {v['verdict']} ({v['ours']})" for v in verdicts))
    if gap_table:
        console.say(gap_report)
    listed = [
        "table1.md",
        *(["folds.md"] if folded else []),
        "comparison.md",
        *(["sim_to_real.md"] if gap_table else []),
    ]
    console.say(f"reproduce: {out_dir} ({', '.join(listed)}, per_image/, plots)")
    console.say(f"reproduce: {tracker.link(parent)}")
    return rows


def write_plots(
    config: StudyConfig,
    outcomes: list[Outcome],
    summaries: dict[str, dict],
    models: dict[str, str],
    examples: tuple[str, list[str] | None],
    histories: dict[str, dict],
    data_dir: Path,
    out_dir: Path,
) -> list[Path]:
    """The plots of a reproduction: per-landmark RMSEs (``summaries``, by strategy), the first seed's error CDFs
    (``outcomes``), each strategy's model (``models``: its checkpoint) on the first images of ``examples`` (a
    split, and the subjects to draw or None: all), and the training curves (``histories``, by run)."""
    files, landmarks = [], config.data.landmarks.landmark_set()
    if summaries:
        seed = seeds_of(config)[0]
        first_seed = {o.strategy: o.records for o in outcomes if o.records is not None and o.seed == seed}
        files.append(per_landmark_plot(summaries, landmarks, out_dir / "per_landmark_rmse.png"))
        files.append(error_cdf_plot(first_seed, landmarks, out_dir / "error_cdf.png"))
        (split, subjects), camera, count = examples, config.data.render_camera(), config.report.examples or 4
        files.append(prediction_examples(models, camera, data_dir, split, out_dir / "examples.png", count, subjects))
    files.append(training_curves_plot(histories, out_dir / "training_curves.png"))
    return files


def start_parent_run(config: StudyConfig, tracker: Tracker, data_dir: Path) -> str:
    """The reproduction's parent MLflow run, with its params, description and splits; says what it runs."""
    strategies, seeds = config.reported_strategies(), seeds_of(config)
    params = study_params(config) | {"strategies": ",".join(strategies), "seeds": ",".join(map(str, seeds))}
    params.pop("seed", None)  # the training seeds are the children's
    description = (
        f"Reproduction of the paper's Table 1: strategies {', '.join(strategies)} for training seeds "
        f"{', '.join(map(str, seeds))} on data set {data_dir.name}, evaluated at the {config.train.checkpoint} "
        f"checkpoint on {', '.join(config.data.test_splits())}. Its children are the strategy runs. Artifacts: table1/ "
        "(Table 1, the comparisons with intervals, the paper's claims with verdicts, plots), per_image/ (the records "
        "everything is computed from) and the tables table1.json and comparisons.json."
    )
    cross_validation, fold_list = config.report.cross_validation, [f for f in folds_of(config) if f is not None]
    if cross_validation is not None:
        params |= {"cross_validation": cross_validation.kind, "folds": str(len(fold_list))}
        description += (
            f" Leave-one-subject-out cross-validation: {len(fold_list)} folds, each trained without one training "
            "subject and tested on it (its runs tagged study.fold and study.held_out); Table 1 pools the folds, "
            "table1/folds.md has each fold."
        )
    parent = tracker.start_run(f"{config.name}-reproduce", config, params, {"study.kind": "reproduce"}, description)
    manifest = read_manifest(data_dir)
    log_splits(tracker.client, parent, data_dir, manifest, ("train", "val", *config.data.test_splits()))
    console.say(f"reproduce: {tracker.link(parent)}")
    if cross_validation is not None:
        held_out = ", ".join(subject for fold in fold_list for subject in fold.held_out)
        unused = manifest["subjects"].get("novel_subject", [])
        console.say(
            f"reproduce: leave-one-subject-out, {len(fold_list)} folds (held out: {held_out})"
            + (f"; the {len(unused)} novel_subject subject(s) are in no fold and not reported" if unused else "")
        )
    return parent


def trivial_val_entry(trivial_val: dict[int | None, float]) -> dict:
    """``table1.json``'s trivial val RMSE: ``trivial_val_rmse_px``, or ``trivial_val_rmse_px_by_fold``."""
    if list(trivial_val) == [None]:
        return {"trivial_val_rmse_px": trivial_val[None]}
    return {"trivial_val_rmse_px_by_fold": {str(number): value for number, value in trivial_val.items()}}


def landmark_summaries(rows: list[dict], landmarks: LandmarkSet) -> dict[str, dict]:
    """What ``per_landmark_plot`` draws, from Table 1's rows (their per-landmark RMSEs, over the seeds): per
    strategy that learned, ``{split: {"argmax": {"rmse_px_<landmark>": ...}}}``."""
    summaries = {}
    for row in rows:
        if row["strategy"] != TRIVIAL and row["diverged"] < row["seeds"]:
            per_landmark = {f"rmse_px_{name}": row[f"L{i + 1}"] for i, name in enumerate(landmarks.names)}
            summaries.setdefault(row["strategy"], {})[row["split"]] = {"argmax": per_landmark}
    return summaries


def table_frame(rows: list[dict]):
    """Rows as a pandas DataFrame for ``log_table`` (lists, e.g. a per-seed column, as text)."""
    import pandas as pd

    return pd.DataFrame([{k: v if not isinstance(v, list | dict) else str(v) for k, v in r.items()} for r in rows])
