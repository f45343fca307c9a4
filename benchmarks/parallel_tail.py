#!/usr/bin/env python3
"""The step's serial tail (micro-batch gradient sum, grad norm, AdamW) split over the two threads, against serial.

The figures of docs/performance.md, "The serial tail on both threads: tried, not kept". A design
measured, not one alh_ref trains with. After DataParallel's two micro-batches, a train step sums their gradients
(alh_ref.parallel.reduce_weighted) and runs AdamW.step (the global grad norm, then one update per
tensor) on the calling thread while the other core waits. The split variant runs the same
micro-batches the same way (the second on a worker thread, BLAS on one thread), then gives each
thread half of the tensors (balanced by size) twice: first the weighted sum and the sum of squares
of each summed tensor, then, with the clipping factor of the global norm, the AdamW update of each
tensor. The per-tensor sums of squares are added in the optimizer's name order, as AdamW.step
does, so both variants compute the same norm and, from the same initial parameters, train
identical parameters (``max_param_diff`` 0.0, checked on 3 steps).

Both variants run in one process on the same batches (float32, B = 16, --threads 2), interleaved in
``--rounds`` rounds of ``--steps`` train steps. Read it on an idle machine.

    python benchmarks/parallel_tail.py --config tiny --rounds 8 --steps 30

Prints one line per round and, last, one JSON line ``{"bench": "parallel_tail", ...}`` with
``serial_over_split`` = (median of the serial variant's round medians) / (that of the split one).
"""
import json
import math
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from alh_ref.model import CONFIGS, decayed, init_params, param_shapes  # noqa: E402
from alh_ref.optim import AdamW, AdamWConfig, _sumsq_kernel, adamw_update, lr_at  # noqa: E402
from alh_ref.parallel import DataParallel, blas_limit, reduce_weighted  # noqa: E402
from alh_ref.train import gpt_loss_and_grads, sample_batch  # noqa: E402
from interleave import interleaved_rounds, parse_round_args, same_training  # noqa: E402  benchmarks/interleave.py

B = 16                     # bench_train.py's batch: two micro-batches of B / 2
N_BATCHES = 8              # batches drawn before timing, reused round-robin


def parse_args(argv=None):
    return parse_round_args(__doc__.splitlines()[0], argv)[1]


def halves_by_size(params, names):
    """Two lists of names with near-equal total sizes (largest first, each to the lighter half)."""
    out, size = ([], []), [0, 0]
    for n in sorted(names, key=lambda n: -params[n].size):
        k = 0 if size[0] <= size[1] else 1
        out[k].append(n)
        size[k] += params[n].size
    return out


def main(args):
    cfg = CONFIGS[args.config]
    T, h = cfg.block_size, B // 2
    names = list(param_shapes(cfg))
    init = init_params(cfg, seed=1234, dtype=np.float32)
    rng = np.random.default_rng(1235)
    tokens = rng.integers(0, cfg.vocab_size, size=N_BATCHES * B * (T + 1))         # (n,)
    batches = [sample_batch(tokens, B, T, rng) for _ in range(N_BATCHES)]           # 8 x ((B,T), (B,T))
    acfg = AdamWConfig(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0,
                       warmup_steps=0, total_steps=10**9)
    p_ser, p_spl = ({n: init[n].copy() for n in names} for _ in range(2))
    opt_ser, opt_spl = AdamW(p_ser, names, acfg, decayed), AdamW(p_spl, names, acfg, decayed)
    dp_ser = DataParallel(lambda x, y: gpt_loss_and_grads(p_ser, cfg, x, y), threads=2)
    pool = ThreadPoolExecutor(max_workers=1)                          # the split variant's second thread
    halves = halves_by_size(p_spl, names)

    def step_serial(i):
        loss, grads = dp_ser(*batches[i % N_BATCHES])
        opt_ser.step(p_ser, grads)
        return loss

    def step_split(i):
        x, y = batches[i % N_BATCHES]
        with blas_limit(1):
            fut = pool.submit(gpt_loss_and_grads, p_spl, cfg, x[h:], y[h:])
            results = [gpt_loss_and_grads(p_spl, cfg, x[:h], y[:h]), fut.result()]
            grads, sumsq = {}, {}

            def reduce_half(part):              # the weighted sum of these tensors, and their sums of squares
                # DataParallel's own sum, w_k = 1/2 (equal halves, no ignored targets)
                loss, g = reduce_weighted([(lk, {n: gk[n] for n in part}) for lk, gk in results], [0.5, 0.5])
                grads.update(g)
                sumsq.update({n: _sumsq_kernel(g[n].reshape(-1)) for n in part})
                return loss

            fut = pool.submit(reduce_half, halves[1])
            loss = reduce_half(halves[0])
            fut.result()
            c, o = acfg, opt_spl                # AdamW.step's computation, its per-tensor loop in two halves
            lr = lr_at(o.t, c)
            o.t += 1
            norm = math.sqrt(sum(sumsq[n] for n in names))
            gscale = min(1.0, c.grad_clip / (norm + 1e-6))

            def update_half(part):
                for n in part:
                    wd = c.weight_decay if o.decay[n] else 0.0
                    adamw_update(p_spl[n], grads[n], o.m[n], o.v[n], lr, c.beta1, c.beta2, c.eps, wd, o.t, gscale)

            fut = pool.submit(update_half, halves[1])
            update_half(halves[0])
            fut.result()
        return loss

    try:
        variants = [("serial", "serial tail", step_serial), ("split", "split tail", step_split)]
        # Same kernels, same inputs, sums in the same order: the two variants agree exactly.
        diff = same_training(variants, (p_ser, p_spl), names, args.config)
        meds = interleaved_rounds(variants, args.rounds, args.steps, first_step=3)
    finally:
        dp_ser.close()
        pool.shutdown()
    ms, mp = statistics.median(meds["serial"]), statistics.median(meds["split"])
    print(json.dumps({
        "bench": "parallel_tail", "config": args.config, "rounds": args.rounds, "steps": args.steps,
        "serial_ms_median": round(ms, 3), "split_ms_median": round(mp, 3), "serial_over_split": round(ms / mp, 3),
        "per_round": [round(a / b, 3) for a, b in zip(meds["serial"], meds["split"])],
        "max_param_diff": diff, "loadavg_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main(parse_args())
