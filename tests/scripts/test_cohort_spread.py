"""``scripts/cohort_spread.py``: the phantom cohort's Procrustes spread, printed and written as JSON."""

import importlib.util
import json

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
