"""Plausibility of a subject's landmarks: what adult anatomy guarantees, checked on the CT they annotate.

A landmark file can be wrong and still load: every point inside the volume, every name present.
Three checks catch the usual mistakes (points in another frame, sides swapped, a point in soft tissue):

- near bone: within ``bone_radius_mm`` of each landmark some voxel reaches ``bone_hu`` (every
  landmark of a set is a point on bone);
- sides: each left landmark lies on the patient's left (smaller RAS x) of its right partner, the
  line between them running within ``max_pair_tilt_deg`` of the left-right axis, give or take
  ``side_tolerance_mm`` of placement error: ``x_right - x_left >= cos(tilt) |right - left| - tolerance``;
- distances: the distance between each pair of landmarks in ``ADULT_DISTANCES_MM`` lies in its
  adult range.

Each check takes the subject (its landmarks ``(N, 3)`` world mm, RAS+, in the order of a
``LandmarkSet``), skips landmarks that are NaN (not annotated), and returns ``Finding`` records that
name the subject, the landmark file and the landmarks, and say what was expected.
"""

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from components.anatomy import PAPER, LandmarkSet
from components.subject import Subject, world_to_voxel

__all__ = [
    "ADULT_DISTANCES_MM", "PLAUSIBILITY_MODES", "Finding", "PlausibilityChecks", "PlausibilityMode", "describe",
]  # fmt: skip

# What loading a subject does with the findings: log one warning listing them, raise, or not check at all.
PlausibilityMode = Literal["warn", "error", "off"]
PLAUSIBILITY_MODES: tuple[str, ...] = get_args(PlausibilityMode)

# (landmark, landmark) -> (shortest, longest) distance in mm of an adult pelvis: generous, so that
# real adults never trip them, while a point in the wrong frame or on the wrong structure does.
# - ASIS: 225 +- 20 mm (women) and 227 +- 13 mm (men) in 100 adult CTs (Ahrend et al. 2020, "Development
#   of generic Asian pelvic bone models using CT-based 3D statistical modelling", J Orthop Translat 20:100;
#   275 mm on their European male reference model): 150-350 mm is 3.5 SD and more either side.
# - FH: the hip-joint centres lie 0.36 of the inter-ASIS distance either side of the midline (Bell,
#   Pedersen and Brand 1990, J Biomech 23(6):617), 0.72 x 150-350 mm, about 110-250 mm.
# - IOF, MOF, GSN: no published distribution; the obturator foramina and the greater sciatic notches
#   lie between the symphysis and the acetabula, so their pairs are closer than the hip centres
#   (at most 250 mm), and the foramina's medial edges are at least the pubic bodies' width apart.
# - SPS-IPS (the paper's midline points): the top and bottom of the symphysis, whose articular surface
#   anatomy texts put at about 3-5 cm long: 15-80 mm.
# - L_SPS-R_SPS, L_IPS-R_IPS (DeepFluoro's points either side of the symphysis): they straddle the
#   interpubic disc, a few mm wide; 60 mm catches a point on another structure.
ADULT_DISTANCES_MM: dict[tuple[str, str], tuple[float, float]] = {
    ("L_ASIS", "R_ASIS"): (150.0, 350.0),
    ("L_FH", "R_FH"): (110.0, 250.0),
    ("L_IOF", "R_IOF"): (40.0, 250.0),
    ("L_MOF", "R_MOF"): (20.0, 250.0),
    ("L_GSN", "R_GSN"): (60.0, 250.0),
    ("SPS", "IPS"): (15.0, 80.0),
    ("L_SPS", "R_SPS"): (0.0, 60.0),
    ("L_IPS", "R_IPS"): (0.0, 60.0),
}


@dataclass(frozen=True)
class Finding:
    """One implausibility of a subject's landmark file.

    Attributes:
        subject_id: the subject.
        source: the landmark file (or what else the landmarks came from).
        landmarks: the names of the landmarks concerned.
        problem: what was found, and what was expected.
    """

    subject_id: str
    source: str
    landmarks: tuple[str, ...]
    problem: str

    def __str__(self) -> str:
        return f"{', '.join(self.landmarks)}: {self.problem}"


def describe(findings: list[Finding]) -> str:
    """One line for the findings of one subject: the subject, the file, then every finding."""
    first = findings[0]
    listed = "; ".join(str(finding) for finding in findings)
    return f"subject {first.subject_id}: landmark file {first.source}: {len(findings)} implausible finding(s): {listed}"


