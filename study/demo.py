"""``study demo``: the whole demo study on the embedded phantom, from data to a registered model.

1. the phantom DRR data set and a preview, with clean test views beside their fluoro twins
   (``study generate``, ``study preview``);
2. the paper's four strategies and two controls, and the baseline and fine-tune trained again with
   domain randomization, for 3 training seeds; then Table 1, the comparisons, the paper's claims with
   verdicts and the sim-to-real table (``study reproduce --preset demo``);
3. a fine-tune sweep from the shared baseline (``study sweep --preset demo --space finetune``),
   whose best model is registered and evaluated on the test splits;
4. where to look.

Run again, it reuses everything that finished.
"""

import time
from pathlib import Path

from study import console
from study.config import StudyConfig
from study.data.generate import generate
from study.data.preview import write_fluoro_preview, write_preview
from study.evaluation.reproduce import default_report_folder, reproduce
from study.sweeps.driver import default_sweep_name, resume, sweep
from study.sweeps.plan import PLAN_FILE, sweep_folder
from study.tracking.links import experiment_url, ui_command
from study.tracking.runs import Tracker

__all__ = ["run_demo"]

SPACE = "finetune"


def run_demo(config: StudyConfig, data_dir: Path, trials: int) -> None:
    """Run the four stages, saying where each one is."""
    started = time.monotonic()

    def stage(number: int, text: str) -> None:
        console.say(f"demo {number}/4: {text} ({console.format_duration(time.monotonic() - started)} elapsed)")

    stage(1, "the phantom DRR data set and a preview")
    generate(config, data_dir)
    console.say(f"preview: {write_preview(data_dir, data_dir / 'preview.png')}")
    side_by_side = write_fluoro_preview(data_dir, data_dir / "preview_fluoro.png")
    if side_by_side is not None:
        console.say(f"preview: {side_by_side} (clean beside fluoro)")
    runs = len(config.reported_strategies()) * len(config.report.seeds or [config.training_seed()])
    stage(2, f"{runs} training runs, then Table 1 and the comparisons (study reproduce --preset {config.name})")
    reproduce(config, data_dir)
    name = default_sweep_name(config, SPACE)
    stage(
        3,
        f"a {trials}-trial fine-tune sweep from the shared baseline (study sweep --preset {config.name} "
        f"--space {SPACE} --trials {trials})",
    )
    folder = sweep_folder(config, name)
    result = resume(folder) if (folder / PLAN_FILE).is_file() else sweep(config, SPACE, trials, data_dir, name)
    stage(4, "where to look")
    tracker = Tracker(config)
    report = default_report_folder(config)
    console.say(f"  Table 1 and plots:   {report}/ (table1.md, per_landmark_rmse.png, error_cdf.png, examples.png)")
    console.say(f"  paper vs ours:       {report}/comparison.md (the paper's Table 1 beside ours, claims, verdicts)")
    if (report / "sim_to_real.md").is_file():
        console.say(f"  sim to real:         {report}/sim_to_real.md (clean and randomized models, clean and fluoro)")
    console.say(
        f"  the sweep:           {result.folder}/report/ (trials.csv, optimization_history.png, best_config.yaml)"
    )
    console.say(f"  registered model:    {result.registered} (alias 'champion')")
    console.say(f"  logs:                {report}/{console.LOG_NAME} (Ray, MLflow and torch messages)")
    console.say(f"  MLflow UI:           {ui_command(tracker.uri) or tracker.uri}")
    console.say(f"  the runs:            {experiment_url(tracker.uri, tracker.experiment_id)}")
    console.say(
        f"                       ('{config.name}-reproduce' and '{name}' are parent runs: expand one, tick its "
        "children, press Compare)"
    )
