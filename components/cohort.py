"""A cohort: where each subject comes from, and which subjects go to which split.

Subjects are described by small, picklable ``SubjectSource`` records (a phantom seed, a CT and a
landmark file, or a specimen of the DeepFluoro release's file) and loaded where they are rendered, so a
cohort costs nothing to pass around.
"""

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from components import deepfluoro, phantom, volumes
from components.anatomy import DEEPFLUORO, LandmarkSet, reorder
from components.plausibility import PlausibilityMode
from components.subject import Subject

# Subjects of the train split also provide the novel_view split (their unseen views).
SUBJECT_SPLITS = ("train", "val", "novel_subject")


@dataclass(frozen=True)
class SubjectSource:
    """How to load one subject: a procedural phantom, files of a real CT, or a DeepFluoro specimen."""

    subject_id: str
    kind: Literal["phantom", "files", "deepfluoro"]
    phantom_seed: int = 0
    phantom_shift: float = 0.0  # > 0: drawn from the phantom's shifted (out-of-distribution) distribution
    voxel_size: float = 2.0
    ct_path: str = ""  # files: the CT (NIfTI file or DICOM folder); deepfluoro: the release's HDF5 file
    landmarks_path: str = ""
    coordinates: Literal["ras", "lps", "voxel"] = "ras"
    plausibility: PlausibilityMode = "warn"  # files: what implausible landmarks do (components.plausibility)

    def load(self, landmarks: LandmarkSet) -> Subject:
        """The subject, with the landmarks of the set ``landmarks`` (a NaN row for each it lacks)."""
        if self.kind == "phantom":
            params = phantom.sample_phantom_params(self.phantom_seed, self.phantom_shift)
            return phantom.make_phantom(params, self.voxel_size, self.subject_id, landmarks)
        if self.kind == "deepfluoro":
            specimen = deepfluoro.load_specimen(self.ct_path, self.subject_id)
            return replace(specimen, landmarks=reorder(specimen.landmarks, DEEPFLUORO, landmarks, axis=0))
        return volumes.load_subject(
            self.ct_path,
            self.landmarks_path,
            coordinates=self.coordinates,
            subject_id=self.subject_id,
            plausibility=self.plausibility,
            landmarks=landmarks,
        )


def phantom_cohort(count: int, seed: int, voxel_size: float = 2.0) -> list[SubjectSource]:
    """``count`` phantom subjects whose anatomy follows from (seed, index)."""
    seeds = np.random.SeedSequence(seed).generate_state(count, dtype=np.uint32)
    return [
        SubjectSource(subject_id=f"phantom-{index:05d}", kind="phantom", phantom_seed=int(s), voxel_size=voxel_size)
        for index, s in enumerate(seeds)
    ]


def folder_cohort(
    folder: str | Path, coordinates: str = "ras", plausibility: PlausibilityMode = "warn"
) -> list[SubjectSource]:
    """Real subjects from a folder of CTs, each beside ``<id>.mrk.json|.fcsv|.csv``: NIfTI files ``<id>.nii[.gz]``
    and DICOM series, one a sub-folder ``<id>/`` (hidden sub-folders, named ``.*``, are left out); their
    landmarks are checked for plausibility when each is loaded (``plausibility``: warn, error or off)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise volumes.VolumeError(f"{folder}: cohort folder not found")
    cts = sorted(
        p
        for p in folder.iterdir()
        if (p.is_dir() and not p.name.startswith(".")) or (p.is_file() and p.name.endswith(volumes.CT_SUFFIXES))
    )
    if not cts:
        raise volumes.VolumeError(f"{folder}: no CTs (*.nii, *.nii.gz or DICOM series folders) in the cohort folder")
    ids = [volumes.subject_id_of(ct) for ct in cts]
    repeated = sorted({subject_id for subject_id in ids if ids.count(subject_id) > 1})
    if repeated:
        listed = "; ".join(
            f"{subject_id}: {', '.join(ct.name for ct in cts if volumes.subject_id_of(ct) == subject_id)}"
            for subject_id in repeated
        )
        raise volumes.VolumeError(f"{folder}: several CTs for one subject ({listed}); expected one CT a subject")
    return [
        SubjectSource(
            volumes.subject_id_of(ct),
            "files",
            ct_path=str(ct),
            landmarks_path=str(volumes.landmark_file_beside(ct)),
            coordinates=coordinates,
            plausibility=plausibility,
        )
        for ct in cts
    ]


def deepfluoro_cohort(path: str | Path) -> list[SubjectSource]:
    """The specimens of the DeepFluoro release's HDF5 file (``components.deepfluoro``), by their group names."""
    return [SubjectSource(specimen, "deepfluoro", ct_path=str(path)) for specimen in deepfluoro.list_specimens(path)]


def assign_splits(
    sources: list[SubjectSource], counts: dict[str, int], seed: int, shuffle: bool
) -> dict[str, list[SubjectSource]]:
    """Disjoint subject lists for train, val and novel_subject, of the given sizes.

    Phantoms are already random, so they are taken in order (``shuffle=False``); a real cohort is
    permuted with ``seed`` first, so that the split does not follow the file names.
    """
    unknown = set(counts) - set(SUBJECT_SPLITS)
    if unknown:
        raise ValueError(f"subject counts: unknown split(s) {sorted(unknown)}; expected {SUBJECT_SPLITS}")
    needed = sum(counts.values())
    if needed > len(sources):
        raise ValueError(f"the cohort has {len(sources)} subjects, but the splits ask for {needed} ({counts})")
    order = np.random.default_rng(seed).permutation(len(sources)) if shuffle else np.arange(len(sources))
    assigned, start = {}, 0
    for split in SUBJECT_SPLITS:
        count = counts.get(split, 0)
        assigned[split] = [sources[i] for i in order[start : start + count]]
        start += count
    return assigned


def annotated_landmarks(landmarks: np.ndarray, sigma_mm: float, seed: int, subject_id: str) -> np.ndarray:
    """(N, 3) the landmarks as a person places them on the CT: each moved by isotropic Gaussian noise of
    ``sigma_mm``, drawn from (seed, subject), so every view of the subject carries the same placement error
    (hand placement in 3D Slicer, as the paper's annotation). ``sigma_mm`` 0 gives them back unchanged."""
    if not (np.isfinite(sigma_mm) and sigma_mm >= 0):
        raise ValueError(f"annotation_noise_mm must be finite and >= 0, got {sigma_mm}")
    if sigma_mm == 0:
        return landmarks
    subject_key = int.from_bytes(hashlib.sha256(subject_id.encode()).digest()[:8], "little")
    generator = np.random.default_rng([seed, subject_key, 11])
    return landmarks + generator.normal(0.0, sigma_mm, landmarks.shape)
