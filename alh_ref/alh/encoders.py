"""Context encoders: read the context tokens, give one context vector per position.

Positions are 0-based (t = 0..T-1): c_t depends only on x_0..x_t (causal). Every encoder has its own small embedding table; its
parameters are named ``alh.enc.*``. Derivations: docs/alh.md.

    transformer  c = LN_f(blocks(E[x] + P))      a tiny causal GPT body (width D, Lh blocks, NHh heads),
                                                 built from the same stages as the base model
    mean         m_t = (1/(t+1)) sum_{s<=t} E[x_s];  c_t = LN_f(m_t + MLP(m_t))
    static       c_t = c (one learned vector): no context at all (the static-<family> baselines)
"""
from typing import NamedTuple

import numpy as np

from ..model import (GPTConfig, body_backward, body_forward, embed_backward, embed_forward, init_params,
                     param_shapes)
from ..ops import gelu_backward, gelu_forward, layernorm_backward, layernorm_forward, linear_backward, linear_forward

ENCODERS = ("transformer", "mean", "static")
PREFIX = "alh.enc."


class TransformerEncoderCache(NamedTuple):
    """What the transformer encoder's backward needs."""

    c_emb: tuple            # model.embed_forward cache
    c_body: tuple           # model.body_forward cache


class MeanEncoderCache(NamedTuple):
    """What the mean encoder's backward needs."""

    counts: np.ndarray      # (1,T,1) t + 1, the running mean's divisors
    c_emb: tuple            # embedding cache
    c_fc: tuple             # mlp.c_fc linear cache
    c_g: tuple              # GELU cache
    c_pr: tuple             # mlp.c_proj linear cache
    c_ln: tuple             # ln_f cache


class StaticEncoderCache(NamedTuple):
    """The static encoder reads nothing; its backward only sums dc."""


def _ecfg(V, T, D, n_layer, n_head):
    return GPTConfig(vocab_size=V, block_size=T, n_layer=n_layer, n_head=n_head, n_embd=D)


def encoder_param_shapes(kind, V, T, D, n_layer=1, n_head=2):
    """Ordered shapes of an encoder's parameters (names prefixed ``alh.enc.``).

    transformer: the GPT body names (wte (V,D), wpe (T,D), h.{l}.*, ln_f.*) — no output head;
    mean: wte (V,D), mlp.c_fc.{w (D,4D), b}, mlp.c_proj.{w (4D,D), b}, ln_f.{w,b};  static: c (D,).
    """
    if kind == "transformer":
        return {PREFIX + n: s for n, s in param_shapes(_ecfg(V, T, D, n_layer, n_head)).items()}
    if kind == "mean":
        return {PREFIX + "wte": (V, D), PREFIX + "mlp.c_fc.w": (D, 4 * D), PREFIX + "mlp.c_fc.b": (4 * D,),
                PREFIX + "mlp.c_proj.w": (4 * D, D), PREFIX + "mlp.c_proj.b": (D,),
                PREFIX + "ln_f.w": (D,), PREFIX + "ln_f.b": (D,)}
    if kind == "static":
        return {PREFIX + "c": (D,)}
    raise ValueError(f"unknown encoder {kind!r}")


def encoder_init(kind, V, T, D, n_layer, n_head, rng, dtype):
    """GPT-2-style init (N(0, 0.02^2) weights, zero biases, unit LayerNorm); static c ~ N(0, 1)."""
    if kind == "transformer":
        seed = int(rng.integers(2**63))
        p = init_params(_ecfg(V, T, D, n_layer, n_head), seed=seed, dtype=dtype)
        return {PREFIX + n: a for n, a in p.items()}
    shapes = encoder_param_shapes(kind, V, T, D, n_layer, n_head)
    out = {}
    for n, s in shapes.items():
        if n.endswith("ln_f.w"):
            out[n] = np.ones(s, dtype=dtype)                                                    # (D,)
        elif n.endswith(".b"):
            out[n] = np.zeros(s, dtype=dtype)                                                   # bias
        elif n.endswith(".c"):
            out[n] = rng.standard_normal(s).astype(dtype)                                       # (D,)
        else:
            out[n] = (0.02 * rng.standard_normal(s)).astype(dtype)                              # weight
    return out


