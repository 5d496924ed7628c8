import pytest

from components.anatomy import (
    DEEPFLUORO,
    LANDMARK_DESCRIPTIONS,
    LANDMARK_NAMES,
    LEFT_RIGHT_PAIRS,
    MIDLINE,
    N_LANDMARKS,
    PAPER,
    LandmarkSet,
    landmark_set,
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


def test_deepfluoro_has_its_14_landmarks_in_left_right_pairs():
    assert len(DEEPFLUORO) == 14 and DEEPFLUORO.midline == ()
    assert DEEPFLUORO.names[:4] == ("L_FH", "R_FH", "L_GSN", "R_GSN")
    assert all(
        DEEPFLUORO.names[left].replace("L_", "R_") == DEEPFLUORO.names[right] for left, right in DEEPFLUORO.pair_slots
    )
    assert set(DEEPFLUORO.descriptions) == set(DEEPFLUORO.names)


def test_landmark_set_resolves_names_and_sets():
    assert landmark_set("paper") is PAPER and landmark_set(DEEPFLUORO) is DEEPFLUORO
    with pytest.raises(ValueError, match="unknown landmark set 'pelvis12'; registered: paper, deepfluoro"):
        landmark_set("pelvis12")


def test_a_users_own_set():
    mine = LandmarkSet("mine", ("L_A", "R_A", "M"), pairs=(("L_A", "R_A"),))
    assert mine.pair_slots == ((0, 1),) and mine.midline == (2,)
    assert [mine.mirror_index(i) for i in range(3)] == [1, 0, 2]
    assert mine.index("M") == 2


@pytest.mark.parametrize(
    "names, pairs, message",
    [
        ((), (), "names must list at least one landmark"),
        (("A", "A"), (), r"names repeat \['A'\]"),
        (("A", "B"), (("A", "C"),), r"pairs name \['C'\]"),
        (("A", "B", "C"), (("A", "B"), ("B", "C")), r"\['B'\] belong to more than one pair"),
    ],
)
def test_a_bad_set_is_refused_naming_it(names, pairs, message):
    with pytest.raises(ValueError, match=f"landmark set 'mine': {message}"):
        LandmarkSet("mine", names, pairs)


def test_index_of_an_unknown_landmark_names_the_set():
    with pytest.raises(ValueError, match="landmark 'L_FH' is not in the landmark set 'paper'"):
        PAPER.index("L_FH")
