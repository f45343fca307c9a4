"""AdamW with decoupled weight decay, global grad-norm clipping, warmup + cosine schedule.

    g <- g * min(1, clip / ||g||_2)                      (global norm over all trainable tensors)
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) - lr * wd * p   (wd on decayed names only)

The optimizer walks the same ordered name list as everything else; its state is the named
tensors ``m.<name>``, ``v.<name>`` and the integer step ``t`` (see :meth:`AdamW.state_tensors`).
The two per-tensor computations, the update and the gradient norm, each have a Numba path
(``*_fast``) and a NumPy twin (``*_ref``); ``adamw_update`` and ``global_grad_norm`` run the one
``alh_ref.ops.current()`` names. Derivation: docs/optim.md.
"""
import math
from dataclasses import asdict, dataclass

import numpy as np

from .ops._jit import kernel
from .ops.impl import dispatch


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


def global_grad_norm_fast(grads, names):
    """||g||_2 = sqrt(sum over names of sum g^2) over all named gradients (Numba kernel, float64 sums)."""
    return math.sqrt(sum(_sumsq_kernel(np.ascontiguousarray(grads[n]).reshape(-1)) for n in names))


def global_grad_norm_ref(grads, names):
    """The global gradient norm, NumPy twin of :func:`global_grad_norm_fast` (float64 copies and np.dot).

    Parameters
    ----------
    grads : dict name -> ndarray;  names : the names to include

    Returns
    -------
    float   ||g||_2 = sqrt(sum over names of sum g^2), accumulated in float64
    """
    return math.sqrt(sum(float(np.dot(grads[n].ravel().astype(np.float64), grads[n].ravel().astype(np.float64)))
                         for n in names))


@kernel
def _adamw_kernel(p, g, m, v, lr, b1, b2, eps, wd, inv_bc1, inv_sqrt_bc2, gscale):
    """One AdamW update of one tensor in place, rounded once into p, m, v.

    p, g, m, v: (n,) flat views of one tensor; scalars float64; inv_bc1 = 1 / (1 - b1^t),
    inv_sqrt_bc2 = 1 / sqrt(1 - b2^t) (reciprocals from the caller: a ``1 / bc1`` in here would be
    folded by LLVM, under ``reassoc``, into a float64 division per element).
    p <- p - lr (m / bc1 / (sqrt(v / bc2) + eps) + wd p), written as m inv_bc1 / (sqrt(v) inv_sqrt_bc2 + eps)
    so the loop has one sqrt and one division per element (the two slow vector instructions). The
    moments and the update are float64; the ratio m-hat / (sqrt(v-hat) + eps) is formed in p's dtype
    ``f`` (float32 for a float32 model: its sqrt and division run at twice the SIMD width).
    """
    f = p.dtype.type
    isb2 = f(inv_sqrt_bc2)
    eps_f = f(eps)
    for i in range(p.shape[0]):
        gi = g[i] * gscale
        mi = b1 * m[i] + (1.0 - b1) * gi
        vi = b2 * v[i] + (1.0 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        ratio = f(mi * inv_bc1) / (np.sqrt(f(vi)) * isb2 + eps_f)
        pi = np.float64(p[i])
        p[i] = pi - lr * (ratio + wd * pi)


def adamw_update_ref(p, g, m, v, lr, b1, b2, eps, wd, t, gscale=1.0):
    """One AdamW update of one tensor in place, NumPy reference; computed in float64, rounded once into p, m, v.

    Parameters
    ----------
    p, m, v : ndarray (...), float32 or float64   parameter and moments, updated in place
    g : ndarray (...)                              its gradient (before clipping)
    lr, b1, b2, eps, wd : float                    step size, moment decays, epsilon, weight decay
    t : int                                        1-based step (for the bias corrections)
    gscale : float                                 clipping factor applied to g

    Equations: g' = gscale g;  m <- b1 m + (1-b1) g';  v <- b2 v + (1-b2) g'^2;
    p <- p - lr (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + wd p).
    """
    g64 = g.astype(np.float64) * gscale                              # (...)
    m64 = b1 * m.astype(np.float64) + (1 - b1) * g64                 # (...)
    v64 = b2 * v.astype(np.float64) + (1 - b2) * g64 * g64           # (...)
    mhat = m64 / (1 - b1 ** t)                                       # (...)
    vhat = v64 / (1 - b2 ** t)                                       # (...)
    p64 = p.astype(np.float64)                                       # (...)
    p[...] = p64 - lr * (mhat / (np.sqrt(vhat) + eps) + wd * p64)
    m[...] = m64
    v[...] = v64


def adamw_update_fast(p, g, m, v, lr, b1, b2, eps, wd, t, gscale=1.0):
    """One AdamW update of one tensor in place (Numba kernel). Same contract as :func:`adamw_update_ref`.

    p, m, v must be C-contiguous (they are updated through flat views).
    """
    _adamw_kernel(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1),
                  lr, b1, b2, eps, wd, 1.0 / (1.0 - b1 ** t), 1.0 / math.sqrt(1.0 - b2 ** t), gscale)


adamw_update = dispatch(adamw_update_fast, adamw_update_ref)
global_grad_norm = dispatch(global_grad_norm_fast, global_grad_norm_ref)


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
        for n in self.names:
            wd = c.weight_decay if self.decay[n] else 0.0
            adamw_update(params[n], grads[n], self.m[n], self.v[n], lr, c.beta1, c.beta2, c.eps, wd, self.t, gscale)
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
