"""Finite-difference gradient checks of the ALH hypernetwork, end to end through the frozen base.

What is checked. For every transform family x site (input, output, both) x out_context (current,
prev) x context encoder (transformer, mean, static), and for the side head with every encoder,
under each implementation (``ops.using("fast")``: the Numba kernels; ``ops.using("ref")``: the
NumPy twins of every op, encoder and transform; the IMPLS table names each family's pair),
the analytic gradient of EVERY hypernetwork tensor (the names of ``alh_param_shapes``; the test
asserts that each one is checked) from ``alh_backward(dloss, cache)`` is compared with
centered differences of ``dloss * loss`` from ``alh_forward``, where loss is the mean
cross-entropy under a random ignore mask and dloss is a random scalar. The same is done for the
gradients that ``Method.loss_and_grads`` returns for lora-embed, embed-ft and full-ft
(alh_ref/alh/methods.py). Under a cross-entropy loss the output offset of film has an exactly zero
gradient (dL/doff = sum_v dL/dlogit_v = 0), so its backward is also checked at the transform
level with L = sum(y * G) + sum(off * g) (test_transform_grad). Everything is float64 with
h = 1e-5 (alh_ref.gradcheck), small dimensions (V=11, T=5, C=6, D=4, K=4, R=2, L=1) and
non-degenerate parameters: every hypernetwork tensor gets 0.3 N(0,1) and every base tensor
0.2 N(0,1) added after initialisation (so no LayerNorm gain is one, no bias zero, no reflector
direction v zero, no low-rank U zero).
Up to N_SAMPLES = 8 entries per tensor are sampled.

Tolerance and floor. The bound is max_i |a_i - n_i| / max(|a_i|, |n_i|, FLOOR) <= TOL = 1e-5.
The floor is needed because centered differences of a scalar L resolve a gradient only to about
one unit in the last place of L over the step: ulp(L) / (2h) = 4.4e-16 / 2e-5 = 2.2e-11 for
|L| in [2, 4) (L is dloss * mean CE, about dloss * log V here). Measured: entries whose true
gradient is exactly zero come out of the differences as 0, +-2.2e-11 or +-4.4e-11 (528 such
entries over 72 seeded cases), and over every sampled entry below 1e-4 the largest |a - n| is
7.5e-11. Exact zeros exist: the key bias of an attention layer (adding it shifts every score of a
query row by the same q . b_k, and softmax is shift invariant) and, for film at the output site,
the beta half of the head (its offset z . beta is added to every logit of a position alike); see
test_structural_zero_gradients. So a floor of 1e-8 (as first proposed) would score an exact zero
measured at 2.2e-11 as 2.2e-3, and any true gradient below about 1e-5 fails a pure relative test
at TOL. FLOOR = 1e-4 turns the bound into an absolute 1e-9 (13x the largest measured noise) for
the few entries below 1e-4 (about 1% of the sampled nonzero entries; the median is 2e-2), while
every entry of ordinary size, where a wrong term would show, is held to 1e-5 relative (the
largest relative error measured there is 4e-7).
"""
import zlib

import numpy as np
import pytest
from builders import noisy, noisy_alh, perturb, token_batch

from alh_ref.alh.adapted import OUT_CONTEXTS, SITES, ALHConfig, alh_backward, alh_forward, alh_param_shapes
from alh_ref.alh.encoders import ENCODERS
from alh_ref.alh.methods import make_method
from alh_ref import ops
from alh_ref.alh.film import film_backward, film_forward
from alh_ref.alh.householder import (householder_backward_fast, householder_backward_ref, householder_forward_fast,
                                     householder_forward_ref)
from alh_ref.alh.lowrank import lowrank_backward_fast, lowrank_backward_ref, lowrank_forward_fast, lowrank_forward_ref
from alh_ref.alh.transforms import FAMILIES
from alh_ref.gradcheck import check_named, numerical_grad
from alh_ref.model import GPTConfig, init_params, param_shapes

H = 1e-5
TOL = 1e-5
FLOOR = 1e-4
N_SAMPLES = 8
B, T = 3, 5
BCFG = GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=6)   # block_size > T: wpe is sliced
ALH_DIMS = {"D": 4, "n_layer": 1, "n_head": 2, "K": 4, "R": 2}
COMBOS = [(f, s, o, e) for f in FAMILIES for s in SITES for o in OUT_CONTEXTS for e in ENCODERS]

