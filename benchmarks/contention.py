#!/usr/bin/env python3
"""What the other thread costs one micro-batch: nothing, another thread's BLAS, or another micro-batch.

The figures of docs/performance.md, "Where the second thread's time goes". A DataParallel at 2
threads runs one micro-batch (B / 2 sequences: forward + backward, no optimizer) on each thread.
This times one such micro-batch on the calling thread, OpenBLAS at one thread, in three settings,
interleaved in ``--rounds`` rounds of ``--calls`` calls each:

* ``alone``: the second core idle;
* ``beside_blas``: a second thread runs one long float32 matmul after another (one nogil call of
  tens of ms: it competes for the caches, memory and the core's clock, never for the GIL);
* ``beside_micro_batch``: a second thread runs the same micro-batch over and over (as a
  DataParallel's worker does: the caches and the GIL both shared).

``beside_blas / alone`` is what sharing the machine costs; ``beside_micro_batch / beside_blas``
is what the GIL costs on top (the Python glue of one thread waiting for the other's, plus waking
a thread that slept on the GIL). Read it on an idle machine.

    python benchmarks/contention.py --config tiny --rounds 6 --calls 15

Prints one line per setting and, last, one JSON line ``{"bench": "contention", ...}``.
"""
import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=["tiny", "small"], default="tiny")
    p.add_argument("--rounds", type=int, default=6, help="rounds of the three settings, interleaved")
    p.add_argument("--calls", type=int, default=15, help="timed micro-batches per setting per round")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        p.error(f"--rounds {args.rounds} and --calls {args.calls}: expected positive integers")
    return args


args = parse_args()
# Before numpy loads: one BLAS thread per Python thread, as in a DataParallel's micro-batches (a
# user's own value loses here, on purpose).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from alh_ref.model import CONFIGS, init_params  # noqa: E402
from alh_ref.parallel import keep_freed_memory  # noqa: E402
from alh_ref.train import gpt_loss_and_grads, sample_batch  # noqa: E402

B = 16                     # bench_train.py's batch: a micro-batch at 2 threads is B // 2 sequences
SETTINGS = ("alone", "beside_blas", "beside_micro_batch")


def main(args):
    keep_freed_memory()                                              # as a DataParallel does
    cfg = CONFIGS[args.config]
    params = init_params(cfg, seed=1234, dtype=np.float32)
    rng = np.random.default_rng(1235)
    tokens = rng.integers(0, cfg.vocab_size, size=4 * B * (cfg.block_size + 1))      # (n,)
    x, y = sample_batch(tokens, B // 2, cfg.block_size, rng)        # 2 x (B/2, T)
    big = rng.standard_normal((1500, 1500), dtype=np.float32)       # (1500,1500): ~30-60 ms a matmul

    def micro_batch():
        t0 = time.perf_counter()
        gpt_loss_and_grads(params, cfg, x, y)
        return time.perf_counter() - t0

    stop = threading.Event()

    def blas_loop():
        while not stop.is_set():
            big @ big                                                # (1500,1500) @ (1500,1500), GIL released

    def micro_batch_loop():
        while not stop.is_set():
            gpt_loss_and_grads(params, cfg, x, y)

    for _ in range(5):
        micro_batch()                                                # kernels loaded, buffers at size
    times = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        times["alone"] += [micro_batch() for _ in range(args.calls)]
        for setting, loop in (("beside_blas", blas_loop), ("beside_micro_batch", micro_batch_loop)):
            stop.clear()
            other = threading.Thread(target=loop)
            other.start()
            time.sleep(0.05)                                         # the other thread under way
            times[setting] += [micro_batch() for _ in range(args.calls)]
            stop.set()
            other.join()
    med = {s: float(np.median(times[s])) * 1e3 for s in SETTINGS}
    for s in SETTINGS:
        q1, q3 = np.percentile(times[s], [25, 75]) * 1e3
        print(f"{args.config} {s:20s} median {med[s]:6.2f} ms  (quartiles {q1:.2f}-{q3:.2f})")
    print(json.dumps({
        "bench": "contention", "config": args.config, "micro_batch": B // 2,
        "rounds": args.rounds, "calls": args.calls, "ms_median": {s: round(med[s], 3) for s in SETTINGS},
        "sharing_ratio": round(med["beside_blas"] / med["alone"], 3),
        "gil_ratio": round(med["beside_micro_batch"] / med["beside_blas"], 3),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main(args)
