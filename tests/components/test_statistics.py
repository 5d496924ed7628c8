import math

import numpy as np
import pytest

from components import statistics
from components.statistics import (
    compare,
    compare_unpaired,
    difference_verdict,
    hierarchical_counts,
    paper_mean,
    paper_mean_interval,
    per_landmark_rmse,
    pooled_rmse,
    ratio_verdict,
    resampled_paper_mean,
    seed_counts,
)

# Table 1 of the paper: per-landmark RMSE L1..L8 (px) and its "Mean".
PAPER_ROWS = {
    "novel_view baseline": ([11.49, 4.71, 12.34, 16.66, 5.43, 6.87, 6.00, 5.17], 8.58),
    "novel_view finetune": ([10.27, 6.67, 14.02, 17.75, 3.67, 7.18, 4.12, 3.89], 8.45),
    "novel_subject baseline": ([5.68, 8.33, 4.68, 4.01, 8.65, 4.07, 3.07, 6.12], 5.58),
    "novel_subject finetune": ([7.45, 8.01, 4.68, 2.03, 2.03, 7.52, 4.48, 4.48], 5.09),
}


def one_image_per_landmark(values) -> np.ndarray:
    """(8, 8) errors: image l sees only landmark l, with error ``values[l]``, so RMSE_l is that value."""
    errors = np.full((len(values), len(values)), np.nan)
    np.fill_diagonal(errors, values)
    return errors


def study_errors(subjects=8, images=20, seeds=3, seed=0):
    """(S, N, 8) positive errors around 5 px, ~10% invisible (the same for every seed), and (N,) subjects."""
    rng = np.random.default_rng(seed)
    names = np.repeat([f"subject{g}" for g in range(subjects)], images)
    errors = rng.gamma(4.0, 1.25, size=(subjects * images, 8))
    errors[rng.random(errors.shape) < 0.1] = np.nan
    return np.broadcast_to(errors, (seeds, *errors.shape)).copy(), names


def jitter(errors, seed, sd=0.2):
    """The errors plus small independent noise (another model that is about as good), kept positive."""
    return np.abs(errors + np.random.default_rng(seed).normal(0.0, sd, errors.shape))


# --- the statistic -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", PAPER_ROWS)
def test_paper_mean_is_table_1s_mean(row):
    values, mean = PAPER_ROWS[row]
    errors = one_image_per_landmark(values)
    np.testing.assert_allclose(per_landmark_rmse(errors), values)
    assert paper_mean(errors) == pytest.approx(mean, abs=0.005)  # the table's entries are rounded to 0.01


@pytest.mark.parametrize("row", PAPER_ROWS)
def test_paper_mean_is_not_the_pooled_rmse_when_landmarks_differ(row):
    values, _ = PAPER_ROWS[row]
    errors = one_image_per_landmark(values)
    assert pooled_rmse(errors) == pytest.approx(math.sqrt(np.mean(np.square(values))))
    assert pooled_rmse(errors) - paper_mean(errors) > 0.3  # the quadratic mean exceeds the arithmetic one


def test_paper_mean_is_the_pooled_rmse_when_landmarks_agree():
    errors = one_image_per_landmark([6.0] * 8)
    assert paper_mean(errors) == pytest.approx(6.0)
    assert pooled_rmse(errors) == pytest.approx(6.0)


def test_paper_mean_weighs_landmarks_not_points():
    # Landmark 1 seen in 9 images with error 2, landmark 2 in one with error 10: pooled is mostly landmark 1.
    errors = np.full((10, 8), np.nan)
    errors[:9, 0], errors[9, 1] = 2.0, 10.0
    assert paper_mean(errors) == pytest.approx(6.0)
    assert pooled_rmse(errors) == pytest.approx(math.sqrt((9 * 4 + 100) / 10))


def test_paper_mean_skips_a_landmark_never_visible():
    values = [11.49, 4.71, 12.34, 16.66, 5.43, 6.87, 6.00, 5.17]
    errors = one_image_per_landmark(values)
    errors[:, 3] = np.nan
    assert paper_mean(errors) == pytest.approx(np.mean(np.delete(values, 3)))
    assert math.isnan(paper_mean(np.full((4, 8), np.nan)))


