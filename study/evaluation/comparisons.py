"""Strategies compared with their intervals, and the paper's claims with verdicts computed from them.

A comparison ``a`` against ``b`` on one split is the difference of their mean RMSE (the paper's
mean of per-landmark RMSEs, averaged over the seeds that learned), with a 95% interval from a
hierarchical bootstrap that resamples seeds, subjects and images within subjects, the same images
for both sides (``components.statistics.compare``), and a paired Wilcoxon test over per-subject
means: subjects and seeds are the units, never images. By default every strategy is compared with
``baseline``, and ``finetune`` with each control (``finetune_*``).

A claim of the paper reads "holds", "does not hold" or "inconclusive" (its interval contains 0);
``comparison.md`` puts the paper's Table 1 beside ours and lists the claims. Nothing in it is
written by hand: it is computed from the per-image records, like Table 1.
"""

import math
from dataclasses import asdict

from components import statistics
from components.anatomy import PAPER
from components.dataset import TEST_SPLITS
from study.config import StudyConfig
from study.evaluation import paper
from study.evaluation.table import DIVERGED, Outcome, aligned_errors, format_cell, landmark_columns

__all__ = [
    "RANDOMIZED",
    "claims",
    "compare_strategies",
    "comparison_markdown",
    "comparisons_markdown",
    "default_pairs",
    "interval",
    "learned",
]

RANDOMIZED = "randomized_"  # the prefix of a strategy trained with domain randomization beside its clean twin
COMPOSITE_RATIO = (2.1, 2.4)  # the paper: "approximately 2.4 and 2.1 times increases in error relative to the baseline"


def default_pairs(strategies: list[str]) -> list[tuple[str, str]]:
    """Every strategy against ``baseline``, ``finetune`` against each control (``finetune_*``), and each
    ``randomized_<name>`` (domain randomization) against its clean twin ``<name>`` when it is not the baseline."""
    pairs = [(name, "baseline") for name in strategies if name != "baseline"] if "baseline" in strategies else []
    if "finetune" in strategies:
        pairs += [("finetune", name) for name in strategies if name.startswith("finetune_")]
    for name in strategies:
        twin = name.removeprefix(RANDOMIZED)
        if name.startswith(RANDOMIZED) and twin in strategies and twin != "baseline":
            pairs.append((name, twin))
    return pairs


def learned(outcomes: list[Outcome], strategy: str) -> list[Outcome]:
    return [o for o in outcomes if o.strategy == strategy and o.div is None]


def compare_pair(outcomes: list[Outcome], a: str, b: str, split: str, config: StudyConfig) -> dict:
    """One comparison as a dict (``difference`` = a - b in px, ``low``, ``high``, ``ratio`` ..., ``p_value``);
    ``div`` is True (and the numbers NaN) when either side has no seed that learned."""
    mine, theirs = learned(outcomes, a), learned(outcomes, b)
    row = {"split": split, "a": a, "b": b, "seeds_a": len(mine), "seeds_b": len(theirs), "div": not (mine and theirs)}
    if row["div"]:
        return (
            row
            | {key: math.nan for key in ("difference", "low", "high", "ratio", "ratio_low", "ratio_high")}
            | {
                "subjects": 0,
                "p_value": math.nan,
            }
        )
    errors, subjects = aligned_errors(mine + theirs, split, config.data.landmarks.landmark_set())
    paired = [o.seed for o in mine] == [o.seed for o in theirs]
    result = statistics.compare(
        errors[: len(mine)],
        errors[len(mine) :],
        subjects,
        config.report.bootstrap_resamples,
        config.seed,
        paired_seeds=paired,
    )
    return row | asdict(result) | {"paired_seeds": paired}


def compare_strategies(outcomes: list[Outcome], config: StudyConfig, splits=TEST_SPLITS) -> list[dict]:
    """The default comparisons (``default_pairs``) of the outcomes' strategies on every split."""
    strategies = list(dict.fromkeys(o.strategy for o in outcomes))
    return [compare_pair(outcomes, a, b, split, config) for split in splits for a, b in default_pairs(strategies)]


def compare_splits(outcomes: list[Outcome], strategy: str, config: StudyConfig) -> statistics.Comparison | None:
    """``strategy``'s mean RMSE on novel subjects against novel views (two image sets: unpaired)."""
    mine = learned(outcomes, strategy)
    if not mine:
        return None
    landmarks = config.data.landmarks.landmark_set()
    novel_subject, subjects_ns = aligned_errors(mine, "novel_subject", landmarks)
    novel_view, subjects_nv = aligned_errors(mine, "novel_view", landmarks)
    return statistics.compare_unpaired(
        novel_subject, subjects_ns, novel_view, subjects_nv, config.report.bootstrap_resamples, config.seed
    )


