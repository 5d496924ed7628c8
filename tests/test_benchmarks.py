"""The benchmarks' shared result writer: every goal's ``met`` follows from its op, value and target."""

import json

import pytest

from benchmarks import common


@pytest.mark.parametrize(
    "value, op, target, met",
    [
        (3, "<=", 3, True),
        (4, "<=", 3, False),
        (1.6, ">=", 1.6, True),
        (1.5, ">=", 1.6, False),
        (2, "<", 3, True),
        (3, ">", 3, False),
        (True, "==", True, True),
        (False, "==", True, False),
    ],
)
def test_a_goal_is_met_by_its_own_comparison(value, op, target, met):
    assert common.goal("g", value, op, target, "x") == {
        "name": "g",
        "value": value,
        "op": op,
        "target": target,
        "unit": "x",
        "met": met,
    }


def test_an_unknown_comparison_is_refused():
    with pytest.raises(ValueError, match="op must be one of"):
        common.goal("g", 1, "=<", 2, "x")


def test_the_result_file_has_the_shared_format(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    goals = [common.goal("fast", 2.0, "<=", 3.0, "s"), common.goal("faster", 2.0, "<=", 1.0, "s")]
    out = common.write_result("example", {"seconds": 2.0}, goals, threads=2, gpu_file=False)
    report = json.loads(out.read_text())
    assert out == tmp_path / "example.json"
    assert set(report) == {"benchmark", "commit", "machine", "results", "goals"} and report["benchmark"] == "example"
    assert report["machine"]["threads"] == 2 and [g["met"] for g in report["goals"]] == [True, False]
    assert "example: 1/2 goals met; not met: ['faster']" in capsys.readouterr().out
