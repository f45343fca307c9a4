#!/usr/bin/env python3
"""Where the train step's time goes: CPU time per kind of op, summed over the threads that ran it.

The micro-batches run on threads (DataParallel's workers="threads"), so the per-thread timers of one
process see all of them; on worker processes the same work runs. Wraps the functions alh_ref.model calls (the ops, the head), the AdamW step and the micro-batch
reduction (alh_ref.parallel) with ``time.thread_time`` timers -- per-thread CPU time, so the split
is robust to other load and adds up the work of every worker -- then runs ``--steps`` train steps
of the base model (float32, B = 16, as bench_train.py). Prints a table and one JSON line last:
``cpu_ms`` per category per step, ``wall_ms`` per step, and the categories' shares of the CPU total.

    python benchmarks/profile_step.py --config tiny --steps 30 --threads 2
"""
import argparse
import os
import sys
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", choices=("tiny", "small"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import json
    import threading
    import time
    from collections import defaultdict

    import numpy as np

    import alh_ref.model as model
    import alh_ref.parallel as parallel
    from alh_ref.model import CONFIGS, decayed, init_params, param_shapes
    from alh_ref.optim import AdamW, AdamWConfig
    from alh_ref.train import gpt_loss_and_grads, sample_batch

    cpu, lock = defaultdict(float), threading.Lock()
    depth = threading.local()

    def timed(category, fn):
        def wrapper(*a, **k):
            outer = getattr(depth, "n", 0) == 0                      # count only the outermost timed call
            depth.n = getattr(depth, "n", 0) + 1
            t0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                depth.n -= 1
                if outer:
                    with lock:
                        cpu[category] += time.thread_time() - t0
        return wrapper

    groups = {"linear layers (BLAS)": ("linear_forward", "linear_backward"),
              "tied head z @ wte^T and its backward (BLAS)": ("head_forward", "head_backward"),
              "attention (BLAS products + Numba softmax)": ("attention_forward", "attention_backward"),
              "softmax cross-entropy (Numba)": ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward"),
              "GELU (Numba)": ("gelu_forward", "gelu_backward"),
              "LayerNorm (Numba)": ("layernorm_forward", "layernorm_backward"),
              "embedding gather / scatter": ("embedding_forward", "embedding_backward")}
    for cat, names in groups.items():
        for n in names:
            setattr(model, n, timed(cat, getattr(model, n)))
    parallel.reduce_weighted = timed("micro-batch gradient sum", parallel.reduce_weighted)

    cfg = CONFIGS[args.config]
    params = init_params(cfg, seed=1234, dtype=np.float32)
    opt = AdamW(params, list(param_shapes(cfg)), AdamWConfig(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8,
                weight_decay=0.1, grad_clip=1.0, warmup_steps=0, total_steps=10**9), decayed)
    opt_step = timed("AdamW incl. grad norm (Numba)", opt.step)
    rng = np.random.default_rng(1235)
    tokens = rng.integers(0, cfg.vocab_size, size=8 * 16 * (cfg.block_size + 1))
    batches = [sample_batch(tokens, 16, cfg.block_size, rng) for _ in range(8)]
    step = parallel.DataParallel(lambda x, y: gpt_loss_and_grads(params, cfg, x, y), args.threads)

    def total(x, y):
        opt_step(params, step(x, y)[1])

    for i in range(3):                                                  # warm-up (kernel load)
        total(*batches[i % 8])
    cpu.clear()
    t0 = time.perf_counter()
    proc0 = time.process_time()
    for i in range(args.steps):
        total(*batches[i % 8])
    wall = (time.perf_counter() - t0) / args.steps
    proc = (time.process_time() - proc0) / args.steps
    step.close()
    per = {k: v / args.steps for k, v in cpu.items()}
    # the rest of the process's CPU time: Python glue, residual adds, thread hand-offs (and any
    # spinning of idle BLAS / worker threads)
    per["other (glue, residual adds, hand-offs)"] = max(0.0, proc - sum(per.values()))
    tot = sum(per.values())
    print(f"{args.config}, threads {args.threads}: wall {wall * 1e3:.2f} ms/step, process CPU {proc * 1e3:.2f} ms/step")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"  {k:48s} {v * 1e3:8.2f} ms  {100 * v / tot:5.1f}%")
    print(json.dumps({"bench": "profile_step", "config": args.config, "threads": args.threads, "steps": args.steps,
                      "wall_ms": round(wall * 1e3, 3), "process_cpu_ms": round(proc * 1e3, 3),
                      "cpu_ms": {k: round(v * 1e3, 3) for k, v in per.items()},
                      "share": {k: round(v / tot, 3) for k, v in per.items()},
                      "loadavg_1min": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