# Each family's two implementations, (forward, backward): the Numba kernels and their NumPy twins
# (film is elementwise NumPy, one implementation). The end-to-end checks run each under
# ops.using(impl), which routes every op, encoder and transform to that implementation.
IMPLS = {
    "householder": {"fast": (householder_forward_fast, householder_backward_fast),
                    "ref": (householder_forward_ref, householder_backward_ref)},
    "lowrank": {"fast": (lowrank_forward_fast, lowrank_backward_fast),
                "ref": (lowrank_forward_ref, lowrank_backward_ref)},
    "film": {"fast": (film_forward, film_backward), "ref": (film_forward, film_backward)},
}


def _seed(*key):
    """A stable seed per test case (crc32 of its id), so cases draw different but fixed data."""
    return zlib.crc32("-".join(key).encode())


def batch(rng, V=BCFG.vocab_size):
    """A random batch for the loss: ids, targets, ignore mask (some but never all positions) and dloss.

    Returns
    -------
    ids : ndarray (B,T) int64;  targets : ndarray (B,T) int64;  ignore : ndarray (B,T) bool
    dloss : float, |dloss| in [0.5, 1.5) with a random sign
    """
    ids, targets, ignore = token_batch(rng, V, B, T, ignore_frac=0.3)  # (B,T) x 3
    dloss = float(rng.choice([-1.0, 1.0]) * (0.5 + rng.random()))
    return ids, targets, ignore, dloss


def alh_case(acfg, seed):
    """Noisy base and hypernetwork parameters and a batch for one configuration.

    Returns
    -------
    base : dict float64 (base init + 0.2 N(0,1));  hyp : dict float64 (alh_init + 0.3 N(0,1))
    ids, targets, ignore, dloss : see :func:`batch`
    """
    rng = np.random.default_rng(seed)
    base, hyp = noisy_alh(BCFG, acfg, rng)
    return (base, hyp, *batch(rng))


def check_alh(acfg, seed):
    """Check every hypernetwork tensor of one configuration; returns {name: max rel error}."""
    base, hyp, ids, targets, ignore, dloss = alh_case(acfg, seed)
    _, _, cache = alh_forward(base, hyp, BCFG, acfg, ids, targets, ignore)
    grads = alh_backward(dloss, cache)
    names = list(alh_param_shapes(BCFG, acfg))
    assert list(grads) == names, f"alh_backward returned {sorted(grads)}; expected every name of {names}"

    def f():
        return dloss * float(alh_forward(base, hyp, BCFG, acfg, ids, targets, ignore)[1])

    errs = check_named(f, hyp, grads, names, n_samples=N_SAMPLES, h=H, rng=np.random.default_rng(seed),
                       floor=FLOOR)
    assert list(errs) == names                                         # every tensor was checked
    return errs