# --- the resamples -----------------------------------------------------------------------------------------------


def test_counts_rows_sum_to_n_when_subjects_have_equal_images():
    subjects = np.repeat(["a", "b", "c", "d", "e"], 7)
    counts = hierarchical_counts(subjects, 500, np.random.default_rng(0))
    assert counts.shape == (500, 35)
    assert counts.dtype.kind == "i"
    assert np.all(counts.sum(1) == 35)


def test_counts_rows_sum_to_n_on_average_with_unequal_subjects():
    subjects = np.repeat(["a", "b", "c", "d"], [1, 2, 3, 10])
    counts = hierarchical_counts(subjects, 4000, np.random.default_rng(0))
    sums = counts.sum(1)
    assert sums.mean() == pytest.approx(16, rel=0.03)
    assert sums.std() > 1  # a drawn "d" brings 10 images, a drawn "a" one
    assert counts.mean(0) == pytest.approx(np.ones(16), abs=0.15)  # every image is drawn once on average


def test_counts_go_only_to_drawn_subjects_in_whole_image_draws():
    sizes = np.array([3, 5, 2, 4, 6])
    subjects = np.repeat([f"s{g}" for g in range(5)], sizes)
    counts = hierarchical_counts(subjects, 1000, np.random.default_rng(1))
    per_subject = np.stack([counts[:, subjects == f"s{g}"].sum(1) for g in range(5)], axis=1)  # (R, G)
    assert np.all(per_subject % sizes == 0)  # a subject gets 0, n_g, 2 n_g, ... image draws
    draws = per_subject // sizes
    assert np.all(draws.sum(1) == 5)  # 5 subject draws per resample
    assert np.any(draws == 0)  # some subjects are left out of some resamples, and all their images with them
    left_out = np.repeat(draws == 0, sizes, axis=1)
    assert np.all(counts[left_out] == 0)


def test_a_subject_drawn_twice_gets_two_independent_image_draws():
    subjects = np.repeat(["a", "b", "c", "d"], 2)
    counts = hierarchical_counts(subjects, 2000, np.random.default_rng(2))
    pairs = counts.reshape(2000, 4, 2)
    twice = pairs.sum(-1) == 4
    assert twice.any()
    # Two draws of 2 images are 4 uniform draws: image 1 gets 1 or 3 of them too, not only the even counts of a copy.
    assert np.any(pairs[twice][:, 0] % 2 == 1)


def test_counts_are_seeded():
    subjects = np.repeat(["a", "b", "c"], [4, 2, 5])
    first = hierarchical_counts(subjects, 50, np.random.default_rng(7))
    np.testing.assert_array_equal(first, hierarchical_counts(subjects, 50, np.random.default_rng(7)))
    assert not np.array_equal(first, hierarchical_counts(subjects, 50, np.random.default_rng(8)))
    np.testing.assert_array_equal(
        seed_counts(3, 50, np.random.default_rng(7)), seed_counts(3, 50, np.random.default_rng(7))
    )
    assert not np.array_equal(
        seed_counts(3, 50, np.random.default_rng(7)), seed_counts(3, 50, np.random.default_rng(8))
    )


@pytest.mark.parametrize("seeds", [1, 3, 5])
def test_seed_counts_draw_s_seeds(seeds):
    counts = seed_counts(seeds, 300, np.random.default_rng(0))
    assert counts.shape == (300, seeds)
    assert np.all(counts.sum(1) == seeds)
    assert (seeds == 1) == np.all(counts == 1)


