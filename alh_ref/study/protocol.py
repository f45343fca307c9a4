"""The study's protocol: pretrain the base on A, then adapt every method under shift or mix.

    shift   adapt on B only
    mix     adapt on batches of which half the windows come from A and half from B
            (the headline: can a method switch by context and keep A?)

Every method gets the same step budget, batch size, token budget and AdamW settings; for a given
seed every method sees the same batches. The learning rate (and embed-ft-l2's strength) is chosen
on validation loss from one log grid shared by every trained method (:func:`sweep`).
"""
import math
import time
from dataclasses import replace

import numpy as np

from ..alh.adapted import ALHConfig, alh_param_shapes
from ..alh.methods import make_method
from ..errors import RunError
from ..model import GPTConfig, decayed, init_params, param_shapes
from ..optim import AdamW, AdamWConfig
from ..train import gpt_loss_and_grads, sample_batch, train
from .measure import mean_loss
from .settings import METHOD_SPECS


def _adamw(cfg, lr, steps):
    return AdamWConfig(lr=lr, warmup_steps=max(1, int(cfg["warmup_frac"] * steps)), total_steps=steps)


def base_config(cfg, V):
    """GPTConfig of the base model for vocabulary size V."""
    return GPTConfig(vocab_size=V, block_size=cfg["block_size"], n_layer=cfg["n_layer"], n_head=cfg["n_head"],
                     n_embd=cfg["n_embd"])


def pretrain_base(data, gcfg, cfg, seed):
    """Pretrain the base GPT on A's train stream (params seeded ``seed``, batches rng (seed, 1)), with
    early stopping on A's validation loss.

    Every ``pretrain_eval_every`` steps (and after the last) the A val loss is measured; training
    stops once it has not improved for ``pretrain_patience`` evaluations in a row, and the
    parameters of the best evaluation are returned. A's train split is small: a base trained on it
    for too long memorises it (its train loss falls far below its val loss) and is a poor model of
    A, and a worse one of B and C, so every method would be adapting a degenerate model.

    Returns
    -------
    base : dict of parameters (the best evaluation's)
    info : dict  best_step, stopped_step, final_loss (mean training loss of the 10 steps before
        best_step), curve [{"step", "train", "A"}] (train: mean loss since the previous evaluation)
    """
    base = init_params(gcfg, seed=seed)
    steps, every = cfg["pretrain_steps"], cfg["pretrain_eval_every"]
    opt = AdamW(base, list(param_shapes(gcfg)), _adamw(cfg, cfg["pretrain_lr"], steps), decayed)
    rng = np.random.default_rng([seed, 1])
    none = make_method("none", base, gcfg)                                              # reads base in place
    losses, curve, best, since = [], [], None, 0
    while len(losses) < steps and since < cfg["pretrain_patience"]:
        n = min(every, steps - len(losses))
        hist = train(base, opt, lambda x, y: gpt_loss_and_grads(base, gcfg, x, y), data["domains"]["A"]["train"],
                     cfg["batch_size"], gcfg.block_size, n, rng)                         # continues opt and rng
        losses += [h["loss"] for h in hist]
        curve.append({"step": len(losses), "train": float(np.mean(losses[-n:])),
                      "A": mean_loss(none, data["domains"]["A"]["val"])})
        if best is None or curve[-1]["A"] < best[0]:
            best, since = (curve[-1]["A"], len(losses), {k: v.copy() for k, v in base.items()}), 0
        else:
            since += 1
    info = {"best_step": best[1], "stopped_step": len(losses), "curve": curve,
            "final_loss": float(np.mean(losses[max(0, best[1] - 10):best[1]]))}
    return best[2], info


def resolve_matched(cfg, gcfg):
    """The sizes that match embed-ft's: K of static-householder-matched and D of alh-householder-matched.

    K: the even K nearest V, so the transform's K C free parameters equal embed-ft's V C.
    D: the multiple of the encoder's head count (up to 512) whose hypernetwork's trainable count
    is nearest V C.

    Returns
    -------
    dict  {"K": int, "D": int, "embed_ft": V C}
    """
    V, C = gcfg.vocab_size, gcfg.n_embd
    target = V * C
    K = max(2, 2 * int(round(V / 2)))
    base = ALHConfig(**cfg["alh"])
    Ds = range(base.n_head, 513, base.n_head)
    n = {D: sum(int(np.prod(s)) for s in alh_param_shapes(gcfg, replace(base, D=D)).values()) for D in Ds}
    D = min(n, key=lambda d: abs(n[d] - target))
    return {"K": K, "D": D, "embed_ft": target}


def build(name, base, gcfg, cfg, matched, seed, l2=None, alh=None):
    """A study method by name (settings.METHOD_SPECS) on the frozen base; ``alh``: more ALHConfig overrides."""
    kind, over = METHOD_SPECS[name]
    over = {k: (matched[k] if v == "match" else v) for k, v in over.items()}
    acfg = replace(ALHConfig(**cfg["alh"]), **over, **(alh or {}))
    return make_method(kind, base, gcfg, acfg, seed=seed, lora_rank=cfg["lora_rank"],
                       l2=cfg["l2s"][0] if l2 is None else l2)


