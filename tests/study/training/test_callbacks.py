"""What an epoch's report becomes: the line a person reads, and when the terminal gets it."""

import math

from study.training.callbacks import EpochLogger, epoch_line, is_final


def report(epoch: int, epochs: int = 15, status: str = "running") -> dict:
    return {
        "epoch": epoch,
        "epochs": epochs,
        "status": status,
        "train_loss": 0.0123,
        "epoch_seconds": 7.04,
        "val_rmse_px": 4.214,
        "val_rmse_soft_px": 4.5,
        "val_rotation_deg": 5.07,
        "val_translation_mm": 13.12,
    }


def test_an_epoch_line_reads_as_the_readme_shows_it():
    line = epoch_line("baseline", report(2), elapsed=21.0, left=84.0)
    assert line == (
        "baseline epoch 3/15: loss 0.0123, val RMSE 4.21 px (soft-argmax 4.50), "
        "pose 5.07 deg / 13.1 mm; 7.0 s, 21s elapsed, about 1m24s left"
    )
    assert epoch_line("baseline", report(14)).endswith("; 7.0 s")
    assert "diverged" in epoch_line("baseline", report(0, status="diverged"))


def test_the_terminal_gets_the_first_the_last_and_one_line_a_while():
    logger = EpochLogger("unused", "run", "baseline", every_s=math.inf)
    shown = []
    for epoch in range(5):
        logger.epochs_seen += 1
        shown.append(logger.shows(report(epoch, epochs=5)))
    assert shown == [True, False, False, False, True]
    often = EpochLogger("unused", "run", "baseline", every_s=0.0)
    often.epochs_seen = 3
    assert often.shows(report(2, epochs=5))
    quiet = EpochLogger("unused", "run", "baseline", echo=False)
    quiet.epochs_seen = 1
    assert not quiet.shows(report(4, epochs=5))


def test_the_final_report_is_the_last_epoch_or_the_diverged_one():
    assert is_final(report(14)) and is_final(report(3, status="diverged")) and not is_final(report(13))
