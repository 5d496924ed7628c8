"""The shards ``study generate`` plans (no rendering, no Ray)."""

from study.config import load_config
from study.data.generate import cohort_splits, plan_shards


def test_the_fluoro_split_repeats_the_test_views():
    plans = plan_shards(load_config("demo"))

    def views(split: str) -> set:
        return {(p.source.subject_id, v) for p in plans if p.split == split for v in range(p.view_start, p.view_stop)}

    assert views("fluoro") == views("novel_view") | views("novel_subject")
    assert not views("fluoro") & views("train")
    assert not [p for p in plan_shards(load_config("demo", ["data.fluoro=null"])) if p.split == "fluoro"]


def test_novel_subjects_come_from_the_shifted_distribution_only_when_asked():
    plain = cohort_splits(load_config("demo"))
    shifted = cohort_splits(load_config("demo", ["data.cohort.novel_subject_shift=0.8"]))
    assert {s.phantom_shift for s in plain["novel_subject"]} == {0.0}
    assert {s.phantom_shift for s in shifted["novel_subject"]} == {0.8}
    assert shifted["train"] == plain["train"] and shifted["val"] == plain["val"]
    assert [s.phantom_seed for s in shifted["novel_subject"]] == [s.phantom_seed for s in plain["novel_subject"]]
