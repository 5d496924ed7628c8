"""Measuring a trained model on data set splits: per-image records and per-split summaries.

A record is one image and one way of reading landmarks off the heatmaps (``argmax``, the paper's,
or ``soft_argmax`` with the temperature the model was trained with, from its checkpoint): the
error of every landmark and the pose registered from them (``components.evaluation``). A model of
one fold of a cross-validation (``train.fold``) is measured on its held-out subjects' rows only.
"""

from pathlib import Path

from components import evaluation, training
from components.manifest import check_landmarks, read_manifest
from components.model import load_trained_model
from study.config import ConfigError, StudyConfig
from study.tracking.datasets import log_splits
from study.tracking.runs import Tracker
from study.training.data import rows_to_test, run_columns, splits_to_test

__all__ = ["evaluate_checkpoint", "log_evaluation", "metric_names", "trivial_records"]


def evaluate_checkpoint(
    checkpoint: str | Path, config: StudyConfig, data_dir: str | Path, splits=None
) -> tuple[list[dict], dict]:
    """Per-image records and summaries ``{split: {method: {metric: value}}}`` of a checkpoint on ``splits``
    (default: the data set's test splits, ``data.test_splits()``); for a fold (``train.fold``), on the rows of
    its held-out subjects in those of ``splits`` that have any. The model, the config and the data set must
    share one landmark set (``data.landmarks``), which names the records' and summaries' keys."""
    splits = config.data.test_splits() if splits is None else splits
    fold = config.train.fold if config.train is not None else None
    model = load_trained_model(checkpoint)
    landmarks = config.data.landmarks.landmark_set()
    if model.landmarks.names != landmarks.names:
        raise ConfigError(
            f"{checkpoint}: the model detects the landmark set {model.landmarks.name!r}, not the config's "
            f"{landmarks.name!r} ({', '.join(landmarks.names)})"
        )
    check_landmarks(Path(data_dir), landmarks)
    camera = config.data.render_camera()
    minimum = config.data.landmarks.min_for_registration
    records, summaries = [], {}
    for split in splits_to_test(data_dir, splits, fold):
        ids, columns = rows_to_test(data_dir, split, fold)
        predictions = training.predict(model.network, columns, camera, model.decoding, min_landmarks=minimum)
        split_records = evaluation.per_image_results(predictions, columns, ids, landmarks)
        records += split_records
        summaries[split] = {
            method: evaluation.summarise(
                [r for r in split_records if r["method"] == method],
                landmarks,
                camera,
                config.data.poses.source_to_isocenter,
                config.report.success_mm,
                config.report.bootstrap_resamples,
                config.training_seed(),
            )
            for method in evaluation.METHODS
        }
    return records, summaries


def trivial_records(config: StudyConfig, data_dir: Path) -> tuple[list[dict], float]:
    """The trivial predictor's per-image records on the test splits, and its val RMSE (px, pooled: what a run
    must beat by the selection metric's measure, ``val_rmse_px``); for a fold (``train.fold``), from the fold's
    training rows, on its held-out subjects and its val rows."""
    fold, camera = config.train.fold if config.train is not None else None, config.data.render_camera()
    landmarks, minimum = config.data.landmarks.landmark_set(), config.data.landmarks.min_for_registration
    train_rows = run_columns(data_dir, "train", fold)
    records = []
    for split in splits_to_test(data_dir, config.data.test_splits(), fold):
        ids, columns = rows_to_test(data_dir, split, fold)
        predicted = evaluation.mean_position_predictions(train_rows, columns, camera, minimum)
        per_image = evaluation.per_image_results(predicted, columns, ids, landmarks)
        records += [r for r in per_image if r["method"] == "argmax"]
    return records, training.mean_position_rmse(train_rows, run_columns(data_dir, "val", fold))


# What a split's MLflow metrics are: ``<split>_<name>`` from the argmax summary's ``<key>``, and the
# soft-argmax's headline numbers as ``<split>_soft_<name>``. Everything else (per landmark, means) is in
# the summary.json and per-image CSV artifacts.
ARGMAX_METRICS = {
    "rmse_px": "rmse_px",
    "rmse_px_ci_low": "rmse_px_ci_low",
    "rmse_px_ci_high": "rmse_px_ci_high",
    "rmse_mm": "rmse_isocenter_mm",
    "mtre_mm": "mtre_mm_median",
    "success_rate": "success_rate",
    "rotation_deg": "rotation_deg_median",
    "translation_mm": "translation_mm_median",
    "pose_failures": "pose_failures",
}
SOFT_METRICS = {"rmse_px": "rmse_px", "mtre_mm": "mtre_mm_median"}


def metric_names(summaries: dict) -> dict[str, dict[str, float]]:
    """The MLflow metrics of each split, ``{split: {"<split>_rmse_px": ..., "<split>_soft_rmse_px": ...}}``."""
    metrics = {}
    for split, methods in summaries.items():
        argmax, soft = methods["argmax"], methods.get("soft_argmax", {})
        metrics[split] = {f"{split}_{name}": argmax[key] for name, key in ARGMAX_METRICS.items() if key in argmax}
        metrics[split] |= {f"{split}_soft_{name}": soft[key] for name, key in SOFT_METRICS.items() if key in soft}
    return metrics


def log_evaluation(tracker: Tracker, run_id: str, summaries: dict, data_dir: str | Path) -> None:
    """Log the test splits as run ``run_id``'s datasets and each split's metrics against its dataset and the
    run's logged model (tag ``study.model_id``), at step 0."""
    model_id = tracker.client.get_run(run_id).data.tags.get("study.model_id")
    datasets = log_splits(tracker.client, run_id, data_dir, read_manifest(Path(data_dir)), list(summaries))
    for split, metrics in metric_names(summaries).items():
        tracker.log_metrics(run_id, metrics, 0, datasets[split], model_id)
