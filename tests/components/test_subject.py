import numpy as np
import pytest

from components.subject import Subject

HU = np.zeros((4, 4, 4), dtype=np.float32)
AFFINE = np.eye(4)


@pytest.mark.parametrize("count", [8, 14, 1])
def test_a_subject_holds_n_landmarks_with_nan_rows_for_absent_ones(count):
    landmarks = np.arange(count * 3, dtype=float).reshape(count, 3)
    landmarks[count // 2] = np.nan
    subject = Subject("s", HU, AFFINE, landmarks)
    assert subject.present.tolist() == [slot != count // 2 for slot in range(count)]


@pytest.mark.parametrize(
    "landmarks, message",
    [
        (np.zeros((8, 2)), r"landmarks must be \(N, 3\), got \(8, 2\)"),
        (np.zeros(3), r"landmarks must be \(N, 3\), got \(3,\)"),
        (np.zeros((0, 3)), r"landmarks must be \(N, 3\), got \(0, 3\)"),
        (np.array([[1.0, np.nan, 2.0]]), "each landmark must be 3 finite numbers, or NaN"),
        (np.array([[1.0, np.inf, 2.0]]), "each landmark must be 3 finite numbers, or NaN"),
    ],
)
def test_bad_landmarks_are_refused_naming_the_subject(landmarks, message):
    with pytest.raises(ValueError, match=f"subject s7: {message}"):
        Subject("s7", HU, AFFINE, landmarks)
