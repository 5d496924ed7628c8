"""``study preview``: a PNG contact sheet of a data set's DRRs with their landmarks, and the DRRs as 16-bit PNGs.

A data set with a ``fluoro`` split gets a second sheet, ``<out>_fluoro.png``: test views side by side, the
clean DRR and the same view through the fluoroscope, with the same landmarks.
"""

import os
from pathlib import Path

import numpy as np

from components.dataset import SPLITS, DatasetError, concat_rows, read_split
from components.manifest import manifest_landmarks, read_manifest
from study.figures import draw_image, draw_landmarks, plt, save_figure

__all__ = ["export_images", "write_fluoro_preview", "write_preview"]


def read_if_any(folder: Path, split: str):
    """The rows of ``split``, or None when the data set has none."""
    try:
        return read_split(folder, split)
    except DatasetError as error:
        if "has no rows" not in str(error):
            raise
        return None


def pick_rows(folder: Path, count: int):
    """Up to ``count`` rows spread evenly over the clean splits that have rows."""
    parts = [rows for split in SPLITS if split != "fluoro" and (rows := read_if_any(folder, split)) is not None]
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
    names = manifest_landmarks(read_manifest(folder)).names  # the data set's own set, in its order
    figure.suptitle("  ".join(f"{i + 1} {name}" for i, name in enumerate(names)), fontsize=8)
    return save_figure(figure, out)


def write_fluoro_preview(folder: str | Path, out: str | Path, pairs: int = 6, columns: int = 4) -> Path | None:
    """Draw ``pairs`` test views, each clean beside its ``fluoro`` twin, into the PNG ``out``; None (nothing written)
    when the data set has no fluoro split."""
    folder, out = Path(folder), Path(out)
    fluoro = read_if_any(folder, "fluoro")
    if fluoro is None:
        return None
    clean = concat_rows([read_split(folder, split) for split in ("novel_view", "novel_subject")])
    twin = {(subject, view): index for index, (subject, view) in enumerate(zip(clean.subject_id, clean.view_id))}
    picks = np.unique(np.linspace(0, len(fluoro) - 1, min(pairs, len(fluoro))).round().astype(int))
    lines = int(np.ceil(2 * len(picks) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(3 * columns, 3.2 * lines), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for number, index in enumerate(picks):
        clean_index = twin[(fluoro.subject_id[index], fluoro.view_id[index])]
        for side, (rows, row, label) in enumerate(((clean, clean_index, "clean"), (fluoro, index, "fluoro"))):
            axis = axes.flat[2 * number + side]
            draw_image(axis, rows.image[row])
            draw_landmarks(axis, rows.landmarks_2d[row], rows.visible[row], numbered=True)
            axis.set_title(f"{label}: {rows.subject_id[row]} v{rows.view_id[row]}", fontsize=7)
    figure.suptitle("clean DRR | the same view through the simulated fluoroscope (data.fluoro)", fontsize=8)
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
