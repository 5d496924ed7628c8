"""``scripts/cohort_spread.py``: the phantom cohort's Procrustes spread, printed and written as JSON."""

import importlib.util
import json

import pytest

from tests.helpers import REPO


def load_script():
    spec = importlib.util.spec_from_file_location("cohort_spread", REPO / "scripts" / "cohort_spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_spread_of_a_small_cohort_is_printed_and_written(tmp_path, capsys):
    assert load_script().main(["--seeds", "12", "--json", str(tmp_path / "spread.json")]) == 0
    result = json.loads((tmp_path / "spread.json").read_text())
    assert result["subjects"] == 12 and 0.5 < result["rms_mm"] < 10
    assert set(result["per_landmark_mm"]) == {"L_ASIS", "L_IOF", "L_MOF", "SPS", "IPS", "R_MOF", "R_IOF", "R_ASIS"}
    assert f"{result['rms_mm']:.2f} mm RMS" in capsys.readouterr().out


def test_a_shifted_cohort_is_measured_and_a_bad_shift_refused(tmp_path, capsys):
    script = load_script()
    assert script.main(["--seeds", "40", "--json", str(tmp_path / "near.json")]) == 0
    assert script.main(["--seeds", "40", "--shift", "1", "--json", str(tmp_path / "far.json")]) == 0
    near, far = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("near", "far"))
    assert near["shift"] == 0.0 and far["shift"] == 1.0
    assert far["rms_mm"] > near["rms_mm"]  # the shifted cohort holds more extreme shapes
    assert "(shift 1)" in capsys.readouterr().out
    for bad in ("-0.5", "2"):
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--seeds", "5", "--shift", bad])
        assert exit_info.value.code == 2
    assert "--shift must be in [0, 1]" in capsys.readouterr().err
