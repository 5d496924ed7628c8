"""How sure we are that one strategy's landmark error differs from another's: bootstrap intervals and tests.

The statistic. Table 1 reports, per landmark l, the RMSE over the images where it is visible,

    RMSE_l = sqrt( sum_i v_il e_il² / sum_i v_il ),     v_il = 1 if landmark l is visible in image i,

and as "Mean" the arithmetic mean of the per-landmark RMSEs (the paper's 8, or the N of the study's
landmark set: ``paper_mean``); a landmark never
visible is left out of that mean. This is not the RMSE pooled over all landmarks of all images at
once (``pooled_rmse``), which weighs every visible point equally: landmarks seen in more images
count more, and with every landmark seen equally often it is the quadratic mean of the RMSE_l, at
least as large as their arithmetic mean.

The units. Images of one subject are not independent (same anatomy, neighbouring views), and a
strategy's number depends on its training seed. So the resampled units are subjects and seeds, not
images: a hierarchical bootstrap draws, per resample,

1. the training seeds with replacement (``seed_counts``: how often each of the S seeds is drawn);
2. the subjects with replacement, and within each drawn subject its images with replacement; a
   subject drawn twice gets two independent image draws (``hierarchical_counts``).

A resample is thus a count per image c_i (R, N) and per seed w_s (R, S); its statistic weights the
images and seeds by them (``resampled_paper_mean``): RMSE_l over the weighted images, its mean over
the landmarks per seed, then the w-weighted mean over the seeds. Counts, not copied arrays, keep
2000 resamples of 1000 images cheap: two matrix products.

``paper_mean_interval`` is the 95% percentile interval of one strategy's seed-averaged paper mean.
A comparison (``compare``) of strategy a with b on the same test images reports the difference of
the seed-averaged paper means, a - b (negative: a has the lower error), the ratio a / b, and 95%
percentile intervals of both from resamples in which a and b see the same images (paired by image)
and, where their seeds correspond (fine-tune seed k starts from baseline seed k), the same seeds.
Beside the bootstrap it gives a test with subjects as the units: per subject, a's paper mean over
its images minus b's, and a two-sided Wilcoxon signed-rank test of those differences.
``compare_unpaired`` compares two different image sets (one strategy on two splits): independent
resamples on each side and a Mann-Whitney U test of the per-subject means.

A verdict on a claim is read from the interval: ``difference_verdict`` says "holds" when the whole
interval lies on the claimed side of 0, "inconclusive" when it contains 0, else "does not hold";
``ratio_verdict`` does the same for a claimed range of the ratio.

Every random draw comes from ``np.random.default_rng(seed)``: the same input gives the same numbers.
"""

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from components.metrics import per_landmark_rmse, pooled_rmse

__all__ = [
    "LEVEL",
    "VERDICTS",
    "Comparison",
    "compare",
    "compare_unpaired",
    "difference_verdict",
    "hierarchical_counts",
    "paper_mean",
    "paper_mean_interval",
    "per_landmark_rmse",
    "pooled_rmse",
    "ratio_verdict",
    "resampled_paper_mean",
    "seed_averaged_paper_mean",
    "seed_counts",
]

LEVEL = 0.95  # coverage of the percentile intervals
VERDICTS = ("holds", "does not hold", "inconclusive")


@dataclass(frozen=True)
class Comparison:
    """Strategy a against b: difference and ratio of their seed-averaged paper means, with intervals and a test.

    Attributes:
        difference: mean_a - mean_b, px; negative: a has the lower error.
        low, high: the 95% percentile interval of the difference over the bootstrap resamples.
        ratio: mean_a / mean_b.
        ratio_low, ratio_high: its 95% percentile interval.
        subjects: how many subjects enter the test (both sides together for an unpaired comparison).
        p_value: two-sided, of the Wilcoxon signed-rank test (paired) or the Mann-Whitney U test (unpaired)
            on per-subject paper means; 1.0 when every difference (paired) or every mean (unpaired) is the same;
            NaN with fewer than 2 subjects (paired) or no subject on a side (unpaired).
        median_subject_difference: paired, the median over subjects of a's minus b's per-subject mean;
            unpaired, the median of all differences between a subject of a and a subject of b
            (the Hodges-Lehmann estimate that goes with the Mann-Whitney test), px.
        mean_a, mean_b: the seed-averaged paper means, px.
        test: "wilcoxon" or "mann-whitney".
    """

    difference: float
    low: float
    high: float
    ratio: float
    ratio_low: float
    ratio_high: float
    subjects: int
    p_value: float
    median_subject_difference: float
    mean_a: float
    mean_b: float
    test: str


# --- the statistic -----------------------------------------------------------------------------------------------


