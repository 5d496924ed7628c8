"""Drawing DRRs and landmarks with matplotlib (headless), models' predictions beside the truth, and saving
figures as PNG atomically.

Images are drawn in pixel coordinates (docs/architecture.md): pixel ``[r, c]`` covers
``(c..c+1, r..r+1)``, so a landmark at ``(u, v)`` lands where the data set says it is.
"""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from components import training
from components.geometry import Camera
from components.model import load_trained_model
from study.training.data import split_columns, split_rows

__all__ = ["draw_image", "draw_landmarks", "landmark_color", "plt", "prediction_examples", "save_figure"]


def landmark_color(slot: int, count: int):
    """The colour of landmark ``slot`` of ``count``: tab10's up to 10 landmarks, tab20's (distinct to 20) beyond."""
    return plt.get_cmap("tab10" if count <= 10 else "tab20")(slot)


def draw_image(axis, image: np.ndarray) -> None:
    """An (H, W) image in pixel coordinates."""
    height, width = image.shape
    axis.imshow(image, cmap="gray", extent=(0, width, height, 0))


def draw_landmarks(axis, points: np.ndarray, visible: np.ndarray, numbered: bool = False, marker: str = "o") -> None:
    """(N, 2) landmarks in their colours (the invisible ones, absent ones included, are not drawn); ``marker`` "o"
    for the truth, "x" for predictions."""
    for slot, ((u, v), shown) in enumerate(zip(points, visible, strict=True)):
        if not shown:
            continue
        color = landmark_color(slot, len(points))
        if marker == "o":
            axis.scatter([u], [v], s=18, color=color, edgecolors="black", linewidths=0.5)
        else:
            axis.scatter([u], [v], s=30, color=color, marker=marker, linewidths=1.5)
        if numbered:
            axis.annotate(
                str(slot + 1),
                (u, v),
                xytext=(3, -3),
                textcoords="offset points",
                color=color,
                fontsize=8,
                fontweight="bold",
            )


def save_figure(figure, out: str | Path) -> Path:
    """Save a figure to the PNG ``out`` atomically and close it."""
    out = Path(out)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.stem}.{os.getpid()}.tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, out)
    return out


def prediction_grid(
    images: np.ndarray, truth: np.ndarray, visible: np.ndarray, predicted: dict[str, np.ndarray], names: list[str]
):
    """A figure of (B, H, W) images, one row per label of ``predicted`` ((B, N, 2) px each), one column per image.

    Each panel shows the true landmarks (circles, numbered) and the label's predictions (crosses),
    titled with the image's name and its RMSE over the visible landmarks.
    """
    count = len(images)
    figure, axes = plt.subplots(len(predicted), count, figsize=(2.8 * count, 3.0 * len(predicted)), squeeze=False)
    for row, (label, points) in enumerate(predicted.items()):
        for column in range(count):
            axis = axes[row, column]
            axis.axis("off")
            draw_image(axis, images[column])
            draw_landmarks(axis, truth[column], visible[column], numbered=True)
            draw_landmarks(axis, points[column], visible[column], marker="x")
            shown = visible[column]
            rmse = np.sqrt(((points[column] - truth[column]) ** 2).sum(-1)[shown].mean()) if shown.any() else np.nan
            prefix = f"{label}: " if len(predicted) > 1 else ""
            axis.set_title(f"{prefix}{names[column]}, RMSE {rmse:.1f} px", fontsize=7)
    figure.suptitle("o truth   x prediction (argmax)", fontsize=8)
    return figure


def prediction_examples(
    checkpoints: dict[str, str | Path],
    camera: Camera,
    data_dir: str | Path,
    split: str,
    out: str | Path,
    count: int = 4,
    subjects: list[str] | None = None,
) -> Path:
    """The PNG ``out`` of the first ``count`` images of ``split`` (of ``subjects`` only, when given): one row per
    label of ``checkpoints``, the true landmarks (circles) and each model's argmax predictions (crosses), decoded
    as the model was trained."""
    rows = split_rows(data_dir, split)
    chosen = np.isin(rows.subject_id, subjects) if subjects is not None else np.ones(len(rows), dtype=bool)
    shown = np.flatnonzero(chosen)[:count]
    columns = {key: value[shown] for key, value in split_columns(data_dir, split).items()}
    predicted = {}
    for label, checkpoint in checkpoints.items():
        model = load_trained_model(checkpoint)
        predicted[label] = training.predict(model.network, columns, camera, model.decoding).argmax.numpy()
    names = [f"{split} {rows.subject_id[i]} v{rows.view_id[i]}" for i in shown]
    figure = prediction_grid(columns["image"], columns["landmarks_2d"], columns["visible"], predicted, names)
    return save_figure(figure, out)
