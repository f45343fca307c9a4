"""Property tests of ALH (hypothesis, profile from tests/conftest.py): what docs/alh.md promises.

- householder transforms are orthogonal for any reflector parameters, so the Gram matrix and all
  pairwise cosines of a transformed dictionary are those of the original;
- at initialisation the adapted model is the frozen base model (every family, site, encoder,
  out_context, and the side head);
- causality: transform parameters at slot s and logits at t ignore tokens after t;
- out_context "prev": the output transform at t does not read the context token at t;
- the base latents stay frozen under training of every method (the *-ft methods train a copy);
- alh-shuffled reads a deranged batch's context, and derangements avoid fixed points and domains;
- the transposed application (output site) is A^T, film's offset is z . beta, and the output site
  computes logits_v = z . (A e_v + b);
- input validation: alh_forward and gpt_forward reject targets and ignore masks whose shape is not
  the ids' shape (B,T).

Arrays are built from drawn seeds with numpy generators; hypothesis draws seeds and shapes.
"""
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from builders import alh_model, noisy, perturb, random_ids
from strategies import alh_dims, seeds
from tolerances import assert_ulp_close

from alh_ref.alh.adapted import OUT_CONTEXTS, SITES, ALHConfig, alh_backward, alh_forward, alh_param_shapes
from alh_ref.alh.encoders import ENCODERS
from alh_ref.alh.methods import METHODS, derangement, make_method, shuffle_rng
from alh_ref.alh.transforms import FAMILIES, dense_matrix, transform_forward
from alh_ref.errors import InputError
from alh_ref.model import GPTConfig, body_forward, embed_forward, gpt_forward, init_params
from alh_ref.optim import AdamW, AdamWConfig
from alh_ref.train import train

COMBOS = [(f, s, o, e) for f in FAMILIES for s in SITES for o in OUT_CONTEXTS for e in ENCODERS]
SCALES = st.sampled_from([1e-12, 1e-6, 1e-2, 1.0, 1e2, 1e6])


def ids_for(rng, d):
    """Random token ids (B,T) in [0, V) for a model of the shape d."""
    return random_ids(rng, d["V"], d["B"], d["T"])                                          # (B,T)


def theta_at(theta, s):
    """One slot's parameters, theta[:, s] (the shared householder "a" passes through)."""
    return {k: (v if k == "a" else v[:, s]) for k, v in theta.items()}


# ----------------------------------------------------------------------------------------------
# Householder: orthogonal for any parameters, so the dictionary's geometry is unchanged

@given(seed=seeds, C=st.integers(1, 9), J=st.integers(1, 3), v_scale=SCALES, a_scale=SCALES,
       v_along_a=st.booleans(), V=st.integers(2, 12))
