"""The sim-to-real table: models trained on clean DRRs and with domain randomization, tested on clean DRRs and on
the same views through the simulated fluoroscope (the ``fluoro`` split).

The ``fluoro`` split images the novel_view and novel_subject views again (same subjects, poses and landmarks),
so each fluoro image has a clean twin: the union of the two clean test splits, called ``clean`` here. For
every model (a strategy and, where the report has it, its ``randomized_<strategy>`` twin) and the trivial
predictor, the table gives the paper's mean RMSE (± sd over seeds, 95% hierarchical bootstrap interval) on
novel_view, novel_subject, clean and fluoro, and the gap ``fluoro - clean`` on the same images, paired by
(subject, view) and by seed, with its interval and Wilcoxon test over subjects (``components.statistics``).
Like Table 1, it is computed only from the per-image records.
"""

from dataclasses import asdict, replace

from components import statistics
from components.dataset import TEST_SPLITS
from study.config import StudyConfig
from study.evaluation.comparisons import RANDOMIZED, interval, learned
from study.evaluation.table import DIVERGED, TRIVIAL, Outcome, aligned_errors, format_cell, table_1

__all__ = ["CLEAN", "FLUORO", "sim_to_real", "sim_to_real_markdown"]

FLUORO = "fluoro"
CLEAN = "clean"  # novel_view and novel_subject together: the views the fluoro split images again


def models(strategies: list[str]) -> list[str]:
    """The strategies with a randomized twin, each followed by that twin (``baseline``, ``randomized_baseline``,
    ...); empty when there is none."""
    rows = []
    for name in strategies:
        twin = RANDOMIZED + name
        if not name.startswith(RANDOMIZED) and twin in strategies:
            rows += [name, twin]
    return rows


def relabelled(outcome: Outcome, splits: tuple[str, ...], label: str) -> Outcome:
    """``outcome`` with the records of ``splits`` as split ``label`` (and no other records)."""
    if outcome.records is None:
        return outcome
    return replace(outcome, records=[r | {"split": label} for r in outcome.records if r["split"] in splits])


def gap(outcomes: list[Outcome], strategy: str, clean_splits: tuple[str, ...], config: StudyConfig) -> dict:
    """``strategy``'s fluoro - clean on the same images (paired images and seeds); ``div`` when no seed learned."""
    mine = learned(outcomes, strategy)
    if not mine:
        return {"strategy": strategy, "div": True}
    clean = [relabelled(o, clean_splits, CLEAN) for o in mine]
    fluoro = [relabelled(o, (FLUORO,), CLEAN) for o in mine]
    errors, subjects = aligned_errors(fluoro + clean, CLEAN, config.data.landmarks.landmark_set())
    result = statistics.compare(
        errors[: len(mine)], errors[len(mine) :], subjects, config.report.bootstrap_resamples, config.seed, True
    )
    return {"strategy": strategy, "div": False, "images": len(subjects)} | asdict(result)


def sim_to_real(outcomes: list[Outcome], trivial: list[dict], config: StudyConfig, splits=None) -> dict:
    """The table's rows (Table 1's on ``splits``, default the data set's test splits, with the ``clean`` column
    added) and each model's gap; ``{}`` without a fluoro split or a randomized twin. ``columns`` lists the
    table's splits: the clean test splits reported (a cross-validation has novel_view only), clean, fluoro."""
    splits = config.data.test_splits() if splits is None else splits
    strategies = models(list(dict.fromkeys(o.strategy for o in outcomes)))
    clean_splits = tuple(split for split in TEST_SPLITS if split in splits)
    if FLUORO not in splits or not clean_splits or not strategies:
        return {}
    chosen = [o for o in outcomes if o.strategy in strategies]
    rows = table_1(chosen, trivial, config, (*clean_splits, FLUORO))
    rows += table_1(
        [relabelled(o, clean_splits, CLEAN) for o in chosen],
        [r | {"split": CLEAN} for r in trivial if r["split"] in clean_splits],
        config,
        (CLEAN,),
    )
    gaps = [gap(chosen, name, clean_splits, config) for name in strategies]
    columns = [*clean_splits, CLEAN, FLUORO]
    return {"rows": rows, "gaps": gaps, "strategies": [*strategies, TRIVIAL], "columns": columns}


def sim_to_real_markdown(table: dict, comparisons: list[dict]) -> str:
    """``sim_to_real.md``: the table, and the randomized twins against their clean twins on every split."""
    cells = {(r["split"], r["strategy"]): r for r in table["rows"]}
    gaps = {g["strategy"]: g for g in table["gaps"]}
    columns = table["columns"]
    header = ["model", "trained on", *columns, "fluoro - clean, px [95% CI]", "fluoro / clean", "p"]
    lines = [
        "# Sim to real: clean DRRs and the same views through the simulated fluoroscope",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for strategy in table["strategies"]:
        trained = "-" if strategy == TRIVIAL else "randomized" if strategy.startswith(RANDOMIZED) else "clean DRRs"
        row = [strategy.removeprefix(RANDOMIZED), trained]
        row += [format_cell(cells[(split, strategy)], "mean") for split in columns]
        g = gaps.get(strategy)  # none for the trivial predictor: it predicts the same points on both
        if g is None:
            row += ["-", "-", ""]
        elif g["div"]:
            row += [DIVERGED, DIVERGED, ""]
        else:
            row += [
                interval(g["difference"], g["low"], g["high"]),
                f"{g['ratio']:.2f} [{g['ratio_low']:.2f}, {g['ratio_high']:.2f}]",
                f"{g['p_value']:.3g}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "The paper's mean RMSE (px, argmax) ± sd over the training seeds that learned, with its 95% hierarchical "
        "bootstrap interval; clean: the clean test splits together, the very views the fluoro split images "
        "again through the simulated fluoroscope (one fixed draw per image, the same for every model). fluoro - "
        "clean: the same images and seeds on both sides (p: Wilcoxon over per-subject differences). trivial: every "
        "landmark at its mean training position.",
    ]
    twins = [c for c in comparisons if c["a"].startswith(RANDOMIZED) and c["a"] == RANDOMIZED + c["b"]]
    if twins:
        lines += ["", "Randomized against its clean twin (a - b, the same images):", ""]
        lines += [
            "| split | randomized | clean twin | a - b, px [95% CI] | a / b [95% CI] | p |",
            "|---|---|---|---|---|---|",
        ]
        for c in sorted(twins, key=lambda c: (c["b"], columns.index(c["split"]) if c["split"] in columns else 9)):
            numbers = (
                [DIVERGED, DIVERGED, ""]
                if c["div"]
                else [
                    interval(c["difference"], c["low"], c["high"]),
                    f"{c['ratio']:.2f} [{c['ratio_low']:.2f}, {c['ratio_high']:.2f}]",
                    f"{c['p_value']:.3g}",
                ]
            )
            lines.append("| " + " | ".join([c["split"], c["a"], c["b"], *numbers]) + " |")
    return "\n".join(lines) + "\n"
