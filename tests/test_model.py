"""The composed GPT: whole-model gradients, frozen parameters, structural properties, learning, input checks.

(a) every named parameter (param_shapes order) and the input latents ``tok`` against centered
    differences in float64, tied and untied heads;
(b) ``frozen``: skipped gradients are absent, the rest unchanged, and the skipped matmuls really
    are not run;
(c) hypothesis properties: causality, batch independence, float32 ~ float64, init reproducibility
    and init statistics;
(d) the loss starts at ln V and falls to ~0 on a deterministic sequence;
(e) bad inputs raise InputError with a one-line message.
"""
import math

import numpy as np
import pytest

from hypothesis import assume, given
from hypothesis import strategies as st
from builders import LN_GAINS, noisy_params, token_batch
from strategies import dims, seeds, token_array
from tolerances import assert_ulp_close

import alh_ref.model as model
from alh_ref.errors import InputError, RunError
from alh_ref.gradcheck import check_named
from alh_ref.model import CONFIGS, GPTConfig, decayed, gpt_backward, gpt_forward, init_params, param_shapes
from alh_ref.optim import AdamW, AdamWConfig
from alh_ref.train import gpt_loss_and_grads, train

# Whole-model check: max_i |a_i - n_i| / max(|a_i|, |n_i|, FLOOR) <= TOL. Centered differences of
# the loss (h = 1e-5) resolve gradients to about 1.5e-9 absolute here; the key-bias gradient
# (c_attn.b entries C..2C) is exactly zero in exact arithmetic (adding a constant to every key shifts
# a softmax row by a constant), so its analytic value is rounding noise and only an absolute bound
# can hold: FLOOR = 1e-4 makes that bound 1e-9 for entries below 1e-4.
TOL = 1e-5
FLOOR = 1e-4
N_SAMPLES = 30                       # entries per tensor checked (all of the smaller ones)

SMALL = dict(vocab_size=11, block_size=7, n_layer=2, n_head=3, n_embd=9)   # hs = 3


def small_cfg(tied=True):
    return GPTConfig(**SMALL, tied=tied)


def make_batch(cfg, seed, B=2, T=5):
    """ids, targets (B,T) int64 and an ignore mask (B,T) bool with a third (some but not all) of the positions set."""
    return token_batch(np.random.default_rng(seed), cfg.vocab_size, B, T, ignore_frac=1 / 3)


def forward_backward(params, cfg, ids, targets, ignore=None, frozen=frozenset(), dloss=1.0, tok=None):
    """A fresh forward then backward (gpt_backward spends its cache: dlogits overwrite the probs)."""
    _, loss, cache = gpt_forward(params, cfg, ids, targets, ignore, tok=tok)
    grads, dtok = gpt_backward(dloss, cache, frozen=frozenset(frozen))
    return float(loss), grads, dtok


# ----------------------------------------------------------------------------------------------
# (a) whole-model gradient check

