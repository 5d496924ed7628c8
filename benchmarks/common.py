"""What every benchmark shares: a warmed-up median timing, and one writer of the JSON result.

A result file (``benchmarks/results/<name>.json``, or ``<name>.gpu.json`` from a GPU machine)::

    {"benchmark": "<name>", "commit": "<git sha>", "machine": {"cpu": "...", "threads": 1, "gpu": null},
     "results": {...}, "goals": [{"name": "...", "value": 12.3, "op": "<=", "target": 50, "unit": "ms", "met": true}]}

``met`` is always computed here, from the goal's ``op``, ``value`` and ``target``.
"""

import json
import operator
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}


def machine(threads: int = 1) -> dict:
    """The result file's machine record: CPU model, threads used, GPU name or None."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "threads": threads, "gpu": gpu}


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def median_seconds(function, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``function`` after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def goal(name: str, value, op: str, target, unit: str) -> dict:
    """One goal of a result; ``met`` is ``value op target``."""
    if op not in OPERATORS:
        raise ValueError(f"goal {name!r}: op must be one of {sorted(OPERATORS)}, got {op!r}")
    return {
        "name": name,
        "value": value,
        "op": op,
        "target": target,
        "unit": unit,
        "met": bool(OPERATORS[op](value, target)),
    }


def write_result(
    name: str,
    results: dict,
    goals: list[dict],
    threads: int = 1,
    gpu_file: bool | None = None,
    out: Path | None = None,
) -> Path:
    """Write ``benchmarks/results/<name>.json`` (``.gpu.json`` on a GPU), or ``out``, atomically; print it; return
    its path."""
    gpu_file = torch.cuda.is_available() if gpu_file is None else gpu_file
    report = {"benchmark": name, "commit": commit(), "machine": machine(threads), "results": results, "goals": goals}
    out = out or RESULTS / (f"{name}.gpu.json" if gpu_file else f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(temporary, out)
    print(json.dumps(report, indent=2))
    unmet = [g["name"] for g in goals if not g["met"]]
    print(
        f"{name}: {len(goals) - len(unmet)}/{len(goals)} goals met"
        + (f"; not met: {unmet}" if unmet else "")
        + f"; {out}"
    )
    return out
