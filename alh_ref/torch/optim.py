"""AdamW of alh_ref.optim on torch tensors: the same clipping, schedule, update and named state.

    n = sqrt(sum over trainable tensors of sum g^2)          (float64)
    g <- g * min(1, grad_clip / (n + 1e-6))
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    p <- p - lr_t (m / (1 - b1^t) / (sqrt(v) / sqrt(1 - b2^t) + eps) + wd p)   (wd on decayed names)

The update is computed in float64 and rounded once into p, m and v, as the NumPy kernel does, so
a float32 run follows the NumPy one to rounding. The state is named as in alh_ref.optim
(``state_tensors()`` -> ``{"m.<name>", "v.<name>"}`` as NumPy arrays, ``t``, ``cfg``), which is
what ``alh_ref.runs.save_state`` writes into a checkpoint.
"""
import math

import numpy as np
import torch

from ..optim import lr_at


class AdamW:
    """AdamW over ``{name: Parameter}`` (gradients read from ``p.grad``).

    Parameters
    ----------
    params : dict name -> torch.nn.Parameter, in the canonical order
    cfg : alh_ref.optim.AdamWConfig
    decay : callable name -> bool
    """

    def __init__(self, params, cfg, decay):
        self.params = dict(params)
        self.names = list(self.params)
        self.cfg = cfg
        self.decay = {n: bool(decay(n)) for n in self.names}
        self.m = {n: torch.zeros_like(p, memory_format=torch.contiguous_format) for n, p in self.params.items()}
        self.v = {n: torch.zeros_like(p, memory_format=torch.contiguous_format) for n, p in self.params.items()}
        self.t = 0

    def grad_norm(self):
        """||g||_2 over every trainable tensor, accumulated in float64 (a Python float)."""
        total = torch.zeros((), dtype=torch.float64, device=next(iter(self.params.values())).device)
        for p in self.params.values():
            g = _grad(p).double()
            total = total + (g * g).sum()
        return math.sqrt(float(total))

    @torch.no_grad()
    def step(self, params=None, grads=None):
        """Clip, then update every tensor in place. Returns (grad norm before clipping, lr used).

        The gradients are read from ``p.grad``; ``params`` and ``grads`` are not used (the signature
        is alh_ref.optim.AdamW's, so alh_ref.train.train drives either optimiser).
        """
        c = self.cfg
        lr = lr_at(self.t, c)
        self.t += 1
        norm = self.grad_norm()
        gscale = min(1.0, c.grad_clip / (norm + 1e-6)) if c.grad_clip > 0 else 1.0
        inv_bc1 = 1.0 / (1.0 - c.beta1 ** self.t)
        inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - c.beta2 ** self.t)
        for n, p in self.params.items():
            wd = c.weight_decay if self.decay[n] else 0.0
            g = _grad(p).double() * gscale                                            # (shape of p)
            m = c.beta1 * self.m[n].double() + (1.0 - c.beta1) * g
            v = c.beta2 * self.v[n].double() + (1.0 - c.beta2) * g * g
            self.m[n].copy_(m)
            self.v[n].copy_(v)
            p64 = p.double()
            p.copy_(p64 - lr * (m * inv_bc1 / (torch.sqrt(v) * inv_sqrt_bc2 + c.eps) + wd * p64))
        return norm, lr

    def zero_grad(self):
        """Drop every gradient (set to None)."""
        for p in self.params.values():
            p.grad = None

    def state_tensors(self):
        """Named state for checkpoints: {"m.<name>": ndarray, "v.<name>": ndarray} (CPU copies)."""
        out = {}
        for n in self.names:
            out["m." + n] = self.m[n].detach().cpu().numpy().copy()
            out["v." + n] = self.v[n].detach().cpu().numpy().copy()
        return out

    def load_state(self, tensors, t):
        """Restore from :meth:`state_tensors` output (NumPy arrays) and the step count ``t``."""
        for n in self.names:
            for k, buf in (("m.", self.m[n]), ("v.", self.v[n])):
                buf.copy_(torch.from_numpy(np.ascontiguousarray(tensors[k + n])).to(buf.dtype))
        self.t = int(t)


def _grad(p):
    """p.grad, or zeros when the loss did not reach p."""
    return torch.zeros_like(p) if p.grad is None else p.grad
