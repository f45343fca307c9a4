"""The base language model: a GPT-2-style pre-LayerNorm transformer composed from alh_ref.ops.

    h = wte[x] + wpe[0..T-1]
    for l in 0..L-1:   a = h + Attn(LN1(h));   h = a + MLP(LN2(a))
    z = LN_f(h);   logits = z @ wte^T  (tied; or z @ lm_head.w);   loss = mean CE(logits, y)

The model is split at the two places the ALH hypernetwork needs to reach in (docs/alh.md):
the token latents ``tok = wte[x]`` that enter the body, and the final hidden state ``z`` that meets
the (tied) output dictionary. So there are four stages, each with forward and backward:

    tok, c = embed_forward(params, x)          # latents looked up for the input
    z, c   = body_forward(params, cfg, tok)    # + positions, L blocks, final LayerNorm
    logits, c = head_forward(params, cfg, z)   # z @ wte^T
    loss, c = softmax_cross_entropy_forward(logits, y)

and :func:`gpt_forward` / :func:`gpt_backward` compose them. Every backward is
``f_backward(dout, cache, *, frozen)`` and returns ``grads`` (by name) then the gradient of the
latents it read, in the order of the forward's arguments (docs/glossary.md). Parameters are a plain ``dict`` from
GPT-2-style names to arrays, described in alh_ref/params.py (GPTConfig, param_shapes, init_params,
decayed; re-exported here). Derivation: docs/model.md.
"""
from typing import NamedTuple

import numpy as np

from .errors import InputError
from .ops import (attention_backward, attention_forward, embedding_backward, embedding_forward,
                  gelu_backward, gelu_forward, layernorm_backward, layernorm_forward, linear_backward,
                  linear_forward, softmax_cross_entropy_backward, softmax_cross_entropy_forward)
from .params import CONFIGS, GPTConfig, count_params, decayed, init_params, param_shapes

__all__ = ["CONFIGS", "GPTConfig", "block_backward", "block_forward", "body_backward", "body_forward", "check_ids",
           "check_targets", "count_params", "decayed", "embed_backward", "embed_forward", "gpt_backward", "gpt_forward",
           "head_backward", "head_forward", "init_params", "param_shapes"]


# ----------------------------------------------------------------------------------------------
# Input validation at the API boundary

def check_targets(targets, ignore, shape, V):
    """Raise InputError unless targets (and the optional ignore mask) match the ids' shape (B,T)."""
    check_ids(targets, V, "targets")
    if targets.shape != shape:
        raise InputError(f"targets has shape {targets.shape}; expected the shape of ids {shape}")
    if ignore is not None:
        if not isinstance(ignore, np.ndarray) or ignore.dtype != np.bool_ or ignore.shape != shape:
            got = f"{getattr(ignore, 'dtype', type(ignore).__name__)} {getattr(ignore, 'shape', '')}"
            raise InputError(f"ignore mask is {got}; expected a bool array of the ids' shape {shape}")


def check_ids(ids, V, name="ids", max_T=None):
    """Raise InputError unless ``ids`` is a 2-D integer array with values in [0, V)."""
    if not isinstance(ids, np.ndarray):
        raise InputError(f"{name} must be a numpy array of shape (B,T); got {type(ids).__name__}")
    if ids.ndim != 2:
        raise InputError(f"{name} has shape {ids.shape}; expected a 2-D array (B,T)")
    if not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"{name} has dtype {ids.dtype}; expected an integer dtype")
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        bad = ids[(ids < 0) | (ids >= V)].flat[0]
        raise InputError(f"{name} contains token id {int(bad)} outside the vocabulary; expected ids in [0, {V})")
    if max_T is not None and ids.shape[1] > max_T:
        raise InputError(f"{name} has T={ids.shape[1]} positions; the model's block_size is {max_T}")


# ----------------------------------------------------------------------------------------------
# Stage 1: token latents

def embed_forward(params, ids):
    """Look up the token latents.

    Parameters
    ----------
    params : dict with "wte" (V,C)
    ids : ndarray (B,T) int

    Returns
    -------
    tok : ndarray (B,T,C)    tok[b,t] = wte[ids[b,t]]
    cache : embedding cache (ids, V)
    """
    return embedding_forward(ids, params["wte"])  # (B,T) -> (B,T,C)


def embed_backward(dtok, cache, *, frozen=frozenset()):
    """Backward of :func:`embed_forward`.

    Parameters
    ----------
    dtok : ndarray (B,T,C)   dL/dtok
    cache : from embed_forward
    frozen : set of names; a frozen ``wte`` skips the scatter-add

    Returns
    -------
    grads : dict  {"wte": (V,C)} (empty when frozen)   dwte[v] = sum of dtok over the positions with ids = v
    """
    if "wte" in frozen:
        return {}
    return {"wte": embedding_backward(dtok, cache)}                                             # (B,T,C) -> (V,C)