def test_householder_is_orthogonal_and_keeps_gram_and_cosines(seed, C, J, v_scale, a_scale, v_along_a, V):
    rng = np.random.default_rng(seed)
    a = a_scale * rng.standard_normal((J, C))                                           # (J,C)
    assume(np.all(np.linalg.norm(a, axis=1) > 0))
    v = v_scale * rng.standard_normal((J, C))                                           # (J,C)
    if v_along_a:
        v[0] = v_scale * a[0] / np.linalg.norm(a[0])                                    # (C,) P v = 0: u_2 = a^
    A, b = dense_matrix("householder", {"v": v, "a": a}, C)                             # (C,C), (C,)
    assert np.array_equal(b, np.zeros(C))         # exact: householder's offset is built as zeros, no arithmetic
    assert np.linalg.norm(A.T @ A - np.eye(C)) <= 1e-12

    # the transformed dictionary E' (rows T e_v), through the batched path the model uses
    E = rng.standard_normal((V, C)) * np.exp(rng.uniform(-3, 3, size=(V, 1)))          # (V,C) rows of mixed scale
    th = {"v": np.broadcast_to(v, (1, V, J, C)), "a": a}                                # (1,V,J,C)
    E2 = transform_forward("householder", th, E[None], False)[0][0]                     # (1,V,C) -> (V,C)
    np.testing.assert_allclose(E2, E @ A.T, rtol=0, atol=1e-12 * np.abs(E).max())
    G, G2 = E @ E.T, E2 @ E2.T                                                          # (V,V) Gram matrices
    assert np.linalg.norm(G2 - G) <= 1e-12 * np.linalg.norm(G)
    n, n2 = np.linalg.norm(E, axis=1), np.linalg.norm(E2, axis=1)                       # (V,)
    np.testing.assert_allclose(n2, n, rtol=1e-12)
    cos, cos2 = G / np.outer(n, n), G2 / np.outer(n2, n2)                               # (V,V) cosines in [-1,1]
    np.testing.assert_allclose(cos2, cos, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Identity at initialisation

@pytest.mark.parametrize("family,site,out_context,encoder", COMBOS + [("-", "-", "-", e) for e in ENCODERS],
                         ids=["-".join(c) for c in COMBOS] + [f"side-{e}" for e in ENCODERS])
@given(seed=seeds, d=alh_dims())
@example(seed=8707, d={"V": 11, "C": 2, "L": 2, "T": 1, "block": 1, "B": 2, "D": 6, "K": 2, "R": 1})  # 1.8e-12 of scale
def test_identity_at_init(family, site, out_context, encoder, seed, d):
    """alh_init (side head too) gives the base model's logits, whatever the encoder parameters are.

    Only the head entries that alh_init sets to zero (what moves T off the identity) stay zero;
    every other hypernetwork tensor (encoder, c_0, householder a, low-rank V) gets noise.
    """
    kw = ({"head": "side", "encoder": encoder} if family == "-" else
          {"family": family, "site": site, "out_context": out_context, "encoder": encoder})
    bcfg, acfg, base, hyp, rng = alh_model(seed, d, **kw)
    for n, p in hyp.items():
        noise = rng.standard_normal(p.shape)                                            # shape of p
        p += np.where(p == 0, 0.0, noise) if n.startswith(("alh.head.", "alh.side.")) else noise
    ids = ids_for(rng, d)                                                               # (B,T)
    ref, _, _ = gpt_forward(base, bcfg, ids)                                            # (B,T,V)
    logits, _, _ = alh_forward(base, hyp, bcfg, acfg, ids)                              # (B,T,V)
    # Not exact: H(a^) H(a^) = I only up to rounding, and that rounding passes through the whole base
    # model (seen: 1.8e-12 of scale, seed 8707). 1e-10 of scale is still ~10 orders below a real
    # departure from the identity (O(1) differences in the logits).
    np.testing.assert_allclose(logits, ref, rtol=0, atol=1e-10 * max(1.0, np.abs(ref).max()))


# ----------------------------------------------------------------------------------------------
# Causality and the "prev" output context

@pytest.mark.parametrize("family,site,out_context", [c[:3] for c in COMBOS if c[3] == "transformer"],
                         ids=["-".join(c[:3]) for c in COMBOS if c[3] == "transformer"])
@given(seed=seeds, d=alh_dims(min_T=2), encoder=st.sampled_from(ENCODERS), data=st.data())
def test_causality(family, site, out_context, seed, d, encoder, data):
    """Changing tokens after t leaves theta at slots 0..t+1 and logits at 0..t unchanged."""
    t = data.draw(st.integers(0, d["T"] - 2), label="t")
    bcfg, acfg, base, hyp, rng = alh_model(seed, d, 0.3, family=family, site=site, out_context=out_context,
                                       encoder=encoder)
    ids = ids_for(rng, d)                                                               # (B,T)
    ids2 = ids.copy()                                                                   # (B,T)
    ids2[:, t + 1:] = (ids[:, t + 1:] + rng.integers(1, d["V"], size=ids[:, t + 1:].shape)) % d["V"]  # all differ
    logits, _, c1 = alh_forward(base, hyp, bcfg, acfg, ids)                             # (B,T,V)
    logits2, _, c2 = alh_forward(base, hyp, bcfg, acfg, ids2)                           # (B,T,V)
    tight = {"rtol": 1e-13, "atol": 1e-13}
    np.testing.assert_allclose(logits2[:, :t + 1], logits[:, :t + 1], **tight)
    for k in c1.theta:
        if k == "a":
            assert np.array_equal(c1.theta[k], c2.theta[k])    # exact: 'a' is the shared parameter itself, read not computed
        else:
            np.testing.assert_allclose(c2.theta[k][:, :t + 2], c1.theta[k][:, :t + 2], **tight)
    if encoder != "static":                                                             # the check can fail:
        k = next(k for k in c1.theta if k != "a")                                    # slot t+2 reads x_{t+1}
        assert not np.allclose(c2.theta[k][:, t + 2], c1.theta[k][:, t + 2], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("encoder", ["transformer", "mean"])
@given(seed=seeds, d=alh_dims(), data=st.data())
def test_prev_output_context_skips_the_current_token(family, encoder, seed, d, data):
    """site=output: logits_t ignore ctx_ids[:, t] with out_context=prev, and read it with current."""
    t = data.draw(st.integers(0, d["T"] - 1), label="t")
    out = {}
    for oc in OUT_CONTEXTS:
        bcfg, acfg, base, hyp, rng = alh_model(seed, d, 0.3, family=family, site="output", out_context=oc,
                                           encoder=encoder)
        ids, ctx = ids_for(rng, d), ids_for(rng, d)                                     # (B,T), (B,T)
        ctx2 = ctx.copy()                                                               # (B,T)
        ctx2[:, t] = (ctx[:, t] + rng.integers(1, d["V"], size=d["B"])) % d["V"]       # every row differs at t
        l1, _, _ = alh_forward(base, hyp, bcfg, acfg, ids, ctx_ids=ctx)                 # (B,T,V)
        l2, _, _ = alh_forward(base, hyp, bcfg, acfg, ids, ctx_ids=ctx2)                # (B,T,V)
        out[oc] = np.abs(l2 - l1).max(axis=(0, 2))                                      # (T,) change per position
    assert np.all(out["prev"][:t + 1] <= 1e-13), out["prev"]
    assert out["current"][t] > 1e-9, out["current"]
    assert np.all(out["current"][:t] <= 1e-13)
    if t + 1 < d["T"]:
        assert out["prev"][t + 1] > 1e-9                                               # prev reads x_t at t+1


# ----------------------------------------------------------------------------------------------
# Frozen latents under training

FROZEN_COMBOS = [dict(family=f, site=s, out_context=o, encoder=e) for f, s, o, e in COMBOS] + \
                [dict(head="side", encoder=e) for e in ENCODERS]


@pytest.mark.parametrize("kw", FROZEN_COMBOS, ids=lambda kw: "-".join(kw.values()))
@given(seed=seeds, d=alh_dims(min_T=2), data=st.data())
def test_frozen_hypernetwork_subset_matches_unfrozen(kw, seed, d, data):
    """alh_backward(frozen=S): exactly the names not in S come back, each equal to the unfrozen gradient.

    Freezing is decided per parameter name (alh.head.w frozen still returns alh.head.b), as for the base.
    """
    bcfg, acfg, base, hyp, rng = alh_model(seed, d, 0.3, **kw)
    names = sorted(alh_param_shapes(bcfg, acfg))
    frozen = data.draw(st.sets(st.sampled_from(names)), label="frozen")
    ids, targets = ids_for(rng, d), ids_for(rng, d)                                     # (B,T), (B,T)
    dloss = float(rng.uniform(0.5, 2.0))                                                # not 1: a random upstream scale
    _, _, cache = alh_forward(base, hyp, bcfg, acfg, ids, targets)
    full = alh_backward(dloss, cache)
    _, _, cache = alh_forward(base, hyp, bcfg, acfg, ids, targets)
    part = alh_backward(dloss, cache, frozen=frozenset(frozen))
    assert sorted(full) == names
    assert set(part) == set(names) - frozen
    # Not bitwise: the frozen run skips buffers, so later arrays may sit at other alignments and
    # reductions sum in another order (tests/tolerances.py).
    for n, g in part.items():
        assert_ulp_close(g, full[n], err_msg=n)


def test_freezing_the_head_weight_keeps_its_bias():
    """The bug model.py once had, for the hypernetwork head: frozen alh.head.w must not drop alh.head.b."""
    d = {"V": 7, "C": 4, "L": 1, "T": 3, "block": 3, "B": 2, "D": 4, "K": 2, "R": 1}
    bcfg, acfg, base, hyp, rng = alh_model(0, d, 0.3, family="householder", site="both")
    _, _, cache = alh_forward(base, hyp, bcfg, acfg, ids_for(rng, d), ids_for(rng, d))
    grads = alh_backward(1.0, cache, frozen=frozenset({"alh.head.w"}))
    assert "alh.head.b" in grads and "alh.head.w" not in grads and np.abs(grads["alh.head.b"]).max() > 0


@given(seed=seeds)
def test_training_never_writes_the_base(seed):
    d = {"V": 9, "C": 4, "L": 1, "T": 4, "block": 4, "B": 3, "D": 4, "K": 2, "R": 2}
    rng = np.random.default_rng(seed)
    bcfg = GPTConfig(vocab_size=9, block_size=4, n_layer=1, n_head=2, n_embd=4)
    acfg = ALHConfig(D=d["D"], n_layer=1, n_head=2, K=d["K"], R=d["R"])
    tokens = rng.integers(0, 9, size=64)                                                # (n,)
    domains = np.repeat(np.arange(4), 16)                                               # (n,) four domains
    ocfg = AdamWConfig(lr=1e-2, warmup_steps=1, total_steps=3)
    for name in METHODS:
        base = noisy(init_params(bcfg, seed=int(rng.integers(2**31))), 0.2, rng, np.float32)
        snap = {n: p.copy() for n, p in base.items()}
        m = make_method(name, base, bcfg, acfg, seed=int(rng.integers(2**31)))
        before = {n: p.copy() for n, p in m.params.items()}
        opt = AdamW(m.params, list(m.params), ocfg, m.decay)
        train(m.params, opt, m.loss_and_grads, tokens, d["B"], d["T"], 3, np.random.default_rng(seed),
              domains=domains)
        for n in snap:
            # exact: the property is that nothing writes the base; an untouched array keeps its bits
            assert base[n].dtype == snap[n].dtype and np.array_equal(base[n], snap[n]), (name, n)
        if name in ("embed-ft", "embed-ft-l2", "full-ft"):
            assert m.base is not base and not np.array_equal(m.base["wte"], snap["wte"]), name  # trained a copy
        else:
            assert m.base is base, name
        if name != "none":                                                              # the steps did happen
            assert any(not np.array_equal(m.params[n], before[n]) for n in before), name


# ----------------------------------------------------------------------------------------------
# alh-shuffled and derangements

@given(seed=seeds, d=alh_dims(min_T=2), B=st.integers(2, 5), with_dom=st.booleans(), family=st.sampled_from(FAMILIES),
       site=st.sampled_from(SITES))
def test_alh_shuffled_reads_the_deranged_context(seed, d, B, with_dom, family, site):
    d = dict(d, B=B, V=max(d["V"], B))
    bcfg, acfg, base, _, rng = alh_model(seed, d, family=family, site=site)
    m = make_method("alh-shuffled", base, bcfg, acfg, seed=seed)
    perturb(m.params, 0.3, rng)                                                         # in place: non-zero hyp
    ids = ids_for(rng, d)                                                               # (B,T)
    ids[:, 0] = rng.permutation(d["V"])[:B]                                             # rows pairwise distinct
    targets = ids_for(rng, d)                                                           # (B,T)
    dom = rng.integers(0, 3, size=B) if with_dom else None                              # (B,) or None
    acfg_m = ALHConfig(**m.info["alh"])
    logits, _, _ = m.forward(ids, dom=dom)                                              # (B,T,V)
    perm = derangement(B, shuffle_rng(seed, ids), dom)                                  # (B,) replayed
    assert np.all(perm != np.arange(B))
    ref, _, _ = alh_forward(m.base, m.params, bcfg, acfg_m, ids, ctx_ids=ids[perm])     # (B,T,V)
    # Not bitwise: the method builds its own context batch, so its temporaries sit at other
    # alignments than this direct call's (tests/tolerances.py); a wrong shuffle moves logits by O(1).
    assert_ulp_close(logits, ref)
    own, _, _ = alh_forward(m.base, m.params, bcfg, acfg_m, ids)                        # (B,T,V)
    assert not np.allclose(logits, own, rtol=1e-9, atol=1e-12)
    loss, _ = m.loss_and_grads(ids, targets, dom)                                       # same batch: same shuffle
    _, ref_loss, _ = alh_forward(m.base, m.params, bcfg, acfg_m, ids, targets, ctx_ids=ids[perm])
    assert_ulp_close(np.asarray(loss), np.asarray(float(ref_loss)))


@given(seed=seeds, B=st.integers(2, 40), n_dom=st.integers(0, 5))
def test_derangement(seed, B, n_dom):
    """No fixed points; with domain labels, min(B, 2 (B - largest)) items cross domains (the most possible)."""
    rng = np.random.default_rng(seed)
    dom = rng.integers(0, n_dom, size=B) if n_dom else None                             # (B,) or None
    perm = derangement(B, rng, dom)                                                     # (B,)
    assert np.array_equal(np.sort(perm), np.arange(B))
    assert np.all(perm != np.arange(B))
    if dom is not None:
        largest = np.unique(dom, return_counts=True)[1].max()
        cross = int((dom[perm] != dom).sum())
        if 2 * largest <= B:
            assert cross == B
        assert cross == min(B, 2 * (B - largest))


# ----------------------------------------------------------------------------------------------
# The transposed application (output site)

@st.composite
def theta_one(draw, family):
    """One position's transform parameters (numpy, from a drawn seed) and the width C."""
    rng = np.random.default_rng(draw(seeds))
    C, J, R, scale = draw(st.integers(1, 8)), draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(SCALES)
    if family == "householder":
        th = {"v": scale * rng.standard_normal((J, C)), "a": rng.standard_normal((J, C))}
    elif family == "lowrank":
        th = {"U": scale * rng.standard_normal((R, C)), "V": rng.standard_normal((R, C))}
    else:
        th = {"gamma": scale * rng.standard_normal(C), "beta": scale * rng.standard_normal(C)}
    return th, C, rng


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_transpose_application_is_A_transpose(family, data):
    th, C, rng = data.draw(theta_one(family))
    A, b = dense_matrix(family, th, C)                                                  # (C,C), (C,)
    tb = {k: (v if k == "a" else v[None, None]) for k, v in th.items()}                 # (1,1,...)
    I = np.eye(C)                                                                       # (C,C)
    cols = [transform_forward(family, tb, I[i][None, None], True)[0][0, 0] for i in range(C)]
    At = np.stack(cols, axis=1)                                                         # (C,C) column i = A^T e_i
    np.testing.assert_allclose(At, A.T, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(A).max()))
    z = rng.standard_normal((1, 1, C))                                                  # (1,1,C)
    y, off, _ = transform_forward(family, tb, z, True)                                  # (1,1,C), (1,1) or None
    if family == "film":
        np.testing.assert_allclose(off[0, 0], z[0, 0] @ th["beta"], rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(b, th["beta"], rtol=1e-12, atol=0)                  # dense offset is beta
    else:
        assert off is None and np.array_equal(b, np.zeros(C))      # exact: the offset is built as zeros
    # logits identity: (A^T z) . e + z . b == z . (A e + b) for a random latent e
    e = rng.standard_normal(C)                                                          # (C,)
    lhs = y[0, 0] @ e + (0.0 if off is None else off[0, 0])
    rhs = z[0, 0] @ (A @ e + b)
    scale = np.abs(z).max() * (np.abs(A).max() * np.abs(e).sum() + np.abs(b).sum())
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, scale)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("out_context", OUT_CONTEXTS)
@given(seed=seeds, d=alh_dims())
def test_output_site_scores_the_transformed_dictionary(family, out_context, seed, d):
    """site=output: logits[b,t,v] = z_t . (A_s wte_v + b_s), s = t+1 (current) or t (prev)."""
    bcfg, acfg, base, hyp, rng = alh_model(seed, d, 0.3, family=family, site="output", out_context=out_context)
    ids = ids_for(rng, d)                                                               # (B,T)
    logits, _, cache = alh_forward(base, hyp, bcfg, acfg, ids)                          # (B,T,V)
    z, _ = body_forward(base, bcfg, embed_forward(base, ids)[0])                        # (B,T,C) frozen base
    s0 = 1 if out_context == "current" else 0
    for t in range(d["T"]):
        th = theta_at(cache.theta, s0 + t)
        for bi in range(d["B"]):
            A, b = dense_matrix(family, {k: (v if k == "a" else v[bi]) for k, v in th.items()}, d["C"])
            ref = (base["wte"] @ A.T + b) @ z[bi, t]                                    # (V,C) @ (C,) -> (V,)
            np.testing.assert_allclose(logits[bi, t], ref, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# Input validation: targets and ignore must have the ids' shape

def _small():
    d = {"V": 7, "C": 4, "L": 1, "T": 3, "block": 4, "B": 2, "D": 4, "K": 2, "R": 1}
    bcfg, acfg, base, hyp, rng = alh_model(0, d)
    return bcfg, acfg, base, hyp, ids_for(rng, d)


def test_alh_forward_rejects_targets_of_another_shape():
    bcfg, acfg, base, hyp, ids = _small()
    B, T = ids.shape
    with pytest.raises(InputError, match="targets has shape"):
        alh_forward(base, hyp, bcfg, acfg, ids, np.zeros((B, T + 1), dtype=np.int64))
    with pytest.raises(InputError, match="targets has shape"):
        gpt_forward(base, bcfg, ids, np.zeros((B, T + 1), dtype=np.int64))


def test_alh_forward_rejects_an_ignore_mask_of_another_shape():
    bcfg, acfg, base, hyp, ids = _small()
    B, T = ids.shape
    for bad in (np.zeros((B, T + 1), dtype=bool), np.zeros(B * T - 1, dtype=bool), np.zeros((B, T), dtype=np.int64)):
        with pytest.raises(InputError, match="ignore mask"):
            alh_forward(base, hyp, bcfg, acfg, ids, ids, bad)
        with pytest.raises(InputError, match="ignore mask"):
            gpt_forward(base, bcfg, ids, ids, bad)
