#!/usr/bin/env python3
"""The 2-way batch split on two processes (parameters and gradients in shared memory) against two threads.

The figures of docs/performance.md, "Where the second thread's time goes". A design measured, not
one alh_ref trains with: alh_ref.parallel.DataParallel runs the two micro-batches on two threads of
one process, so their Python glue takes turns on the GIL. Here the second micro-batch runs in a
forked process instead, which has its own GIL:

* the parameters live in one anonymous shared mapping (``mmap.MAP_SHARED``), the dict's arrays
  views of it, so AdamW's in-place update in the parent is what the worker reads on the next step;
* per step the parent copies the batch into shared memory, writes one byte to a pipe ("go"),
  computes micro-batch 0 while the worker computes micro-batch 1 and copies its gradients into a
  second shared mapping, then reads one byte back ("done"), sums the two halves with
  DataParallel's own ``reduce_weighted`` (w_k = 1/2: equal halves, no ignored targets), runs AdamW.

Both variants run in the same process on the same batches, interleaved in ``--rounds`` rounds of
``--steps`` train steps (forward + backward + AdamW, float32, B = 16, BLAS on one thread per
micro-batch). Before timing, 3 steps of each from the same initial parameters are compared:
the same kernels on the same inputs, summed in the same order, so the parameters should agree
exactly (``max_param_diff`` 0.0). Needs ``os.fork`` (Linux). Read it on an idle machine.

    python benchmarks/process_split.py --config tiny --rounds 8 --steps 30

Prints one line per round and, last, one JSON line ``{"bench": "process_split", ...}`` with
``thread_over_process`` = (median of the threads' round medians) / (that of the processes').
"""
import os
import sys

from interleave import interleaved_rounds, parse_round_args, same_training  # benchmarks/interleave.py


def parse_args(argv=None):
    p, args = parse_round_args(__doc__.splitlines()[0], argv)
    if not hasattr(os, "fork"):
        p.error("this platform has no os.fork: the process variant needs it (Linux)")
    return args


args = parse_args()
# Before numpy loads: one BLAS thread per micro-batch in both variants (a user's own value loses here).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402
import mmap  # noqa: E402
import statistics  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from alh_ref.model import CONFIGS, decayed, init_params, param_shapes  # noqa: E402
from alh_ref.optim import AdamW, AdamWConfig  # noqa: E402
from alh_ref.parallel import DataParallel, keep_freed_memory, reduce_weighted  # noqa: E402
from alh_ref.train import gpt_loss_and_grads, sample_batch  # noqa: E402

B = 16                     # bench_train.py's batch; each variant runs two micro-batches of B / 2
N_BATCHES = 8              # batches drawn before timing, reused round-robin


def shared_arrays(shapes, dtype):
    """{name: array} of the given shapes, all views of one anonymous shared mapping (kept alive by the views)."""
    sizes = {n: int(np.prod(s)) * np.dtype(dtype).itemsize for n, s in shapes.items()}
    buf = mmap.mmap(-1, max(1, sum(sizes.values())), flags=mmap.MAP_SHARED)
    out, off = {}, 0
    for n, s in shapes.items():
        out[n] = np.frombuffer(buf, dtype=dtype, count=int(np.prod(s)), offset=off).reshape(s)   # shape s
        off += sizes[n]
    return out


def make_opt(params, names):
    return AdamW(params, names, AdamWConfig(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
                                            grad_clip=1.0, warmup_steps=0, total_steps=10**9), decayed)


def worker(go, done, params, cfg, x, y, grads_out, loss_out, h):
    """The forked process: on every "g" byte, micro-batch 1 of the shared batch into the shared gradients."""
    try:
        while os.read(go, 1) == b"g":
            loss, grads = gpt_loss_and_grads(params, cfg, x[h:], y[h:])
            for n, g in grads.items():
                np.copyto(grads_out[n], g)
            loss_out[0] = loss
            os.write(done, b"d")
    finally:
        os._exit(0)                  # never run the parent's cleanup (atexit, buffered output) twice


def main(args):
    keep_freed_memory()                                              # as a DataParallel does
    cfg = CONFIGS[args.config]
    T, h = cfg.block_size, B // 2
    names = list(param_shapes(cfg))
    init = init_params(cfg, seed=1234, dtype=np.float32)
    shapes = {n: init[n].shape for n in names}
    rng = np.random.default_rng(1235)
    tokens = rng.integers(0, cfg.vocab_size, size=N_BATCHES * B * (T + 1))         # (n,)
    batches = [sample_batch(tokens, B, T, rng) for _ in range(N_BATCHES)]           # 8 x ((B,T), (B,T))

    p_thr = {n: init[n].copy() for n in names}                     # the threads' parameters
    p_proc = shared_arrays(shapes, np.float32)                      # the processes' parameters, shared
    g_work = shared_arrays(shapes, np.float32)                      # the worker's gradients, shared
    batch_sh = shared_arrays({"x": (B, T), "y": (B, T)}, np.int64)   # the step's batch, shared
    x_sh, y_sh = batch_sh["x"], batch_sh["y"]                       # (B,T), (B,T) int64
    loss_sh = shared_arrays({"loss": (1,)}, np.float64)["loss"]     # (1,): the worker's loss
    for n in names:
        np.copyto(p_proc[n], init[n])
    gpt_loss_and_grads(p_thr, cfg, *(b[:h] for b in batches[0]))   # kernels compiled before the fork

    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        os.close(done_r)
        worker(go_r, done_w, p_proc, cfg, x_sh, y_sh, g_work, loss_sh, h)
    os.close(go_r)
    os.close(done_w)

    opt_thr, opt_proc = make_opt(p_thr, names), make_opt(p_proc, names)
    dp = DataParallel(lambda x, y: gpt_loss_and_grads(p_thr, cfg, x, y), threads=2)

    def step_threads(i):
        x, y = batches[i % N_BATCHES]
        loss, grads = dp(x, y)
        opt_thr.step(p_thr, grads)
        return loss

    def step_processes(i):
        x, y = batches[i % N_BATCHES]
        np.copyto(x_sh, x)
        np.copyto(y_sh, y)
        os.write(go_w, b"g")
        loss0, g0 = gpt_loss_and_grads(p_proc, cfg, x_sh[:h], y_sh[:h])
        if os.read(done_r, 1) != b"d":
            sys.exit("error: the worker process ended before finishing its micro-batch")
        # DataParallel's own sum, w_k = 1/2 (equal halves, no ignored targets)
        loss, grads = reduce_weighted([(loss0, g0), (float(loss_sh[0]), g_work)], [0.5, 0.5])
        opt_proc.step(p_proc, grads)
        return loss

    try:
        variants = [("threads", "threads", step_threads), ("processes", "processes", step_processes)]
        # Same kernels, same inputs, same order of the sum: the two variants agree exactly.
        diff = same_training(variants, (p_thr, p_proc), names, args.config)
        meds = interleaved_rounds(variants, args.rounds, args.steps, first_step=3)
    finally:
        try:
            os.write(go_w, b"q")                                     # the worker's loop ends on any other byte
        except BrokenPipeError:                                      # it has already ended
            pass
        os.waitpid(pid, 0)
        dp.close()
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
