#!/usr/bin/env python3
"""Each Numba kernel alone at one micro-batch's sizes: best-of time per call, one thread.

The figures of docs/performance.md, "A division the compiler put back". Times the fast path of
every op family on the shapes one micro-batch of a config gives (B = 8 sequences, float32): GELU,
LayerNorm, the fused softmax cross-entropy, the causal softmax kernel alone (its input copied back
before each call), the whole attention core, and one AdamW update over an array the size of the
model. Each entry is the best over ``--repeat`` timings of ``--calls`` calls, in microseconds.

alh_ref is imported from this checkout, or from the one ``--checkout DIR`` names, so one copy of the
script times two checkouts, e.g. the code before a change in a worktree (alternate the two runs):

    python benchmarks/kernels.py --config tiny
    git worktree add /tmp/before <commit> && python benchmarks/kernels.py --config tiny --checkout /tmp/before

Prints one line per kernel and, last, one JSON line ``{"bench": "kernels", "us": {...}, ...}``.
"""
import argparse
import os
import sys
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=["tiny", "small"], default="tiny")
    p.add_argument("--repeat", type=int, default=9, help="timings per kernel; the best counts")
    p.add_argument("--calls", type=int, default=100, help="calls per timing")
    p.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1],
                   help="the checkout whose alh_ref is timed (default: this one)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.calls < 1:
        p.error(f"--repeat {args.repeat} and --calls {args.calls}: expected positive integers")
    if not (args.checkout / "alh_ref" / "__init__.py").is_file():
        p.error(f"--checkout {args.checkout}: no alh_ref/__init__.py there; expected a checkout of this repository")
    return args


def main(args):
    os.environ["OPENBLAS_NUM_THREADS"] = "1"                              # before numpy loads: one thread
    sys.path.insert(0, str(args.checkout.resolve()))                      # the alh_ref to time
    import json
    import time

    import numpy as np

    import alh_ref
    from alh_ref.model import CONFIGS, param_shapes
    from alh_ref.ops import attention, gelu, layernorm, softmax_ce
    from alh_ref.optim import adamw_update_fast

    cfg = CONFIGS[args.config]
    B, T, C, V, NH = 8, cfg.block_size, cfg.n_embd, cfg.vocab_size, cfg.n_head
    rng = np.random.default_rng(0)
    f32 = np.float32
    x4 = rng.standard_normal((B, T, 4 * C), dtype=f32)                    # (B,T,4C) GELU input
    d4 = rng.standard_normal((B, T, 4 * C), dtype=f32)                    # (B,T,4C) its upstream gradient
    h = rng.standard_normal((B, T, C), dtype=f32)                         # (B,T,C) LayerNorm input
    dh = rng.standard_normal((B, T, C), dtype=f32)                        # (B,T,C)
    w, b = rng.standard_normal(C, dtype=f32), rng.standard_normal(C, dtype=f32)  # (C,)
    logits = rng.standard_normal((B * T, V), dtype=f32)                   # (N,V)
    targets = rng.integers(0, V, size=B * T)                              # (N,)
    qkv = rng.standard_normal((B, T, 3 * C), dtype=f32)                   # (B,T,3C)
    dy = rng.standard_normal((B, T, C), dtype=f32)                        # (B,T,C)
    scores = rng.standard_normal((B * NH, T, T), dtype=f32)               # (B*NH,T,T) raw scores
    att = np.empty_like(scores)                                           # (B*NH,T,T) the kernel's in-place buffer
    n = int(sum(np.prod(s) for s in param_shapes(cfg).values()))          # scalars in the model
    p, g = rng.standard_normal(n, dtype=f32), rng.standard_normal(n, dtype=f32)  # (n,) one flat "model"
    m, v = np.zeros(n, dtype=f32), np.zeros(n, dtype=f32)                 # (n,)
    _, c_gelu = gelu.gelu_forward_fast(x4)
    _, c_ln = layernorm.layernorm_forward_fast(h, w, b)
    _, c_att = attention.attention_forward_fast(qkv, NH)
    scale = f32(1.0 / np.sqrt(C // NH))

    def ce():
        _, cache = softmax_ce.softmax_cross_entropy_forward_fast(logits, targets)
        return cache

    def causal_softmax():
        att[...] = scores
        attention._causal_softmax_kernel(att, scale)

    kernels = {
        "gelu_forward": lambda: gelu.gelu_forward_fast(x4),
        "gelu_backward": lambda: gelu.gelu_backward_fast(d4, c_gelu),
        "layernorm_forward": lambda: layernorm.layernorm_forward_fast(h, w, b),
        "layernorm_backward": lambda: layernorm.layernorm_backward_fast(dh, c_ln),
        "softmax_ce_forward": ce,
        "softmax_ce_forward_and_backward": lambda: softmax_ce.softmax_cross_entropy_backward_fast(1.0, ce(), inplace=True),
        "causal_softmax_kernel (with its copy)": causal_softmax,
        "attention_forward": lambda: attention.attention_forward_fast(qkv, NH),
        "attention_backward": lambda: attention.attention_backward_fast(dy, c_att),
        "adamw_update (all parameters as one array)": lambda: adamw_update_fast(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.1, 10),
    }
    us = {}
    for name, fn in kernels.items():
        fn()                                                              # load or compile
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for _ in range(args.calls):
                fn()
            best = min(best, (time.perf_counter() - t0) / args.calls)
        us[name] = round(best * 1e6, 1)
        print(f"{name:44s} {us[name]:9.1f} us", flush=True)
    print(json.dumps({"bench": "kernels", "config": args.config, "B": B, "repeat": args.repeat, "calls": args.calls,
                      "alh_ref": str(Path(alh_ref.__file__).resolve().parent), "us": us,
                      "loadavg_1min": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