def interval(value: float, low: float, high: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


NOT_TESTABLE = "not testable"  # a claim's verdict when a strategy it needs learned in no seed
CROSS_VALIDATED = (  # what comparison.md says of a cross-validation's rows
    " Ours are pooled over the folds of a leave-one-subject-out cross-validation: every image is of the subject "
    "its fold held out, so our novel_view rows are novel subjects in the paper's terms (its novel_subject rows)."
)


def div_evidence(outcomes: list[Outcome], *strategies: str) -> str:
    """Why a claim cannot be tested: e.g. ``composite DIV in 3/3 seeds``."""
    notes = []
    for strategy in strategies:
        runs = [o for o in outcomes if o.strategy == strategy]
        if runs and not learned(outcomes, strategy):
            notes.append(f"{strategy} DIV in {len(runs)}/{len(runs)} seeds")
    return "; ".join(notes)


def found(comparisons: list[dict], a: str, b: str, split: str) -> dict | None:
    return next((c for c in comparisons if (c["a"], c["b"], c["split"]) == (a, b, split)), None)


def claims(outcomes: list[Outcome], comparisons: list[dict], config: StudyConfig, splits=TEST_SPLITS) -> list[dict]:
    """The paper's claims (and what our controls add), each with its evidence and a computed verdict; those
    about novel subjects against novel views only when ``splits`` has both (not in a cross-validation)."""
    rows = []
    for split in TEST_SPLITS:
        c = found(comparisons, "finetune", "baseline", split)
        if c is not None:
            verdict = (
                NOT_TESTABLE if c["div"] else statistics.difference_verdict(statistics.Comparison(**pick(c)), "lower")
            )
            rows.append(
                {
                    "claim": f"fine-tune beats the baseline on {split}",
                    "paper": f"{paper.PRINTED_MEANS[split]['finetune']} vs {paper.PRINTED_MEANS[split]['baseline']} px",
                    "ours": div_evidence(outcomes, "finetune", "baseline")
                    if c["div"]
                    else f"finetune - baseline {interval(c['difference'], c['low'], c['high'])} px",
                    "verdict": verdict,
                }
            )
    for split in TEST_SPLITS:
        c = found(comparisons, "composite", "baseline", split)
        if c is not None:
            low, high = COMPOSITE_RATIO
            verdict = (
                NOT_TESTABLE if c["div"] else statistics.ratio_verdict(statistics.Comparison(**pick(c)), low, high)
            )
            printed = paper.PRINTED_MEANS[split]
            rows.append(
                {
                    "claim": f"composite is about {low}-{high}x the baseline's error on {split}",
                    "paper": f"{printed['composite'] / printed['baseline']:.2f}x",
                    "ours": div_evidence(outcomes, "composite", "baseline")
                    if c["div"]
                    else f"{c['ratio']:.2f}x [{c['ratio_low']:.2f}, {c['ratio_high']:.2f}]",
                    "verdict": verdict,
                }
            )
    runs = [o for o in outcomes if o.strategy == "pose_only"]
    if runs:
        div = sum(o.div is not None for o in runs)
        verdict = "holds" if div == len(runs) else "does not hold" if div == 0 else "inconclusive"
        rows.append(
            {
                "claim": "pose-only training is DIV",
                "paper": DIVERGED,
                "ours": f"{div}/{len(runs)} seeds DIV",
                "verdict": verdict,
            }
        )
    for strategy in ("baseline", "composite", "finetune"):
        if not any(o.strategy == strategy for o in outcomes) or not set(TEST_SPLITS) <= set(splits):
            continue
        c = compare_splits(outcomes, strategy, config)
        printed = paper.PRINTED_MEANS
        rows.append(
            {
                "claim": f"{strategy}: novel subjects are easier than novel views",
                "paper": f"{printed['novel_subject'][strategy]} vs {printed['novel_view'][strategy]} px",
                "ours": div_evidence(outcomes, strategy)
                if c is None
                else f"novel_subject - novel_view {interval(c.difference, c.low, c.high)} px",
                "verdict": NOT_TESTABLE if c is None else statistics.difference_verdict(c, "lower"),
            }
        )
    controls = [name for name in dict.fromkeys(o.strategy for o in outcomes) if name.startswith("finetune_")]
    for control in controls:
        for split in TEST_SPLITS:
            c = found(comparisons, "finetune", control, split)
            if c is None:
                continue
            verdict = (
                NOT_TESTABLE if c["div"] else statistics.difference_verdict(statistics.Comparison(**pick(c)), "lower")
            )
            rows.append(
                {
                    "claim": f"(ours, a control) fine-tune beats {control} on {split}",
                    "paper": "not tested",
                    "ours": div_evidence(outcomes, "finetune", control)
                    if c["div"]
                    else f"finetune - {control} {interval(c['difference'], c['low'], c['high'])} px",
                    "verdict": verdict,
                }
            )
    return rows


def pick(comparison: dict) -> dict:
    """The fields of a ``statistics.Comparison`` out of a comparison dict."""
    return {key: comparison[key] for key in statistics.Comparison.__dataclass_fields__}


def comparisons_markdown(comparisons: list[dict]) -> str:
    """The comparisons as a Markdown table."""
    lines = [
        "| split | a | b | a - b, px [95% CI] | a / b [95% CI] | subjects | p (per-subject Wilcoxon) | seeds a, b |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        if c["div"]:
            cells = [DIVERGED, DIVERGED, "", "", ""]
        else:
            cells = [
                interval(c["difference"], c["low"], c["high"]),
                f"{c['ratio']:.2f} [{c['ratio_low']:.2f}, {c['ratio_high']:.2f}]",
                str(c["subjects"]),
                f"{c['p_value']:.3g}",
            ]
            cells.append(f"{c['seeds_a']}, {c['seeds_b']}" + (" (paired)" if c.get("paired_seeds") else ""))
        lines.append("| " + " | ".join([c["split"], c["a"], c["b"], *cells]) + " |")
    lines.append(
        "\nmean RMSE (the paper's mean of per-landmark RMSEs, px, argmax), averaged over the seeds that learned; "
        "intervals: hierarchical bootstrap over seeds, subjects and images within subjects (the same images for "
        "a and b); p: two-sided Wilcoxon signed-rank over per-subject means."
    )
    return "\n".join(lines) + "\n"


def claims_markdown(rows: list[dict]) -> str:
    lines = ["| claim | the paper | ours | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['paper']} | {r['ours']} | **{r['verdict']}** |" for r in rows]
    return "\n".join(lines) + "\n"


def comparison_markdown(table: list[dict], comparisons: list[dict], claim_rows: list[dict], config: StudyConfig) -> str:
    """``comparison.md``: the paper's Table 1 beside ours, ratios to the baseline, and the claims' verdicts. The
    per-landmark columns are set beside the paper's only for a study of the paper's 8 landmarks; with another
    set the means and ratios are compared."""
    size = config.data.image_size
    landmarks = config.data.landmarks.landmark_set()
    per_landmark = landmark_columns(landmarks) if landmarks.names == PAPER.names else []
    note = (
        ""
        if per_landmark
        else f" This study's landmark set '{landmarks.name}' is not the paper's 8: the means are compared, not "
        "the landmarks."
    )
    lines = [
        f"# {config.name}: the paper's Table 1 beside ours",
        "",
        f"Computed by `study reproduce` from `per_image/*.csv`; nothing here is written by hand. The paper's RMSEs "
        f"are px at {paper.IMAGE_SIZE} px, ours at {size} px: compare the ratios to the baseline (scale-free), "
        f"not the pixels.{note}" + (CROSS_VALIDATED if config.report.cross_validation is not None else ""),
        "",
        "| " + " | ".join(["split", "strategy", "source", "mean", "÷ baseline", *per_landmark]) + " |",
        "|---|---|---|---|---|" + "---|" * len(per_landmark),
    ]
    ours = {(r["split"], r["strategy"]): r for r in table}
    for split, strategies in paper.TABLE_1.items():
        for strategy, printed_landmarks in strategies.items():
            printed = paper.PRINTED_MEANS[split]
            if printed_landmarks is None:
                theirs = [DIVERGED, "", *["-"] * len(per_landmark)]
            else:
                theirs = [f"{printed[strategy]:.2f}", f"{printed[strategy] / printed['baseline']:.2f}"]
                theirs += [f"{v:.2f}" for v in printed_landmarks] if per_landmark else []
            lines.append(f"| {split} | {strategy} | paper | " + " | ".join(theirs) + " |")
            row, base = ours.get((split, strategy)), ours.get((split, "baseline"))
            if row is None:
                continue
            ratio = row["mean"] / base["mean"] if base and base["diverged"] < base["seeds"] else math.nan
            cells = [format_cell(row, "mean"), DIVERGED if row["diverged"] == row["seeds"] else f"{ratio:.2f}"]
            cells += [format_cell(row, column) for column in per_landmark]
            lines.append("| | | ours | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The paper's claims",
        "",
        claims_markdown(claim_rows),
        "## Comparisons",
        "",
        comparisons_markdown(comparisons),
    ]
    return "\n".join(lines)