def paper_mean(errors: np.ndarray) -> float:
    """Table 1's "Mean" of (N, L) errors (px, NaN where invisible): the mean of the L per-landmark RMSEs.

    Landmarks never visible (an all-NaN column) are left out; NaN if no landmark is ever visible.
    """
    errors = np.asarray(errors, dtype=float)
    if errors.ndim != 2:
        raise ValueError(f"errors must be (images, landmarks), got shape {errors.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice" for a landmark never visible
        rmse = per_landmark_rmse(errors)
    seen = np.isfinite(rmse)
    return float(rmse[seen].mean()) if seen.any() else math.nan


def seed_averaged_paper_mean(errors_by_seed: np.ndarray) -> float:
    """The mean over the seeds of (S, N, L) errors of each seed's ``paper_mean``."""
    return float(np.mean([paper_mean(errors) for errors in errors_by_seed]))


def resampled_paper_mean(errors_by_seed: np.ndarray, image_counts: np.ndarray, seed_counts: np.ndarray) -> np.ndarray:
    """(R,) seed-averaged paper mean of each resample, with images and seeds weighted by their counts.

    Per resample r and seed s, RMSE_rsl = sqrt(sum_i c_ri v_sil e_sil² / sum_i c_ri v_sil) over the
    images i that landmark l is visible in (v = 1 where the error is finite); m_rs is its mean over
    the landmarks with a weighted visible image; the result is sum_s w_rs m_rs / sum_s w_rs.

    Args:
        errors_by_seed: (S, N, L) errors, px, NaN where invisible.
        image_counts: (R, N) how often each image is drawn (``hierarchical_counts``); all ones: the data.
        seed_counts: (R, S) how often each seed is drawn (``seed_counts``).
    """
    errors_by_seed = np.asarray(errors_by_seed, dtype=float)
    image_counts, seed_counts = np.asarray(image_counts), np.asarray(seed_counts)
    if errors_by_seed.ndim != 3:
        raise ValueError(f"errors_by_seed must be (seeds, images, landmarks), got shape {errors_by_seed.shape}")
    seeds, images, landmarks = errors_by_seed.shape
    if image_counts.ndim != 2 or image_counts.shape[1] != images:
        raise ValueError(f"image_counts must be (resamples, {images}), got shape {image_counts.shape}")
    if seed_counts.shape != (len(image_counts), seeds):
        raise ValueError(f"seed_counts must be ({len(image_counts)}, {seeds}), got shape {seed_counts.shape}")
    visible = np.isfinite(errors_by_seed)
    squared = np.where(visible, errors_by_seed, 0.0) ** 2
    # (N, S·L) columns, so that both sums over the images are one matrix product each.
    squared = squared.transpose(1, 0, 2).reshape(images, seeds * landmarks)
    visible = visible.transpose(1, 0, 2).reshape(images, seeds * landmarks).astype(float)
    counts = image_counts.astype(float)
    squared_sum = (counts @ squared).reshape(-1, seeds, landmarks)
    visible_count = (counts @ visible).reshape(-1, seeds, landmarks)
    seen = visible_count > 0
    rmse = np.sqrt(np.divide(squared_sum, visible_count, out=np.zeros_like(squared_sum), where=seen))
    landmarks_seen = seen.sum(-1)
    per_seed = np.divide(
        rmse.sum(-1), landmarks_seen, out=np.full(landmarks_seen.shape, np.nan), where=landmarks_seen > 0
    )
    weights = seed_counts.astype(float)
    return (np.where(weights > 0, per_seed, 0.0) * weights).sum(-1) / weights.sum(-1)


# --- the resamples -----------------------------------------------------------------------------------------------


def hierarchical_counts(subjects: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R, N) how often each image is drawn when subjects, then their images, are drawn with replacement.

    Each resample draws G subjects from the G distinct ``subjects`` (N,), then for each drawn subject
    n_g of its n_g images. A subject drawn m times gets m independent image draws, which together are
    m·n_g uniform draws among its images: one multinomial per subject. A row sums to sum_g m_g n_g,
    N on average and exactly N when every subject has the same number of images.
    """
    subjects = np.asarray(subjects)
    if subjects.ndim != 1 or subjects.size == 0:
        raise ValueError(f"subjects must be a non-empty (images,) array, got shape {subjects.shape}")
    _, group = np.unique(subjects, return_inverse=True)
    group = group.reshape(-1)
    groups = int(group.max()) + 1
    draws = rng.multinomial(groups, np.full(groups, 1 / groups), size=resamples)  # (R, G)
    counts = np.zeros((resamples, subjects.size), dtype=np.int64)
    order = np.argsort(group, kind="stable")
    for g, members in enumerate(np.split(order, np.cumsum(np.bincount(group))[:-1])):
        counts[:, members] = rng.multinomial(draws[:, g] * members.size, np.full(members.size, 1 / members.size))
    return counts


def seed_counts(seeds: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R, S) how often each of the S training ``seeds`` is drawn when S are drawn with replacement."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    return rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=resamples)


# --- one strategy and comparisons --------------------------------------------------------------------------------


def paper_mean_interval(
    errors: np.ndarray, subjects: np.ndarray, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of one strategy's seed-averaged paper mean, px, over hierarchical resamples.

    Args:
        errors: (S, N, L) errors (N images, L landmarks) per training seed, px, NaN where invisible.
        subjects: (N,) the subject of each image.
        resamples: R, bootstrap resamples.
        seed: of the random draws.
    """
    errors = _errors_by_seed(errors, "errors")
    subjects = _subjects(subjects, len(errors[0]), "subjects")
    _check_resamples(resamples)
    rng = np.random.default_rng(seed)
    images = hierarchical_counts(subjects, resamples, rng)
    return _interval(resampled_paper_mean(errors, images, seed_counts(len(errors), resamples, rng)))


def compare(
    a: np.ndarray,
    b: np.ndarray,
    subjects: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
    paired_seeds: bool = False,
) -> Comparison:
    """Strategy a against b on the same N images: a - b and a / b of the seed-averaged paper means.

    Both sides of every resample see the same image counts; with ``paired_seeds`` (seed k of a belongs
    with seed k of b, e.g. fine-tune and the baseline it started from) also the same seed counts,
    otherwise each side's seeds are drawn independently. The test is Wilcoxon's signed-rank test of
    the per-subject differences.

    Args:
        a, b: (Sa, N, L) and (Sb, N, L) errors per training seed, px, NaN where invisible; rows aligned.
        subjects: (N,) the subject of each image.
        resamples: R, bootstrap resamples.
        seed: of the random draws.
        paired_seeds: resample a's and b's seeds together (needs Sa == Sb).
    """
    a, b = _same_landmarks(_errors_by_seed(a, "a"), _errors_by_seed(b, "b"))
    subjects = _subjects(subjects, len(a[0]), "subjects")
    if len(b[0]) != len(a[0]):
        raise ValueError(f"a and b must have the same images, got {len(a[0])} and {len(b[0])}")
    if paired_seeds and len(a) != len(b):
        raise ValueError(f"paired_seeds needs as many seeds in a as in b, got {len(a)} and {len(b)}")
    _check_resamples(resamples)
    rng = np.random.default_rng(seed)
    images = hierarchical_counts(subjects, resamples, rng)
    seeds_a = seed_counts(len(a), resamples, rng)
    seeds_b = seeds_a if paired_seeds else seed_counts(len(b), resamples, rng)
    differences = _per_subject_means(a, subjects) - _per_subject_means(b, subjects)
    differences = differences[np.isfinite(differences)]
    return _comparison(
        a,
        b,
        resampled_paper_mean(a, images, seeds_a),
        resampled_paper_mean(b, images, seeds_b),
        subjects=len(differences),
        p_value=_wilcoxon_p_value(differences),
        median_subject_difference=float(np.median(differences)) if len(differences) else math.nan,
        test="wilcoxon",
    )


def compare_unpaired(
    a: np.ndarray,
    subjects_a: np.ndarray,
    b: np.ndarray,
    subjects_b: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """a on its images against b on other images (e.g. one strategy on novel_subject and on novel_view).

    Each side's images are resampled on their own; the seeds are paired by index (the same seed
    counts) when Sa == Sb, else drawn independently. The test is the Mann-Whitney U test of the
    per-subject means of a against those of b.

    Args:
        a: (Sa, Na, L) errors per training seed, px, NaN where invisible; subjects_a: (Na,) their subjects.
        b: (Sb, Nb, L) errors; subjects_b: (Nb,).
        resamples: R, bootstrap resamples.
        seed: of the random draws.
    """
    a, b = _same_landmarks(_errors_by_seed(a, "a"), _errors_by_seed(b, "b"))
    subjects_a = _subjects(subjects_a, len(a[0]), "subjects_a")
    subjects_b = _subjects(subjects_b, len(b[0]), "subjects_b")
    _check_resamples(resamples)
    rng = np.random.default_rng(seed)
    images_a = hierarchical_counts(subjects_a, resamples, rng)
    images_b = hierarchical_counts(subjects_b, resamples, rng)
    seeds_a = seed_counts(len(a), resamples, rng)
    seeds_b = seeds_a if len(a) == len(b) else seed_counts(len(b), resamples, rng)
    means_a, means_b = _per_subject_means(a, subjects_a), _per_subject_means(b, subjects_b)
    means_a, means_b = means_a[np.isfinite(means_a)], means_b[np.isfinite(means_b)]
    pairwise = (means_a[:, None] - means_b[None, :]).ravel()
    return _comparison(
        a,
        b,
        resampled_paper_mean(a, images_a, seeds_a),
        resampled_paper_mean(b, images_b, seeds_b),
        subjects=len(means_a) + len(means_b),
        p_value=_mann_whitney_p_value(means_a, means_b),
        median_subject_difference=float(np.median(pairwise)) if len(pairwise) else math.nan,
        test="mann-whitney",
    )


# --- verdicts ----------------------------------------------------------------------------------------------------


def difference_verdict(comparison: Comparison, claim: Literal["lower", "higher"]) -> str:
    """Whether "a's error is ``claim`` than b's" holds: by where the difference's interval lies against 0."""
    if claim not in ("lower", "higher"):
        raise ValueError(f"claim must be 'lower' or 'higher', got {claim!r}")
    low, high = comparison.low, comparison.high
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 <= high:
        return "inconclusive"
    return "holds" if (high < 0) == (claim == "lower") else "does not hold"


def ratio_verdict(comparison: Comparison, low: float, high: float) -> str:
    """Whether "a is about ``low``-``high`` times b" holds: the ratio's interval overlaps [low, high].

    "inconclusive" when the difference's interval contains 0 (a and b are not told apart at all).
    """
    if not low <= high:
        raise ValueError(f"the claimed ratio range must have low <= high, got [{low}, {high}]")
    if difference_verdict(comparison, "lower") == "inconclusive":
        return "inconclusive"
    overlaps = comparison.ratio_low <= high and comparison.ratio_high >= low
    return "holds" if overlaps else "does not hold"


# --- helpers -----------------------------------------------------------------------------------------------------


def _errors_by_seed(errors: np.ndarray, name: str) -> np.ndarray:
    errors = np.asarray(errors, dtype=float)
    if errors.ndim != 3 or 0 in errors.shape:
        raise ValueError(f"{name} must be (seeds, images, landmarks) errors, got shape {errors.shape}")
    return errors


def _same_landmarks(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape[2] != b.shape[2]:
        raise ValueError(f"a and b must have the same landmarks, got {a.shape[2]} and {b.shape[2]}")
    return a, b


def _subjects(subjects: np.ndarray, images: int, name: str) -> np.ndarray:
    subjects = np.asarray(subjects)
    if subjects.shape != (images,):
        raise ValueError(f"{name} must be ({images},), one per image, got shape {subjects.shape}")
    return subjects


def _check_resamples(resamples: int) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")


def _per_subject_means(errors_by_seed: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """(G,) each subject's seed-averaged paper mean over its images, subjects in sorted order."""
    unique, group = np.unique(subjects, return_inverse=True)
    membership = (group.reshape(-1)[None, :] == np.arange(len(unique))[:, None]).astype(np.int64)  # (G, N)
    return resampled_paper_mean(errors_by_seed, membership, np.ones((len(unique), len(errors_by_seed))))


def _interval(samples: np.ndarray) -> tuple[float, float]:
    """The central ``LEVEL`` percentile interval of the finite samples; NaN, NaN if none."""
    finite = samples[np.isfinite(samples)]
    if not finite.size:
        return math.nan, math.nan
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _comparison(
    a: np.ndarray, b: np.ndarray, resampled_a: np.ndarray, resampled_b: np.ndarray, **test: object
) -> Comparison:
    """The Comparison of (Sa, ., L) a with (Sb, ., L) b from their (R,) resampled paper means and the test's fields."""
    mean_a, mean_b = seed_averaged_paper_mean(a), seed_averaged_paper_mean(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = resampled_a / resampled_b
        ratio = float(np.float64(mean_a) / np.float64(mean_b))
    low, high = _interval(resampled_a - resampled_b)
    ratio_low, ratio_high = _interval(ratios)
    return Comparison(
        difference=mean_a - mean_b,
        low=low,
        high=high,
        ratio=ratio,
        ratio_low=ratio_low,
        ratio_high=ratio_high,
        mean_a=mean_a,
        mean_b=mean_b,
        **test,
    )


def _wilcoxon_p_value(differences: np.ndarray) -> float:
    """Two-sided signed-rank p-value of (G,) paired differences; 1.0 if all are 0, NaN with fewer than 2."""
    if len(differences) < 2:
        return math.nan
    if not np.any(differences):
        return 1.0
    return float(stats.wilcoxon(differences).pvalue)


def _mann_whitney_p_value(means_a: np.ndarray, means_b: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value; 1.0 if every mean is the same, NaN with no subject on a side."""
    if not len(means_a) or not len(means_b):
        return math.nan
    if np.all(np.concatenate([means_a, means_b]) == means_a[0]):
        return 1.0
    return float(stats.mannwhitneyu(means_a, means_b, alternative="two-sided").pvalue)
