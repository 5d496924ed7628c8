"""The console: what a command's session shows on the terminal, and what it sends to the log file."""

import logging
import os
import sys

import pytest

from study import console


def library_noise():
    """What libraries do: print, log to a handler on standard error, and write to the file descriptors from C.

    (pytest records warnings and log records itself; the command-line tests see those go to the log.)
    """
    print("a library prints")
    handler = logging.StreamHandler()  # on sys.stderr as it is now
    logger = logging.getLogger("some.library")
    logger.addHandler(handler)
    try:
        logger.warning("a library logs")
    finally:
        logger.removeHandler(handler)
    os.write(1, b"C code writes to fd 1\n")
    os.write(2, b"C code writes to fd 2\n")


def test_a_session_shows_only_the_study_and_logs_the_rest(tmp_path, capfd):
    log = tmp_path / "run" / console.LOG_NAME
    with console.session(log, title="study test"):
        console.say("the study says")
        library_noise()
        console.warn("error: the study warns")
        assert console.current_log() == log
    out, err = capfd.readouterr()
    assert out == "the study says\n" and err == "error: the study warns\n"
    text = log.read_text()
    for line in ("study test", "a library prints", "a library logs", "fd 1", "fd 2"):
        assert line in text, line
    assert "the study says" not in text
    print("after the session")
    assert capfd.readouterr().out == "after the session\n"  # the terminal is back
    assert console.current_log() is None


def test_a_verbose_session_leaves_the_terminal_alone(tmp_path, capfd):
    log = tmp_path / console.LOG_NAME
    with console.session(log, verbose=True):
        console.say("the study says")
        print("a library prints")
        os.write(2, b"C code writes to fd 2\n")
    out, err = capfd.readouterr()
    assert out == "the study says\na library prints\n" and "fd 2" in err
    assert not log.exists()


def test_a_session_appends_to_its_log(tmp_path, capfd):
    log = tmp_path / console.LOG_NAME
    for run in ("first", "second"):
        with console.session(log, title=run):
            print(f"{run} run")
    text = log.read_text()
    assert text.index("first run") < text.index("second") < text.index("second run")


def test_lines_relayed_by_ray_workers_reach_the_terminal(tmp_path, capfd, monkeypatch):
    from ray._private.ray_logging import WorkerStandardStreamDispatcher

    dispatcher = WorkerStandardStreamDispatcher()  # Ray's kind, without Ray's own printing handler
    monkeypatch.setattr(console, "_dispatcher", lambda: dispatcher)
    with console.session(tmp_path / console.LOG_NAME):
        console.listen_to_ray()
        dispatcher.emit({"lines": [console.RELAY_PREFIX + "epoch 3/15", "worker noise"]})
        assert console.last_relayed() == 0
        dispatcher.emit({"lines": [console.LAST_RELAY_PREFIX + "epoch 15/15"]})
        console.wait_for_last_relayed(1, timeout_s=60)  # returns at once
        assert console.last_relayed() == 1
    dispatcher.emit({"lines": [console.RELAY_PREFIX + "after the session"]})
    assert capfd.readouterr().out == "epoch 3/15\nepoch 15/15\n"
    assert dispatcher.handlers == []


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (42.4, "42s"), (60, "1m00s"), (75.2, "1m15s"), (3723, "1h02m"), (float("nan"), "?")]
)
def test_durations_read_like_a_clock(seconds, text):
    assert console.format_duration(seconds) == text


def test_progress_off_a_terminal_prints_at_most_every_few_seconds_and_at_the_end(capsys):
    progress = console.Progress("rendering", total=10, unit="DRRs", every_s=3600)
    for _ in range(10):
        progress.update(1)
    progress.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("rendering: 1/10 DRRs") and "left" in lines[0]
    assert lines[1].startswith("rendering: 10/10 DRRs") and "left" not in lines[1]
    assert not sys.stdout.isatty()
