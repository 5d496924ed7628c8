"""The study command line: generate and look at DRR data sets, train, sweep, evaluate, reproduce Table 1, predict (also: python -m study)."""

import argparse
import sys
from pathlib import Path

from study.config import ConfigError, load_config


def cmd_generate(args) -> None:
    from study.generate import default_out_dir, generate

    config = load_config(args.preset, args.set)
    generate(config, args.out or default_out_dir(config))


def cmd_preview(args) -> None:
    from study.preview import write_preview

    out = write_preview(args.data, args.out or Path(args.data) / "preview.png", count=args.count)
    print(f"preview: {out}")
    if args.export:
        from study.preview import export_images

        written = export_images(args.data, args.export, count=args.count)
        print(f"preview: {len(written)} DRRs as 16-bit PNG in {args.export}")


def cmd_train(args) -> None:
    from study.generate import default_out_dir, generate
    from study.train import train

    config = load_config(args.preset, args.set)
    data_dir = Path(args.data or default_out_dir(config))
    generate(config, data_dir)
    result = train(config, args.strategy, data_dir, init=args.init, name=args.name)
    if result.status == "diverged":
        print(f"{result.run_name}: diverged (recorded as such in MLflow run {result.run_id})")


def cmd_evaluate(args) -> None:
    from study.evaluate import evaluate

    config = load_config(args.preset, args.set) if args.preset else None
    evaluate(args.run, config, args.data, args.splits, args.out)


def cmd_reproduce(args) -> None:
    from study.report import reproduce

    reproduce(load_config(args.preset, args.set), args.data, args.out)


def cmd_sweep(args) -> None:
    from study.sweep import resume, sweep

    if args.resume:
        if args.preset or args.space or args.set:
            raise ConfigError("--resume takes the sweep folder only: its config and search space are stored there")
        resume(args.resume)
        return
    if not (args.preset and args.space):
        raise ConfigError("a new sweep needs --preset and --space (or --resume <sweep folder>)")
    sweep(load_config(args.preset, args.set), args.space, args.trials, args.data, args.name, args.init)


def cmd_predict(args) -> None:
    from study.predict import predict

    config = load_config(args.preset, args.set) if args.preset else None
    predict(args.model, args.images, config, args.subject, args.landmarks_3d, args.out)


def cmd_demo(args) -> None:
    from study.generate import default_out_dir, generate
    from study.preview import write_preview
    from study.report import reproduce
    from study.sweep import SPACES_DIR, resume, sweep, sweep_folder
    from study.tracking import Tracker

    config = load_config("demo", args.set)
    data_dir = Path(args.out or default_out_dir(config))
    print("demo 1/4: the phantom DRR data set and a preview")
    generate(config, data_dir)
    print(f"preview: {write_preview(data_dir, data_dir / 'preview.png')}")
    print("demo 2/4: the paper's four strategies, then Table 1 (study reproduce --preset demo)")
    reproduce(config, data_dir)
    name = f"{config.name}-sweep-finetune"
    print(f"demo 3/4: a {args.trials}-trial fine-tune sweep from the shared baseline (study sweep --preset demo "
          f"--space search_spaces/finetune.yaml --trials {args.trials})")
    folder = sweep_folder(config, name)
    if folder.exists():
        result = resume(folder)
    else:
        result = sweep(config, SPACES_DIR / "finetune.yaml", args.trials, data_dir, name)
    uri = Tracker.for_uri(config).uri
    print("demo 4/4: where to look")
    print(f"  Table 1 and plots:   reports/{config.name}/ (table1.md, per_landmark_rmse.png, error_cdf.png, examples.png)")
    print(f"  the sweep:           {result.folder}/report/ (trials.csv, optimization_history.png, best_config.yaml)")
    print(f"  registered model:    {result.registered}")
    print(f"  MLflow:              mlflow ui --backend-store-uri {uri} --port 5000   (then http://127.0.0.1:5000,")
    print(f"                       experiment '{config.tracking.experiment or config.name}': '{config.name}-reproduce' and '{name}' are parent runs)")


