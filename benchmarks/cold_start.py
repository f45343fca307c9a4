#!/usr/bin/env python3
"""Cold start: ``python -c "import alh_ref"``, and a fresh process's import plus its first train step.

Each figure is the wall time of a new Python process, from spawn to exit, the median of --repeat
runs. "first step" = import alh_ref, build the config's parameters and AdamW, draw a batch, run one
train step (through alh_ref.parallel with --threads and the default workers, as training does:
on Linux the first step forks the worker processes). With the warm cache the
Numba kernels load from the cache next to their sources (run once before timing, so it is warm);
with the cold cache NUMBA_CACHE_DIR points to an empty folder, so every kernel the step uses is
compiled, as on a fresh clone. Prints one JSON line last.

    python benchmarks/cold_start.py --config tiny --repeat 3 --threads 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STEP = """
import numpy as np
from alh_ref.model import CONFIGS, decayed, init_params, param_shapes
from alh_ref.optim import AdamW, AdamWConfig
from alh_ref.parallel import DataParallel, resolve_workers
from alh_ref.train import gpt_loss_and_grads, sample_batch
cfg = CONFIGS[{config!r}]
params = init_params(cfg, seed=0, dtype=np.float32)
opt = AdamW(params, list(param_shapes(cfg)), AdamWConfig(), decayed)
rng = np.random.default_rng(0)
x, y = sample_batch(rng.integers(0, cfg.vocab_size, 10_000), 16, cfg.block_size, rng)
with DataParallel(lambda x, y: gpt_loss_and_grads(params, cfg, x, y), {threads}, workers=resolve_workers(None),
                  state=params) as step:
    opt.step(params, step(x, y)[1])
"""


def timed_run(code, env):
    """Wall seconds of ``python -c code`` in a fresh process (RuntimeError if it fails)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"cold-start child failed: {proc.stderr.strip()[-1000:]}")
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", choices=("tiny", "small"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache runs (they compile every kernel)")
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    step = STEP.format(config=args.config, threads=args.threads)
    timed_run(step, env)                                                   # make sure the cache is warm
    out = {"bench": "cold_start", "config": args.config, "threads": args.threads, "repeat": args.repeat,
           "python": sys.version.split()[0]}
    runs = {"import_s": [timed_run("import alh_ref", env) for _ in range(args.repeat)],
            "import_and_first_step_warm_cache_s": [timed_run(step, env) for _ in range(args.repeat)]}
    if not args.no_cold:
        cold = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as d:
                cold.append(timed_run(step, dict(env, NUMBA_CACHE_DIR=d)))
        runs["import_and_first_step_cold_cache_s"] = cold
    for k, v in runs.items():
        out[k] = round(statistics.median(v), 3)
        out[k + "_runs"] = [round(t, 3) for t in v]
        print(f"{k:40s} median {statistics.median(v):7.3f} s   runs {[round(t, 2) for t in v]}")
    out["loadavg_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
