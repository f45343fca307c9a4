"""ALH and its baselines behind one small interface, so they share the training loop, data and budget.

    none            the frozen base model (nothing trained)
    embed-ft        optimise wte directly (what the proposal argues against)
    embed-ft-l2     embed-ft with the penalty (l2 / 2) ||wte - wte_0||_F^2 added to the loss
    lora-embed      wte + A B, A (V,R) zero-initialised, B (R,C) random
    full-ft         every base parameter
    alh-<family>    the hypernetwork (alh_ref.alh.adapted), family householder | lowrank | film
    static-<family> the same family with one learned, context-free transform (householder and
                    lowrank applied as one (C,C) matrix: the same function, no per-position work)
    side            the same context encoder, a zero-initialised linear head added to z_t (no transform)
    alh-shuffled    ALH whose transforms come from another sequence's context (a derangement of the
                    batch; from another domain where domain labels are given and possible)

``make_method`` returns a :class:`Method`: its ``params`` (the trainable tensors, by name), a
``loss_and_grads(x, y, dom=None)`` for the training loop, a ``forward(x, y=None, ignore=None, dom=None)``
for evaluation and ``dictionaries(x=None, n_positions, seed)``, the effective input dictionaries the
geometry metrics measure. Base parameters that a method does not train are never written.
"""
import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..errors import InputError
from ..model import decayed, gpt_backward, gpt_forward, param_shapes
from .adapted import ALHConfig, alh_forward, alh_init, alh_loss_and_grads
from .theta_head import head_param_shapes, theta_backward, theta_forward, theta_grad_buffers
from .transforms import FAMILIES, transform_backward, transform_forward

BASELINES = ("none", "embed-ft", "embed-ft-l2", "lora-embed", "full-ft", "side", "alh-shuffled")
METHODS = BASELINES + tuple(f"alh-{f}" for f in FAMILIES) + tuple(f"static-{f}" for f in FAMILIES)


@dataclass
class Method:
    """A trainable adaptation of a frozen base model.

    name : str;  params : dict name -> ndarray (trainable, updated in place by the optimizer)
    loss_and_grads : (x (B,T), y (B,T), dom (B,) or None) -> (loss float, grads dict over params)
    forward : (x, y=None, ignore=None, dom=None) -> (logits (B,T,V), loss or None, cache)
    decay : name -> bool (AdamW weight decay)
    base : the base parameters this method reads (a private copy for the *-ft methods)
    dictionaries : (x (B,T) or None, n_positions, seed) -> list of (V,C) effective input dictionaries
        (one for a context-free method; one per sampled position of x for a context-dependent one)
    n_effective : free parameters of the change applied at one position (see :func:`make_method`)
    info : dict (config of the hypernetwork, etc.)
    """

    name: str
    params: dict
    loss_and_grads: Callable
    forward: Callable
    decay: Callable
    base: dict
    dictionaries: Callable
    n_effective: int
    info: dict = field(default_factory=dict)

    @property
    def n_trainable(self):
        """Number of trainable scalars."""
        return int(sum(a.size for a in self.params.values()))


def _fixed(E_fn):
    """A context-free ``dictionaries``: always the one dictionary ``E_fn()`` (V,C)."""
    return lambda x=None, n_positions=16, seed=0: [E_fn()]


def transformed_dictionary(family, theta, slot, b, E):
    """The dictionary seen at one position: every row of E through that position's transform.

    Parameters
    ----------
    family : "householder" | "lowrank" | "film"
    theta : dict of per-slot transform parameters from the ALH forward cache (slots 0..T on axis 1)
    slot : int   the slot (input site: slot t is the transform applied to x_t)
    b : int      batch item
    E : ndarray (V,C)

    Returns
    -------
    ndarray (V,C)   row v = T_{b,slot} e_v = A e_v + b_t
    """
    V = E.shape[0]
    th = {k: (v if k == "a" else np.broadcast_to(v[b:b + 1, slot:slot + 1], (1, V) + v.shape[2:]))
          for k, v in theta.items()}                                        # (1,V,...) the same theta for every row; "a" shared
    y, _, _ = transform_forward(family, th, E[None], False)                 # (1,V,C): the V rows as V "positions"
    return y[0]                                                             # (V,C)