@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_gradcheck_every_parameter_and_tok(tied):
    cfg = small_cfg(tied)
    names = list(param_shapes(cfg))
    params = noisy_params(cfg, seed=0)
    ids, targets, ignore = make_batch(cfg, seed=1)
    dloss = float(np.random.default_rng(2).uniform(0.5, 2.0))        # not 1: the scale must flow through

    _, grads, dtok = forward_backward(params, cfg, ids, targets, ignore, dloss=dloss)
    assert list(grads) != [] and set(grads) == set(names)
    for n in names:
        assert grads[n].shape == params[n].shape and grads[n].dtype == np.float64, n
        assert np.abs(grads[n]).max() > 1e-2, f"{n}: gradient too small to check meaningfully"

    def loss():
        return dloss * float(gpt_forward(params, cfg, ids, targets, ignore)[1])

    errs = check_named(loss, params, grads, names, n_samples=N_SAMPLES, rng=np.random.default_rng(4),
                       floor=FLOOR)
    assert list(errs) == names                                         # every parameter, in order
    assert max(errs.values()) <= TOL, {n: e for n, e in errs.items() if e > TOL}

    # the input latents: arbitrary latents (not wte[ids]) through gpt_forward(..., tok=)
    tok = params["wte"][ids] + 0.3 * np.random.default_rng(3).standard_normal((*ids.shape, cfg.n_embd))  # (B,T,C)

    def loss_tok():
        return dloss * float(gpt_forward(params, cfg, ids, targets, ignore, tok=tok)[1])

    _, grads_t, dtok_t = forward_backward(params, cfg, ids, targets, ignore, dloss=dloss, tok=tok)
    err_tok = check_named(loss_tok, {"tok": tok}, {"tok": dtok_t}, ["tok"], floor=FLOOR)["tok"]
    assert err_tok <= TOL
    # with tok given, wte reaches the loss only through the head (tied) or not at all (untied)
    if tied:
        err_wte = check_named(loss_tok, params, grads_t, ["wte"], floor=FLOOR)["wte"]
        assert err_wte <= TOL
    else:
        assert "wte" not in grads_t
    # and with tok = wte[ids], dtok is the same gradient the embedding lookup scatters
    _, _, dtok_same = forward_backward(params, cfg, ids, targets, ignore, dloss=dloss, tok=params["wte"][ids])
    np.testing.assert_allclose(dtok_same, dtok, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# (b) frozen parameters

def _groups(cfg):
    """Parameter names grouped by module (a weight with its bias, a LayerNorm's gain with its bias)."""
    groups = {}
    for n in param_shapes(cfg):
        groups.setdefault(n.rsplit(".", 1)[0] if n.endswith((".w", ".b")) else n, []).append(n)
    return groups


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_frozen_everything(tied):
    cfg = small_cfg(tied)
    params = noisy_params(cfg, seed=4)
    ids, targets, ignore = make_batch(cfg, seed=5)
    _, _, dtok_full = forward_backward(params, cfg, ids, targets, ignore, dloss=0.7)
    _, grads, dtok = forward_backward(params, cfg, ids, targets, ignore, frozen=set(params), dloss=0.7)
    assert grads == {}
    np.testing.assert_allclose(dtok, dtok_full, rtol=1e-12, atol=1e-15)
    assert np.abs(dtok).max() > 1e-3                                   # not trivially zero


@given(st.data())
def test_frozen_partial_matches_unfrozen(data):
    tied = data.draw(st.booleans(), label="tied")
    cfg = small_cfg(tied)
    groups = _groups(cfg)
    chosen = data.draw(st.sets(st.sampled_from(sorted(groups))), label="frozen modules")
    frozen = {n for g in chosen for n in groups[g]}
    params = noisy_params(cfg, seed=6)
    ids, targets, ignore = make_batch(cfg, seed=7)
    _, full, dtok_full = forward_backward(params, cfg, ids, targets, ignore, dloss=1.1)
    _, grads, dtok = forward_backward(params, cfg, ids, targets, ignore, frozen=frozen, dloss=1.1)
    assert set(grads) == set(param_shapes(cfg)) - frozen
    # Not bitwise: the frozen run skips dW buffers, so later arrays sit at other alignments and
    # BLAS / SIMD reductions may sum in another order (seen: 1 ulp on AVX2). See tests/tolerances.py.
    for n, g in grads.items():
        assert_ulp_close(g, full[n], err_msg=n)
    assert_ulp_close(dtok, dtok_full)


@pytest.mark.parametrize("frozen,name", [({"h.0.attn.c_attn.b"}, "h.0.attn.c_attn.b"),
                                         ({"h.1.ln_2.w"}, "h.1.ln_2.b"),
                                         ({"ln_f.b"}, "ln_f.b")])
def test_frozen_bias_and_weight_are_independent(frozen, name):
    """gpt_backward returns a gradient for every parameter not in ``frozen``, and none for those in it."""
    cfg = small_cfg()
    params = noisy_params(cfg, seed=8)
    ids, targets, _ = make_batch(cfg, seed=9)
    _, grads, _ = forward_backward(params, cfg, ids, targets, frozen=frozen)
    assert set(grads) == set(param_shapes(cfg)) - frozen, f"{name} handled wrongly"


def test_frozen_skips_the_work(monkeypatch):
    """Frozen modules do not run their dW matmuls / reductions, and a frozen wte skips the scatter."""
    calls = {"linear_dw": 0, "layernorm_dw": 0, "embed": 0}
    linear_backward, layernorm_backward, embedding_backward = (model.linear_backward, model.layernorm_backward,
                                                               model.embedding_backward)

    def counting_linear(dout, cache, *, need_dx=True, need_dw=True):
        calls["linear_dw"] += need_dw
        return linear_backward(dout, cache, need_dx=need_dx, need_dw=need_dw)

    def counting_layernorm(dout, cache, *, need_dw=True):
        calls["layernorm_dw"] += need_dw
        return layernorm_backward(dout, cache, need_dw=need_dw)

    def counting_scatter(dtok, cache):
        calls["embed"] += 1
        return embedding_backward(dtok, cache)

    monkeypatch.setattr(model, "linear_backward", counting_linear)
    monkeypatch.setattr(model, "layernorm_backward", counting_layernorm)
    monkeypatch.setattr(model, "embedding_backward", counting_scatter)
    cfg = small_cfg()
    L = cfg.n_layer
    params = noisy_params(cfg, seed=10)
    ids, targets, _ = make_batch(cfg, seed=11)
    block0 = {n for n in params if n.startswith("h.0.")}
    for frozen, expect in [(set(), (4 * L, 2 * L + 1, 1)),
                           (set(params), (0, 0, 0)),
                           (block0 | {"wte"}, (4 * (L - 1), 2 * (L - 1) + 1, 0))]:
        calls.update(linear_dw=0, layernorm_dw=0, embed=0)
        forward_backward(params, cfg, ids, targets, frozen=frozen)
        assert (calls["linear_dw"], calls["layernorm_dw"], calls["embed"]) == expect, (sorted(frozen)[:3], calls)


def test_backward_twice_on_one_cache_is_an_error():
    """One backward per forward: the loss cache is spent in place, and a second use says so."""
    cfg = small_cfg()
    params = noisy_params(cfg, seed=12)
    ids, targets, _ = make_batch(cfg, seed=13)
    _, _, cache = gpt_forward(params, cfg, ids, targets)
    gpt_backward(1.0, cache)
    with pytest.raises(RunError, match="spent"):
        gpt_backward(1.0, cache)


# ----------------------------------------------------------------------------------------------
# (c) properties

def _model(d, V, L, tied, seed, dtype=np.float64):
    cfg = GPTConfig(vocab_size=V, block_size=9, n_layer=L, n_head=d["NH"], n_embd=d["C"], tied=tied)
    return cfg, noisy_params(cfg, seed, dtype)


@given(dims(min_T=2), st.integers(2, 17), st.integers(1, 2), st.booleans(), seeds, st.data())
def test_causal(d, V, L, tied, seed, data):
    """Changing the ids after position t never changes the logits at positions <= t."""
    cfg, params = _model(d, V, L, tied, seed % 1000)
    B, T = d["B"], d["T"]
    t = data.draw(st.integers(0, T - 2), label="t")
    ids = token_array(seed, (B, T), V)                                # (B,T)
    ids2 = ids.copy()                                                 # (B,T)
    ids2[:, t + 1:] = (ids[:, t + 1:] + 1 + token_array(seed + 1, (B, T - t - 1), V - 1)) % V  # all differ
    logits = gpt_forward(params, cfg, ids)[0]                         # (B,T,V)
    logits2 = gpt_forward(params, cfg, ids2)[0]                       # (B,T,V)
    np.testing.assert_allclose(logits2[:, :t + 1], logits[:, :t + 1], rtol=0, atol=1e-12)
    if d["C"] > 1:                                                    # (C = 1: every LayerNorm output is its bias)
        assert np.abs(logits2[:, t + 1] - logits[:, t + 1]).max() > 1e-9   # the change is seen after t


@given(dims(), st.integers(2, 17), st.booleans(), seeds, st.data())
def test_batch_items_independent(d, V, tied, seed, data):
    """The logits of item b do not depend on the other items of the batch."""
    assume(d["B"] >= 2)
    cfg, params = _model(d, V, 1, tied, seed % 1000)
    B, T = d["B"], d["T"]
    b = data.draw(st.integers(0, B - 1), label="b")
    ids = token_array(seed, (B, T), V)                                # (B,T)
    ids2 = token_array(seed + 1, (B, T), V)                           # (B,T) other items changed
    ids2[b] = ids[b]
    logits = gpt_forward(params, cfg, ids)[0]                         # (B,T,V)
    logits2 = gpt_forward(params, cfg, ids2)[0]                       # (B,T,V)
    np.testing.assert_allclose(logits2[b], logits[b], rtol=0, atol=1e-12)
    alone = gpt_forward(params, cfg, ids[b:b + 1])[0]                 # (1,T,V) the item by itself
    np.testing.assert_allclose(alone[0], logits[b], rtol=1e-12, atol=1e-12)


# float32 vs float64 on the same parameters (cast): worst gaps seen over 300 random models in
# development were 8.5e-6 x max(1, max|logits|) on the logits, and 2e-7 relative / 9e-7 absolute on
# the loss (absolute matters when the loss is near 0: lse(z) - z_y cancels).
F32_LOGITS_ATOL = 5e-5               # in units of max(1, max |logits|)
F32_LOSS_RTOL, F32_LOSS_ATOL = 2e-6, 2e-6


@given(dims(), st.integers(2, 40), st.integers(1, 2), st.booleans(), seeds)
def test_float32_agrees_with_float64(d, V, L, tied, seed):
    cfg, p64 = _model(d, V, L, tied, seed % 1000)
    p32 = {n: p.astype(np.float32) for n, p in p64.items()}
    ids = token_array(seed, (d["B"], d["T"]), V)                      # (B,T)
    targets = token_array(seed + 1, (d["B"], d["T"]), V)              # (B,T)
    logits64, loss64, _ = gpt_forward(p64, cfg, ids, targets)
    logits32, loss32, _ = gpt_forward(p32, cfg, ids, targets)
    assert logits32.dtype == np.float32 and np.asarray(loss32).dtype == np.float32
    scale = max(1.0, float(np.abs(logits64).max()))
    np.testing.assert_allclose(logits32, logits64, rtol=0, atol=F32_LOGITS_ATOL * scale)
    np.testing.assert_allclose(loss32, loss64, rtol=F32_LOSS_RTOL, atol=F32_LOSS_ATOL)


@given(seeds, st.sampled_from([np.float32, np.float64]))
def test_init_reproducible(seed, dtype):
    cfg = small_cfg(tied=False)
    a, b = init_params(cfg, seed=seed, dtype=dtype), init_params(cfg, seed=seed, dtype=dtype)
    assert list(a) == list(param_shapes(cfg))
    for n in a:
        assert a[n].dtype == np.dtype(dtype) and a[n].flags.c_contiguous and a[n].shape == param_shapes(cfg)[n]
        assert a[n].tobytes() == b[n].tobytes(), n    # exact: same seed, same generator draws, same casts
    c = init_params(cfg, seed=seed + 1, dtype=dtype)
    assert a["wte"].tobytes() != c["wte"].tobytes()


def test_init_statistics_tiny():
    cfg = CONFIGS["tiny"]
    params = init_params(cfg, seed=0, dtype=np.float32)
    proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    for n, p in params.items():
        assert p.dtype == np.float32 and p.flags.c_contiguous, n
        if n.endswith(LN_GAINS):
            assert np.all(p == 1), n
        elif n.endswith(".b"):
            assert np.all(p == 0), n
        else:
            std = proj_std if n.endswith("c_proj.w") else 0.02
            assert abs(p.std() / std - 1) < 0.05, (n, p.std(), std)  # >= 4096 draws: sd of the estimate < 1.2%
            assert abs(p.mean()) < 4 * std / math.sqrt(p.size), n


# ----------------------------------------------------------------------------------------------
# (d) learning

def test_initial_loss_is_log_vocab():
    cfg = CONFIGS["tiny"]
    params = init_params(cfg, seed=0, dtype=np.float32)
    ids = token_array(1, (4, 64), cfg.vocab_size)                      # (B,T) random tokens
    targets = token_array(2, (4, 64), cfg.vocab_size)                  # (B,T)
    _, loss, _ = gpt_forward(params, cfg, ids, targets)
    assert abs(float(loss) - math.log(cfg.vocab_size)) < 0.1


def test_learns_a_repeating_sequence():
    """A period-16 sequence (next token fixed by the current one): loss ln V -> ~0 in 80 steps.

    Development runs (3 seeds) ended at a loss of 0.004; the bound 0.05 leaves a 10x margin.
    """
    cfg = GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=32)
    params = init_params(cfg, seed=0, dtype=np.float32)
    period = np.random.default_rng(0).permutation(cfg.vocab_size)[:16]   # (16,)
    tokens = np.tile(period, 100)                                          # (1600,)
    steps = 80
    opt = AdamW(params, list(param_shapes(cfg)),
                AdamWConfig(lr=1e-2, warmup_steps=10, total_steps=steps, weight_decay=0.0), decayed)
    hist = train(params, opt, lambda x, y: gpt_loss_and_grads(params, cfg, x, y), tokens, 8, 16, steps,
                 np.random.default_rng(1))
    losses = [h["loss"] for h in hist]
    assert len(losses) == steps and opt.t == steps
    assert abs(losses[0] - math.log(cfg.vocab_size)) < 0.1
    assert np.mean(losses[-10:]) < 0.05, losses[-10:]


