"""A fine-tune sweep that shares one baseline against the same sweep retraining the baseline in every trial.

Both sweeps sample the same trials: the same search space (pose-loss weight, fine-tune learning
rate and epochs), the same TPE seed and parameter order, ASHA switched off so every trial runs to
its end. The "retrain" sweep trains strategy ``scratch_finetune``, the baseline's phase followed by
the fine-tune phase, so each of its trials pays for a baseline. Training time is the baseline's
training run (shared sweep only) plus the sum of the trials' wall times in Tune.

A smaller version of the demo (128 px, 80 training DRRs, a 10-epoch baseline) keeps it to a few
minutes on 2 CPU cores. Both baselines train in process, as trials do, so start-up costs match.

Run: ``python benchmarks/sweep.py [--quick]``; writes ``benchmarks/results/sweep.json``.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import goal, write_result  # noqa: E402
from study.config import StudyConfig, load_config  # noqa: E402

SPACE = """
strategy: {strategy}
fixed: {{train.strategies.{strategy}.phases.{phase}.losses: {{bce: 1.0, pose: 0.01}}}}
parameters:
  pose_weight:
    {{path: train.strategies.{strategy}.phases.{phase}.losses.pose, distribution: loguniform, low: 1.0e-4, high: 1.0}}
  lr:
    {{path: train.strategies.{strategy}.phases.{phase}.learning_rate,
      distribution: loguniform, low: 1.0e-5, high: 1.0e-3}}
  epochs: {{path: train.strategies.{strategy}.phases.{phase}.epochs, distribution: int, low: 1, high: 3}}
"""


def bench_config(folder: Path, quick: bool) -> StudyConfig:
    overrides = [
        "name=sweep-bench",
        "data.views={train: 20, novel_view: 2, val: 8, novel_subject: 2}",
        "data.cohort.subjects={train: 4, val: 1, novel_subject: 1}",
        f"train.storage={folder / 'runs'}",
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
        "tracking.overlays=0",
        f"sweep.storage={folder / 'sweeps'}",
        "sweep.grace_epochs=100",
        "report.examples=0",
        "report.bootstrap_resamples=10",
    ]
    config = load_config("demo", overrides)
    raw = config.model_dump(mode="json")
    raw["train"]["strategies"]["baseline"]["phases"][0]["epochs"] = 4 if quick else 10
    baseline, finetune = raw["train"]["strategies"]["baseline"], raw["train"]["strategies"]["finetune"]
    raw["train"]["strategies"]["scratch_finetune"] = {"init": None, "phases": baseline["phases"] + finetune["phases"]}
    return StudyConfig.model_validate(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 trials and a 4-epoch baseline")
    args = parser.parse_args()
    trials = 2 if args.quick else 4

    from study.data.generate import generate
    from study.runtime import ensure_ray
    from study.sweeps.driver import sweep
    from study.training.driver import train

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        config = bench_config(folder, args.quick)
        generate(config, folder / "data")
        ensure_ray()
        started = time.perf_counter()  # the shared baseline trains in process, as every trial does
        baseline = train(config, "baseline", folder / "data", launcher="process")
        baseline_seconds = time.perf_counter() - started

        sweeps, walls = {}, {}
        for kind, strategy, phase in (("shared", "finetune", 0), ("retrain", "scratch_finetune", 1)):
            space = folder / f"{kind}.yaml"
            space.write_text(SPACE.format(strategy=strategy, phase=phase))
            started = time.perf_counter()
            init = baseline.best_checkpoint if kind == "shared" else None
            sweeps[kind] = sweep(config, space, trials, folder / "data", name=f"bench-{kind}", init=init)
            walls[kind] = time.perf_counter() - started

    def sampled(result):
        return sorted(
            tuple(round(v, 12) if isinstance(v, float) else v for v in r.params.values()) for r in result.trials
        )

    same_trials = sampled(sweeps["shared"]) == sampled(sweeps["retrain"])
    shared_trials = sum(r.seconds for r in sweeps["shared"].trials)
    shared_training = baseline_seconds + shared_trials
    retrain_training = sum(r.seconds for r in sweeps["retrain"].trials)
    speedup = retrain_training / shared_training
    results = {
        "trials": trials,
        "same_trials_sampled": same_trials,
        "baseline_training_s": round(baseline_seconds, 2),
        "shared_trials_s": round(shared_trials, 2),
        "shared_training_s": round(shared_training, 2),
        "retrain_training_s": round(retrain_training, 2),
        "shared_sweep_wall_s": round(walls["shared"], 2),
        "retrain_sweep_wall_s": round(walls["retrain"], 2),
        "retrain_over_shared": round(speedup, 3),
        "shared_best_val_rmse_px": sweeps["shared"].best.objective if sweeps["shared"].best else None,
        "retrain_best_val_rmse_px": sweeps["retrain"].best.objective if sweeps["retrain"].best else None,
    }
    goals = [
        goal("retrain-every-trial training time over shared-baseline training time", round(speedup, 3), ">=", 1.5, "x"),
        goal("both sweeps ran the same sampled trials", same_trials, "==", True, ""),
    ]
    write_result("sweep", results, goals, threads=2, gpu_file=False)


if __name__ == "__main__":
    main()
