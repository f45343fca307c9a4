"""The base GPT as torch modules whose parameter names are exactly the NumPy names (docs/model.md).

    h = wte[x] + wpe[0..T-1]
    for l in 0..L-1:   a = h + c_proj(Attn(c_attn(LN_1(h))));   h = a + c_proj(GELU(c_fc(LN_2(a))))
    z = LN_f(h);   logits = z @ wte^T  (tied; or z @ lm_head.w);   loss = mean CE(logits, y)

Weights are (in, out) and a linear layer is ``y = x @ w + b``, as in the NumPy model, so a
parameter dict moves between the two sides without transposes (``load_numpy(GPT(cfg), params)``).
``dict(model.named_parameters())`` has the keys of
``alh_ref.model.param_shapes(cfg)``, in that order. Gradients come from autograd.
"""
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError

LN_EPS = 1e-5
GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x):
    """GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).  x (...) -> (...)."""
    return 0.5 * x * (1.0 + torch.tanh(GELU_C * (x + 0.044715 * x * x * x)))


def causal_attention(qkv, NH):
    """Causal multi-head attention of a packed (B,T,3C) tensor split q | k | v into NH contiguous heads.

    att[t, s] = softmax_s(q_t . k_s / sqrt(hs)) over s <= t;  returns (B,T,C), heads concatenated.
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = qkv.split(C, dim=-1)                                                  # 3 x (B,T,C)
    q, k, v = (a.reshape(B, T, NH, C // NH).transpose(1, 2) for a in (q, k, v))     # (B,NH,T,hs)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)                     # (B,NH,T,hs)
    return y.transpose(1, 2).reshape(B, T, C)                                       # (B,T,C)


class Linear(nn.Module):
    """Affine layer y = x @ w + b with w (in, out), b (out,)."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n_in, n_out))                             # (in,out)
        self.b = nn.Parameter(torch.zeros(n_out))                                   # (out,)

    def forward(self, x):
        """x (...,in) -> (...,out)."""
        return x @ self.w + self.b


class LayerNorm(nn.Module):
    """LN(x) = (x - mean) / sqrt(var + 1e-5) * w + b over the last axis, biased variance."""

    def __init__(self, n):
        super().__init__()
        self.w = nn.Parameter(torch.ones(n))                                        # (C,)
        self.b = nn.Parameter(torch.zeros(n))                                       # (C,)

    def forward(self, x):
        """x (...,C) -> (...,C)."""
        mu = x.mean(-1, keepdim=True)                                               # (...,1)
        xc = x - mu                                                                 # (...,C)
        var = (xc * xc).mean(-1, keepdim=True)                                      # (...,1) biased
        return xc / torch.sqrt(var + LN_EPS) * self.w + self.b                      # (...,C)


class Attention(nn.Module):
    """c_attn (C,3C) -> causal attention -> c_proj (C,C)."""

    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.c_attn = Linear(C, 3 * C)
        self.c_proj = Linear(C, C)

    def forward(self, x):
        """x (B,T,C) -> (B,T,C)."""
        return self.c_proj(causal_attention(self.c_attn(x), self.NH))


class MLP(nn.Module):
    """c_fc (C,4C) -> GELU -> c_proj (4C,C)."""

    def __init__(self, C):
        super().__init__()
        self.c_fc = Linear(C, 4 * C)
        self.c_proj = Linear(4 * C, C)

    def forward(self, x):
        """x (B,T,C) -> (B,T,C)."""
        return self.c_proj(gelu(self.c_fc(x)))


class Block(nn.Module):
    """Pre-LayerNorm block: a = h + Attn(LN_1(h));  h' = a + MLP(LN_2(a))."""

    def __init__(self, C, NH):
        super().__init__()
        self.ln_1 = LayerNorm(C)
        self.attn = Attention(C, NH)
        self.ln_2 = LayerNorm(C)
        self.mlp = MLP(C)

    def forward(self, h):
        """h (B,T,C) -> (B,T,C)."""
        a = h + self.attn(self.ln_1(h))                                             # (B,T,C)
        return a + self.mlp(self.ln_2(a))                                           # (B,T,C)


class Body(nn.Module):
    """Token and position tables, L blocks and the final LayerNorm (the GPT without its head).

    Also the transformer context encoder of ALH, at width D (alh_ref.torch.alh).
    """

    def __init__(self, V, Tmax, C, L, NH):
        super().__init__()
        self.wte = nn.Parameter(torch.zeros(V, C))                                  # (V,C)
        self.wpe = nn.Parameter(torch.zeros(Tmax, C))                               # (Tmax,C)
        self.h = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.ln_f = LayerNorm(C)

    def body(self, tok, acts=None):
        """z = LN_f(blocks(tok + wpe[0..T-1])).

        tok (B,T,C) -> z (B,T,C).  ``acts``, a dict, receives "act.h.{l}" (B,T,C), the residual
        stream after block l, and "act.ln_f" (B,T,C) = z.
        """
        h = tok + self.wpe[: tok.shape[1]]                                          # (B,T,C) + (T,C)
        for l, block in enumerate(self.h):
            h = block(h)                                                            # (B,T,C)
            if acts is not None:
                acts[f"act.h.{l}"] = h
        z = self.ln_f(h)                                                            # (B,T,C)
        if acts is not None:
            acts["act.ln_f"] = z
        return z


class GPT(Body):
    """The base model (GPTConfig ``cfg``); parameters named as ``alh_ref.model.param_shapes(cfg)``."""

    def __init__(self, cfg):
        super().__init__(cfg.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_layer, cfg.n_head)
        self.cfg = cfg
        if not cfg.tied:
            self.lm_head = nn.Module()
            self.lm_head.w = nn.Parameter(torch.zeros(cfg.n_embd, cfg.vocab_size))  # (C,V)

    def dictionary(self):
        """The output dictionary W (V,C): wte (tied) or lm_head.w^T."""
        return self.wte if self.cfg.tied else self.lm_head.w.t()

    def forward(self, x, y=None, tok=None, acts=None):
        """logits (B,T,V) and the mean cross-entropy loss (None without targets).

        x (B,T) int64;  y (B,T) int64 or None;  tok (B,T,C) latents to use instead of wte[x];
        acts : dict or None, filled as in :meth:`Body.body`.
        """
        tok = self.wte[x] if tok is None else tok                                   # (B,T) -> (B,T,C)
        z = self.body(tok, acts)                                                    # (B,T,C)
        logits = z @ self.dictionary().t()                                          # (B,T,C) @ (C,V) -> (B,T,V)
        return logits, (None if y is None else cross_entropy(logits, y))


def cross_entropy(logits, y):
    """mean_{b,t} [logsumexp_v logits[b,t,v] - logits[b,t,y[b,t]]].  logits (B,T,V), y (B,T) -> ()."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def load_numpy(module, arrays, names=None):
    """Copy NumPy arrays into a module's parameters by name (no transposes: the layouts are the same).

    module : nn.Module;  arrays : dict name -> ndarray;  names : the names to copy (default: every
    parameter of the module, all of which must be in ``arrays`` with the parameter's shape).
    Returns the module.
    """
    params = dict(module.named_parameters())
    for n in (params if names is None else names):
        p, a = params[n], arrays[n]
        if tuple(p.shape) != tuple(a.shape):
            raise InputError(f"parameter {n} has shape {tuple(p.shape)}; got an array of shape {a.shape}")
        with torch.no_grad():
            p.copy_(torch.from_numpy(np.ascontiguousarray(a)).to(p.dtype))
    return module
