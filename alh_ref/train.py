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
    grads, _ = gpt_backward(1.0, cache, frozen=frozen)
    return float(loss), grads


DIVERGENCE_FACTOR, DIVERGENCE_WINDOW = 3.0, 20


def divergence(loss, past, factor=DIVERGENCE_FACTOR, window=DIVERGENCE_WINDOW):
    """Why a step's loss counts as divergence, or None when it does not.

    With ``first`` = the run's first loss and ``median`` = the median of its last ``window`` losses,
    a loss has diverged if it is not finite, or if it is above the first loss and either above
    ``factor * median`` (a sudden blow-up) or above ``factor * first`` (far worse than the untrained
    model). A loss at or below where the run started never counts.

    Parameters
    ----------
    loss : float;  past : sequence of float   the run's earlier losses, oldest first
    factor : float;  window : int

    Returns
    -------
    str or None   e.g. "loss 9.2e+10 is above 3 x the median 6.2 of the last 20 steps"
    """
    if not math.isfinite(loss):
        return f"loss became {loss}"
    if not past or loss <= past[0]:
        return None
    median = float(np.median(past[-window:]))
    if loss > factor * median:
        return f"loss {loss:.4g} is above {factor:g} x the median {median:.4g} of the last {min(window, len(past))} steps"
    if loss > factor * past[0]:
        return f"loss {loss:.4g} is above {factor:g} x the run's first loss {past[0]:.4g}"
    return None


def train(params, opt, loss_and_grads, tokens, B, T, steps, rng, *, domains=None, on_step=None, progress=False,
          save_every=None, on_save=None, past_losses=None):
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
    on_step : callable(step, record) or None, called after every step (logging)
    progress : bool, show a tqdm bar with loss and tokens/s
    save_every, on_save : checkpointing. The parameters after step s (s a multiple of
        ``save_every``, or the last step) are passed to ``on_save(s, rng_state)`` only once they
        have passed the divergence check (:func:`divergence`) on the next batch, i.e. when step
        s+1 has computed a finite, not blown-up loss with them; after the last step one extra
        batch is drawn from a copy of the sampler for that check. ``rng_state`` is the sampler's
        state after step s (before step s+1's batch), so a resumed run draws the same batches.
    past_losses : list of float or None   losses of earlier sessions of the run; when given (or
        with ``on_save``), every loss is checked with :func:`divergence`, not only for finiteness.

    Returns
    -------
    history : list of dicts {step, loss, grad_norm, lr, dt}

    Raises
    ------
    RunError if the loss or gradient norm stops being finite, or the loss diverges (the parameters
    of that step are not applied, and the checkpoint awaiting the check is not saved).
    """
    history = []
    guard = on_save is not None or past_losses is not None
    losses = list(past_losses or [])
    pending = None                                                   # (step, rng state) awaiting its check
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, unit="step", dynamic_ncols=True, leave=True)
    try:
        for i in range(steps + (1 if on_save is not None else 0)):
            probe = i == steps                                       # the check of the last parameters
            t0 = time.perf_counter()
            r = rng
            if probe:
                if pending is None:
                    break
                r = np.random.Generator(type(rng.bit_generator)())
                r.bit_generator.state = rng.bit_generator.state
            x, y, starts = sample_batch(tokens, B, T, r, return_starts=True)    # (B,T), (B,T), (B,)
            if domains is None:
                loss, grads = loss_and_grads(x, y)
            else:
                loss, grads = loss_and_grads(x, y, domains[starts])
            why = divergence(loss, losses) if guard else (None if math.isfinite(loss) else f"loss became {loss}")
            if why is not None:
                raise RunError(f"{why} at step {opt.t + 1}; stopping without applying it")
            if pending is not None:
                on_save(*pending)
                pending = None
            if probe:
                break
            norm, lr = opt.step(params, grads)
            if not math.isfinite(norm):
                raise RunError(f"gradient norm became {norm} at step {opt.t}; stopping")
            dt = time.perf_counter() - t0
            rec = {"step": opt.t, "loss": loss, "grad_norm": norm, "lr": lr, "dt": dt}
            history.append(rec)
            losses.append(loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{B * T / dt:,.0f}")
            if on_step is not None:
                on_step(opt.t, rec)
            if on_save is not None and (opt.t % save_every == 0 or i == steps - 1):
                pending = (opt.t, rng.bit_generator.state)
    finally:
        if bar is not None:
            bar.close()
    return history
