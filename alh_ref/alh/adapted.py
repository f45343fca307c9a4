"""The ALH-adapted model: a frozen base GPT whose latents are transformed per position by T_t.

Positions are 0-based, t = 0..T-1 (as in docs/alh.md and the arrays); slots s = 0..T:

    c = Enc(ctx_ids)                         (B,T,D)    c[:, t] has read ctx_ids[:, 0..t]
    c_ext = [alh.c0, c[:, 0], .., c[:, T-1]] (B,T+1,D)  slot 0 = the learned empty context alh.c0,
                                                        slot s = c[:, s-1]: it has read the first s tokens
    theta = Head(c_ext)                      transform parameters of every slot s = 0..T
    input site:   tok_t = T_{slot t} wte[x_t]           (slot t has read x_0..x_{t-1}, none at t = 0)
    output site:  logits_t = (A^T z_t) . W + z_t . b,   with T = T_{slot t+1} ("current": has read
                  x_0..x_t) or T_{slot t} ("prev": has read x_0..x_{t-1})
    z = body(tok) is the frozen base model; W its output dictionary; loss = mean CE(logits, y).

Also the "side" capacity control (head = "side"): the same encoder, and z_t <- z_t + c_t @ W + b
with W, b zero-initialised, instead of any transform of the latents (out_context "prev": the slot
t context c_ext[:, t] instead, which has not read x_t, like the prev transform).

Base parameters are read, never written, and their gradients are not computed. Derivation and
the normative definitions: docs/alh.md.
"""
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from ..errors import InputError
from ..model import (BodyCache, GPTConfig, HeadCache, body_backward, body_forward, check_ids, check_targets,
                     embed_forward, head_backward, head_forward, param_shapes)
from ..ops import linear_backward, linear_forward, softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .encoders import ENCODERS, encoder_backward, encoder_forward, encoder_init, encoder_param_shapes
from .theta_head import head_init, head_param_shapes, theta_backward, theta_forward, theta_grad_buffers
from .transforms import FAMILIES, transform_backward, transform_forward

SITES = ("input", "output", "both")
OUT_CONTEXTS = ("current", "prev")
HEADS = ("transform", "side")