def test_resampled_paper_mean_of_the_data_is_the_seed_averaged_paper_mean():
    errors, _ = study_errors(images=5)
    errors = np.stack([jitter(errors[0], seed) for seed in range(3)])
    errors[:, :, 2] = np.nan  # a landmark never visible
    expected = np.mean([paper_mean(seed_errors) for seed_errors in errors])
    result = resampled_paper_mean(errors, np.ones((1, errors.shape[1]), int), np.ones((1, 3), int))
    assert result == pytest.approx([expected])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_paper_mean_equals_the_paper_mean_of_the_repeated_images(seed):
    rng = np.random.default_rng(seed)
    errors, subjects = study_errors(subjects=4, images=6, seeds=3, seed=seed)
    errors = np.stack([jitter(errors[0], seed * 10 + s) for s in range(3)])
    images = hierarchical_counts(subjects, 6, rng)
    seeds = seed_counts(3, 6, rng)
    expected = [
        np.average([paper_mean(np.repeat(errors[s], images[r], axis=0)) for s in range(3)], weights=seeds[r])
        for r in range(6)
    ]
    np.testing.assert_allclose(resampled_paper_mean(errors, images, seeds), expected, rtol=1e-12)


# --- one strategy ---------------------------------------------------------------------------------------------


def test_paper_mean_interval_holds_the_estimate_and_narrows_with_more_subjects():
    few, subjects_few = study_errors(subjects=4, images=10)
    many, subjects_many = study_errors(subjects=64, images=10)
    estimate = np.mean([paper_mean(errors) for errors in few])
    low, high = paper_mean_interval(few, subjects_few, resamples=500, seed=0)
    assert low < estimate < high
    assert (low, high) == paper_mean_interval(few, subjects_few, resamples=500, seed=0)
    low_many, high_many = paper_mean_interval(many, subjects_many, resamples=500, seed=0)
    assert high_many - low_many < 0.5 * (high - low)


def test_paper_mean_interval_of_constant_errors_is_that_constant():
    errors, subjects = study_errors()
    assert paper_mean_interval(np.where(np.isfinite(errors), 5.0, np.nan), subjects, 200) == pytest.approx((5.0, 5.0))


# --- comparisons -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seeds", "paired_seeds"), [(1, False), (1, True), (3, True)])
def test_identical_strategies_differ_by_nothing(seeds, paired_seeds):
    a, subjects = study_errors(seeds=seeds)
    a = np.stack([jitter(a[0], s) for s in range(seeds)])  # each training seed a little different
    comparison = compare(a, a.copy(), subjects, resamples=300, seed=0, paired_seeds=paired_seeds)
    assert comparison.difference == 0.0
    assert (comparison.low, comparison.high) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert comparison.ratio == 1.0
    assert (comparison.ratio_low, comparison.ratio_high) == pytest.approx((1.0, 1.0), abs=1e-12)
    assert comparison.p_value == 1.0
    assert comparison.median_subject_difference == 0.0
    assert comparison.subjects == 8
    assert difference_verdict(comparison, "lower") == "inconclusive"


def test_identical_strategies_with_unpaired_seeds_draw_different_seeds():
    a, subjects = study_errors()
    a = np.stack([a[0], a[0] * 1.2, a[0] * 0.8])  # seed-to-seed spread
    comparison = compare(a, a.copy(), subjects, resamples=300, seed=0, paired_seeds=False)
    assert comparison.difference == 0.0
    assert comparison.low < 0 < comparison.high  # a and b drew different seeds in some resamples
    assert difference_verdict(comparison, "lower") == "inconclusive"


@pytest.mark.parametrize("shift", [0.5, 2.0])
def test_a_shift_of_every_error_is_found(shift):
    a, subjects = study_errors()
    a = np.stack([jitter(a[0], s) for s in range(3)])
    b = a + shift
    comparison = compare(a, b, subjects, resamples=500, seed=0, paired_seeds=True)
    expected = np.mean([paper_mean(a[s]) - paper_mean(b[s]) for s in range(3)])
    assert comparison.difference == pytest.approx(expected)
    assert -shift <= comparison.difference <= -0.5 * shift  # RMSE(e + c) - RMSE(e) <= c (triangle inequality)
    assert comparison.low <= comparison.difference <= comparison.high < 0
    assert comparison.ratio < 1
    assert comparison.median_subject_difference < 0
    assert difference_verdict(comparison, "lower") == "holds"