def add_config_arguments(command: argparse.ArgumentParser, required: bool = True) -> None:
    """``--preset`` (alias ``--config``) and repeated ``--set KEY=VALUE`` overrides."""
    help_text = "a preset name (demo, paper) or a YAML file" + ("" if required else " (default: the one stored in the checkpoint)")
    command.add_argument("--preset", "--config", dest="preset", required=required, help=help_text)
    command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="render a cohort's DRRs into Parquet shards (resumable)")
    add_config_arguments(generate)
    generate.add_argument("--out", help="data set folder (default: data/<config name>)")
    generate.set_defaults(handler=cmd_generate)

    preview = commands.add_parser("preview", help="a PNG contact sheet of DRRs with numbered landmarks")
    preview.add_argument("--data", required=True, help="a data set folder made by 'study generate'")
    preview.add_argument("--out", help="PNG path (default: <data>/preview.png)")
    preview.add_argument("--count", type=int, default=12, help="number of DRRs to draw")
    preview.add_argument("--export", metavar="DIR", help="also write each drawn DRR as a 16-bit PNG into DIR")
    preview.set_defaults(handler=cmd_preview)

    train = commands.add_parser("train", help="train one strategy of a config's train section on Ray Train")
    add_config_arguments(train)
    train.add_argument("--strategy", required=True, help="a strategy of the config (baseline, composite, pose_only, finetune)")
    train.add_argument("--init", help="start from a checkpoint folder, an MLflow run id, or another strategy's best checkpoint")
    train.add_argument("--data", help="data set folder (default: data/<config name>; generated when missing)")
    train.add_argument("--name", help="run name (default: <config name>-<strategy>); the same name resumes")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="a trained model on the test splits (RMSE, pose errors), logged to its MLflow run")
    evaluate.add_argument("--run", required=True, help="an MLflow run id, or a checkpoint folder")
    evaluate.add_argument("--splits", nargs="+", default=["novel_view", "novel_subject"], choices=["val", "novel_view", "novel_subject"])
    add_config_arguments(evaluate, required=False)
    evaluate.add_argument("--data", help="data set folder (default: data/<config name>)")
    evaluate.add_argument("--out", help="output folder (default: evaluations/<run id or checkpoint name>)")
    evaluate.set_defaults(handler=cmd_evaluate)

    reproduce = commands.add_parser("reproduce", help="the paper's four strategies, then Table 1 (Markdown, CSV, plots, MLflow)")
    add_config_arguments(reproduce)
    reproduce.add_argument("--data", help="data set folder (default: data/<config name>; generated when missing)")
    reproduce.add_argument("--out", help="report folder (default: reports/<config name>)")
    reproduce.set_defaults(handler=cmd_reproduce)

    sweep = commands.add_parser("sweep", help="a Ray Tune + Optuna sweep over a search space, every trial an MLflow child run")
    add_config_arguments(sweep, required=False)
    sweep.add_argument("--space", help="a search space YAML (search_spaces/finetune.yaml, composite.yaml, strategy.yaml)")
    sweep.add_argument("--trials", type=int, default=8, help="number of trials (default 8)")
    sweep.add_argument("--data", help="data set folder (default: data/<config name>; generated when missing)")
    sweep.add_argument("--name", help="sweep name (default: <config name>-sweep-<space>); its folder is <sweep.storage>/<name>")
    sweep.add_argument("--init", help="the checkpoint or MLflow run every trial starts from (default: the strategy's init, trained once)")
    sweep.add_argument("--resume", metavar="FOLDER", help="continue an interrupted sweep from its folder")
    sweep.set_defaults(handler=cmd_sweep)

    predict = commands.add_parser("predict", help="landmarks (JSON + overlay PNG) of X-ray images, and the C-arm pose given 3D landmarks")
    predict.add_argument("--model", required=True, help="an MLflow run id, or a checkpoint folder")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, TIFF, DICOM or NIfTI X-ray images")
    predict.add_argument("--subject", help="the subject's CT (.nii.gz) with its landmark file beside it: also estimate the pose")
    predict.add_argument("--landmarks-3d", dest="landmarks_3d", help="a landmark file (RAS/LPS mm, CT-centred): also estimate the pose")
    add_config_arguments(predict, required=False)
    predict.add_argument("--out", default="predictions", help="output folder (default: predictions/)")
    predict.set_defaults(handler=cmd_predict)

    demo = commands.add_parser("demo", help="the whole demo study: data, the four strategies, Table 1, a fine-tune sweep")
    demo.add_argument("--out", help="data set folder (default: data/demo)")
    demo.add_argument("--trials", type=int, default=8, help="trials of the fine-tune sweep (default 8)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except ValueError as error:  # ConfigError, DatasetError, VolumeError, ImageError and bad checkpoints
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