@pytest.mark.parametrize("impl", ops.IMPLS)
@pytest.mark.parametrize("family,site,out_context,encoder", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_alh_hypernetwork_grad(family, site, out_context, encoder, impl):
    acfg = ALHConfig(family=family, site=site, out_context=out_context, encoder=encoder, **ALH_DIMS)
    with ops.using(impl):
        errs = check_alh(acfg, _seed(family, site, out_context, encoder))
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("impl", ops.IMPLS)
@pytest.mark.parametrize("out_context", OUT_CONTEXTS)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_side_head_grad(encoder, out_context, impl):
    acfg = ALHConfig(encoder=encoder, head="side", out_context=out_context, **ALH_DIMS)
    with ops.using(impl):
        errs = check_alh(acfg, _seed("side", encoder, out_context))
    assert {"alh.side.w", "alh.side.b"} <= set(errs)
    assert ("alh.c0" in errs) == (out_context == "prev" and encoder != "static"), sorted(errs)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("name", ["lora-embed", "embed-ft", "full-ft"])
def test_method_grad(name):
    """Method.loss_and_grads of the latent-training baselines (unit dloss, no ignore mask: their API)."""
    rng = np.random.default_rng(_seed(name))
    base = noisy(init_params(BCFG, seed=int(rng.integers(2**31)), dtype=np.float64), 0.2, rng)
    m = make_method(name, base, BCFG, seed=int(rng.integers(2**31)))
    perturb(m.params, 0.3, rng)                                        # in place: lora.a is zero at init
    ids, targets, _, _ = batch(rng)
    _, grads = m.loss_and_grads(ids, targets)
    names = list(m.params)
    assert names and set(grads) == set(names)
    expected = {"lora-embed": ["lora.a", "lora.b"], "embed-ft": ["wte"], "full-ft": list(param_shapes(BCFG))}[name]
    assert names == expected

    def f():
        return float(m.forward(ids, targets)[1])

    errs = check_named(f, m.params, grads, names, n_samples=N_SAMPLES, h=H, rng=rng, floor=FLOOR)
    assert list(errs) == names and max(errs.values()) <= TOL, errs


def test_structural_zero_gradients():
    """The entries the floor is for: their true gradient is exactly zero, and the analytic one is too.

    The key bias of the encoder's attention (softmax shift invariance) and, for film at the output
    site, the beta columns of the head (the offset z . beta is the same for every logit of a
    position). The finite differences are within the ulp(L) / (2h) noise of the module docstring.
    """
    acfg = ALHConfig(family="film", site="output", encoder="transformer", **ALH_DIMS)
    base, hyp, ids, targets, ignore, dloss = alh_case(acfg, _seed("structural-zero"))
    _, _, cache = alh_forward(base, hyp, BCFG, acfg, ids, targets, ignore)
    grads = alh_backward(dloss, cache)
    C, D = BCFG.n_embd, ALH_DIMS["D"]

    def f():
        return dloss * float(alh_forward(base, hyp, BCFG, acfg, ids, targets, ignore)[1])

    zero = {"alh.enc.h.0.attn.c_attn.b": np.arange(D, 2 * D),                 # key slice of (3D,)
            "alh.head.b": np.arange(C, 2 * C),                               # beta half of (2C,)
            "alh.head.w": (np.arange(D)[:, None] * 2 * C + np.arange(C, 2 * C)).ravel()}  # beta columns of (D,2C)
    for name, idx in zero.items():
        a = grads[name].reshape(-1)[idx]                                     # (k,)
        n = numerical_grad(f, hyp[name], idx, H)                             # (k,)
        assert np.abs(a).max() <= 1e-14, (name, a)
        assert np.abs(n).max() <= 2e-10, (name, n)          # a few ulp(L) / (2h)
    # ... while the other halves are ordinary gradients (so the zeros above are not vacuous)
    assert np.abs(grads["alh.head.b"][:C]).max() > 1e-4
    assert np.abs(grads["alh.enc.h.0.attn.c_attn.b"][:D]).max() > 1e-6


@pytest.mark.parametrize("impl", ops.IMPLS)
@pytest.mark.parametrize("transpose", [False, True], ids=["input", "output"])
@pytest.mark.parametrize("family", FAMILIES)
def test_transform_grad(family, transpose, impl):
    """Each family's backward (kernel and twin) against differences of L = sum(y * G) + sum(off * g), every entry.

    The only check of film's output offset off = z . beta with a nonzero dL/doff.
    """
    fwd, bwd = IMPLS[family][impl]
    rng = np.random.default_rng(_seed("transform", family, str(transpose)))
    S, C, J, R = 4, 6, 2, 2
    theta = {"householder": {"v": rng.standard_normal((B, S, J, C)), "a": rng.standard_normal((J, C))},
             "lowrank": {"U": rng.standard_normal((B, S, R, C)), "V": rng.standard_normal((B, S, R, C))},
             "film": {"gamma": rng.standard_normal((B, S, C)), "beta": rng.standard_normal((B, S, C))}}[family]
    e = rng.standard_normal((B, S, C))                                 # (B,S,C)
    G = rng.standard_normal((B, S, C))                                 # (B,S,C) dL/dy
    g = rng.standard_normal((B, S))                                    # (B,S)   dL/doff
    params = dict(theta, e=e)

    def f():
        y, off, _ = fwd({k: params[k] for k in theta}, params["e"], transpose)
        return float((y * G).sum() + (0.0 if off is None else (off * g).sum()))

    _, off, cache = fwd(theta, e, transpose)
    assert (off is not None) == (family == "film" and transpose)
    dtheta, de = bwd(G, g if off is not None else None, cache)
    analytic = dict(dtheta, e=de)
    assert set(analytic) == set(params)
    errs = check_named(f, params, analytic, list(params), h=H, floor=FLOOR)
    assert max(errs.values()) <= TOL, errs