@pytest.mark.parametrize(("affected", "verdict"), [(1, "inconclusive"), (8, "holds")])
def test_subjects_are_the_units(affected, verdict):
    base, subjects = study_errors(subjects=8, images=20)
    a = jitter(base, 1)
    b = jitter(base, 2)
    b[:, np.isin(subjects, [f"subject{g}" for g in range(affected)])] += 3.0
    comparison = compare(a, b, subjects, resamples=1000, seed=0, paired_seeds=True)
    assert comparison.difference < -0.2
    assert difference_verdict(comparison, "lower") == verdict
    # Resampling images as if they were independent finds the one-subject effect "significant".
    images = compare(a, b, np.arange(len(subjects)).astype(str), resamples=1000, seed=0, paired_seeds=True)
    assert difference_verdict(images, "lower") == "holds"


@pytest.mark.parametrize("paired_seeds", [False, True])
def test_seed_to_seed_noise_widens_the_interval(paired_seeds):
    base, subjects = study_errors(seeds=1)
    a, b = jitter(base, 1), jitter(base, 2) + 0.5
    clean = compare(np.repeat(a, 3, 0), np.repeat(b, 3, 0), subjects, resamples=1000, seed=0, paired_seeds=paired_seeds)
    factor = np.random.default_rng(3).normal(1.0, 0.15, size=(2, 3, 1, 1))  # each training seed a bit better or worse
    noisy = compare(a * factor[0], b * factor[1], subjects, resamples=1000, seed=0, paired_seeds=paired_seeds)
    assert noisy.high - noisy.low > 2 * (clean.high - clean.low)


@pytest.mark.parametrize(
    ("factor", "claim", "verdict"),
    [
        (0.9, "lower", "holds"),  # fine-tune better than the baseline
        (1.1, "lower", "does not hold"),  # fine-tune worse
        (1.1, "higher", "holds"),
        (0.9, "higher", "does not hold"),
        (1.0, "lower", "inconclusive"),
    ],
)
def test_difference_verdict_follows_the_numbers(factor, claim, verdict):
    baseline, subjects = study_errors()
    baseline = np.stack([jitter(baseline[0], s) for s in range(3)])
    finetune = jitter(baseline * factor, 10, sd=0.05) if factor != 1.0 else baseline.copy()
    comparison = compare(finetune, baseline, subjects, resamples=500, seed=0, paired_seeds=True)
    assert difference_verdict(comparison, claim) == verdict


@pytest.mark.parametrize(("factor", "verdict"), [(2.2, "holds"), (1.1, "does not hold"), (1.0, "inconclusive")])
def test_ratio_verdict(factor, verdict):
    b, subjects = study_errors()
    b = np.stack([jitter(b[0], s) for s in range(3)])
    a = jitter(b * factor, 10, sd=0.05) if factor != 1.0 else b.copy()
    comparison = compare(a, b, subjects, resamples=500, seed=0, paired_seeds=True)
    assert comparison.ratio == pytest.approx(factor, rel=0.02)
    assert comparison.ratio_low <= comparison.ratio <= comparison.ratio_high
    assert ratio_verdict(comparison, 2.1, 2.4) == verdict


def test_wilcoxon_with_8_subjects_in_one_direction_is_exact():
    a, subjects = study_errors(subjects=8, images=10)
    offsets = np.repeat(np.arange(1.0, 9.0), 10)[None, :, None]  # a different effect per subject: no ties
    comparison = compare(a, a + offsets, subjects, resamples=100, seed=0, paired_seeds=True)
    assert comparison.subjects == 8
    assert comparison.p_value == pytest.approx(2 / 2**8)
    assert comparison.median_subject_difference < 0


def test_p_value_needs_two_subjects():
    a, subjects = study_errors(subjects=1, images=10)
    comparison = compare(a, a + 1.0, subjects, resamples=100, seed=0, paired_seeds=True)
    assert comparison.subjects == 1
    assert math.isnan(comparison.p_value)


def test_compare_is_seeded():
    a, subjects = study_errors()
    b = jitter(a, 4)
    assert compare(a, b, subjects, 200, 5) == compare(a, b, subjects, 200, 5)
    assert compare(a, b, subjects, 200, 5).low != compare(a, b, subjects, 200, 6).low


