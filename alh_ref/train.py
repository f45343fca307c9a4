"""The training loop: seeded batches from a token array, loss and gradients, AdamW, history.

Data flows one way: tokens -> :func:`sample_batch` -> a ``loss_and_grads`` function (the base
GPT here, the ALH model in alh_ref.alh) -> :class:`alh_ref.optim.AdamW`.
"""
import math
import time

import numpy as np

from .errors import InputError, RunError
from .model import gpt_backward, gpt_forward


def sample_batch(tokens, B, T, rng, return_starts=False):
    """B random windows of T+1 consecutive tokens.

    Parameters
    ----------
    tokens : ndarray (n,) int, n >= T + 1
    B, T : int
    rng : np.random.Generator   (its state advances by exactly one ``integers`` call)

    Returns
    -------
    x : ndarray (B,T) int64   x[b] = tokens[s_b : s_b + T]
    y : ndarray (B,T) int64   y[b] = tokens[s_b + 1 : s_b + T + 1]   (next tokens)
    starts : ndarray (B,) int64, only with ``return_starts=True``
    """
    n = tokens.shape[0]
    if n < T + 1:
        raise InputError(f"the token stream has {n} tokens, shorter than one context of T+1 = {T + 1}; "
                         "use more text or a smaller --block-size")
    starts = rng.integers(0, n - T, size=B)                          # (B,)
    idx = starts[:, None] + np.arange(T + 1)[None, :]                # (B,T+1)
    w = tokens[idx].astype(np.int64)                                 # (B,T+1)
    if return_starts:
        return w[:, :-1], w[:, 1:], starts
    return w[:, :-1], w[:, 1:]


def gpt_loss_and_grads(params, cfg, x, y, frozen=frozenset()):
    """Loss and gradients of the base GPT on one batch (gradients of frozen names not computed)."""
    _, loss, cache = gpt_forward(params, cfg, x, y)
    grads, _ = gpt_backward(cache, params, cfg, frozen)
    return float(loss), grads


def train(params, opt, loss_and_grads, tokens, B, T, steps, rng, *, domains=None, on_step=None, progress=False):
    """Run ``steps`` optimisation steps.

    Parameters
    ----------
    params : dict of named arrays, updated in place by ``opt``
    opt : AdamW (its ``names`` are the trainable parameters)
    loss_and_grads : callable (x (B,T), y (B,T)[, dom (B,)]) -> (loss float, grads dict over opt.names)
    tokens : ndarray (n,) int
    B, T, steps : int
    rng : np.random.Generator for the batch sampler
    domains : ndarray (n,) int or None   domain label of every token; when given, loss_and_grads
        is called with ``dom`` = the label of each window's first token (used by alh-shuffled)
    on_step : callable(step, record) or None, called after every step (checkpointing, logging)
    progress : bool, show a tqdm bar with loss and tokens/s

    Returns
    -------
    history : list of dicts {step, loss, grad_norm, lr, dt}

    Raises
    ------
    RunError if the loss or gradient norm stops being finite (parameters of that step not applied).
    """
    history = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, unit="step", dynamic_ncols=True, leave=True)
    try:
        for _ in range(steps):
            t0 = time.perf_counter()
            x, y, starts = sample_batch(tokens, B, T, rng, return_starts=True)  # (B,T), (B,T), (B,)
            if domains is None:
                loss, grads = loss_and_grads(x, y)
            else:
                loss, grads = loss_and_grads(x, y, domains[starts])
            if not math.isfinite(loss):
                raise RunError(f"loss became {loss} at step {opt.t}; stopping (lower the learning rate; "
                               "the last good checkpoint is kept)")
            norm, lr = opt.step(params, grads)
            if not math.isfinite(norm):
                raise RunError(f"gradient norm became {norm} at step {opt.t - 1}; stopping "
                               "(the last good checkpoint is kept)")
            dt = time.perf_counter() - t0
            rec = {"step": opt.t, "loss": loss, "grad_norm": norm, "lr": lr, "dt": dt}
            history.append(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{B * T / dt:,.0f}")
            if on_step is not None:
                on_step(opt.t, rec)
    finally:
        if bar is not None:
            bar.close()
    return history
