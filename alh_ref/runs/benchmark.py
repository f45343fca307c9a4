"""Benchmark launcher: run benchmarks/bench_train.py (train-step throughput) in a fresh Python.

It runs in its own process because it pins the BLAS thread count before NumPy loads.
"""
import json
import subprocess
import sys
from pathlib import Path

from ..errors import RunError
from ..parallel import resolve_threads


def bench(config="tiny", steps=50, warmup=3, threads=None, seed=1234) -> dict:
    """Run benchmarks/bench_train.py (train-step throughput) in a fresh Python and collect its result.

    It runs in its own process because it pins the BLAS thread count before NumPy loads.

    Parameters
    ----------
    config : tiny | small | all;  steps, warmup, seed : int (see the script's --help)
    threads : int or None   cores the step uses (None: all; alh_ref.parallel)

    Returns
    -------
    dict   job, lines (its human-readable output), result (its final JSON line)
    """
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train.py"
    if not script.is_file():
        raise RunError(f"bench needs benchmarks/bench_train.py from a source checkout (not found at {str(script)!r}); "
                       "run alh-ref from a clone of the repository (pip install -e .)")
    cmd = [sys.executable, str(script), "--config", config, "--steps", str(steps), "--warmup", str(warmup),
           "--threads", str(resolve_threads(threads)), "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RunError(f"benchmarks/bench_train.py failed (exit {proc.returncode}): {err}")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise RunError(f"benchmarks/bench_train.py printed no JSON summary last (got {lines[-1][:80]!r})") from None
    return {"job": "bench", "lines": lines[:-1], "result": result}
