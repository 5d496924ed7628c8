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
  intervals and tests, and the paper's claims with verdicts (``study.evaluation.comparisons``).

In MLflow, the parent run holds these files (``table1/``), the per-image CSVs (``per_image/``),
Table 1 and the comparisons as tables (``log_table``) and the comparisons as metrics; each child
logs its test metrics (``<split>_rmse_px``, ...) against the split's dataset and its model.

``plan`` lists the runs without training anything (``study reproduce --dry-run``).
"""

import math
import time
from pathlib import Path

import yaml

from components import evaluation, training
from components.dataset import TEST_SPLITS
from components.manifest import read_manifest
from study import console
from study.config import ConfigError, StudyConfig
from study.data.generate import default_out_dir, generate
from study.evaluation.comparisons import claims, compare_strategies, comparison_markdown, comparisons_markdown
from study.evaluation.measure import evaluate_checkpoint, log_evaluation
from study.evaluation.plots import error_cdf_plot, per_landmark_plot, training_curves_plot
from study.evaluation.table import TRIVIAL, Outcome, footnotes, markdown, table_1
from study.figures import prediction_examples
from study.files import read_csv, write_csv, write_json, write_text
from study.tracking.datasets import log_splits
from study.tracking.params import study_params
from study.tracking.runs import Tracker
from study.training.data import split_columns, split_rows
from study.training.driver import train
from study.training.run_folder import TrainResult

__all__ = ["default_report_folder", "dry_run", "plan", "reproduce", "why_div"]


def with_training_seed(config: StudyConfig, seed: int) -> StudyConfig:
    return config.model_copy(update={"train": config.train.model_copy(update={"seed": seed})})


def default_report_folder(config: StudyConfig) -> Path:
    return Path("reports") / config.name


def seeds_of(config: StudyConfig) -> list[int]:
    return config.report.seeds or [config.training_seed()]


def plan(config: StudyConfig) -> list[dict]:
    """The runs a reproduction trains, in order: ``seed``, ``strategy``, ``init`` and its ``phases``."""
    if config.train is None:
        raise ConfigError(f"config '{config.name}': reproduce needs a train section")
    runs = []
    for seed in seeds_of(config):
        for name in config.reported_strategies():
            strategy = config.train.strategies[name]
            phases = [phase.model_dump(mode="json", exclude_none=True) for phase in strategy.phases]
            runs.append({"seed": seed, "strategy": name, "init": strategy.init, "phases": phases})
    return runs


def dry_run(config: StudyConfig) -> str:
    """YAML of the resolved config (``settings``) and of the runs ``reproduce`` would train (``runs``)."""
    document = {"settings": config.model_dump(mode="json"), "runs": plan(config)}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=120)


def trivial_records(config: StudyConfig, data_dir: Path) -> tuple[list[dict], float]:
    """The trivial predictor's per-image records on the test splits, and its val RMSE (px, pooled: what a run
    must beat by the selection metric's measure, ``val_rmse_px``)."""
    train_rows, camera = split_columns(data_dir, "train"), config.data.render_camera()
    landmarks, minimum = config.data.landmarks.landmark_set(), config.data.landmarks.min_for_registration
    records = []
    for split in config.data.test_splits():
        rows, columns = split_rows(data_dir, split), split_columns(data_dir, split)
        ids = {"subject_id": rows.subject_id, "view_id": rows.view_id, "split": rows.split}
        predicted = evaluation.mean_position_predictions(train_rows, columns, camera, minimum)
        per_image = evaluation.per_image_results(predicted, columns, ids, landmarks)
        records += [r for r in per_image if r["method"] == "argmax"]
    return records, training.mean_position_rmse(train_rows, split_columns(data_dir, "val"))


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
    """Train and evaluate the strategies for every seed; write, print and log Table 1 and the comparisons;
    returns Table 1's rows."""
    runs = plan(config)
    data_dir = Path(data_dir or default_out_dir(config))
    out_dir = Path(out_dir or default_report_folder(config))
    (out_dir / "per_image").mkdir(parents=True, exist_ok=True)
    generate(config, data_dir)
    tracker = Tracker(config)
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
    parent = tracker.start_run(f"{config.name}-reproduce", config, params, {"study.kind": "reproduce"}, description)
    log_splits(tracker.client, parent, data_dir, read_manifest(data_dir), ("train", "val", *config.data.test_splits()))
    console.say(f"reproduce: {tracker.link(parent)}")
    which = config.train.checkpoint
    trivial, trivial_val = trivial_records(config, data_dir)
    trivial = read_csv(write_csv(trivial, out_dir / "per_image" / f"{TRIVIAL}.csv"))
    outcomes, summaries, checkpoints, histories = [], {}, {}, {}
    started = time.monotonic()
    for count, run in enumerate(runs, 1):
        strategy, seed = run["strategy"], run["seed"]
        elapsed = console.format_duration(time.monotonic() - started)
        console.say(
            f"reproduce: run {count}/{len(runs)}, strategy '{strategy}', training seed {seed}; {elapsed} elapsed"
        )
        seeded = with_training_seed(config, seed)
        result = train(seeded, strategy, data_dir, parent_run_id=parent)
        tracker.set_tags(result.run_id, {"mlflow.parentRunId": parent})  # also a reused, finished run
        histories[f"{strategy} seed {seed}"] = {
            key: [(m.step, m.value) for m in tracker.client.get_metric_history(result.run_id, key)]
            for key in ("train_loss", "val_rmse_px")
        }
        div, checkpoint, records = why_div(result, config, trivial_val), result.checkpoint(which), None
        if checkpoint is not None:
            records, summary = evaluate_checkpoint(checkpoint, seeded, data_dir)
            records = read_csv(write_csv(records, out_dir / "per_image" / f"{strategy}-seed{seed}.csv"))
            log_evaluation(tracker, result.run_id, summary, data_dir)
            if div is None:
                summaries.setdefault(strategy, summary)
                checkpoints.setdefault(strategy, checkpoint)
        if div is not None:
            tracker.set_tags(result.run_id, {"study.div": div})
        outcomes.append(Outcome(strategy, seed, records, div))

    splits = config.data.test_splits()
    rows = table_1(outcomes, trivial, config, splits)
    notes = footnotes(outcomes, config, splits)
    comparisons = compare_strategies(outcomes, config, splits)
    verdicts = claims(outcomes, comparisons, config)
    table = markdown(rows, notes, seeds_of(config), which, config.data.landmarks.landmark_set())
    report = comparison_markdown(rows, comparisons, verdicts, config)
    files = [
        write_text(table, out_dir / "table1.md"),
        write_csv(rows, out_dir / "table1.csv"),
        write_json({"rows": rows, "footnotes": notes, "trivial_val_rmse_px": trivial_val}, out_dir / "table1.json"),
        write_text(report, out_dir / "comparison.md"),
        write_json({"comparisons": comparisons, "claims": verdicts}, out_dir / "comparison.json"),
    ]
    if summaries:
        first_seed = {o.strategy: o.records for o in outcomes if o.records is not None and o.seed == runs[0]["seed"]}
        landmarks = config.data.landmarks.landmark_set()
        files.append(per_landmark_plot(summaries, landmarks, out_dir / "per_landmark_rmse.png"))
        files.append(error_cdf_plot(first_seed, landmarks, out_dir / "error_cdf.png"))
        examples, camera = out_dir / "examples.png", config.data.render_camera()
        files.append(
            prediction_examples(checkpoints, camera, data_dir, TEST_SPLITS[-1], examples, config.report.examples or 4)
        )
    files.append(training_curves_plot(histories, out_dir / "training_curves.png"))
    for path in files:
        tracker.log_file(parent, path, "table1")
    tracker.log_artifacts(parent, out_dir / "per_image", "per_image")
    tracker.client.log_table(parent, data=table_frame(rows), artifact_file="table1.json")
    tracker.client.log_table(parent, data=table_frame(comparisons), artifact_file="comparisons.json")
    for c in comparisons:
        prefix = f"{c['split']}_{c['a']}_vs_{c['b']}_"
        tracker.log_metrics(parent, {prefix + key: c[key] for key in ("difference", "low", "high", "p_value")}, step=0)
    tracker.set_tags(parent, {f"study.claim.{i + 1}": f"{v['claim']}: {v['verdict']}" for i, v in enumerate(verdicts)})
    tracker.end_run(parent, "FINISHED")
    console.say(table)
    console.say(comparisons_markdown(comparisons))
    console.say("\n".join(f"{v['claim']}: {v['verdict']} ({v['ours']})" for v in verdicts))
    console.say(f"reproduce: {out_dir} (table1.md, comparison.md, per_image/, plots)")
    console.say(f"reproduce: {tracker.link(parent)}")
    return rows


def table_frame(rows: list[dict]):
    """Rows as a pandas DataFrame for ``log_table`` (lists, e.g. a per-seed column, as text)."""
    import pandas as pd

    return pd.DataFrame([{k: v if not isinstance(v, list | dict) else str(v) for k, v in r.items()} for r in rows])
