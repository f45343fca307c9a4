"""The implementation switch (alh_ref.ops.use / using / current): "ref" runs everything on the NumPy twins.

What is checked:
- the switch itself: default "fast", ``using`` restores the previous setting (also on error),
  unknown names raise InputError;
- under "ref" no Numba kernel is ever entered: every kernel entry point of the package is replaced
  by a function that raises, and the whole GPT forward+backward, an AdamW step, every ALH family x
  site x out_context x encoder (and the side head) and the training loop still run; the same
  patched kernels do raise under "fast" (so the check can fail);
- "ref" equals "fast" on the same inputs: the whole GPT (logits, loss, dtok, every gradient, tied
  and untied), an AdamW step (p, m, v, norm), every ALH configuration (logits, loss, every
  hypernetwork gradient) and a few steps of the training loop.

Tolerance (float64): |ref - fast| <= RTOL * max(1, max |fast|) per tensor, RTOL = 1e-10. The op twins
agree with their kernels to 1e-12 of their scale (tests/test_ops_parity.py); a whole model chains
a few dozen ops, which amplify the rounding gap (a LayerNorm's dx by up to rstd; Adam's
m / sqrt(v) for small v), and over every case below the largest gap measured was 5.1e-12 of the
scale (h.1.attn.c_attn.b after five training steps), so 1e-10 leaves a margin of ~20x while any
real difference (a wrong term) is of the order of the values themselves.
"""
import numba
import numpy as np
import pytest
from builders import noisy, noisy_alh, token_batch

import alh_ref.alh.householder
import alh_ref.alh.lowrank
import alh_ref.ops.attention
import alh_ref.ops.embedding
import alh_ref.ops.gelu
import alh_ref.ops.layernorm
import alh_ref.ops.linear
import alh_ref.ops.softmax_ce
import alh_ref.optim
from alh_ref import ops
from alh_ref.alh.adapted import OUT_CONTEXTS, SITES, ALHConfig, alh_backward, alh_forward, alh_param_shapes
from alh_ref.alh.encoders import ENCODERS
from alh_ref.alh.transforms import FAMILIES, transform_forward
from alh_ref.errors import InputError
from alh_ref.model import GPTConfig, decayed, gpt_backward, gpt_forward, init_params, param_shapes
from alh_ref.optim import AdamW, AdamWConfig
from alh_ref.train import gpt_loss_and_grads, train

RTOL = 1e-10
BCFG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=6)
ALH_DIMS = {"D": 4, "n_layer": 1, "n_head": 2, "K": 4, "R": 2}
B, T = 3, 7
COMBOS = [(f, s, o, e) for f in FAMILIES for s in SITES for o in OUT_CONTEXTS for e in ENCODERS]
KERNEL_MODULES = (alh_ref.ops.attention, alh_ref.ops.embedding, alh_ref.ops.gelu, alh_ref.ops.layernorm,
                  alh_ref.ops.linear, alh_ref.ops.softmax_ce, alh_ref.optim, alh_ref.alh.householder,
                  alh_ref.alh.lowrank)


def close(ref, fast, name=""):
    """|ref - fast| <= RTOL * max(1, max |fast|), same shape and dtype."""
    ref, fast = np.asarray(ref), np.asarray(fast)
    assert ref.shape == fast.shape and ref.dtype == fast.dtype, name
    scale = max(1.0, float(np.abs(fast).max())) if fast.size else 1.0
    np.testing.assert_allclose(ref, fast, rtol=0, atol=RTOL * scale, err_msg=name)


def gpt_case(seed, tied=True):
    """A noisy float64 base model and a batch: cfg, params, ids (B,T), targets (B,T), ignore (B,T)."""
    rng = np.random.default_rng(seed)
    cfg = GPTConfig(**{**BCFG.to_dict(), "tied": tied})
    params = noisy(init_params(cfg, seed=seed, dtype=np.float64), 0.2, rng)
    return (cfg, params, *token_batch(rng, cfg.vocab_size, B, T, ignore_frac=0.2))


def gpt_run(cfg, params, ids, targets, ignore):
    """logits, loss, dtok and every gradient of one forward+backward (dloss = 1.3)."""
    logits, loss, cache = gpt_forward(params, cfg, ids, targets, ignore)
    grads, dtok = gpt_backward(1.3, cache)
    return {"logits": logits, "loss": loss, "dtok": dtok, **{"grad." + n: g for n, g in grads.items()}}


