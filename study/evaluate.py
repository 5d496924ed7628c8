"""``study evaluate``: a trained model on the test splits, as the paper's Table 1, logged to its MLflow run.

The model is a checkpoint folder or an MLflow run id (its ``best_checkpoint``). The study config
comes from the checkpoint (every checkpoint of ``study train`` holds it) or from ``--preset``.

Writes ``per_image.csv`` (one row per image and method: landmark errors, predictions, pose
errors), ``summary.json`` (per split and method) and plots into the output folder, and logs them
with the metrics — ``<split>_<metric>`` for argmax (the paper's), ``<split>_soft_<metric>`` for
soft-argmax — to the MLflow run.
"""

import csv
import json
import os
from pathlib import Path

import numpy as np

from components import evaluation, training
from components.dataset import read_split
from components.model import load_checkpoint, model_from_checkpoint
from study.config import ConfigError, StudyConfig
from study.tracking import Tracker

TEST_SPLITS = ("novel_view", "novel_subject")


def config_of_checkpoint(checkpoint: str | Path) -> StudyConfig | None:
    """The study config a checkpoint was trained with (None for a checkpoint that does not hold one)."""
    state = load_checkpoint(checkpoint)
    return StudyConfig.model_validate_json(state["config"]) if "config" in state else None


def resolve_model(reference: str, config: StudyConfig | None) -> tuple[Path, str | None, StudyConfig]:
    """(checkpoint folder, MLflow run id or None, study config) of a checkpoint path or an MLflow run id."""
    if Path(reference).exists():
        checkpoint, run_id = Path(reference), None
    else:
        tracker = Tracker.for_uri(config)
        checkpoint, run_id = tracker.download_checkpoint(reference), reference
    config = config_of_checkpoint(checkpoint) or config
    if config is None:
        raise ConfigError(f"{reference}: the checkpoint holds no study config; name one with --preset")
    return checkpoint, run_id, config


def split_rows(data_dir: Path, split: str) -> tuple[dict, dict]:
    """The training columns and the ids (subject_id, view_id, split) of a split."""
    rows = read_split(data_dir, split)
    columns = {name: getattr(rows, name) for name in training.COLUMNS}
    return columns, {"subject_id": rows.subject_id, "view_id": rows.view_id, "split": rows.split}


def evaluate_checkpoint(checkpoint: str | Path, config: StudyConfig, data_dir: str | Path, splits=TEST_SPLITS) -> tuple[list[dict], dict]:
    """Per-image records and summaries ``{split: {method: {metric: value}}}`` of a checkpoint."""
    model = model_from_checkpoint(checkpoint)
    camera = config.data.render_camera()
    temperature = config.train.loss.temperature if config.train else 1.0
    records, summaries = [], {}
    for split in splits:
        columns, ids = split_rows(Path(data_dir), split)
        predictions = training.predict(model, columns, camera, temperature)
        split_records = evaluation.per_image_results(predictions, columns, ids)
        records += split_records
        summaries[split] = {
            method: evaluation.summarise(
                [r for r in split_records if r["method"] == method], camera, config.data.poses.source_to_isocenter,
                config.report.success_mm, config.report.bootstrap_resamples, config.training_seed(),
            )
            for method in evaluation.METHODS
        }
    return records, summaries


def metric_names(summaries: dict) -> dict[str, float]:
    """Flat MLflow metrics: ``<split>_<metric>`` (argmax) and ``<split>_soft_<metric>`` (soft-argmax)."""
    flat = {}
    for split, methods in summaries.items():
        for method, summary in methods.items():
            prefix = f"{split}_" if method == "argmax" else f"{split}_soft_"
            flat |= {prefix + key: value for key, value in summary.items()}
    return flat


def write_csv(records: list[dict], path: Path) -> Path:
    """Write records (dicts with the same keys) as CSV, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    os.replace(temporary, path)
    return path


def read_csv(path: Path) -> list[dict]:
    """Records written by ``write_csv``, with numbers as floats."""
    def value(text: str):
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="") as stream:
        return [{key: value(text) for key, text in row.items()} for row in csv.DictReader(stream)]


def write_text(text: str, path: Path) -> Path:
    """Write ``text`` to ``path`` through a temporary name, so it is never half-written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def write_json(data: dict, path: Path) -> Path:
    return write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", path)


def evaluate(reference: str, config: StudyConfig | None = None, data_dir: str | Path | None = None,
             splits=TEST_SPLITS, out_dir: str | Path | None = None) -> dict:
    """``study evaluate``: evaluate, write the files, log them to the model's MLflow run; returns the summaries."""
    from study.generate import default_out_dir
    from study.plots import error_cdf_plot, example_plot, per_landmark_plot

    checkpoint, run_id, config = resolve_model(reference, config)
    data_dir = Path(data_dir or default_out_dir(config))
    out_dir = Path(out_dir or Path("evaluations") / (run_id or Path(checkpoint).name))
    out_dir.mkdir(parents=True, exist_ok=True)
    records, summaries = evaluate_checkpoint(checkpoint, config, data_dir, splits)
    files = [write_csv(records, out_dir / "per_image.csv"), write_json(summaries, out_dir / "summary.json")]
    files.append(per_landmark_plot({"model": summaries}, out_dir / "per_landmark_rmse.png"))
    files.append(error_cdf_plot({"model": records}, out_dir / "error_cdf.png"))
    if config.report.examples:
        files.append(example_plot({"model": checkpoint}, config, data_dir, splits[0], out_dir / "examples.png", config.report.examples))
    for split, methods in summaries.items():
        argmax = methods["argmax"]
        print(f"{split}: RMSE {argmax['rmse_px']:.2f} px (95% CI {argmax['rmse_px_ci_low']:.2f}-{argmax['rmse_px_ci_high']:.2f}), "
              f"{argmax['rmse_isocenter_mm']:.2f} mm at the isocentre; soft-argmax {methods['soft_argmax']['rmse_px']:.2f} px; "
              f"mTRE median {argmax['mtre_mm_median']:.1f} mm, success {100 * argmax['success_rate']:.0f}%")
    if run_id is not None:
        tracker = Tracker.for_uri(config)
        tracker.log_metrics(run_id, metric_names(summaries), step=0)
        for path in files:
            tracker.log_file(run_id, path, "evaluation")
    print(f"evaluation: {out_dir}")
    return summaries


def per_image_rmse(records: list[dict]) -> np.ndarray:
    """(B,) RMSE over each record's visible landmarks, px."""
    errors = evaluation.error_matrix(records)
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.nanmean(errors**2, axis=1))