def derangement(B, rng, dom=None):
    """A permutation with no fixed points: item b reads the context of item perm[b].

    Items are put in a random order (grouped by domain when labels ``dom`` (B,) are given) and each
    takes the item ``shift`` places further round the cycle. Without labels shift is random in
    [1, B); with labels it is the size of the largest domain, which sends every item to another
    domain whenever no domain holds more than half the batch (and as many as possible otherwise).

    Returns perm (B,) int.
    """
    if B < 2:
        raise InputError("alh-shuffled needs a batch of at least 2 sequences to take contexts from")
    order = rng.permutation(B)                                                      # (B,)
    shift = int(rng.integers(1, B))
    if dom is not None:
        dom = np.asarray(dom)
        order = order[np.argsort(dom[order], kind="stable")]                        # (B,) grouped by domain
        largest = int(np.unique(dom, return_counts=True)[1].max())
        if largest < B:
            shift = largest
    perm = np.empty(B, dtype=np.int64)                                              # (B,)
    perm[order] = order[(np.arange(B) + shift) % B]
    return perm


def shuffle_rng(seed, x):
    """The random stream alh-shuffled uses for batch ``x`` (B,T): a function of the seed and the
    batch's contents only, so the shuffle needs no state of its own (resuming, evaluating and
    replaying a batch all draw the same derangement)."""
    digest = hashlib.sha256(np.ascontiguousarray(x, dtype=np.int64).tobytes()).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def _alh_method(name, base, bcfg, acfg, seed, shuffled=False):
    hyp = alh_init(bcfg, acfg, seed=seed, dtype=base["wte"].dtype)

    def ctx(x, dom):
        return x[derangement(x.shape[0], shuffle_rng(seed, x), dom)] if shuffled else None

    def forward(x, y=None, ignore=None, dom=None):
        return alh_forward(base, hyp, bcfg, acfg, x, y, ignore, ctx_ids=ctx(x, dom))

    def loss_and_grads(x, y, dom=None):
        return alh_loss_and_grads(base, hyp, bcfg, acfg, x, y, ctx_ids=ctx(x, dom))

    def dictionaries(x=None, n_positions=16, seed=0):
        """T_{slot} wte at ``n_positions`` sampled (b, t) of x (the input site's slot t; output-only: t+1 or t)."""
        if x is None:
            raise InputError(f"method {name!r} needs x: its dictionary depends on the context")
        theta = forward(x)[2].theta
        B, T = x.shape
        n = min(int(n_positions), B * T)
        if n < 1:
            raise InputError(f"n_positions={n_positions}; expected at least 1")
        shift = 1 if acfg.site == "output" and acfg.out_context == "current" else 0
        flat = np.random.default_rng(seed).choice(B * T, size=n, replace=False)             # (n,)
        return [transformed_dictionary(acfg.family, theta, f % T + shift, f // T, base["wte"]) for f in flat.tolist()]

    if acfg.head == "side":
        dicts, n_eff = _fixed(lambda: base["wte"]), bcfg.n_embd                           # one added vector per position
    else:
        dicts, n_eff = dictionaries, _n_effective(acfg, bcfg.n_embd)
    return Method(name, hyp, loss_and_grads, forward, decayed, base, dicts, n_eff, {"alh": acfg.to_dict()})


def _n_effective(acfg, C):
    """dim theta_t of one position's transform (+ householder's shared a): K C, 2 R C or 2 C."""
    return int(sum(int(np.prod(s)) for k, s in head_param_shapes(acfg.family, 1, C, acfg.K, acfg.R).items()
                   if k != "alh.head.w"))


def _static_linear_method(name, base, bcfg, acfg, seed):
    """static-householder / static-lowrank as one (C,C) matrix: the same parameters and function as
    the ALH path with the static encoder (theta is the same at every slot), without per-position work.

        tok' = wte[x] @ Y_in,  wte' = wte @ Y_out^T (tied) or lm_head' = Y_out @ lm_head.w (untied)
    with Y_in (C,C) the rows T e_i and Y_out the rows T^T e_i. Derivation and backward: docs/alh.md,
    section 11 ("static-householder and static-lowrank as one (C,C) matrix").
    """
    hyp = alh_init(bcfg, acfg, seed=seed, dtype=base["wte"].dtype)
    C, fam = bcfg.n_embd, acfg.family
    eye = np.eye(C, dtype=base["wte"].dtype)[None]                                          # (1,C,C): C basis vectors
    head = "wte" if bcfg.tied else "lm_head.w"                                              # the output dictionary
    every = frozenset(param_shapes(bcfg))

    def mats():
        theta, hcache = theta_forward(hyp, fam, hyp["alh.enc.c"][None, None], C, acfg.K, acfg.R)  # (1,1,...) one slot
        th = {k: (v if k == "a" else np.broadcast_to(v, (1, C) + v.shape[2:])) for k, v in theta.items()}
        Y = {}
        for site, tr in (("in", False), ("out", True)):
            if (site == "in" and acfg.site in ("input", "both")) or (site == "out" and acfg.site in ("output", "both")):
                y, _, cache = transform_forward(fam, th, eye, tr)                            # (1,C,C)
                Y[site] = (y[0], cache)                                                     # (C,C)
        return Y, hcache

    def run(x, y=None, ignore=None):
        Y, hcache = mats()
        tok = base["wte"][x]                                                                # (B,T,C)
        tok2 = tok @ Y["in"][0] if "in" in Y else tok                                       # (B,T,C) @ (C,C)
        if "out" not in Y:
            p = base
        elif bcfg.tied:
            p = dict(base, wte=base["wte"] @ Y["out"][0].T)                                 # (V,C) @ (C,C)
        else:
            p = dict(base, **{"lm_head.w": Y["out"][0] @ base["lm_head.w"]})                # (C,C) @ (C,V)
        logits, loss, cache = gpt_forward(p, bcfg, x, y, ignore, tok=tok2)
        return logits, loss, (cache, p, Y, hcache, tok)

    def forward(x, y=None, ignore=None, dom=None):
        return run(x, y, ignore)

    def loss_and_grads(x, y, dom=None):
        _, loss, (cache, p, Y, hcache, tok) = run(x, y)
        g, dtok = gpt_backward(1.0, cache, frozen=every - {head} if "out" in Y else every)
        draw, dtheta = theta_grad_buffers(hcache, tok.dtype)                                # (1,1,P) + views
        dY = {}
        if "in" in Y:
            dY["in"] = tok.reshape(-1, C).T @ dtok.reshape(-1, C)                           # (C,N) @ (N,C)
        if "out" in Y and bcfg.tied:
            dY["out"] = g["wte"].T @ base["wte"]                                            # (C,V) @ (V,C)
        elif "out" in Y:
            dY["out"] = g["lm_head.w"] @ base["lm_head.w"].T                                # (C,V) @ (V,C)
        for site, d in dY.items():
            dth, _ = transform_backward(d[None], None, Y[site][1])                          # on the C basis vectors
            for k, v in dth.items():
                if k == "a":
                    dtheta[k] += v
                else:
                    dtheta[k] += v.sum(1, keepdims=True)                                    # (1,C,...) -> (1,1,...)
        grads, dc = theta_backward(draw, dtheta, hcache)                                    # (1,1,P) -> (1,1,D)
        grads["alh.enc.c"] = dc[0, 0]                                                       # (D,)
        return float(loss), {n: grads[n] for n in hyp}

    def dictionary():
        Y, _ = mats()
        th_in = Y["in"][0] if "in" in Y else Y["out"][0].T                                  # (C,C) the untransposed T
        return base["wte"] @ th_in                                                          # (V,C) rows T e_v

    return Method(name, hyp, loss_and_grads, forward, decayed, base, _fixed(dictionary), _n_effective(acfg, C),
                  {"alh": acfg.to_dict()})


def _base_method(name, base, bcfg, trainable_names, l2=0.0):
    frozen = frozenset(n for n in param_shapes(bcfg) if n not in trainable_names)
    params = {n: base[n] for n in param_shapes(bcfg) if n in trainable_names}      # views into base
    init = {n: p.copy() for n, p in params.items()} if l2 else {}                 # the anchor of the L2 penalty

    def forward(x, y=None, ignore=None, dom=None):
        return gpt_forward(base, bcfg, x, y, ignore)

    def loss_and_grads(x, y, dom=None):
        _, loss, cache = gpt_forward(base, bcfg, x, y)
        grads, _ = gpt_backward(1.0, cache, frozen=frozen)
        for n, p0 in init.items():                                                 # + (l2/2) ||p - p0||^2
            d = params[n] - p0                                                     # same shape as p
            loss = loss + 0.5 * l2 * float((d.astype(np.float64) ** 2).sum())
            grads[n] = grads[n] + (l2 * d).astype(grads[n].dtype)
        return float(loss), grads

    n_eff = int(sum(p.size for p in params.values()))
    return Method(name, params, loss_and_grads, forward, decayed, base, _fixed(lambda: base["wte"]), n_eff,
                  {"l2": l2} if l2 else {})


def _lora_method(base, bcfg, rank, seed):
    V, C = base["wte"].shape
    rng = np.random.default_rng(seed)
    dt = base["wte"].dtype
    params = {"lora.a": np.zeros((V, rank), dtype=dt),                              # (V,R) zero: wte_eff = wte at init
              "lora.b": (rng.standard_normal((rank, C)) / np.sqrt(rank)).astype(dt)}  # (R,C)
    frozen = frozenset(n for n in param_shapes(bcfg) if n != "wte")

    def eff():
        return dict(base, wte=base["wte"] + params["lora.a"] @ params["lora.b"])    # (V,C) + (V,R) @ (R,C)

    def forward(x, y=None, ignore=None, dom=None):
        return gpt_forward(eff(), bcfg, x, y, ignore)

    def loss_and_grads(x, y, dom=None):
        p = eff()
        _, loss, cache = gpt_forward(p, bcfg, x, y)
        g, _ = gpt_backward(1.0, cache, frozen=frozen)
        dW = g["wte"]                                                               # (V,C)
        return float(loss), {"lora.a": dW @ params["lora.b"].T,                     # (V,C) @ (C,R) -> (V,R)
                             "lora.b": params["lora.a"].T @ dW}                     # (R,V) @ (V,C) -> (R,C)

    return Method("lora-embed", params, loss_and_grads, forward, lambda n: True, base,  # both 2-D: decayed
                  _fixed(lambda: eff()["wte"]), (V + C) * rank, {"rank": rank})


def make_method(name, base, bcfg, acfg=None, seed=0, lora_rank=4, l2=1e-2):
    """Build a method by name (see the module docstring for the list).

    Parameters
    ----------
    name : str, one of METHODS
    base : dict of the pretrained base parameters (never modified; the *-ft methods train a copy)
    bcfg : GPTConfig
    acfg : ALHConfig or None (defaults); its family is replaced by the one in the name
    seed : int   initialisation of the new parameters
    lora_rank : int
    l2 : float   strength of embed-ft-l2's penalty toward the pretrained wte

    Returns
    -------
    Method   with ``n_effective`` = the free parameters of the change applied at one position:
        the trained tensors for *-ft, (V + C) R for lora-embed, dim theta_t for a transform
        (householder K C, lowrank 2 R C, film 2 C; context-free or not), C for side, 0 for none
    """
    acfg = acfg or ALHConfig()
    if name == "none":
        return _base_method(name, base, bcfg, ())
    if name in ("embed-ft", "embed-ft-l2"):
        if name == "embed-ft-l2" and not (isinstance(l2, (int, float)) and l2 > 0):
            raise InputError(f"embed-ft-l2 strength l2={l2!r}; expected a positive number")
        return _base_method(name, {k: v.copy() for k, v in base.items()}, bcfg, ("wte",),
                            l2=float(l2) if name == "embed-ft-l2" else 0.0)
    if name == "full-ft":
        return _base_method(name, {k: v.copy() for k, v in base.items()}, bcfg, tuple(param_shapes(bcfg)))
    if name == "lora-embed":
        return _lora_method(base, bcfg, lora_rank, seed)
    if name == "side":
        return _alh_method(name, base, bcfg, replace(acfg, head="side"), seed)
    if name == "alh-shuffled":
        return _alh_method(name, base, bcfg, replace(acfg, head="transform"), seed, shuffled=True)
    if name.startswith("alh-") and name[4:] in FAMILIES:
        return _alh_method(name, base, bcfg, replace(acfg, family=name[4:], head="transform"), seed)
    if name.startswith("static-") and name[7:] in FAMILIES:
        acfg = replace(acfg, family=name[7:], encoder="static", head="transform")
        if acfg.family == "film":                                                           # has an offset: per position
            return _alh_method(name, base, bcfg, acfg, seed)
        return _static_linear_method(name, base, bcfg, acfg, seed)
    raise InputError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
