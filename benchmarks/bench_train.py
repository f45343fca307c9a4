#!/usr/bin/env python3
"""Train-step throughput of alh_ref (forward + backward + AdamW, float32), tokens/s and peak RSS.

One step is exactly what training does per batch: ``gpt_loss_and_grads`` (forward, fused
softmax-CE, backward; with --threads N > 1 run as N micro-batches at once by alh_ref.parallel, as
``alh-ref pretrain --threads N`` does; ``--split off``: one call with BLAS on N threads) then ``AdamW.step`` (global-norm clip at 1.0, lr 1e-3, betas (0.9, 0.95),
eps 1e-8, weight decay 0.1 on the 2-D weights) -- the same step as ../shared/bench/torch_anchor.py.
Batches are drawn once before timing with ``sample_batch`` (8 of them, reused round-robin), so the
timer sees only the step, as in the torch anchor.

Usage:
  python benchmarks/bench_train.py --config tiny|small|all [--steps 50] [--warmup 3] [--threads 2] [--split on|off]
                                   [--workers threads|processes]

Prints a human-readable line per config and, last, one JSON line: for one config the same keys
as torch_anchor.py (``train_tok_s``, ``train_ms_median``, ...) plus ``peak_rss_mb`` (and, on worker
processes, ``peak_rss_mb_worker``: the largest worker's, read once the step has closed them); for
``--config all`` a combined line ``{"bench": "alh_ref", "results": {config: {...}}}``.
"""
import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=["tiny", "small", "all"], default="all")
    p.add_argument("--steps", type=int, default=50, help="timed steps after warm-up (median of these; >= 20 advised)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first one loads/compiles kernels)")
    p.add_argument("--threads", type=int, default=2, help="OpenBLAS / OpenMP threads (set before numpy loads)")
    p.add_argument("--split", choices=["on", "off"], default="on",
                   help="on: the batch as --threads micro-batches at once (the training default); off: one call")
    p.add_argument("--workers", choices=["threads", "processes"], default=None,
                   help="what runs the micro-batches after the first (default: as alh-ref pretrain, "
                        "processes on Linux, threads elsewhere)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--dump-times", default=None, help="write per-step train times (ms) of the last config to this file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.threads < 1:
        p.error("--steps, --warmup and --threads must be >= 1")
    return args


args = parse_args()
# Thread pools are sized when numpy / OpenBLAS load: pin them first (a user's own value loses here,
# on purpose: --threads is the one knob of this benchmark).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(args.threads)

import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

import numba  # noqa: E402
from alh_ref.model import CONFIGS, count_params, decayed, init_params, param_shapes  # noqa: E402
from alh_ref.optim import AdamW, AdamWConfig  # noqa: E402
from alh_ref.parallel import DataParallel, resolve_workers  # noqa: E402
from alh_ref.train import gpt_loss_and_grads, sample_batch  # noqa: E402

B = 16                     # batch size of both configs (as torch_anchor.py)
WORKERS = resolve_workers(args.workers)
N_BATCHES = 8              # batches drawn before timing, reused round-robin


def pct(xs):
    """(p10, p90) of a list, by the same rule as torch_anchor.py."""
    s = sorted(xs)
    return s[int(0.1 * (len(s) - 1))], s[int(0.9 * (len(s) - 1))]


def flops_per_token(cfg, n_nonemb):
    """Training FLOPs per token: 6*N_nonemb + 12*L*T*C (torch_anchor.py's formula), and + the LM head."""
    V, T, C, L = cfg.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_layer
    spec = 6 * n_nonemb + 12 * L * T * C
    return spec, spec + 6 * C * V


def peak_rss_mb(who=resource.RUSAGE_SELF):
    """Peak resident set size of this process so far (or of its largest ended child), MiB (ru_maxrss is in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024.0


def blas_info():
    """The live thread pools as threadpoolctl reports them: library, version, kernel (architecture), threads."""
    from threadpoolctl import threadpool_info
    return [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for d in threadpool_info()]


def bench_config(name, steps, warmup, seed, dump_times=None):
    """Time ``steps`` train steps of config ``name`` after ``warmup`` untimed ones; return the result dict."""
    cfg = CONFIGS[name]
    V, T, C, L, NH = cfg.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_layer, cfg.n_head
    params = init_params(cfg, seed=seed, dtype=np.float32)
    names = list(param_shapes(cfg))
    opt = AdamW(params, names, AdamWConfig(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
                                           grad_clip=1.0, warmup_steps=0, total_steps=10**9), decayed)
    rng = np.random.default_rng(seed + 1)
    tokens = rng.integers(0, V, size=N_BATCHES * B * (T + 1))                      # (n,)
    batches = [sample_batch(tokens, B, T, rng) for _ in range(N_BATCHES)]          # 8 x ((B,T), (B,T))

    n_params = count_params(params)
    n_nonemb = n_params - params["wte"].size - params["wpe"].size
    fpt_spec, fpt_head = flops_per_token(cfg, n_nonemb)

    loss_and_grads = DataParallel(lambda x, y: gpt_loss_and_grads(params, cfg, x, y), args.threads,
                                  split=args.split == "on", workers=WORKERS, state=params)

    def step(i):
        x, y = batches[i % N_BATCHES]
        loss, grads = loss_and_grads(x, y)
        opt.step(params, grads)
        return loss

    warm_times, losses = [], []
    for i in range(warmup):
        t0 = time.perf_counter()
        losses.append(step(i))
        warm_times.append(time.perf_counter() - t0)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = step(warmup + i)
        times.append(time.perf_counter() - t0)

    loss_and_grads.close()
    if dump_times:
        Path(dump_times).write_text("\n".join(f"{t * 1e3:.3f}" for t in times) + "\n")
    tok = B * T
    med = statistics.median(times)
    return dict(
        bench="alh_ref", config=name, V=V, T=T, C=C, L=L, H=NH, B=B,
        numpy=np.__version__, numba=numba.__version__, threads=args.threads, split=args.split,
        workers=WORKERS if args.threads > 1 and args.split == "on" else None,             # None: the serial step
        blas=blas_info(),
        dtype="float32", params=n_params, params_nonembedding=n_nonemb,
        steps=steps, warmup=warmup,
        first_step_s=round(warm_times[0], 3),
        train_ms_median=round(med * 1e3, 3),
        train_ms_min=round(min(times) * 1e3, 3),
        train_ms_mean=round(statistics.mean(times) * 1e3, 3),
        train_ms_p10_p90=[round(x * 1e3, 3) for x in pct(times)],
        train_tok_s=round(tok / med, 1),
        flops_per_token=fpt_spec,
        flops_formula="6*N_nonemb + 12*L*T*C",
        train_gflops=round(fpt_spec * tok / med / 1e9, 3),
        flops_per_token_incl_lmhead=fpt_head,
        train_gflops_incl_lmhead=round(fpt_head * tok / med / 1e9, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        peak_rss_mb_worker=round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1) if WORKERS == "processes" else None,
        loss_first=round(float(losses[0]), 4), loss_last=round(float(loss), 4),
    )


def main():
    names = ["tiny", "small"] if args.config == "all" else [args.config]
    results = {}
    for name in names:
        r = bench_config(name, args.steps, args.warmup, args.seed, args.dump_times)
        results[name] = r
        print(f"alh_ref {name}: median {r['train_ms_median']} ms/step (min {r['train_ms_min']}, "
              f"p10-p90 {r['train_ms_p10_p90']}), {r['train_tok_s']} tok/s, {r['train_gflops']} GFLOP/s; "
              f"peak RSS {r['peak_rss_mb']} MiB (worker {r['peak_rss_mb_worker']}); first step {r['first_step_s']} s; "
              f"loss {r['loss_first']} -> {r['loss_last']}; threads {r['threads']} on {r['workers']} (pools {r['blas']})",
              flush=True)
    if len(names) == 1:
        print(json.dumps(results[names[0]]))
    else:
        print(json.dumps({"bench": "alh_ref", "results": results}))


if __name__ == "__main__":
    main()
