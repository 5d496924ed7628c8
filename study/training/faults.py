"""Failure injection for the resume tests: one worker exits hard in the middle of an epoch, once per listed epoch.

Tests set ``FAIL_ONCE`` (e.g. with ``monkeypatch``) to ``{"epochs": [k, ...], "marker": path}`` before
calling ``driver.train``; the driver hands it to the workers, whose loop calls ``inject``. A file
``<marker>.<k>`` records that the failure in epoch k happened, so a restarted worker goes on.
"""

import os
import time
from pathlib import Path

__all__ = ["FAIL_ONCE", "inject"]

FAIL_ONCE: dict | None = None


def inject(fail_once: dict | None, epoch: int, rank: int, world_size: int) -> None:
    """Exit hard (the last worker of a DDP run, once per epoch) a second into each epoch of ``fail_once["epochs"]``
    (0-based); a run in process (one worker, the caller's own process) is never failed."""
    if not fail_once or world_size < 2 or epoch not in fail_once["epochs"] or rank != world_size - 1:
        return
    marker = Path(f"{fail_once['marker']}.{epoch}")
    if marker.exists():
        return
    marker.touch()
    time.sleep(1.0)  # as a crash mid-epoch would; the controller registers the last checkpoint meanwhile
    os._exit(1)