def test_compare_unpaired_on_two_image_sets():
    a, subjects_a = study_errors(subjects=4, images=15, seeds=3, seed=1)
    b, subjects_b = study_errors(subjects=4, images=10, seeds=2, seed=2)
    b = b + 4.0  # every subject of b worse than every subject of a
    comparison = compare_unpaired(a, subjects_a, b, subjects_b, resamples=500, seed=0)
    assert comparison.test == "mann-whitney"
    assert comparison.subjects == 8
    assert comparison.p_value == pytest.approx(2 / math.comb(8, 4))  # exact: the most extreme of 70 orderings
    assert comparison.difference == pytest.approx(comparison.mean_a - comparison.mean_b)
    assert comparison.low <= comparison.difference <= comparison.high < 0
    assert comparison.median_subject_difference < 0
    assert difference_verdict(comparison, "lower") == "holds"


def test_compare_unpaired_of_the_same_data_is_inconclusive():
    a, subjects = study_errors(subjects=6, images=10)
    comparison = compare_unpaired(a, subjects, a.copy(), subjects, resamples=500, seed=0)
    assert comparison.difference == 0.0
    assert comparison.low < 0 < comparison.high  # independent resamples of each side
    assert difference_verdict(comparison, "lower") == "inconclusive"


def test_comparison_is_frozen():
    a, subjects = study_errors(seeds=1)
    comparison = compare(a, a, subjects, resamples=10)
    with pytest.raises(AttributeError):
        comparison.difference = 1.0  # type: ignore[misc]


# --- what is refused ---------------------------------------------------------------------------------------------

A, SUBJECTS = study_errors(subjects=2, images=5, seeds=3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: compare(A, A[:, :9], SUBJECTS), r"same images, got 10 and 9"),
        (lambda: compare(A, A, SUBJECTS[:9]), r"subjects must be \(10,\)"),
        (lambda: compare(A, A[:2], SUBJECTS, paired_seeds=True), r"paired_seeds needs as many seeds.*3 and 2"),
        (lambda: compare(A[0], A, SUBJECTS), r"a must be \(seeds, images, landmarks\).*\(10, 8\)"),
        (lambda: compare(A, A[..., :7], SUBJECTS), r"a and b must have the same landmarks, got 8 and 7"),
        (lambda: compare_unpaired(A, SUBJECTS, A[..., :7], SUBJECTS), r"the same landmarks, got 8 and 7"),
        (lambda: compare(A, A, SUBJECTS, resamples=0), r"resamples must be at least 1"),
        (lambda: compare_unpaired(A, SUBJECTS[:4], A, SUBJECTS), r"subjects_a must be \(10,\)"),
        (lambda: paper_mean_interval(A[0], SUBJECTS), r"errors must be \(seeds, images, landmarks\)"),
        (lambda: compare_unpaired(A, SUBJECTS, A[:, :, :, None], SUBJECTS), r"b must be \(seeds, images, land"),
        (lambda: resampled_paper_mean(A, np.ones((4, 9)), np.ones((4, 3))), r"image_counts must be \(resamples, 10\)"),
        (lambda: resampled_paper_mean(A, np.ones((4, 10)), np.ones((4, 2))), r"seed_counts must be \(4, 3\)"),
        (lambda: paper_mean(A), r"errors must be \(images, landmarks\)"),
        (lambda: resampled_paper_mean(A[0], np.ones((4, 10)), np.ones((4, 3))), r"errors_by_seed must be \(seeds"),
        (lambda: seed_counts(0, 5, np.random.default_rng(0)), r"seeds must be at least 1"),
        (lambda: hierarchical_counts(np.array([]), 5, np.random.default_rng(0)), r"non-empty \(images,\)"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_claims_are_refused():
    comparison = compare(A, A, SUBJECTS, resamples=10)
    with pytest.raises(ValueError, match="claim must be 'lower' or 'higher'"):
        difference_verdict(comparison, "smaller")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="low <= high"):
        ratio_verdict(comparison, 2.4, 2.1)


def test_verdicts_are_the_declared_ones():
    assert statistics.VERDICTS == ("holds", "does not hold", "inconclusive")
