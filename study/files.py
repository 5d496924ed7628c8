"""Files that are never half-written: each is written under a temporary name, then renamed.

A reader (or a run started again after a crash) sees either the old file or the whole new one.
"""

import csv
import json
import os
import shutil
from pathlib import Path

__all__ = ["read_csv", "replace_folder", "write_csv", "write_json", "write_text"]


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` (its folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def write_json(data: dict, path: str | Path) -> Path:
    """Write ``data`` as indented JSON with sorted keys."""
    return write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", path)


def write_csv(records: list[dict], path: str | Path) -> Path:
    """Write records (dicts with the same keys, in the first one's order) as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    with open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    os.replace(temporary, path)
    return path


def read_csv(path: str | Path) -> list[dict]:
    """Records written by ``write_csv``, with every value that reads as a number as a float."""

    def value(text: str):
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="") as stream:
        return [{key: value(text) for key, text in row.items()} for row in csv.DictReader(stream)]


def replace_folder(source: str | Path, target: Path, link: bool = False) -> None:
    """Copy the folder ``source`` to ``target``, replacing what is there by a rename.

    ``link``: hard-link the files instead of copying them (``source`` on the same file system, and its
    files never written again: e.g. a checkpoint saved into a fresh folder).
    """
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(source, temporary, copy_function=os.link if link else shutil.copy2)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        target.rename(old)
    temporary.rename(target)
    shutil.rmtree(old, ignore_errors=True)
