"""The study command line: DRR data sets, training, sweeps, evaluation, Table 1, prediction (also: python -m study).

Every command runs in a console session (``study.console``): the terminal shows the study's own
progress and results, and everything the libraries print goes to ``study.log`` in the command's
folder (the data set's, the run's, the sweep's, the report's); ``--verbose`` shows it all instead.
"""

import argparse
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from components.dataset import TEST_SPLITS
from study import console
from study.config import ConfigError, load_config

__all__ = ["build_parser", "main"]


class CommandFailed(Exception):
    """A command ended with an error that has been reported; ``code`` is the exit status."""

    def __init__(self, code: int):
        self.code = code


@contextmanager
def command_session(args, folder: str | Path | None):
    """The console session of a command whose log goes to ``<folder>/study.log`` (no log without a folder).

    An error is said in one line (its traceback goes to the log); Ray, if this command started it, is
    shut down inside the session, so its last messages land in the log too.
    """
    from study.runtime import release_ray

    log = Path(folder) / console.LOG_NAME if folder is not None else None
    with console.session(log, verbose=args.verbose, title=args.command_line):
        try:
            yield
        except ValueError as error:  # ConfigError, DatasetError, VolumeError, ImageError and bad checkpoints
            traceback.print_exc()
            console.warn(f"error: {error}")
            raise CommandFailed(2) from error
        except Exception as error:
            traceback.print_exc()
            where = f"; the traceback is in {log}" if log and not args.verbose else ""
            console.warn(f"error: {type(error).__name__}: {error}{where}")
            raise CommandFailed(1) from error
        finally:
            release_ray()


def cmd_generate(args) -> None:
    from study.data.generate import default_out_dir, generate

    config = load_config(args.preset, args.set)
    out = Path(args.out or default_out_dir(config))
    with command_session(args, out):
        generate(config, out)