# ----------------------------------------------------------------------------------------------
# (e) input validation

def _bad(cfg, ids, targets=None, match="", ignore=None):
    with pytest.raises(InputError, match=match) as info:
        gpt_forward(init_params(cfg, seed=0, dtype=np.float32), cfg, ids, targets, ignore)
    msg = str(info.value)
    assert msg and "\n" not in msg, msg                                # one line, says what was wrong


@pytest.mark.parametrize("ids,targets,match", [
    (np.array([[1, 11, 2]]), None, r"token id 11 outside the vocabulary; expected ids in \[0, 11\)"),
    (np.array([[1, -1, 2]]), None, r"token id -1 outside the vocabulary"),
    (np.array([[1.0, 2.0]]), None, r"ids has dtype float64; expected an integer dtype"),
    (np.array([[True, False]]), None, r"ids has dtype bool; expected an integer dtype"),
    (np.array([1, 2, 3]), None, r"ids has shape \(3,\); expected a 2-D array"),
    (np.zeros((1, 2, 3), dtype=np.int64), None, r"expected a 2-D array"),
    ([[1, 2]], None, r"must be a numpy array"),
    (np.zeros((1, 8), dtype=np.int64), None, r"T=8 positions; the model's block_size is 7"),
    (np.zeros((2, 3), dtype=np.int64), np.zeros((2, 4), dtype=np.int64), r"targets has shape \(2, 4\); expected"),
    (np.zeros((2, 3), dtype=np.int64), np.full((2, 3), 11), r"targets contains token id 11"),
    (np.zeros((2, 3), dtype=np.int64), np.zeros((2, 3)), r"targets has dtype float64"),
], ids=["id>=V", "id<0", "float", "bool", "1-D", "3-D", "list", "T>block", "targets-shape", "targets-range",
        "targets-float"])
def test_bad_inputs_raise_input_error(ids, targets, match):
    _bad(small_cfg(), ids, targets, match)


@pytest.mark.parametrize("ignore,match", [
    (np.zeros((2, 3), dtype=np.int64), r"ignore mask is int64 \(2, 3\); expected a bool array"),  # ~0 == -1
    (np.zeros((2, 2), dtype=bool), r"ignore mask is bool \(2, 2\); expected a bool array of the ids' shape"),
    ([[False] * 3] * 2, r"ignore mask is list"),
], ids=["int-mask", "short-mask", "list-mask"])
def test_bad_ignore_raises_input_error(ignore, match):
    ids = np.zeros((2, 3), dtype=np.int64)                              # (B,T)
    _bad(small_cfg(), ids, ids, match, ignore=ignore)
