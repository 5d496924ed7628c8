"""``study reproduce``: the paper's four strategies on the same data and seeds, then its Table 1.

Every strategy is trained (or its finished run reused) for every training seed of
``report.seeds``, as child runs of one parent MLflow run; each trained model is evaluated on the
test splits, and Table 1 (``study.evaluation.table``) is computed only from the per-image
records, which are saved as CSV (``per_image/<strategy>-seed<k>.csv``), so anyone can recompute it.
"""

import time
from pathlib import Path

from components.dataset import TEST_SPLITS
from study import console
from study.config import ConfigError, StudyConfig
from study.data.generate import default_out_dir, generate
from study.evaluation.measure import evaluate_checkpoint, metric_names
from study.evaluation.plots import error_cdf_plot, per_landmark_plot, training_curves_plot
from study.evaluation.table import markdown, table_1, wilcoxon_tests
from study.figures import prediction_examples
from study.files import read_csv, write_csv, write_json, write_text
from study.tracking import Tracker
from study.training.driver import train

__all__ = ["STRATEGIES", "default_report_folder", "reproduce"]

STRATEGIES = ("baseline", "composite", "pose_only", "finetune")


def with_training_seed(config: StudyConfig, seed: int) -> StudyConfig:
    return config.model_copy(update={"train": config.train.model_copy(update={"seed": seed})})


def default_report_folder(config: StudyConfig) -> Path:
    return Path("reports") / config.name


def reproduce(config: StudyConfig, data_dir: str | Path | None = None, out_dir: str | Path | None = None) -> list[dict]:
    """Train and evaluate the four strategies for every seed; write, print and log Table 1; returns its rows."""
    if config.train is None or any(s not in config.train.strategies for s in STRATEGIES):
        raise ConfigError(
            f"config '{config.name}': reproduce needs the strategies {', '.join(STRATEGIES)} in its train section"
        )
    data_dir = Path(data_dir or default_out_dir(config))
    out_dir = Path(out_dir or default_report_folder(config))
    (out_dir / "per_image").mkdir(parents=True, exist_ok=True)
    generate(config, data_dir)
    tracker = Tracker(config)
    parent = tracker.start_run(f"{config.name}-reproduce", config, {"study.kind": "reproduce"})
    seeds = config.report.seeds or [config.training_seed()]
    runs, summaries, checkpoints, histories = {}, {}, {}, {}
    started, total = time.monotonic(), len(seeds) * len(STRATEGIES)
    for seed_index, seed in enumerate(seeds):
        seeded = with_training_seed(config, seed)
        for step, strategy in enumerate(STRATEGIES, 1):
            elapsed = console.format_duration(time.monotonic() - started)
            count = seed_index * len(STRATEGIES) + step
            console.say(
                f"reproduce: run {count}/{total}, strategy '{strategy}', training seed {seed}; {elapsed} elapsed"
            )
            result = train(seeded, strategy, data_dir, parent_run_id=parent)
            tracker.set_tags(result.run_id, {"mlflow.parentRunId": parent})  # also a reused, finished run
            histories[f"{strategy} seed {seed}"] = {
                key: [(m.step, m.value) for m in tracker.client.get_metric_history(result.run_id, key)]
                for key in ("train_loss", "val_rmse_px")
            }
            if result.status == "diverged" or result.best_checkpoint is None:
                runs[(strategy, seed)] = None
                continue
            records, summaries[strategy] = evaluate_checkpoint(result.best_checkpoint, seeded, data_dir)
            path = write_csv(records, out_dir / "per_image" / f"{strategy}-seed{seed}.csv")
            tracker.log_metrics(result.run_id, metric_names(summaries[strategy]), step=0)
            runs[(strategy, seed)] = read_csv(path)
            checkpoints.setdefault(strategy, result.best_checkpoint)
    rows, tests = table_1(runs, config), wilcoxon_tests(runs)
    text = markdown(rows, tests)
    files = [
        write_text(text, out_dir / "table1.md"),
        write_csv(rows, out_dir / "table1.csv"),
        write_json({"rows": rows, "wilcoxon": tests}, out_dir / "table1.json"),
    ]
    if summaries:
        first_seed = {k[0]: v for k, v in runs.items() if v is not None and k[1] == seeds[0]}
        files.append(per_landmark_plot(summaries, out_dir / "per_landmark_rmse.png"))
        files.append(error_cdf_plot(first_seed, out_dir / "error_cdf.png"))
        examples, camera = out_dir / "examples.png", config.data.render_camera()
        files.append(
            prediction_examples(checkpoints, camera, data_dir, TEST_SPLITS[-1], examples, config.report.examples or 4)
        )
    files.append(training_curves_plot(histories, out_dir / "training_curves.png"))
    for path in files:
        tracker.log_file(parent, path, "table1")
    for row in rows:
        prefix = f"{row['split']}_{row['strategy']}_"
        tracker.log_metrics(parent, {prefix + "rmse_px": row["mean"], prefix + "mtre_mm": row["mtre_mm"]}, step=0)
    tracker.end_run(parent, "FINISHED")
    console.say(text)
    console.say(f"reproduce: {out_dir} (table1.md, table1.csv, per_image/, plots); MLflow parent run {parent}")
    return rows
