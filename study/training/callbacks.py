"""What happens with each epoch's report: a line for the person, metrics for MLflow, results for Ray Tune.

``EpochLogger`` runs in this process or on the Ray Train controller (``ray_train_callback`` makes
it a ``UserCallback``, relaying its lines to the driver's terminal). ``TuneReportExceptLast``
forwards a Ray Train run's reports to the Ray Tune trial it runs in. Ray is imported only by those
two: training in process does not load it.
"""

import math
import time

from study import console
from study.tracking.runs import log_metrics

__all__ = ["EpochLogger", "TuneReportExceptLast", "epoch_line", "is_final", "ray_train_callback"]


CONSTANTS = ("epoch", "epochs", "phase", "first_epoch", "status")  # in every report; params or tags in MLflow


class EpochLogger:
    """Log each epoch's metrics to MLflow run ``run_id``, and say its line.

    The MLflow step is the epoch, counted from 1 and on from the run's start: a fine-tune of a
    15-epoch baseline logs its first epoch at step 16 (``first_step``), so its curves sit after the
    baseline's.

    The terminal gets the first epoch's line, the last one's, and one at most every ``every_s``
    seconds between them; the others go to the log (as all of them do with ``echo`` off, for sweep
    trials: the sweep says a line per trial).
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        strategy: str,
        first_step: int = 1,
        echo: bool = True,
        every_s: float = 45.0,
    ):
        self.tracking_uri, self.run_id, self.strategy, self.first_step = tracking_uri, run_id, strategy, first_step
        self.echo, self.every_s, self.last_said = echo, every_s, -math.inf
        self.client, self.started, self.first_report, self.epochs_seen = None, time.monotonic(), None, 0

    def on_controller(self, reported: dict) -> None:
        """On the Ray Train controller: a said line goes to the driver by ``console.relay``."""
        line = self.record(reported)
        if self.shows(reported):
            console.relay(line, last=is_final(reported))
        else:
            print(line, flush=True)  # forwarded by Ray into the driver's log

    def log(self, reported: dict) -> None:
        """In this process."""
        line = self.record(reported)
        if self.shows(reported):
            console.say(line)
        else:
            print(line, flush=True)  # into the log

    def shows(self, reported: dict) -> bool:
        """Whether this epoch's line is for the terminal."""
        now = time.monotonic()
        if self.echo and (is_final(reported) or self.epochs_seen == 1 or now - self.last_said >= self.every_s):
            self.last_said = now
            return True
        return False

    def record(self, reported: dict) -> str:
        """Log the epoch's metrics; its line, with the time since the run started and the time left.

        The time left counts epochs at the pace since the first report (start-up is paid once); after
        the first report, at that epoch's own length.
        """
        from mlflow.tracking import MlflowClient

        self.client = self.client or MlflowClient(self.tracking_uri)
        metrics = {key: value for key, value in reported.items() if key not in CONSTANTS}
        log_metrics(self.client, self.run_id, metrics, self.first_step + int(reported["epoch"]))
        now = time.monotonic()
        self.epochs_seen += 1
        if self.first_report is None:
            self.first_report, pace = now, reported["epoch_seconds"]
        else:
            pace = (now - self.first_report) / (self.epochs_seen - 1)
        left = 0.0 if is_final(reported) else (reported["epochs"] - reported["epoch"] - 1) * pace
        return epoch_line(self.strategy, reported, now - self.started, left)


def epoch_line(strategy: str, metrics: dict, elapsed: float = math.nan, left: float = math.nan) -> str:
    """One epoch as a line, e.g. ``baseline epoch 3/15: loss 0.0123, val RMSE 4.21 px (soft-argmax 4.50),
    pose 5.07 deg / 13.1 mm; 7.0 s, 21s elapsed, about 1m24s left``."""
    text = f"{strategy} epoch {metrics['epoch'] + 1}/{metrics['epochs']}"
    if metrics.get("status") == "diverged":
        return f"{text}: diverged (loss not finite, or running above the divergence factor times its start); stopping"
    text += f": loss {metrics.get('train_loss', math.nan):.4g}"
    if "val_rmse_px" in metrics:
        text += f", val RMSE {metrics['val_rmse_px']:.2f} px (soft-argmax {metrics['val_rmse_soft_px']:.2f})"
        rotation, translation = metrics.get("val_rotation_deg", math.nan), metrics.get("val_translation_mm", math.nan)
        text += f", pose {rotation:.2f} deg / {translation:.1f} mm"
    text += f"; {metrics['epoch_seconds']:.1f} s"
    if math.isfinite(elapsed):
        text += f", {console.format_duration(elapsed)} elapsed"
    if math.isfinite(left) and left > 0:
        text += f", about {console.format_duration(left)} left"
    return text


def is_final(metrics: dict) -> bool:
    """The report of a run's last epoch (or of its diverged one)."""
    return metrics.get("status") == "diverged" or metrics["epoch"] + 1 == metrics["epochs"]


def ray_train_callback(logger: EpochLogger):
    """``logger`` as a Ray Train ``UserCallback``: its ``after_report`` runs on the controller."""
    from ray.train.v2.api.callback import UserCallback

    class Callback(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            logger.on_controller(metrics[0])

    return Callback()


def TuneReportExceptLast():
    """Ray Tune's ``TuneReportCallback``, holding back the final epoch, which ``train`` reports itself
    after the run is logged: Tune may end a trial (e.g. ASHA at ``max_t``) as soon as it sees it."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class Callback(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if not is_final(metrics[0]):
                super().after_report(run_context, metrics, checkpoint)

    return Callback()
