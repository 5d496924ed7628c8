"""PNG contact sheets: DRRs with their landmarks (``study preview``), and model predictions beside the truth."""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.anatomy import LANDMARK_NAMES  # noqa: E402
from components.dataset import SPLITS, DatasetError, concat_rows, read_split  # noqa: E402

COLORS = plt.get_cmap("tab10")


def pick_rows(folder: Path, count: int):
    """Up to ``count`` rows spread evenly over the splits that have rows."""
    parts = []
    for split in SPLITS:
        try:
            parts.append(read_split(folder, split))
        except DatasetError as error:
            if "has no rows" not in str(error):
                raise
    rows = concat_rows(parts)
    picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))
    return rows, picks


def write_preview(folder: str | Path, out: str | Path, count: int = 12, columns: int = 4) -> Path:
    """Draw ``count`` DRRs of the data set in ``folder`` into the PNG ``out`` (written atomically)."""
    folder, out = Path(folder), Path(out)
    rows, picks = pick_rows(folder, count)
    lines = int(np.ceil(len(picks) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(3 * columns, 3.2 * lines), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, picks):
        draw_image(axis, rows.image[index])
        draw_landmarks(axis, rows.landmarks_2d[index], rows.visible[index], numbered=True)
        axis.set_title(f"{rows.split[index]} {rows.subject_id[index]} v{rows.view_id[index]}", fontsize=7)
    figure.suptitle("  ".join(f"{i + 1} {name}" for i, name in enumerate(LANDMARK_NAMES)), fontsize=8)
    return save_figure(figure, out)


def export_images(folder: str | Path, out_dir: str | Path, count: int = 12) -> list[Path]:
    """The same DRRs as the contact sheet, each as a 16-bit grey PNG ``<split>_<subject>_v<view>.png``
    (inputs for ``study predict``)."""
    from PIL import Image

    rows, picks = pick_rows(Path(folder), count)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in picks:
        path = out_dir / f"{rows.split[index]}_{rows.subject_id[index]}_v{rows.view_id[index]}.png"
        temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
        Image.fromarray(rows.image[index].astype(np.uint16)).save(temporary)
        os.replace(temporary, path)
        written.append(path)
    return written


def draw_image(axis, image: np.ndarray) -> None:
    """An (H, W) image in pixel coordinates: pixel [r, c] covers (c..c+1, r..r+1) as DESIGN.md says."""
    height, width = image.shape
    axis.imshow(image, cmap="gray", extent=(0, width, height, 0))


def draw_landmarks(axis, points: np.ndarray, visible: np.ndarray, numbered: bool = False, marker: str = "o") -> None:
    """(8, 2) landmarks in their colours; ``marker`` "o" for the truth, "x" for predictions."""
    for slot, ((u, v), shown) in enumerate(zip(points, visible)):
        if not shown:
            continue
        if marker == "o":
            axis.scatter([u], [v], s=18, color=COLORS(slot), edgecolors="black", linewidths=0.5)
        else:
            axis.scatter([u], [v], s=30, color=COLORS(slot), marker=marker, linewidths=1.5)
        if numbered:
            axis.annotate(str(slot + 1), (u, v), xytext=(3, -3), textcoords="offset points",
                          color=COLORS(slot), fontsize=8, fontweight="bold")


def save_figure(figure, out: Path) -> Path:
    """Save a figure to the PNG ``out`` atomically and close it."""
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.stem}.{os.getpid()}.tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, out)
    return out


def write_overlays(checkpoint: str | Path, folder: str | Path, out: str | Path, config, count: int = 4, split: str = "val") -> Path:
    """The first ``count`` DRRs of ``split`` with true (circles) and predicted (crosses, argmax) landmarks."""
    from components import training
    from components.model import model_from_checkpoint

    rows = read_split(folder, split)
    count = min(count, len(rows))
    columns = {name: getattr(rows, name)[:count] for name in training.COLUMNS}
    predictions = training.predict(model_from_checkpoint(checkpoint), columns, config.data.render_camera(), config.train.loss.temperature)
    figure, axes = plt.subplots(1, count, figsize=(3 * count, 3.4), squeeze=False)
    for slot, axis in enumerate(axes.flat):
        axis.axis("off")
        draw_image(axis, rows.image[slot])
        draw_landmarks(axis, rows.landmarks_2d[slot], rows.visible[slot], numbered=True)
        draw_landmarks(axis, predictions.argmax[slot].numpy(), rows.visible[slot], marker="x")
        error = np.sqrt(((predictions.argmax[slot].numpy() - rows.landmarks_2d[slot]) ** 2).sum(-1)[rows.visible[slot]].mean())
        axis.set_title(f"{rows.subject_id[slot]} v{rows.view_id[slot]}: RMSE {error:.1f} px", fontsize=7)
    figure.suptitle("o truth   x prediction (argmax)", fontsize=8)
    return save_figure(figure, Path(out))
