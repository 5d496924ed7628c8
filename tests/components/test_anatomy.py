import json

import numpy as np
import pytest

from components.anatomy import (
    DEEPFLUORO,
    LANDMARK_SETS,
    PAPER,
    LandmarkSet,
    landmark_record,
    landmark_set,
    landmark_set_of,
    reorder,
)


def test_the_papers_order():
    assert PAPER.names == ("L_ASIS", "L_IOF", "L_MOF", "SPS", "IPS", "R_MOF", "R_IOF", "R_ASIS")
    assert len(PAPER) == 8 and set(PAPER.descriptions) == set(PAPER.names)


def test_pairs_join_left_to_right_names():
    for left, right in PAPER.pair_slots:
        assert PAPER.names[left].replace("L_", "R_") == PAPER.names[right]
    assert sorted([i for pair in PAPER.pair_slots for i in pair] + list(PAPER.midline)) == list(range(8))


@pytest.mark.parametrize("index, mirror", [(0, 7), (7, 0), (1, 6), (2, 5), (3, 3), (4, 4)])
def test_mirror_index(index, mirror):
    assert PAPER.mirror_index(index) == mirror


def test_mirror_index_out_of_range():
    with pytest.raises(IndexError, match="landmark index 8"):
        PAPER.mirror_index(8)


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


@pytest.mark.parametrize(
    "landmarks",
    [*LANDMARK_SETS.values(), LandmarkSet("mine", ("L_A", "R_A", "M"), pairs=(("L_A", "R_A"),))],
    ids=lambda landmarks: landmarks.name,
)
def test_a_set_round_trips_through_its_record(landmarks):
    record = landmark_record(landmarks)
    assert json.loads(json.dumps(record)) == record  # plain data, as manifests and checkpoints store it
    again = landmark_set_of(record)
    assert (again.name, again.names, again.pairs) == (landmarks.name, landmarks.names, landmarks.pairs)
    if landmarks.name in LANDMARK_SETS:
        assert again is LANDMARK_SETS[landmarks.name]  # with its descriptions


def test_a_record_named_like_a_registered_set_but_other_landmarks_is_its_own_set():
    record = {"name": "paper", "names": ["SPS", "IPS", "L_ASIS", "R_ASIS"], "pairs": [["L_ASIS", "R_ASIS"]]}
    assert landmark_set_of(record) is not PAPER and landmark_set_of(record).names == ("SPS", "IPS", "L_ASIS", "R_ASIS")


def test_reorder_takes_a_sets_landmarks_from_another_and_fills_what_it_lacks():
    points = np.arange(len(DEEPFLUORO) * 3, dtype=float).reshape(-1, 3)
    taken = reorder(points, DEEPFLUORO, PAPER, axis=0)
    assert taken.shape == (8, 3)
    np.testing.assert_array_equal(taken[PAPER.index("R_ASIS")], points[DEEPFLUORO.index("R_ASIS")])
    assert np.isnan(taken[[PAPER.index("SPS"), PAPER.index("IPS")]]).all()  # DeepFluoro has no midline SPS, IPS
    flags = np.ones((2, len(DEEPFLUORO)), dtype=bool)
    assert reorder(flags, DEEPFLUORO, PAPER, axis=1, fill=False).sum(1).tolist() == [6, 6]
    np.testing.assert_array_equal(
        reorder(taken, PAPER, DEEPFLUORO, axis=0)[DEEPFLUORO.index("L_MOF")], points[DEEPFLUORO.index("L_MOF")]
    )
    with pytest.raises(ValueError, match="3 values along axis 1, expected the 14 of 'deepfluoro'"):
        reorder(points, DEEPFLUORO, PAPER, axis=1)
