"""AdamW with decoupled weight decay, global grad-norm clipping, warmup + cosine schedule.

    g <- g * min(1, clip / ||g||_2)                      (global norm over all trainable tensors)
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) - lr * wd * p   (wd on decayed names only)

The optimizer walks the same ordered name list as everything else; its state is the named
tensors ``m.<name>``, ``v.<name>`` and the integer step ``t`` (see :func:`state_tensors`).
Derivation: docs/optim.md.
"""
import math
from dataclasses import asdict, dataclass

import numpy as np

from .ops._jit import kernel


@dataclass(frozen=True)
class AdamWConfig:
    """Hyper-parameters. ``warmup_steps`` linear warmup from 0, then cosine decay to
    ``min_lr_frac * lr`` at ``total_steps``; ``grad_clip`` <= 0 disables clipping."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup_steps: int = 20
    total_steps: int = 1000
    min_lr_frac: float = 0.1

    def to_dict(self):
        return asdict(self)


def lr_at(step, cfg):
    """Learning rate at 0-based ``step``: linear warmup to lr, cosine decay to min_lr_frac*lr.

    lr(s) = lr (s+1)/W for s < W;  min + (lr - min) (1 + cos(pi (s-W)/(S-W))) / 2 after; min after S.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    lo = cfg.lr * cfg.min_lr_frac
    if step >= cfg.total_steps:
        return lo
    frac = (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps)
    return lo + (cfg.lr - lo) * 0.5 * (1.0 + math.cos(math.pi * frac))


@kernel
def _sumsq_kernel(g):
    """sum_i g[i]^2 of a flat array, accumulated in float64 (no float64 copy of g is made)."""
    acc = 0.0
    for i in range(g.shape[0]):
        gi = np.float64(g[i])
        acc += gi * gi
    return acc


def global_grad_norm(grads, names):
    """||g||_2 = sqrt(sum over names of sum g^2) over all named gradients (Numba kernel, float64 sums)."""
    return math.sqrt(sum(_sumsq_kernel(np.ascontiguousarray(grads[n]).reshape(-1)) for n in names))


def global_grad_norm_ref(grads, names):
    """NumPy twin of :func:`global_grad_norm`: the same norm via float64 copies and np.dot."""
    return math.sqrt(sum(float(np.dot(grads[n].ravel().astype(np.float64), grads[n].ravel().astype(np.float64)))
                         for n in names))


@kernel
def _adamw_kernel(p, g, m, v, lr, b1, b2, eps, wd, bc1, bc2, gscale):
    """One AdamW update of one tensor in place, in float64, rounded once into p, m, v.

    p, g, m, v: (n,) flat views of one tensor; scalars float64; bc1 = 1 - b1^t, bc2 = 1 - b2^t.
    p <- p - lr (m / bc1 / (sqrt(v / bc2) + eps) + wd p), written as m (1/bc1) / (sqrt(v) (1/sqrt(bc2)) + eps)
    so the loop has one sqrt and one division per element (the two slow vector instructions).
    """
    inv_bc1 = 1.0 / bc1
    inv_sqrt_bc2 = 1.0 / np.sqrt(bc2)
    for i in range(p.shape[0]):
        gi = g[i] * gscale
        mi = b1 * m[i] + (1.0 - b1) * gi
        vi = b2 * v[i] + (1.0 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        pi = np.float64(p[i])
        p[i] = pi - lr * (mi * inv_bc1 / (np.sqrt(vi) * inv_sqrt_bc2 + eps) + wd * pi)


def adamw_update_ref(p, g, m, v, lr, b1, b2, eps, wd, t, gscale=1.0):
    """One AdamW update of one tensor in place, NumPy reference of the kernel (t is 1-based)."""
    g = g * gscale                                                   # (...)
    m[...] = b1 * m + (1 - b1) * g                                   # (...)
    v[...] = b2 * v + (1 - b2) * g * g                               # (...)
    mhat = m / (1 - b1 ** t)                                         # (...)
    vhat = v / (1 - b2 ** t)                                         # (...)
    p[...] = p - lr * (mhat / (np.sqrt(vhat) + eps) + wd * p)


class AdamW:
    """AdamW over a dict of named parameters (updated in place).

    Parameters
    ----------
    params : dict name -> ndarray (C-contiguous; updated in place)
    names : list of the trainable names, in the canonical order
    cfg : AdamWConfig
    decay : callable name -> bool, which names get weight decay
    """

    def __init__(self, params, names, cfg, decay):
        self.names = list(names)
        self.cfg = cfg
        self.decay = {n: bool(decay(n)) for n in self.names}
        self.m = {n: np.zeros_like(params[n]) for n in self.names}  # per name, shape of the param
        self.v = {n: np.zeros_like(params[n]) for n in self.names}
        self.t = 0

    def step(self, params, grads):
        """Clip, then update every trainable tensor. Returns (grad_norm before clipping, lr used)."""
        c = self.cfg
        lr = lr_at(self.t, c)
        self.t += 1
        norm = global_grad_norm(grads, self.names)
        gscale = min(1.0, c.grad_clip / (norm + 1e-6)) if c.grad_clip > 0 else 1.0
        bc1 = 1.0 - c.beta1 ** self.t
        bc2 = 1.0 - c.beta2 ** self.t
        for n in self.names:
            wd = c.weight_decay if self.decay[n] else 0.0
            _adamw_kernel(params[n].reshape(-1), np.ascontiguousarray(grads[n]).reshape(-1),
                          self.m[n].reshape(-1), self.v[n].reshape(-1),
                          lr, c.beta1, c.beta2, c.eps, wd, bc1, bc2, gscale)
        return norm, lr

    def state_tensors(self):
        """Named optimizer state for checkpoints: {"m.<name>": m, "v.<name>": v}."""
        out = {}
        for n in self.names:
            out["m." + n] = self.m[n]
            out["v." + n] = self.v[n]
        return out

    def load_state(self, tensors, t):
        """Restore from :meth:`state_tensors` output and the step count ``t``."""
        for n in self.names:
            self.m[n][...] = tensors["m." + n]
            self.v[n][...] = tensors["v." + n]
        self.t = int(t)
