"""The manifest of a generated data set: its config, its shards, their content hashes.

``manifest.json`` is written before the first shard (status ``in_progress``) and again at the end
(status ``complete``), always atomically. Its config hash ties a folder to one config: a run with
another config refuses to write there. Its ``landmarks`` (``anatomy.landmark_record``) name the
landmark set of every row, in their order; ``check_landmarks`` refuses a data set of another set (one
written before sets were recorded holds the paper's 8).
"""

import hashlib
import json
import os
from pathlib import Path

from components.anatomy import PAPER, LandmarkSet, landmark_set_of
from components.dataset import MANIFEST_NAME, DatasetError

FORMAT_VERSION = 1


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def config_hash(config: dict) -> str:
    """sha256 of the config's canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_hash(shards: list[dict]) -> str:
    """sha256 over the shards' paths and content hashes: equal data sets have equal hashes."""
    return hashlib.sha256(canonical_json(sorted((s["path"], s["sha256"]) for s in shards)).encode()).hexdigest()


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest, or None when there is none."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not a valid manifest ({error})") from error


def manifest_landmarks(manifest: dict) -> LandmarkSet:
    """The landmark set of a data set's rows (the paper's for a manifest from before sets were recorded)."""
    return landmark_set_of(manifest["landmarks"]) if "landmarks" in manifest else PAPER


def check_landmarks(folder: Path, landmarks: LandmarkSet) -> None:
    """Raise ``DatasetError`` unless the data set in ``folder`` was made with the landmark set ``landmarks``."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise DatasetError(f"{folder}: no {MANIFEST_NAME}; is this a data set made by 'study generate'?")
    made = manifest_landmarks(manifest)
    if made.names != landmarks.names:
        raise DatasetError(
            f"{folder}: a data set of the landmark set {made.name!r} ({', '.join(made.names)}), but the study asks "
            f"for {landmarks.name!r} ({', '.join(landmarks.names)}); generate one for this set into another folder"
        )


def write_manifest(folder: Path, manifest: dict) -> None:
    path = Path(folder) / MANIFEST_NAME
    temporary = path.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def claim_folder(folder: Path, config: dict, tolerate: tuple[str, ...] = ()) -> dict:
    """Make ``folder`` the home of a data set of ``config``, or resume the one there.

    Returns the manifest now on disk. Raises ``DatasetError`` when the folder holds a data set of
    another config, or files that no data set of ours wrote (other than those named in ``tolerate``,
    e.g. the log file of the command that is writing the data set).
    """
    folder = Path(folder)
    existing = read_manifest(folder)
    digest = config_hash(config)
    if existing is not None:
        if existing.get("config_hash") != digest:
            differing = sorted(differing_keys(existing.get("config", {}), config))
            raise DatasetError(
                f"{folder}: holds a data set of another config (differs in: {', '.join(differing) or 'format'}); "
                f"choose another --out folder or delete this one"
            )
        return existing
    if folder.exists() and any(path.name not in tolerate for path in folder.iterdir()):
        raise DatasetError(f"{folder}: exists and is not empty, but has no {MANIFEST_NAME}; refusing to write into it")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format_version": FORMAT_VERSION, "status": "in_progress", "config": config, "config_hash": digest}
    write_manifest(folder, manifest)
    return manifest


def differing_keys(old: dict, new: dict, prefix: str = "") -> set[str]:
    """The dotted keys whose values differ between two nested dicts."""
    keys = set()
    for key in set(old) | set(new):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys |= differing_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.add(f"{prefix}{key}")
    return keys