# ----------------------------------------------------------------------------------------------
# Stage 2: the body (positions, blocks, final LayerNorm)

class BlockCache(NamedTuple):
    """The sub-layer caches of one block, in forward order (what :func:`block_backward` reads)."""

    ln_1: tuple             # layernorm (h, w, mean, rstd)
    c_attn: tuple           # linear (x1, w)
    attn: tuple             # attention (qkv, att, NH)
    attn_proj: tuple        # linear (y, w)
    ln_2: tuple             # layernorm (a, w, mean, rstd)
    c_fc: tuple             # linear (x2, w)
    gelu: tuple             # gelu (f,)
    mlp_proj: tuple         # linear (g, w)
    l: int                  # the block's index (its parameters are named h.{l}.*)


class BodyCache(NamedTuple):
    """What :func:`body_backward` reads."""

    blocks: list            # one BlockCache per block, in forward order
    ln_f: tuple             # layernorm cache of the final LayerNorm
    T: int                  # positions used (wpe rows 0..T-1)
    block_size: int         # rows of wpe (its gradient's shape)


class HeadCache(NamedTuple):
    """What :func:`head_backward` reads."""

    z: np.ndarray           # (B,T,C) the final hidden state
    name: str               # "wte" (tied) or "lm_head.w"
    w: np.ndarray           # the dictionary: wte (V,C) or lm_head.w (C,V)


class GPTCache(NamedTuple):
    """The stage caches of :func:`gpt_forward`, in forward order (what :func:`gpt_backward` reads)."""

    emb: tuple              # embedding cache, or None when the latents were passed in
    body: BodyCache
    head: HeadCache
    loss: list              # softmax_cross_entropy cache, or None without targets


def block_forward(params, l, h, NH):
    """One pre-LayerNorm transformer block.

    Parameters
    ----------
    params : dict of named arrays;  l : int block index;  h : ndarray (B,T,C) residual stream
    NH : int heads

    Returns
    -------
    h_out : ndarray (B,T,C)   a = h + c_proj(Attn(c_attn(LN1(h))));  h_out = a + c_proj(GELU(c_fc(LN2(a))))
    cache : BlockCache
    """
    p = f"h.{l}."
    x1, c_ln1 = layernorm_forward(h, params[p + "ln_1.w"], params[p + "ln_1.b"])                # (B,T,C)
    qkv, c_qkv = linear_forward(x1, params[p + "attn.c_attn.w"], params[p + "attn.c_attn.b"])   # (B,T,C) -> (B,T,3C)
    y, c_att = attention_forward(qkv, NH)                                                       # (B,T,3C) -> (B,T,C)
    ao, c_ao = linear_forward(y, params[p + "attn.c_proj.w"], params[p + "attn.c_proj.b"])      # (B,T,C) -> (B,T,C)
    a = h + ao                                                                                  # (B,T,C)
    x2, c_ln2 = layernorm_forward(a, params[p + "ln_2.w"], params[p + "ln_2.b"])                # (B,T,C)
    f, c_fc = linear_forward(x2, params[p + "mlp.c_fc.w"], params[p + "mlp.c_fc.b"])            # (B,T,C) -> (B,T,4C)
    g, c_g = gelu_forward(f)                                                                    # (B,T,4C)
    mo, c_mo = linear_forward(g, params[p + "mlp.c_proj.w"], params[p + "mlp.c_proj.b"])        # (B,T,4C) -> (B,T,C)
    h_out = a + mo                                                                              # (B,T,C)
    return h_out, BlockCache(c_ln1, c_qkv, c_att, c_ao, c_ln2, c_fc, c_g, c_mo, l)


