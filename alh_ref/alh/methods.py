"""ALH and its baselines behind one small interface, so they share the training loop, data and budget.

    none            the frozen base model (nothing trained)
    embed-ft        optimise wte directly (what the proposal argues against)
    lora-embed      wte + A B, A (V,R) zero-initialised, B (R,C) random
    full-ft         every base parameter
    alh-<family>    the hypernetwork (alh_ref.alh.adapted), family householder | lowrank | film
    static-<family> the same family with one learned, context-free transform
    side            the same context encoder, a zero-initialised linear head added to z_t (no transform)
    alh-shuffled    ALH whose transforms come from another sequence's context (a derangement of the
                    batch; from another domain where domain labels are given and possible)

``make_method`` returns a :class:`Method`: its ``params`` (the trainable tensors, by name), a
``loss_and_grads(x, y, dom=None)`` for the training loop and a ``forward(x, y=None, ignore=None, dom=None)``
for evaluation. Base parameters that a method does not train are never written.
"""
import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..errors import InputError
from ..model import decayed, gpt_backward, gpt_forward, param_shapes
from .adapted import ALHConfig, alh_backward, alh_forward, alh_init
from .transforms import FAMILIES

BASELINES = ("none", "embed-ft", "lora-embed", "full-ft", "side", "alh-shuffled")
METHODS = BASELINES + tuple(f"alh-{f}" for f in FAMILIES) + tuple(f"static-{f}" for f in FAMILIES)


@dataclass
class Method:
    """A trainable adaptation of a frozen base model.

    name : str;  params : dict name -> ndarray (trainable, updated in place by the optimizer)
    loss_and_grads : (x (B,T), y (B,T), dom (B,) or None) -> (loss float, grads dict over params)
    forward : (x, y=None, ignore=None, dom=None) -> (logits (B,T,V), loss or None, cache)
    decay : name -> bool (AdamW weight decay)
    base : the base parameters this method reads (a private copy for the *-ft methods)
    info : dict (config of the hypernetwork, etc.)
    """

    name: str
    params: dict
    loss_and_grads: Callable
    forward: Callable
    decay: Callable
    base: dict
    info: dict = field(default_factory=dict)

    @property
    def n_trainable(self):
        """Number of trainable scalars."""
        return int(sum(a.size for a in self.params.values()))


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
        _, loss, cache = forward(x, y, None, dom)
        return float(loss), alh_backward(1.0, cache)

    return Method(name, hyp, loss_and_grads, forward, decayed, base, {"alh": acfg.to_dict()})


def _base_method(name, base, bcfg, trainable_names):
    frozen = frozenset(n for n in param_shapes(bcfg) if n not in trainable_names)
    params = {n: base[n] for n in param_shapes(bcfg) if n in trainable_names}      # views into base

    def forward(x, y=None, ignore=None, dom=None):
        return gpt_forward(base, bcfg, x, y, ignore)

    def loss_and_grads(x, y, dom=None):
        _, loss, cache = gpt_forward(base, bcfg, x, y)
        grads, _ = gpt_backward(1.0, cache, frozen=frozen)
        return float(loss), grads

    return Method(name, params, loss_and_grads, forward, decayed, base)


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

    return Method("lora-embed", params, loss_and_grads, forward, lambda n: True, base, {"rank": rank})  # both 2-D: decayed


def make_method(name, base, bcfg, acfg=None, seed=0, lora_rank=4):
    """Build a method by name (see the module docstring for the list).

    Parameters
    ----------
    name : str, one of METHODS
    base : dict of the pretrained base parameters (never modified; the *-ft methods train a copy)
    bcfg : GPTConfig
    acfg : ALHConfig or None (defaults); its family is replaced by the one in the name
    seed : int   initialisation of the new parameters
    lora_rank : int

    Returns
    -------
    Method
    """
    acfg = acfg or ALHConfig()
    if name == "none":
        return _base_method(name, base, bcfg, ())
    if name == "embed-ft":
        return _base_method(name, {k: v.copy() for k, v in base.items()}, bcfg, ("wte",))
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
        return _alh_method(name, base, bcfg, replace(acfg, family=name[7:], encoder="static", head="transform"), seed)
    raise InputError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
