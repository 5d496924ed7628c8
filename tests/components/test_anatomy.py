import pytest

from components.anatomy import (
    LANDMARK_DESCRIPTIONS,
    LANDMARK_NAMES,
    LEFT_RIGHT_PAIRS,
    MIDLINE,
    N_LANDMARKS,
    mirror_index,
)


def test_the_papers_order():
    assert LANDMARK_NAMES == ("L_ASIS", "L_IOF", "L_MOF", "SPS", "IPS", "R_MOF", "R_IOF", "R_ASIS")
    assert N_LANDMARKS == 8 and set(LANDMARK_DESCRIPTIONS) == set(LANDMARK_NAMES)


def test_pairs_join_left_to_right_names():
    for left, right in LEFT_RIGHT_PAIRS:
        assert LANDMARK_NAMES[left].replace("L_", "R_") == LANDMARK_NAMES[right]
    assert sorted([i for pair in LEFT_RIGHT_PAIRS for i in pair] + list(MIDLINE)) == list(range(8))


@pytest.mark.parametrize("index, mirror", [(0, 7), (7, 0), (1, 6), (2, 5), (3, 3), (4, 4)])
def test_mirror_index(index, mirror):
    assert mirror_index(index) == mirror


def test_mirror_index_out_of_range():
    with pytest.raises(IndexError, match="landmark index 8"):
        mirror_index(8)