def alh_case(acfg, seed):
    """Noisy float64 base and hypernetwork (so no transform is the identity) and a batch."""
    rng = np.random.default_rng(seed)
    base, hyp = noisy_alh(BCFG, acfg, rng)
    ids, targets, _ = token_batch(rng, BCFG.vocab_size, B, T)          # (B,T), (B,T)
    return base, hyp, ids, targets


def alh_run(acfg, base, hyp, ids, targets):
    """logits, loss, c_ext, theta and every hypernetwork gradient of one ALH forward+backward (dloss = 0.7)."""
    logits, loss, cache = alh_forward(base, hyp, BCFG, acfg, ids, targets)
    out = {"logits": logits, "loss": loss, "tok": cache.tok}
    grads = alh_backward(0.7, cache)
    assert list(grads) == list(alh_param_shapes(BCFG, acfg))           # every hypernetwork tensor
    out.update({"grad." + n: g for n, g in grads.items()})
    return out


def adamw_steps(params, grads_seq, impl):
    """AdamW (clipping on) over a sequence of gradient dicts under ``impl``: params, m, v, norms."""
    params = {n: p.copy() for n, p in params.items()}
    opt = AdamW(params, list(params), AdamWConfig(lr=1e-2, warmup_steps=2, total_steps=5, grad_clip=0.5), decayed)
    with ops.using(impl):
        norms = [opt.step(params, g)[0] for g in grads_seq]
    return params, opt.m, opt.v, norms


# ----------------------------------------------------------------------------------------------
# the switch

def test_switch_use_using_current():
    assert ops.current() == "fast"                                    # the default
    with ops.using("ref") as impl:
        assert impl == "ref" and ops.current() == "ref"
        with ops.using("fast"):
            assert ops.current() == "fast"
        assert ops.current() == "ref"
    assert ops.current() == "fast"
    with pytest.raises(RuntimeError), ops.using("ref"):
        raise RuntimeError("inside the block")
    assert ops.current() == "fast"                                    # restored on error too
    for bad in ("numba", "REF", "", None):
        with pytest.raises(InputError, match="unknown implementation"):
            ops.use(bad)
    assert ops.current() == "fast"
    ops.use("ref")
    try:
        assert ops.current() == "ref"
    finally:
        ops.use("fast")


def test_dispatched_ops_name_their_two_implementations():
    assert ops.layernorm_forward.impls == {"fast": ops.layernorm_forward_fast, "ref": ops.layernorm_forward_ref}
    assert ops.layernorm_forward.__name__ == "layernorm_forward"
    assert "layernorm_forward_ref" in ops.layernorm_forward.__doc__
    assert alh_ref.optim.adamw_update.impls["ref"] is alh_ref.optim.adamw_update_ref


# ----------------------------------------------------------------------------------------------
# under "ref" no kernel runs

@pytest.fixture
def kernels_raise(monkeypatch):
    """Replace every Numba kernel entry point of the package by a function that raises."""
    if numba.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: the kernels are plain Python functions, not recognisable as kernels")
    names = []

    def boom(*args, **kwargs):
        raise AssertionError("a Numba kernel was called")

    for mod in KERNEL_MODULES:
        for name, obj in list(vars(mod).items()):
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                monkeypatch.setattr(mod, name, boom)
                names.append(f"{mod.__name__}.{name}")
    assert len(names) >= 14, names                                     # the kernels of ops/, optim and alh/
    return names


def test_ref_enters_no_kernel(kernels_raise):
    cfg, params, ids, targets, ignore = gpt_case(0)
    with ops.using("fast"), pytest.raises(AssertionError, match="kernel was called"):
        gpt_run(cfg, params, ids, targets, ignore)                     # the patch does catch the fast path
    with ops.using("ref"):
        out = gpt_run(cfg, params, ids, targets, ignore)
        grads = {n: out["grad." + n] for n in param_shapes(cfg)}
        opt = AdamW(params, list(params), AdamWConfig(), decayed)
        opt.step(params, grads)
        for family, site, out_context, encoder in COMBOS:
            acfg = ALHConfig(family=family, site=site, out_context=out_context, encoder=encoder, **ALH_DIMS)
            alh_run(acfg, *alh_case(acfg, 1))
        for encoder in ENCODERS:
            acfg = ALHConfig(encoder=encoder, head="side", **ALH_DIMS)
            alh_run(acfg, *alh_case(acfg, 2))
    rng = np.random.default_rng(3)
    e = rng.standard_normal((1, 2, 6))                                 # (B,S,C)
    thetas = {"householder": {"v": rng.standard_normal((1, 2, 2, 6)), "a": rng.standard_normal((2, 6))},
              "lowrank": {"U": rng.standard_normal((1, 2, 2, 6)), "V": rng.standard_normal((1, 2, 2, 6))}}
    for family, theta in thetas.items():
        with ops.using("fast"), pytest.raises(AssertionError, match="kernel was called"):
            transform_forward(family, theta, e)                        # each family's kernel is caught too


