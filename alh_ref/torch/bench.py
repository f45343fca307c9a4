"""Train-step throughput, NumPy backend against the torch backend on CPU, measured interleaved.

    python -m alh_ref.torch bench [--config tiny|small] [--rounds 5] [--steps 5] [--threads 1]

One step = forward + backward + AdamW on a batch (B, T) = (16, block_size), float32. Two methods:
``full-ft`` (a base pretraining step: every parameter trained) and ``alh-householder`` (the
hypernetwork with the default ALHConfig, base frozen). Each round times ``steps`` steps of every
(backend, method) pair in turn, so slow phases of a shared machine hit all pairs alike; the table
reports the median over rounds of tokens/s = B T steps / seconds. Set OPENBLAS_NUM_THREADS to the
same number as --threads before starting Python (NumPy's BLAS reads it once, at import).
"""
import time

import numpy as np
import torch

from ..alh.methods import make_method as numpy_method
from ..model import CONFIGS, decayed, init_params
from ..optim import AdamW as NumpyAdamW
from ..optim import AdamWConfig
from .methods import make_method
from .optim import AdamW

METHODS = ("full-ft", "alh-householder")


def _numpy_step(cfg, name, B):
    m = numpy_method(name, init_params(cfg, 0, np.float32), cfg, seed=0)
    opt = NumpyAdamW(m.params, list(m.params), AdamWConfig(), m.decay)
    rng = np.random.default_rng(0)

    def step():
        x = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))                    # (B,T)
        _, g = m.loss_and_grads(x, np.roll(x, -1, axis=1))
        opt.step(m.params, g)
    return step


def _torch_step(cfg, name, B):
    m = make_method(name, init_params(cfg, 0, np.float64), cfg, seed=0, dtype=torch.float32)
    opt = AdamW(m.trainable(), AdamWConfig(), m.decay or decayed)
    gen = torch.Generator().manual_seed(0)

    def step():
        x = torch.randint(0, cfg.vocab_size, (B, cfg.block_size), generator=gen)    # (B,T)
        opt.zero_grad()
        m(x, torch.roll(x, -1, dims=1))[1].backward()
        opt.step()
    return step


def bench(config="tiny", rounds=5, steps=5, threads=1, B=16):
    """{(backend, method): median tokens/s} and the table lines; see the module docstring."""
    torch.set_num_threads(threads)
    cfg = CONFIGS[config]
    pairs = {(b, n): (_numpy_step if b == "numpy" else _torch_step)(cfg, n, B) for n in METHODS for b in ("numpy", "torch")}
    for fn in pairs.values():                                                       # warm-up: Numba compile, allocator
        fn()
        fn()
    rates = {k: [] for k in pairs}
    for _ in range(rounds):
        for k, fn in pairs.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            rates[k].append(B * cfg.block_size * steps / (time.perf_counter() - t0))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    lines = [f"config {config} (V={cfg.vocab_size}, T={cfg.block_size}, C={cfg.n_embd}, L={cfg.n_layer}), B={B}, "
             f"float32, {threads} thread(s), median of {rounds} interleaved rounds of {steps} steps",
             "| step | NumPy tokens/s | torch tokens/s | torch / NumPy |", "| --- | --- | --- | --- |"]
    for n in METHODS:
        a, b = med[("numpy", n)], med[("torch", n)]
        lines.append(f"| {n} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
    return med, lines