def block_backward(dh_out, cache, *, frozen=frozenset()):
    """Backward of :func:`block_forward`.

    Parameters
    ----------
    dh_out : ndarray (B,T,C)   dL/dh_out
    cache : BlockCache from block_forward
    frozen : set of names whose gradients are not computed (the matmul dW is skipped, not discarded)

    Returns
    -------
    grads : dict name -> gradient (same shape as the parameter) for the block's names not in ``frozen``
    dh : ndarray (B,T,C)   dL/dh (through both residual branches)
    """
    c_ln1, c_qkv, c_att, c_ao, c_ln2, c_fc, c_g, c_mo, l = cache
    p = f"h.{l}."
    grads = {}

    def need(name):
        """Compute (w, b) gradients of a sub-layer unless both are frozen (db costs nothing extra)."""
        return p + name + ".w" not in frozen or p + name + ".b" not in frozen

    def put(name, dw, db):
        for n, g in ((p + name + ".w", dw), (p + name + ".b", db)):
            if g is not None and n not in frozen:
                grads[n] = g

    # h_out = a + mo
    dmo = dh_out                                                                                # (B,T,C)
    dg, dw, db = linear_backward(dmo, c_mo, need_dw=need("mlp.c_proj"))                         # (B,T,C) -> (B,T,4C)
    put("mlp.c_proj", dw, db)
    df = gelu_backward(dg, c_g)                                                                 # (B,T,4C)
    dx2, dw, db = linear_backward(df, c_fc, need_dw=need("mlp.c_fc"))                           # (B,T,4C) -> (B,T,C)
    put("mlp.c_fc", dw, db)
    da, dw, db = layernorm_backward(dx2, c_ln2, need_dw=need("ln_2"))                           # (B,T,C)
    put("ln_2", dw, db)
    da += dh_out                                                                                # residual: h_out = a + mo
    # a = h + ao
    dy, dw, db = linear_backward(da, c_ao, need_dw=need("attn.c_proj"))                         # (B,T,C) -> (B,T,C)
    put("attn.c_proj", dw, db)
    dqkv = attention_backward(dy, c_att)                                                        # (B,T,C) -> (B,T,3C)
    dx1, dw, db = linear_backward(dqkv, c_qkv, need_dw=need("attn.c_attn"))                     # (B,T,3C) -> (B,T,C)
    put("attn.c_attn", dw, db)
    dh, dw, db = layernorm_backward(dx1, c_ln1, need_dw=need("ln_1"))                           # (B,T,C)
    put("ln_1", dw, db)
    dh += da                                                                                    # residual: a = h + ao
    return grads, dh


def body_forward(params, cfg, tok):
    """Positions, L blocks and the final LayerNorm, from token latents to the final hidden state.

    Parameters
    ----------
    params : dict;  cfg : GPTConfig
    tok : ndarray (B,T,C)   token latents (wte[x], or ALH's transformed latents)

    Returns
    -------
    z : ndarray (B,T,C)     z = LN_f(blocks(tok + wpe[0..T-1]))
    cache : BodyCache
    """
    T = tok.shape[1]
    h = tok + params["wpe"][:T]                                                                 # (B,T,C) + (T,C)
    caches = []
    for l in range(cfg.n_layer):
        h, c = block_forward(params, l, h, cfg.n_head)                                          # (B,T,C)
        caches.append(c)
    z, c_lnf = layernorm_forward(h, params["ln_f.w"], params["ln_f.b"])                         # (B,T,C)
    return z, BodyCache(caches, c_lnf, T, cfg.block_size)


def body_backward(dz, cache, *, frozen=frozenset()):
    """Backward of :func:`body_forward`.

    Parameters
    ----------
    dz : ndarray (B,T,C)   dL/dz
    cache : BodyCache from body_forward
    frozen : set of parameter names to skip

    Returns
    -------
    grads : dict   the gradients of ln_f, every block parameter and wpe (Tmax,C), minus ``frozen``
    dtok : ndarray (B,T,C)   dL/dtok, the gradient with respect to the input latents
    """
    caches, c_lnf, T, block_size = cache
    grads = {}
    dh, dw, db = layernorm_backward(dz, c_lnf, need_dw=not {"ln_f.w", "ln_f.b"} <= frozen)      # (B,T,C)
    for n, g in (("ln_f.w", dw), ("ln_f.b", db)):
        if g is not None and n not in frozen:
            grads[n] = g
    for c in reversed(caches):
        g, dh = block_backward(dh, c, frozen=frozen)                                            # (B,T,C)
        grads.update(g)
    if "wpe" not in frozen:
        dwpe = np.zeros((block_size, dh.shape[-1]), dtype=dh.dtype)                             # (Tmax,C)
        dwpe[:T] = dh.sum(axis=0)                                                               # (B,T,C) -> (T,C); inverts + wpe[:T]
        grads["wpe"] = dwpe
    return grads, dh                                                                            # h = tok + wpe: dtok = dh


# ----------------------------------------------------------------------------------------------
# Stage 3: the output head

def head_forward(params, cfg, z):
    """Logits against the output dictionary.

    Parameters
    ----------
    z : ndarray (B,T,C)

    Returns
    -------
    logits : ndarray (B,T,V)   logits = z @ wte^T (tied) or z @ lm_head.w
    cache : HeadCache
    """
    B, T, C = z.shape
    z2 = z.reshape(B * T, C)                                                                    # (B,T,C) -> (N,C): one 2-D BLAS call
    if cfg.tied:
        logits = z2 @ params["wte"].T                                                           # (N,C) @ (C,V) -> (N,V)
        return logits.reshape(B, T, -1), HeadCache(z, "wte", params["wte"])                     # (N,V) -> (B,T,V)
    logits = z2 @ params["lm_head.w"]                                                           # (N,C) @ (C,V) -> (N,V)
    return logits.reshape(B, T, -1), HeadCache(z, "lm_head.w", params["lm_head.w"])             # (N,V) -> (B,T,V)