@dataclass(frozen=True)
class PlausibilityChecks:
    """The three checks and their thresholds.

    Attributes:
        bone_hu: a landmark is on bone when some voxel within ``bone_radius_mm`` reaches this (HU).
        bone_radius_mm: how far from a landmark bone may be (placement error and partial volume).
        max_pair_tilt_deg: how far the line from a left landmark to its right partner may turn away
            from the patient's left-right axis (patient rotation in the scanner, asymmetry).
        side_tolerance_mm: placement error allowed on top of the tilt (it matters for close pairs).
    """

    bone_hu: float = 200.0
    bone_radius_mm: float = 5.0
    max_pair_tilt_deg: float = 45.0
    side_tolerance_mm: float = 3.0

    def __post_init__(self):
        limits = {
            "bone_hu": (-1000.0, 3000.0),
            "bone_radius_mm": (0.0, 50.0),
            "max_pair_tilt_deg": (0.0, 90.0),
            "side_tolerance_mm": (0.0, 50.0),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise ValueError(f"PlausibilityChecks.{name} must be a number in [{low:g}, {high:g}], got {value!r}")

    def findings(self, subject: Subject, source: str, landmark_set: LandmarkSet = PAPER) -> list[Finding]:
        """Every finding of the three checks on ``subject``, whose landmarks came from ``source``."""
        return [
            *self.near_bone(subject, source, landmark_set),
            *self.sides(subject, source, landmark_set),
            *self.distances(subject, source, landmark_set),
        ]

    def near_bone(self, subject: Subject, source: str, landmark_set: LandmarkSet = PAPER) -> list[Finding]:
        """A finding for each landmark with no voxel of ``bone_hu`` or more within ``bone_radius_mm``."""
        found = []
        for name, point in zip(landmark_set.names, _landmarks(subject, landmark_set)):
            if np.isnan(point).any():
                continue
            largest = largest_hu_near(subject.hu, subject.affine, point, self.bone_radius_mm)
            if largest < self.bone_hu:
                problem = (
                    f"the largest value within {self.bone_radius_mm:g} mm is {largest:.0f} HU, expected bone "
                    f"(>= {self.bone_hu:g} HU): placed in soft tissue, or given in another frame?"
                )
                found.append(Finding(subject.subject_id, source, (name,), problem))
        return found

    def sides(self, subject: Subject, source: str, landmark_set: LandmarkSet = PAPER) -> list[Finding]:
        """A finding for each pair whose left landmark is not on the patient's left of its right one."""
        landmarks = _landmarks(subject, landmark_set)
        cosine = math.cos(math.radians(self.max_pair_tilt_deg))
        found = []
        for (left, right), (i, j) in zip(landmark_set.pairs, landmark_set.pair_slots):
            step = landmarks[j] - landmarks[i]  # left -> right: +x in RAS
            if np.isnan(step).any():
                continue
            distance = float(np.linalg.norm(step))
            if step[0] >= cosine * distance - self.side_tolerance_mm:
                continue
            side = "left" if step[0] > 0 else "right"
            tilt = math.degrees(math.acos(max(-1.0, min(1.0, step[0] / distance)))) if distance > 0 else 90.0
            problem = (
                f"{left} lies {abs(step[0]):.1f} mm to the patient's {side} of {right} (RAS x {landmarks[i][0]:.1f} "
                f"and {landmarks[j][0]:.1f} mm, the line between them {tilt:.0f} deg from left-right), expected "
                f"{left} on the patient's left (smaller x) with the line within {self.max_pair_tilt_deg:g} deg: "
                f"left and right swapped, or points given in LPS?"
            )
            found.append(Finding(subject.subject_id, source, (left, right), problem))
        return found

    def distances(self, subject: Subject, source: str, landmark_set: LandmarkSet = PAPER) -> list[Finding]:
        """A finding for each pair of ``ADULT_DISTANCES_MM`` in the set whose distance is out of its range."""
        landmarks = _landmarks(subject, landmark_set)
        found = []
        for (a, b), (shortest, longest) in ADULT_DISTANCES_MM.items():
            if a not in landmark_set.names or b not in landmark_set.names:
                continue
            distance = float(np.linalg.norm(landmarks[landmark_set.index(b)] - landmarks[landmark_set.index(a)]))
            if np.isnan(distance) or shortest <= distance <= longest:
                continue
            problem = f"{distance:.1f} mm apart, expected {shortest:g}-{longest:g} mm in an adult pelvis"
            found.append(Finding(subject.subject_id, source, (a, b), problem))
        return found


def _landmarks(subject: Subject, landmark_set: LandmarkSet) -> np.ndarray:
    """(N, 3) the subject's landmarks, which must be one row per landmark of the set."""
    if subject.landmarks.shape != (len(landmark_set), 3):
        raise ValueError(
            f"subject {subject.subject_id}: landmarks of shape {subject.landmarks.shape}, expected "
            f"({len(landmark_set)}, 3) for the landmark set {landmark_set.name!r}"
        )
    return subject.landmarks


def largest_hu_near(hu: np.ndarray, affine: np.ndarray, point: np.ndarray, radius_mm: float) -> float:
    """The largest HU of the (I, J, K) volume among the voxels whose centres lie within ``radius_mm`` of the
    (3,) world ``point``, and of the voxel nearest to it (so a radius under half a voxel still sees one)."""
    centre = world_to_voxel(affine, point[None])[0]
    # the ball's reach along each index axis: radius x the norm of that row of the inverse linear map
    reach = radius_mm * np.linalg.norm(np.linalg.inv(affine[:3, :3]), axis=1)
    upper = np.asarray(hu.shape) - 1
    low = np.clip(np.ceil(centre - reach), 0, upper).astype(int)
    high = np.clip(np.floor(centre + reach), 0, upper).astype(int)
    box = tuple(slice(a, b + 1) for a, b in zip(low, high))
    offsets = np.stack(np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij"), axis=-1) - centre
    within = np.linalg.norm(offsets @ affine[:3, :3].T, axis=-1) <= radius_mm
    nearest = tuple(np.clip(np.round(centre), 0, upper).astype(int))
    values = hu[box][within]
    return float(max(hu[nearest], values.max())) if values.size else float(hu[nearest])