@dataclass(frozen=True)
class ALHConfig:
    """The hypernetwork.

    family: householder | lowrank | film;  site: input | output | both;
    out_context: current | prev;  encoder: transformer | mean | static;
    D, n_layer (Lh), n_head (NHh): encoder width, blocks and heads;  K: reflectors (even);
    R: low-rank rank;  head: transform (ALH) | side (capacity control).
    """

    family: str = "householder"
    site: str = "both"
    out_context: str = "current"
    encoder: str = "transformer"
    D: int = 32
    n_layer: int = 1
    n_head: int = 2
    K: int = 4
    R: int = 4
    head: str = "transform"

    def __post_init__(self):
        for field, allowed in (("family", FAMILIES), ("site", SITES), ("out_context", OUT_CONTEXTS),
                               ("encoder", ENCODERS), ("head", HEADS)):
            if getattr(self, field) not in allowed:
                raise InputError(f"ALHConfig.{field} = {getattr(self, field)!r}; expected one of {', '.join(allowed)}")
        for k in ("D", "n_layer", "n_head", "K", "R"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise InputError(f"ALHConfig.{k} = {getattr(self, k)!r}; expected a positive integer")
        if self.K % 2:
            raise InputError(f"ALHConfig.K = {self.K}; expected an even number of reflectors (they come in pairs)")
        if self.D % self.n_head:
            raise InputError(f"ALHConfig.D = {self.D} is not divisible by n_head {self.n_head}")

    def to_dict(self):
        return asdict(self)


class ALHCache(NamedTuple):
    """Everything :func:`alh_backward` reads, and what inspection and the golden cases read.

    The sub-caches a configuration does not use are None.
    """

    bcfg: GPTConfig         # the base model's shape
    acfg: ALHConfig         # the hypernetwork's configuration
    enc: tuple              # encoder cache (encoders.encoder_forward)
    theta_head: tuple       # ThetaCache, or None for head = "side"
    inp: tuple              # input-site transform cache (transforms.transform_forward), or None
    body: BodyCache         # the frozen base body
    side: tuple             # side head's linear cache, or None
    out: tuple              # output-site transform cache, or None
    lm_head: HeadCache      # the base model's output head
    loss: list              # softmax_cross_entropy cache, or None without targets
    c_ext: np.ndarray       # (B,T+1,D) the context of every slot 0..T
    theta: dict             # the transform parameters of slots 0..T (theta_head.theta_forward), or None
    tok: np.ndarray         # (B,T,C) the effective input latents
    has_off: bool           # the output site added an offset z . b to the logits


def _enc_args(bcfg, acfg):
    return (bcfg.vocab_size, bcfg.block_size, acfg.D, acfg.n_layer, acfg.n_head)


def alh_param_shapes(bcfg, acfg):
    """Ordered shapes of the hypernetwork's parameters: encoder (alh.enc.*), alh.c0 (D,), head.

    The head is alh.head.* (see theta_head.head_param_shapes) or, for head="side",
    alh.side.w (D,C) and alh.side.b (C,).
    """
    s = dict(encoder_param_shapes(acfg.encoder, *_enc_args(bcfg, acfg)))
    if acfg.encoder != "static" and (acfg.head == "transform" or acfg.out_context == "prev"):
        s["alh.c0"] = (acfg.D,)                                                                 # side reads c_0 only with "prev"
    if acfg.head == "side":
        s.update({"alh.side.w": (acfg.D, bcfg.n_embd), "alh.side.b": (bcfg.n_embd,)})
    else:
        s.update(head_param_shapes(acfg.family, acfg.D, bcfg.n_embd, acfg.K, acfg.R))
    return s


def alh_init(bcfg, acfg, seed=0, dtype=np.float32):
    """Initial hypernetwork parameters (seeded): the adapted model equals the base model exactly.

    Encoder GPT-2-style; alh.c0 ~ N(0, 1); head as in theta_head.head_init (the part that moves T
    off the identity is zero); side head zero.
    """
    rng = np.random.default_rng(seed)
    p = encoder_init(acfg.encoder, *_enc_args(bcfg, acfg), rng, dtype)
    c0 = rng.standard_normal(acfg.D).astype(dtype)                                              # (D,)
    if "alh.c0" in alh_param_shapes(bcfg, acfg):
        p["alh.c0"] = c0
    if acfg.head == "side":
        p["alh.side.w"] = np.zeros((acfg.D, bcfg.n_embd), dtype=dtype)                          # (D,C)
        p["alh.side.b"] = np.zeros(bcfg.n_embd, dtype=dtype)                                    # (C,)
    else:
        p.update(head_init(acfg.family, acfg.D, bcfg.n_embd, acfg.K, acfg.R, rng, dtype))
    return {n: p[n] for n in alh_param_shapes(bcfg, acfg)}                                      # canonical order


def _slots(theta, start, T):
    """theta restricted to slots start..start+T-1 (shared tensors like householder "a" pass through)."""
    return {k: (v if k == "a" else v[:, start:start + T]) for k, v in theta.items()}


def _add_slots(dtheta, dth, start):
    """Backward of :func:`_slots`: add a site's dtheta (slots start..start+T-1) into the (B,T+1,...) buffers."""
    for k, g in dth.items():
        if k == "a":
            dtheta[k] += g                                                                      # (J,C) shared
        else:
            dtheta[k][:, start:start + g.shape[1]] += g                                         # (B,T,...)


def alh_forward(base, hyp, bcfg, acfg, ids, targets=None, ignore=None, ctx_ids=None):
    """Forward pass of the adapted model.

    Parameters
    ----------
    base : dict of the frozen base parameters;  hyp : dict of the hypernetwork parameters
    bcfg : GPTConfig;  acfg : ALHConfig
    ids : ndarray (B,T) int;  targets : ndarray (B,T) int or None;  ignore : (B,T) bool or None
    ctx_ids : ndarray (B,T) int or None   what the encoder reads (default ids; the alh-shuffled
        control passes another sequence's ids)

    Returns
    -------
    logits : ndarray (B,T,V)
    loss : scalar or None
    cache : ALHCache, for :func:`alh_backward`; for inspection and golden outputs it holds c_ext
        (B,T+1,D) (the context of every slot), theta (the transform parameters of slots 0..T) and
        tok (the effective input latents (B,T,C))
    """
    V = bcfg.vocab_size
    check_ids(ids, V, "ids", bcfg.block_size)
    ctx_ids = ids if ctx_ids is None else ctx_ids
    check_ids(ctx_ids, V, "ctx_ids", bcfg.block_size)
    if ctx_ids.shape != ids.shape:
        raise InputError(f"ctx_ids has shape {ctx_ids.shape}; expected the shape of ids {ids.shape}")
    B, T = ids.shape
    c, c_enc = encoder_forward(hyp, acfg.encoder, ctx_ids, _enc_args(bcfg, acfg))              # (B,T) -> (B,T,D)
    c0 = hyp["alh.c0"] if "alh.c0" in hyp else c[0, 0]                                         # static: slot 0 is c too
    c_ext = np.concatenate([np.broadcast_to(c0, (B, 1, acfg.D)), c], axis=1)                    # (B,T+1,D) slots 0..T

    tok, _ = embed_forward(base, ids)                                                           # (B,T) -> (B,T,C)
    theta = c_theta = c_in = c_side = c_out = c_loss = None
    if acfg.head == "transform":
        theta, c_theta = theta_forward(hyp, acfg.family, c_ext, bcfg.n_embd, acfg.K, acfg.R)   # slots 0..T
        if acfg.site in ("input", "both"):
            tok, _, c_in = transform_forward(acfg.family, _slots(theta, 0, T), tok, False)      # (B,T,C): T_{slot t} wte[x_t]
    z, c_body = body_forward(base, bcfg, tok)                                                   # (B,T,C)

    off = None
    if acfg.head == "side":
        if acfg.out_context == "prev":
            c = c_ext[:, :T]                                                                    # (B,T,D) slot t: never x_t
        side, c_side = linear_forward(c, hyp["alh.side.w"], hyp["alh.side.b"])                  # (B,T,D) -> (B,T,C)
        z = z + side                                                                            # (B,T,C)
    elif acfg.site in ("output", "both"):
        s0 = 1 if acfg.out_context == "current" else 0
        z, off, c_out = transform_forward(acfg.family, _slots(theta, s0, T), z, True)           # (B,T,C): A^T z, slot t+s0
    logits, c_head = head_forward(base, bcfg, z)                                                # (B,T,C) -> (B,T,V): z . W
    if off is not None:
        logits += off[..., None]                                                                # (B,T,V) + (B,T,1):  + z . b
    loss = None
    if targets is not None:
        check_targets(targets, ignore, ids.shape, V)
        ig = None if ignore is None else ignore.reshape(-1)
        loss, c_loss = softmax_cross_entropy_forward(logits.reshape(-1, V), targets.reshape(-1), ig)
    cache = ALHCache(bcfg, acfg, c_enc, c_theta, c_in, c_body, c_side, c_out, c_head, c_loss, c_ext, theta, tok,
                     off is not None)
    return logits, loss, cache


def alh_backward(dloss, cache, *, frozen=frozenset()):
    """Backward pass of the adapted model: gradients of the hypernetwork only.

    The base model's parameters are frozen: the base stages' backwards are called with every base
    name frozen, so only activation gradients flow through them (no dW matmuls).

    Parameters
    ----------
    dloss : float   upstream gradient of the loss (1.0 for the gradient of the loss itself)
    cache : ALHCache from alh_forward (called with targets); its loss cache is spent, as in gpt_backward
    frozen : set of hypernetwork parameter names whose gradients are not returned, decided per name
        (freezing alh.head.w keeps alh.head.b); work is skipped where a whole layer is frozen

    Returns
    -------
    grads : dict over the hypernetwork's names (minus ``frozen``), in alh_param_shapes order
    """
    bcfg, acfg = cache.bcfg, cache.acfg
    B, T, C = cache.tok.shape
    base_frozen = frozenset(param_shapes(bcfg))
    dlogits = softmax_cross_entropy_backward(dloss, cache.loss, inplace=True).reshape(B, T, -1)  # (B,T,V)
    _, dz = head_backward(dlogits, cache.lm_head, frozen=base_frozen)                           # (B,T,V) -> (B,T,C); no dW
    grads = {}
    draw, dtheta = (None, None) if cache.theta is None else theta_grad_buffers(cache.theta_head, dz.dtype)  # (B,T+1,P) + views
    dc = np.zeros((B, T, acfg.D), dtype=dz.dtype)                                               # (B,T,D)
    if acfg.head == "side":
        dside = dz                                                                              # z = z + side
        dcs, grads["alh.side.w"], grads["alh.side.b"] = linear_backward(dside, cache.side)     # (B,T,C) -> (B,T,D)
        if acfg.out_context == "current":
            dc += dcs
        else:                                                                                   # read slots 0..T-1
            dc[:, :-1] += dcs[:, 1:]
            dc0 = dcs[:, 0].sum(0)                                                              # (D,) slot 0
    elif acfg.site in ("output", "both"):
        doff = dlogits.sum(-1) if cache.has_off else None                                       # (B,T)  inverts + off
        dth, dz = transform_backward(dz, doff, cache.out)                                       # (B,T,C)
        _add_slots(dtheta, dth, 1 if acfg.out_context == "current" else 0)                      # position t used slot t+s0
    _, dtok = body_backward(dz, cache.body, frozen=base_frozen)                                 # (B,T,C)
    if acfg.head == "transform" and acfg.site in ("input", "both"):
        dth, _ = transform_backward(dtok, None, cache.inp)                                      # dwte not needed: base frozen
        _add_slots(dtheta, dth, 0)                                                              # position t used slot t
    if acfg.head == "transform":
        hg, dc_ext = theta_backward(draw, dtheta, cache.theta_head, frozen=frozen)              # (B,T+1,P) -> (B,T+1,D)
        grads.update(hg)
        dc += dc_ext[:, 1:]                                                                     # slot s = 1..T is c[:, s-1]
        dc0 = dc_ext[:, 0].sum(0)                                                               # (D,) slot 0 is alh.c0
    elif acfg.out_context == "current":
        dc0 = None
    grads.update(encoder_backward(dc, cache.enc, frozen=frozen))
    if dc0 is not None:
        if acfg.encoder != "static":
            grads["alh.c0"] = dc0
        elif "alh.enc.c" in grads:                                                              # absent when frozen
            grads["alh.enc.c"] = grads["alh.enc.c"] + dc0                                       # static: slot 0 is c too
    return {n: grads[n] for n in alh_param_shapes(bcfg, acfg) if n in grads and n not in frozen}


def alh_loss_and_grads(base, hyp, bcfg, acfg, x, y, ctx_ids=None):
    """Loss and hypernetwork gradients of the adapted model on one batch (the base stays frozen).

    The ALH counterpart of :func:`alh_ref.train.gpt_loss_and_grads`: ``alh_forward`` then
    ``alh_backward(1.0, cache)``. Returns ``(float loss, grads by hypernetwork name)``.
    """
    _, loss, cache = alh_forward(base, hyp, bcfg, acfg, x, y, ctx_ids=ctx_ids)
    return float(loss), alh_backward(1.0, cache)