def head_backward(dlogits, cache, *, frozen=frozenset()):
    """Backward of :func:`head_forward`.

    Parameters
    ----------
    dlogits : ndarray (B,T,V)   dL/dlogits
    cache : HeadCache from head_forward
    frozen : set of names; a frozen dictionary skips its dW matmul

    Returns
    -------
    grads : dict  {name: dW} (empty when frozen): dwte (V,C) = dlogits^T z (tied) or dlm_head.w (C,V) = z^T dlogits
    dz : ndarray (B,T,C)   dz = dlogits @ wte (tied) or dlogits @ lm_head.w^T
    """
    z, name, W = cache
    grads = {}
    V = dlogits.shape[-1]
    d2 = dlogits.reshape(-1, V)                                                                 # (N,V)
    if name == "wte":
        dz = d2 @ W                                                                             # (N,V) @ (V,C) -> (N,C)
        if name not in frozen:
            dW = d2.T @ z.reshape(-1, z.shape[-1])                                              # (V,N) @ (N,C) -> (V,C)
    else:
        dz = d2 @ W.T                                                                           # (N,V) @ (V,C) -> (N,C)
        if name not in frozen:
            dW = z.reshape(-1, z.shape[-1]).T @ d2                                              # (C,N) @ (N,V) -> (C,V)
    if name not in frozen:
        grads[name] = dW
    return grads, dz.reshape(z.shape)


# ----------------------------------------------------------------------------------------------
# The whole model

def gpt_forward(params, cfg, ids, targets=None, ignore=None, tok=None):
    """Full forward pass.

    Parameters
    ----------
    params : dict of named arrays (float32 or float64)
    cfg : GPTConfig
    ids : ndarray (B,T) int in [0,V)
    targets : ndarray (B,T) int or None (then no loss)
    ignore : ndarray (B,T) bool or None   positions left out of the mean loss
    tok : ndarray (B,T,C) or None         input latents to use instead of wte[ids]

    Returns
    -------
    logits : ndarray (B,T,V)
    loss : scalar or None                  mean over counted positions of -log softmax(logits)[y]
    cache : GPTCache
    """
    V = cfg.vocab_size
    check_ids(ids, V, "ids", cfg.block_size)
    if targets is not None:
        check_targets(targets, ignore, ids.shape, V)
    c_emb = None
    if tok is None:
        tok, c_emb = embed_forward(params, ids)                                                 # (B,T) -> (B,T,C)
    z, c_body = body_forward(params, cfg, tok)                                                  # (B,T,C)
    logits, c_head = head_forward(params, cfg, z)                                               # (B,T,V)
    loss = c_loss = None
    if targets is not None:
        ig = None if ignore is None else ignore.reshape(-1)
        loss, c_loss = softmax_cross_entropy_forward(logits.reshape(-1, V), targets.reshape(-1), ig)
    return logits, loss, GPTCache(c_emb, c_body, c_head, c_loss)


def gpt_backward(dloss, cache, *, frozen=frozenset()):
    """Full backward pass from the loss.

    Parameters
    ----------
    dloss : float    upstream gradient of the loss (1.0 for the gradient of the loss itself)
    cache : GPTCache from gpt_forward (called with targets)
    frozen : set of parameter names whose gradients are skipped (not computed)

    Returns
    -------
    grads : dict name -> ndarray, for every parameter not in ``frozen``
    dtok : ndarray (B,T,C)   dL/d(input latents) — what an adapter of the latents trains on

    The loss's cache is spent (dlogits are written over the cached probabilities): one backward per
    forward; a second call raises RunError.
    """
    c_emb, c_body, c_head, c_loss = cache
    B, T, _ = c_head.z.shape
    dlogits = softmax_cross_entropy_backward(dloss, c_loss, inplace=True)                       # (N,V)
    grads, dz = head_backward(dlogits.reshape(B, T, -1), c_head, frozen=frozen)                 # (B,T,V) -> (B,T,C)
    body_grads, dtok = body_backward(dz, c_body, frozen=frozen)                                 # (B,T,C)
    grads.update(body_grads)
    dwte = None if c_emb is None else embed_backward(dtok, c_emb, frozen=frozen).get("wte")    # (B,T,C) -> (V,C), or None
    if dwte is not None:
        if "wte" in grads:
            grads["wte"] += dwte                                                                # tied: add to the head's dW (ours, fresh)
        else:
            grads["wte"] = dwte
    return grads, dtok