def batch(protocol, data, B, T, rng):
    """One training batch: x, y (B,T) and the domain label of every window (0 = A, 1 = B).

    shift: B windows of B's train stream; mix: the first B // 2 windows from A, the rest from B.
    """
    nA = B // 2 if protocol == "mix" else 0
    parts = [(0, nA, "A"), (1, B - nA, "B")]
    xs, ys, ds = [], [], []
    for lab, n, D in parts:
        if n:
            x, y = sample_batch(data["domains"][D]["train"], n, T, rng)                     # (n,T), (n,T)
            xs.append(x)
            ys.append(y)
            ds.append(np.full(n, lab, dtype=np.int64))                                     # (n,)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ds)                       # (B,T), (B,T), (B,)


def val_point(m, data, step):
    """Validation loss on every domain's document-aligned val windows: {"step", "A", "B", "C"}."""
    return {"step": step, **{D: mean_loss(m, data["domains"][D]["val"]) for D in ("A", "B", "C")}}


def objective(point, protocol):
    """What the protocol tunes on: B val loss (shift) or the mean of A and B val loss (mix)."""
    return point["B"] if protocol == "shift" else 0.5 * (point["A"] + point["B"])


def adapt(m, data, cfg, protocol, lr, seed, track=True):
    """Train a method for cfg["adapt_steps"] steps; batches from rng (seed, 2, protocol).

    Returns
    -------
    train_loss : list of float (per step);  track : list of :func:`val_point` at log-spaced steps
    (step 0 and the last step always; only the last one when ``track`` is False);  seconds : float
    (training time, evaluations excluded)

    Raises
    ------
    RunError if a loss or gradient norm stops being finite (the run diverged at this lr)
    """
    steps = cfg["adapt_steps"]
    marks = set(np.unique(np.geomspace(1, steps, cfg["track_points"]).round().astype(int)).tolist()) if track else set()
    marks.add(steps)
    points = [val_point(m, data, 0)] if track else []
    if m.n_trainable == 0:
        return [], points or [val_point(m, data, 0)], 0.0
    opt = AdamW(m.params, list(m.params), _adamw(cfg, lr, steps), m.decay)
    rng = np.random.default_rng([seed, 2, 0 if protocol == "shift" else 1])
    losses, sec = [], 0.0
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        x, y, dom = batch(protocol, data, cfg["batch_size"], cfg["block_size"], rng)
        loss, grads = m.loss_and_grads(x, y, dom)
        norm, _ = opt.step(m.params, grads) if math.isfinite(loss) else (math.nan, 0)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise RunError(f"{m.name} diverged at step {step} (lr {lr:g})")
        sec += time.perf_counter() - t0
        losses.append(round(float(loss), 5))
        if step in marks:
            points.append(val_point(m, data, step))
    return losses, points, sec


def next_value(v, up):
    """The next value of a 1-3-10 log grid past v: v * 10^(+-1/2) rounded (in log) to 1 or 3 times a power of 10."""
    w = v * 10 ** (0.5 if up else -0.5)
    e = math.floor(math.log10(w))
    m = min((1.0, 3.0, 10.0), key=lambda c: abs(math.log10(w / 10 ** e / c)))
    return float(f"{m * 10 ** e:.3g}")


def sweep(run, grid, max_extend):
    """Try every value of a log grid; while an edge is open, extend past it (at most max_extend times).

    An edge is open while the objective still falls toward it: the best value is on that edge, or
    the edge's objective is below its inner neighbour's (a curve that is not monotone can have an
    interior dip and its real minimum past an edge). The grid brackets the choice when neither edge
    is open. With both open, the edge with the lower objective is extended first.

    Parameters
    ----------
    run : value -> (objective float, payload)   (objective inf for a diverged run)
    grid : increasing list of positive values
    max_extend : int

    Returns
    -------
    best : the chosen value;  tried : {value: objective or None (diverged)};  payloads : {value: payload}
    extended : list of the values added past an edge;  on_edge : bool (an edge is still open)
    """
    values = list(grid)
    res = {v: run(v) for v in values}
    extended = []
    while True:
        ordered = sorted(res)
        obj = [res[v][0] for v in ordered]                                        # objective per value, increasing value
        i = int(np.argmin(obj))
        best = ordered[i]
        n = len(ordered)
        low = n > 1 and (i == 0 or obj[0] < obj[1])                               # still falling toward the low edge
        high = n > 1 and (i == n - 1 or obj[-1] < obj[-2])                        # ... toward the high edge
        edge = math.isfinite(obj[i]) and (low or high)
        if not edge or len(extended) >= max_extend:
            break
        down = low and (not high or obj[0] <= obj[-1])
        v = next_value(ordered[0], False) if down else next_value(ordered[-1], True)
        extended.append(v)
        res[v] = run(v)
    tried = {f"{v:g}": (o if math.isfinite(o) else None) for v, (o, _) in sorted(res.items())}
    return best, tried, {v: p for v, (_, p) in res.items()}, extended, edge