def cmd_preview(args) -> None:
    from study.data.preview import export_images, write_fluoro_preview, write_preview

    with command_session(args, None):
        out = write_preview(args.data, args.out or Path(args.data) / "preview.png", count=args.count)
        console.say(f"preview: {out}")
        side_by_side = write_fluoro_preview(args.data, out.with_name(f"{out.stem}_fluoro.png"), pairs=args.count // 2)
        if side_by_side is not None:
            console.say(f"preview: {side_by_side} (clean beside fluoro)")
        if args.export:
            written = export_images(args.data, args.export, count=args.count)
            console.say(f"preview: {len(written)} DRRs as 16-bit PNG in {args.export}")


def cmd_train(args) -> None:
    from study.data.generate import default_out_dir, generate
    from study.training.driver import train
    from study.training.run_folder import run_folder

    config = load_config(args.preset, args.set)
    data_dir = Path(args.data or default_out_dir(config))
    local = config.train is not None and "://" not in config.train.storage
    folder = run_folder(config, args.name or config.run_name(args.strategy)) if local else None
    with command_session(args, folder):
        generate(config, data_dir)
        result = train(config, args.strategy, data_dir, init=args.init, name=args.name)
        if result.status == "diverged":
            console.say(f"{result.run_name}: diverged (recorded as such in MLflow run {result.run_id})")


def cmd_evaluate(args) -> None:
    from study.evaluation.evaluate import default_evaluation_folder, evaluate

    config = load_config(args.preset, args.set) if args.preset else None
    out = Path(args.out or default_evaluation_folder(args.run))
    with command_session(args, out):
        evaluate(args.run, config, args.data, args.splits, out)


def cmd_reproduce(args) -> None:
    from study.evaluation.reproduce import default_report_folder, dry_run, reproduce

    config = load_config(args.preset, args.set)
    if args.dry_run:
        print(dry_run(config), end="")
        return
    out = Path(args.out or default_report_folder(config))
    with command_session(args, out):
        reproduce(config, args.data, out)


def cmd_sweep(args) -> None:
    from study.sweeps.driver import default_sweep_name, resume, sweep
    from study.sweeps.plan import sweep_folder

    if args.resume:
        if args.preset or args.space or args.set:
            raise ConfigError("--resume takes the sweep folder only: its config and search space are stored there")
        with command_session(args, args.resume):
            resume(args.resume)
        return
    if not (args.preset and args.space):
        raise ConfigError("a new sweep needs --preset and --space (or --resume <sweep folder>)")
    config = load_config(args.preset, args.set)
    name = args.name or default_sweep_name(config, args.space)
    with command_session(args, sweep_folder(config, name)):
        sweep(config, args.space, args.trials, args.data, name, args.init)


def cmd_predict(args) -> None:
    from study.evaluation.predict import predict

    config = load_config(args.preset, args.set) if args.preset else None
    with command_session(args, args.out):
        predict(args.model, args.images, config, args.subject, args.landmarks_3d, args.out)


def cmd_demo(args) -> None:
    from study.data.generate import default_out_dir
    from study.demo import run_demo
    from study.evaluation.reproduce import default_report_folder

    config = load_config("demo", args.set)
    with command_session(args, default_report_folder(config)):
        run_demo(config, Path(args.out or default_out_dir(config)), args.trials)


def add_config_arguments(command: argparse.ArgumentParser, required: bool = True, otherwise: str = "") -> None:
    """``--preset`` (alias ``--config``) and repeated ``--set KEY=VALUE`` overrides; ``otherwise`` says what
    happens without ``--preset`` when it is not required."""
    help_text = "a preset name (demo, paper) or a YAML file" + (f" ({otherwise})" if otherwise else "")
    command.add_argument("--preset", "--config", dest="preset", required=required, help=help_text)
    command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", help="show Ray's, MLflow's and torch's messages here instead of in study.log"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common])

    generate = command("generate", "render a cohort's DRRs into Parquet shards (resumable)")
    add_config_arguments(generate)
    generate.add_argument("--out", help="data set folder (default: data/<config name>)")
    generate.set_defaults(handler=cmd_generate)

    preview = command("preview", "a PNG contact sheet of DRRs with numbered landmarks")
    preview.add_argument("--data", required=True, help="a data set folder made by 'study generate'")
    preview.add_argument("--out", help="PNG path (default: <data>/preview.png)")
    preview.add_argument("--count", type=int, default=12, help="number of DRRs to draw")
    preview.add_argument("--export", metavar="DIR", help="also write each drawn DRR as a 16-bit PNG into DIR")
    preview.set_defaults(handler=cmd_preview)

    train = command("train", "train one strategy of a config's train section on Ray Train")
    add_config_arguments(train)
    train.add_argument(
        "--strategy", required=True, help="a strategy of the config (baseline, composite, pose_only, finetune)"
    )
    train.add_argument(
        "--init", help="start from a checkpoint folder, an MLflow run id, or another strategy's best checkpoint"
    )
    train.add_argument("--data", help="data set folder (default: data/<config name>; generated when missing)")
    train.add_argument("--name", help="run name (default: <config name>-<strategy>); the same name resumes")
    train.set_defaults(handler=cmd_train)

    evaluate = command("evaluate", "a trained model on the test splits (RMSE, pose errors), logged to its MLflow run")
    evaluate.add_argument("--run", required=True, help="an MLflow run id, or a checkpoint folder")
    evaluate.add_argument(
        "--splits",
        "--split",
        nargs="+",
        choices=["val", *TEST_SPLITS, "fluoro", "real"],
        help="default: the data set's test splits",
    )
    add_config_arguments(evaluate, required=False, otherwise="default: the one stored in the checkpoint")
    evaluate.add_argument("--data", help="data set folder (default: data/<config name>)")
    evaluate.add_argument("--out", help="output folder (default: evaluations/<run id or checkpoint name>)")
    evaluate.set_defaults(handler=cmd_evaluate)

    reproduce = command(
        "reproduce", "the config's strategies and seeds, then Table 1 and comparisons (Markdown, CSV, plots)"
    )
    add_config_arguments(reproduce)
    reproduce.add_argument("--data", help="data set folder (default: data/<config name>; generated when missing)")
    reproduce.add_argument("--out", help="report folder (default: reports/<config name>)")
    reproduce.add_argument(
        "--dry-run", action="store_true", help="print the resolved settings and the planned runs (YAML); train nothing"
    )
    reproduce.set_defaults(handler=cmd_reproduce)

    sweep = command("sweep", "a Ray Tune + Optuna sweep over a search space, every trial an MLflow child run")
    add_config_arguments(sweep, required=False, otherwise="needed for a new sweep; --resume takes it from the folder")
    sweep.add_argument("--space", help="a shipped search space (finetune, composite, strategy) or a YAML file")
    sweep.add_argument("--trials", type=int, default=8, help="number of trials (default 8)")
    sweep.add_argument("--data", help="data set folder (default: data/<config name>; generated when missing)")
    sweep.add_argument(
        "--name", help="sweep name (default: <config name>-sweep-<space>); its folder is <sweep.storage>/<name>"
    )
    sweep.add_argument(
        "--init",
        help="the checkpoint or MLflow run every trial starts from (default: the strategy's init, trained once)",
    )
    sweep.add_argument("--resume", metavar="FOLDER", help="continue an interrupted sweep from its folder")
    sweep.set_defaults(handler=cmd_sweep)

    predict = command(
        "predict", "landmarks (JSON + overlay PNG) of X-ray images, and the C-arm pose given 3D landmarks"
    )
    predict.add_argument("--model", required=True, help="an MLflow run id, or a checkpoint folder")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, TIFF, DICOM or NIfTI X-ray images")
    predict.add_argument(
        "--subject", help="the subject's CT (.nii.gz) with its landmark file beside it: also estimate the pose"
    )
    predict.add_argument(
        "--landmarks-3d", dest="landmarks_3d", help="a landmark file (RAS/LPS mm, CT-centred): also estimate the pose"
    )
    add_config_arguments(predict, required=False, otherwise="default: the one stored in the checkpoint")
    predict.add_argument("--out", default="predictions", help="output folder (default: predictions/)")
    predict.set_defaults(handler=cmd_predict)

    demo = command("demo", "the whole demo study: data, 6 strategies x 3 seeds, Table 1, verdicts, a sweep")
    demo.add_argument("--out", help="data set folder (default: data/demo)")
    demo.add_argument("--trials", type=int, default=4, help="trials of the fine-tune sweep (default 4)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["study", *argv])
    try:
        args.handler(args)
    except CommandFailed as failure:
        return failure.code
    except ValueError as error:  # before the command's session: a config that does not load
        console.warn(f"error: {error}")
        return 2
    return 0