def _strip(hyp):
    """The encoder's parameters with the ``alh.enc.`` prefix removed (views, no copies)."""
    return {n[len(PREFIX):]: a for n, a in hyp.items() if n.startswith(PREFIX)}


def encoder_forward(hyp, kind, ids, ecfg_args):
    """Context vectors for every position.

    Parameters
    ----------
    hyp : dict with the encoder's named parameters
    kind : "transformer" | "mean" | "static"
    ids : ndarray (B,T) int   the context tokens
    ecfg_args : (V, Tmax, D, n_layer, n_head)

    Returns
    -------
    c : ndarray (B,T,D)   c[:, t] depends on ids[:, 0..t] only
    cache : TransformerEncoderCache | MeanEncoderCache | StaticEncoderCache
    """
    p = _strip(hyp)
    B, T = ids.shape
    if kind == "transformer":
        tok, c_emb = embed_forward(p, ids)                                                      # (B,T) -> (B,T,D)
        c, c_body = body_forward(p, _ecfg(*ecfg_args), tok)                                     # (B,T,D)
        return c, TransformerEncoderCache(c_emb, c_body)
    if kind == "mean":
        e, c_emb = embed_forward(p, ids)                                                        # (B,T) -> (B,T,D)
        counts = np.arange(1, T + 1, dtype=e.dtype)[None, :, None]                              # (1,T,1)
        m = np.cumsum(e, axis=1) / counts                                                       # (B,T,D) causal running mean
        f, c_fc = linear_forward(m, p["mlp.c_fc.w"], p["mlp.c_fc.b"])                           # (B,T,D) -> (B,T,4D)
        g, c_g = gelu_forward(f)                                                                # (B,T,4D)
        o, c_pr = linear_forward(g, p["mlp.c_proj.w"], p["mlp.c_proj.b"])                       # (B,T,4D) -> (B,T,D)
        c, c_ln = layernorm_forward(m + o, p["ln_f.w"], p["ln_f.b"])                            # (B,T,D)
        return c, MeanEncoderCache(counts, c_emb, c_fc, c_g, c_pr, c_ln)
    c = np.broadcast_to(p["c"], (B, T, p["c"].shape[0])).copy()                                 # (D,) -> (B,T,D)
    return c, StaticEncoderCache()


def encoder_backward(dc, cache, *, frozen=frozenset()):
    """Backward of :func:`encoder_forward`.

    Parameters
    ----------
    dc : ndarray (B,T,D)   dL/dc
    cache : from encoder_forward
    frozen : set of names (``alh.enc.*``) whose gradients are not returned

    Returns
    -------
    grads : dict of the encoder's named gradients (prefixed ``alh.enc.``)
    """
    g = {}
    fz = {n[len(PREFIX):] for n in frozen if n.startswith(PREFIX)}
    if isinstance(cache, TransformerEncoderCache):
        g, dtok = body_backward(dc, cache.c_body, frozen=fz)                                    # (B,T,D)
        g.update(embed_backward(dtok, cache.c_emb, frozen=fz))                                  # (V,D)
    elif isinstance(cache, MeanEncoderCache):
        counts, c_emb, c_fc, c_g, c_pr, c_ln = cache
        dres, g["ln_f.w"], g["ln_f.b"] = layernorm_backward(dc, c_ln)                           # (B,T,D)  inverts LN_f(m + o)
        dg, g["mlp.c_proj.w"], g["mlp.c_proj.b"] = linear_backward(dres, c_pr)                  # (B,T,D) -> (B,T,4D)
        df = gelu_backward(dg, c_g)                                                             # (B,T,4D)
        dm, g["mlp.c_fc.w"], g["mlp.c_fc.b"] = linear_backward(df, c_fc)                        # (B,T,4D) -> (B,T,D)
        dm = dm + dres                                                                          # residual m + o
        dsum = dm / counts                                                                      # (B,T,D)  inverts / (t+1)
        de = np.cumsum(dsum[:, ::-1], axis=1)[:, ::-1]                                          # (B,T,D)  inverts cumsum: suffix sums
        g.update(embed_backward(np.ascontiguousarray(de), c_emb))                               # (V,D)
    else:
        g["c"] = dc.reshape(-1, dc.shape[-1]).sum(0)                                            # (B,T,D) -> (D,)
    return {PREFIX + n: a for n, a in g.items() if PREFIX + n not in frozen}
