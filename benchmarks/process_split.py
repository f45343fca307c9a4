#!/usr/bin/env python3
"""DataParallel's micro-batches on forked worker processes against worker threads, interleaved.

The figures of docs/performance.md, "The micro-batches on processes". alh_ref.parallel.DataParallel
runs micro-batch 0 on the calling thread and the others on ``workers``: ``"threads"`` (one process,
so the micro-batches' Python glue takes turns on one GIL) or ``"processes"`` (alh_ref.forked:
forked processes, each with its own GIL; the parameters copied in before every step, the
gradients back through shared memory). On Linux, ``alh-ref pretrain/adapt`` use processes.

Both variants run in this process on the same batches, interleaved in ``--rounds`` rounds of
``--steps`` train steps (forward + backward + AdamW, float32, B = 16, 2 micro-batches, BLAS on one
thread per micro-batch). Before timing, 3 steps of each from the same initial parameters are
compared: the same kernels on the same inputs, summed in the same order, so the parameters should
agree exactly (``max_param_diff`` 0.0). Needs os.fork on Linux. Read it on an idle machine.

    python benchmarks/process_split.py --config tiny --rounds 8 --steps 30

Prints one line per round and, last, one JSON line ``{"bench": "process_split", ...}`` with
``thread_over_process`` = (median of the threads' round medians) / (that of the processes').
"""
import sys

from interleave import interleaved_rounds, parse_round_args, same_training  # benchmarks/interleave.py


def parse_args(argv=None):
    p, args = parse_round_args(__doc__.splitlines()[0], argv)
    if not sys.platform.startswith("linux"):
        p.error("worker processes need os.fork on Linux")
    return args


args = parse_args()

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from alh_ref.model import CONFIGS, decayed, init_params, param_shapes  # noqa: E402
from alh_ref.optim import AdamW, AdamWConfig  # noqa: E402
from alh_ref.parallel import DataParallel  # noqa: E402
from alh_ref.train import gpt_loss_and_grads, sample_batch  # noqa: E402

B = 16                     # bench_train.py's batch: two micro-batches of B / 2
N_BATCHES = 8              # batches drawn before timing, reused round-robin


def main(args):
    cfg = CONFIGS[args.config]
    T = cfg.block_size
    names = list(param_shapes(cfg))
    init = init_params(cfg, seed=1234, dtype=np.float32)
    rng = np.random.default_rng(1235)
    tokens = rng.integers(0, cfg.vocab_size, size=N_BATCHES * B * (T + 1))         # (n,)
    batches = [sample_batch(tokens, B, T, rng) for _ in range(N_BATCHES)]           # 8 x ((B,T), (B,T))

    def variant(workers):
        params = {n: init[n].copy() for n in names}
        opt = AdamW(params, names, AdamWConfig(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
                                               grad_clip=1.0, warmup_steps=0, total_steps=10**9), decayed)
        dp = DataParallel(lambda x, y: gpt_loss_and_grads(params, cfg, x, y), threads=2, workers=workers,
                          state=params)

        def step(i):
            loss, grads = dp(*batches[i % N_BATCHES])
            opt.step(params, grads)
            return loss
        return params, dp, step

    p_thr, dp_thr, step_thr = variant("threads")
    p_proc, dp_proc, step_proc = variant("processes")
    try:
        variants = [("threads", "threads", step_thr), ("processes", "processes", step_proc)]
        diff = same_training(variants, (p_thr, p_proc), names, args.config)
        meds = interleaved_rounds(variants, args.rounds, args.steps, first_step=3)
    finally:
        dp_thr.close()
        dp_proc.close()
    mt, mp = statistics.median(meds["threads"]), statistics.median(meds["processes"])
    print(json.dumps({
        "bench": "process_split", "config": args.config, "rounds": args.rounds, "steps": args.steps,
        "threads_ms_median": round(mt, 3), "processes_ms_median": round(mp, 3),
        "thread_over_process": round(mt / mp, 3),
        "per_round": [round(a / b, 3) for a, b in zip(meds["threads"], meds["processes"])],
        "max_param_diff": diff, "loadavg_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main(args)
