#!/usr/bin/env python3
"""Page faults and CPU time per train step, with freed memory kept for reuse and with malloc's defaults.

The figures of docs/performance.md, "Memory: freed buffers are kept for reuse". Each round runs two
fresh processes of this script, A B: A with glibc's default malloc settings (``keep_freed_memory``
is not called), B as training runs (``alh_ref.parallel.keep_freed_memory()`` called first, as a
DataParallel and the study's compute loop do). Both get an environment without
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (either would override the setting). A
process runs ``--warmup`` untimed train steps (forward + backward + AdamW, float32), then
``--steps`` timed ones, and reports per timed step: minor page faults (``getrusage`` ``ru_minflt``),
process CPU ms (``time.process_time``, summed over threads) and wall ms. Page-fault counts do not
depend on other load, the times do: read those on an idle machine.

Configs: ``tiny`` and ``small`` (bench_train.py's, B = 16) through a DataParallel on ``--threads``
threads; ``study``: the default study's base model (its sizes read from
``alh_ref.study.settings.SIZES["default"]``) stepped without a DataParallel, as the study trains.

    python benchmarks/page_faults.py --config tiny --threads 2 --rounds 2 --steps 50

Prints one line per process and, last, one JSON line ``{"bench": "page_faults", ...}`` with the
medians over rounds per mode.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

MODES = ("default", "kept")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=["tiny", "small", "study"], default="tiny")
    p.add_argument("--threads", type=int, default=1, help="OpenBLAS threads and micro-batches (tiny, small)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (kernels load, buffers reach size)")
    p.add_argument("--rounds", type=int, default=2, help="A B rounds (one process per mode each)")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.threads, args.steps, args.warmup, args.rounds) < 1:
        p.error("--threads, --steps, --warmup and --rounds must be >= 1")
    if args.config == "study" and args.threads != 1:
        p.error("--config study steps without a DataParallel, as the study does: use --threads 1")
    return args


def child(args):
    """One process: the train step of args.config in mode args.child; prints its JSON result."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):       # before numpy loads
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import resource
    import time

    import numpy as np

    import alh_ref.parallel as parallel
    from alh_ref.model import CONFIGS, GPTConfig, decayed, init_params, param_shapes
    from alh_ref.optim import AdamW, AdamWConfig
    from alh_ref.train import gpt_loss_and_grads, sample_batch

    kept = parallel.keep_freed_memory() if args.child == "kept" else False
    if args.child == "default":
        parallel.keep_freed_memory = lambda: False                # a DataParallel would otherwise call it
    if args.config == "study":
        from alh_ref.study.settings import SIZES                 # the default study's sizes, not a copy of them
        d = SIZES["default"]
        cfg = GPTConfig(vocab_size=d["bpe_vocab"], block_size=d["block_size"], n_layer=d["n_layer"],
                        n_head=d["n_head"], n_embd=d["n_embd"])
        B = d["batch_size"]
    else:
        cfg, B = CONFIGS[args.config], 16
    params = init_params(cfg, seed=1234, dtype=np.float32)
    opt = AdamW(params, list(param_shapes(cfg)), AdamWConfig(lr=1e-3, warmup_steps=0, total_steps=10**9), decayed)
    rng = np.random.default_rng(1235)
    tokens = rng.integers(0, cfg.vocab_size, size=8 * B * (cfg.block_size + 1))       # (n,)
    batches = [sample_batch(tokens, B, cfg.block_size, rng) for _ in range(8)]        # 8 x ((B,T), (B,T))

    def loss_and_grads(x, y):
        return gpt_loss_and_grads(params, cfg, x, y)

    dp = None if args.config == "study" else parallel.DataParallel(loss_and_grads, args.threads)
    step_grads = loss_and_grads if dp is None else dp
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            cpu0, wall0 = time.process_time(), time.perf_counter()
        x, y = batches[i % len(batches)]
        loss, grads = step_grads(x, y)
        opt.step(params, grads)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if dp is not None:
        dp.close()
    n = args.steps
    print(json.dumps({"mode": args.child, "kept": kept, "faults_per_step": round(faults / n, 1),
                      "cpu_ms_per_step": round(1e3 * cpu / n, 3), "wall_ms_per_step": round(1e3 * wall / n, 3),
                      "loss_last": round(float(loss), 4),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}))


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(args)
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--config", args.config, "--threads", str(args.threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    runs = {m: [] for m in MODES}
    for r in range(args.rounds):
        for mode in MODES:                                                            # A B, interleaved
            out = subprocess.run(cmd + ["--child", mode], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
                sys.exit(f"error: the {mode} process failed (exit {out.returncode}): {tail}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            runs[mode].append(res)
            print(f"round {r + 1}/{args.rounds} {args.config} threads {args.threads} {mode:7s}: "
                  f"{res['faults_per_step']:8.1f} faults/step  {res['cpu_ms_per_step']:8.3f} CPU ms/step  "
                  f"{res['wall_ms_per_step']:8.3f} wall ms/step  (mallopt set: {res['kept']}; "
                  f"loss {res['loss_last']}; peak RSS {res['peak_rss_mb']} MiB)", flush=True)
    med = {m: {k: statistics.median(x[k] for x in runs[m])
               for k in ("faults_per_step", "cpu_ms_per_step", "wall_ms_per_step", "peak_rss_mb")} for m in MODES}
    print(json.dumps({"bench": "page_faults", "config": args.config, "threads": args.threads, "steps": args.steps,
                      "rounds": args.rounds, "median": med, "runs": runs,
                      "loadavg_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
