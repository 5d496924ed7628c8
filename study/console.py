"""What a person sees in the terminal, and where everything else goes.

A command of the CLI runs inside a ``session`` with a log file in its own folder (the data set's,
the run's, the sweep's or the report's). Inside it the terminal shows only what the study says
(``say``, ``warn``, ``Progress``); everything else goes to the log file: what Ray, Ray Tune,
MLflow and torch print or log, Python warnings, the C++ logs of Ray's core worker, and the output
of Ray workers that Ray forwards to the driver. This works at the level of file descriptors, so
nothing written by a library can reach the terminal. ``verbose=True`` (``--verbose``) leaves the
terminal as it is: everything shows there and no log file is written.

Code running in another process of the study (a Ray Train controller printing its epochs)
``relay``s its lines: they carry ``RELAY_PREFIX``, Ray forwards them to the driver with all other
worker output, and the session sends the marked ones on to the terminal (``listen_to_ray``, through
Ray's stream dispatcher; without a session they print as they are).

Outside a session (the Python API, tests) ``say`` simply prints.
"""

import io
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

__all__ = [
    "LAST_RELAY_PREFIX", "LOG_NAME", "RELAY_PREFIX", "Progress", "current_log", "format_duration", "in_session",
    "last_relayed", "listen_to_ray", "relay", "say", "session", "wait_for_last_relayed", "warn",
]  # fmt: skip

LOG_NAME = "study.log"  # a command's log file, in its folder
RELAY_PREFIX = "[study] "
LAST_RELAY_PREFIX = "[study, last] "  # the last line of a remote run (e.g. its final epoch)
_DISPATCHER_HANDLER = "study_console"


class _Session:
    """The terminal streams of an open session, its log file, and whether Ray's relayed lines reach it."""

    def __init__(self, out: TextIO, err: TextIO, log_path: Path | None):
        self.out, self.err, self.log_path = out, err, log_path
        self.listening_to_ray = False
        self.relayed_last = 0  # last lines of remote runs shown so far


_current: _Session | None = None


def say(text: str = "") -> None:
    """A line for the person at the terminal."""
    stream = _current.out if _current else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def warn(text: str) -> None:
    """A line for the person at the terminal, on standard error (errors and warnings of the study)."""
    stream = _current.err if _current else sys.stderr
    stream.write(text + "\n")
    stream.flush()


def relay(text: str, last: bool = False) -> None:
    """A line said in another process of the study (e.g. a Ray actor): the driver's session shows it.

    ``last``: the last line of what that process does for the driver (see ``wait_for_last_relayed``).
    """
    print((LAST_RELAY_PREFIX if last else RELAY_PREFIX) + text, flush=True)


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1m15s"``; ``3723`` -> ``"1h02m"``; under a minute -> ``"42s"``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    """One status line for ``total`` items of work: done, rate per second, elapsed and time left.

    On a terminal the line is rewritten in place; elsewhere (a pipe, CI) it is printed at most
    every ``every_s`` seconds and at the end.
    """

    def __init__(self, label: str, total: int, unit: str, done: int = 0, every_s: float = 5.0):
        self.label, self.total, self.unit, self.done = label, total, unit, done
        self.every_s, self.new, self.start, self.last = every_s, 0, time.perf_counter(), -math.inf
        self.stream = _current.out if _current else sys.stdout
        self.tty = self.stream.isatty()
        self.written = False

    def update(self, count: int = 1) -> None:
        self.done += count
        self.new += count
        now = time.perf_counter()
        if not self.tty and now - self.last < self.every_s and self.done < self.total:
            return
        self.last = now
        elapsed = now - self.start
        rate = self.new / elapsed if elapsed > 0 else math.nan
        left = (self.total - self.done) / rate if rate > 0 else math.nan
        line = f"{self.label}: {self.done}/{self.total} {self.unit} ({rate:.1f}/s), {format_duration(elapsed)} elapsed"
        if self.done < self.total:
            line += f", about {format_duration(left)} left"
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()
        self.written = True

    def close(self) -> None:
        if self.tty and self.written:
            self.stream.write("\n")
            self.stream.flush()


def _terminal(stream: TextIO) -> TextIO:
    """A stream to the place ``stream`` writes to now, which later redirection of fds 1 and 2 leaves alone."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return stream  # not backed by a file descriptor (e.g. pytest's capsys): redirection cannot touch it
    return open(os.dup(descriptor), "w", buffering=1, encoding="utf-8", errors="replace")


def _relay_to_terminal(data: dict) -> None:
    """Ray's stream dispatcher hook: forwarded worker lines that carry ``RELAY_PREFIX`` go to the terminal."""
    if _current is None:
        return
    for line in data.get("lines", []):
        for prefix in (LAST_RELAY_PREFIX, RELAY_PREFIX):
            if line.startswith(prefix):
                say(line[len(prefix) :])
                _current.relayed_last += prefix == LAST_RELAY_PREFIX
                break


def last_relayed() -> int:
    """How many last lines the session has shown (0 outside a session that listens to Ray)."""
    return _current.relayed_last if _current is not None and _current.listening_to_ray else 0


def wait_for_last_relayed(count: int, timeout_s: float = 5.0) -> None:
    """Wait (at most ``timeout_s``) until the session has shown ``count`` last lines: Ray forwards
    worker output a moment after it is written, and a remote run's last line should come before
    what the driver says next."""
    deadline = time.monotonic() + timeout_s
    while _current is not None and _current.listening_to_ray and _current.relayed_last < count:
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _dispatcher():
    """Ray's dispatcher of worker output forwarded to the driver (a Ray internal, pinned with ray==2.60)."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    return global_worker_stdstream_dispatcher


def listen_to_ray() -> None:
    """Show the lines that Ray workers ``relay`` (called once Ray is up; does nothing outside a redirecting session)."""
    if _current is not None and _current.log_path is not None and not _current.listening_to_ray:
        _dispatcher().add_handler(_DISPATCHER_HANDLER, _relay_to_terminal)
        _current.listening_to_ray = True


def in_session() -> bool:
    """Whether a command's session is open (its libraries may then log at length: see ``session``)."""
    return _current is not None


def current_log() -> Path | None:
    """The log file of the open session (None: no session, or a verbose one)."""
    return _current.log_path if _current else None


@contextmanager
def session(log_path: str | Path | None, verbose: bool = False, title: str = ""):
    """Show only the study's own lines on the terminal and send everything else to ``log_path`` (appended).

    With ``verbose`` or without a ``log_path`` the terminal is left alone. Nested sessions are the
    outer one.
    """
    global _current
    if _current is not None:
        yield _current
        return
    if verbose or log_path is None:
        _current = _Session(sys.stdout, sys.stderr, None)
        try:
            yield _current
        finally:
            _current = None
        return
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    out, err = _terminal(sys.stdout), _terminal(sys.stderr)
    log = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 - open until the finally
    log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {title}\n")
    saved = {descriptor: os.dup(descriptor) for descriptor in (1, 2)}
    for descriptor in (1, 2):
        os.dup2(log.fileno(), descriptor)
    python_streams = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log
    _current = _Session(out, err, log_path)
    try:
        yield _current
    finally:
        if _current.listening_to_ray:
            _dispatcher().remove_handler(_DISPATCHER_HANDLER)
        _current = None
        log.flush()
        sys.stdout, sys.stderr = python_streams
        for descriptor, copy in saved.items():
            os.dup2(copy, descriptor)
            os.close(copy)
        for stream in (out, err):
            if stream not in python_streams:
                stream.close()
        log.close()