def test_training_loop_runs_on_ref(kernels_raise):
    cfg, params, _, _, _ = gpt_case(4)
    tokens = np.random.default_rng(5).integers(0, cfg.vocab_size, size=200)   # (n,)
    opt = AdamW(params, list(params), AdamWConfig(lr=1e-2, warmup_steps=1, total_steps=4), decayed)
    with ops.using("ref"):
        hist = train(params, opt, lambda x, y: gpt_loss_and_grads(params, cfg, x, y), tokens, 2, 6, 4,
                     np.random.default_rng(6))
    assert [r["step"] for r in hist] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in hist)
    assert hist[-1]["loss"] < hist[0]["loss"]                          # it trains


# ----------------------------------------------------------------------------------------------
# "ref" equals "fast"

@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_gpt_ref_equals_fast(tied):
    case = gpt_case(7, tied)
    with ops.using("fast"):
        fast = gpt_run(*case)
    with ops.using("ref"):
        ref = gpt_run(*case)
    assert set(ref) == set(fast) and sum(k.startswith("grad.") for k in fast) == len(param_shapes(case[0]))
    for k in fast:
        close(ref[k], fast[k], k)


def test_adamw_step_ref_equals_fast():
    cfg, params, ids, targets, ignore = gpt_case(8)
    grads_seq = []
    for s in range(3):                                                 # three different gradients
        out = gpt_run(cfg, params, np.roll(ids, s), targets, ignore)
        grads_seq.append({n: out["grad." + n] * (10.0 ** s) for n in param_shapes(cfg)})  # the last ones clipped
    p_f, m_f, v_f, n_f = adamw_steps(params, grads_seq, "fast")
    p_r, m_r, v_r, n_r = adamw_steps(params, grads_seq, "ref")
    np.testing.assert_allclose(n_r, n_f, rtol=1e-12)
    for n in params:
        close(p_r[n], p_f[n], "p." + n)
        close(m_r[n], m_f[n], "m." + n)
        close(v_r[n], v_f[n], "v." + n)


@pytest.mark.parametrize("family,site,out_context,encoder", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_alh_ref_equals_fast(family, site, out_context, encoder):
    acfg = ALHConfig(family=family, site=site, out_context=out_context, encoder=encoder, **ALH_DIMS)
    case = alh_case(acfg, 9)
    with ops.using("fast"):
        fast = alh_run(acfg, *case)
    with ops.using("ref"):
        ref = alh_run(acfg, *case)
    assert set(ref) == set(fast)
    for k in fast:
        close(ref[k], fast[k], k)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_side_head_ref_equals_fast(encoder):
    acfg = ALHConfig(encoder=encoder, head="side", **ALH_DIMS)
    case = alh_case(acfg, 10)
    with ops.using("fast"):
        fast = alh_run(acfg, *case)
    with ops.using("ref"):
        ref = alh_run(acfg, *case)
    for k in fast:
        close(ref[k], fast[k], k)


def test_training_loop_ref_equals_fast():
    cfg, params, _, _, _ = gpt_case(11)
    tokens = np.random.default_rng(12).integers(0, cfg.vocab_size, size=200)  # (n,)
    out = {}
    for impl in ops.IMPLS:
        p = {n: a.copy() for n, a in params.items()}
        opt = AdamW(p, list(p), AdamWConfig(lr=1e-2, warmup_steps=1, total_steps=5), decayed)
        with ops.using(impl):
            hist = train(p, opt, lambda x, y: gpt_loss_and_grads(p, cfg, x, y), tokens, 2, 6, 5,
                         np.random.default_rng(13))
        out[impl] = (hist, p)
    (h_f, p_f), (h_r, p_r) = out["fast"], out["ref"]
    for key in ("loss", "grad_norm", "lr"):
        np.testing.assert_allclose([r[key] for r in h_r], [r[key] for r in h_f], rtol=RTOL, atol=RTOL, err_msg=key)
    for n in p_f:
        close(p_r[n], p_f[n], n)
