"""Every Numba kernel equals its NumPy twin, and the invariants softmax and attention must keep.

Shapes come from tests/strategies.py (B 1..3, T 1..9 incl. T = 1, NH 1..3, hs 1..5, so C is often
not a power of two).

Tolerances (``close`` below): |got - expect| <= rtol |expect| + atol * max(1, max |expect|), the
absolute part measured in units of the array's own scale.

* float64: rtol = atol = 1e-12. The two paths differ only in rounding. The kernels are compiled
  with fast-math ``reassoc`` and ``contract`` (alh_ref/ops/_jit.py), so sums may be reordered into
  SIMD lanes and ``a * b + c`` fused into an FMA, and ``fexp`` is ``np.exp`` in float64. Over 400
  random cases per kernel, the largest gap was under 0.4% of the bound for the rewritten kernels and
  10% for LayerNorm's dx (0.3% over 600 cases once its kernel kept float32 maths in float32). LayerNorm's dx is multiplied by rstd, up to 316 (see below).
* float32: rtol = 2e-5, atol = 1e-5. The kernels' float32 maths stays float32. Exceptions: the
  cross-entropy's log and its per-row losses, and AdamW, are computed in float64. The float32
  exp is ``fexp``, a vectorised polynomial with relative error < 1 ulp (docs/ops/jit.md), and
  sums are reordered by ``reassoc``. The twins use NumPy's pairwise sums and SIMD tanh/exp. Most
  outputs agree to a few ulps (gap < 4% of the bound). Two outputs are ill-conditioned in float32
  and set the bound:
  * LayerNorm's dx is multiplied by rstd. rstd reaches 1/sqrt(eps) = 316 for a row of (nearly)
    equal values (gap 67% of the bound; 47% over 600 cases of the kernel that is float32 throughout).
  * GELU's backward. The twin computes 1 + tanh(u) with u << 0, and its relative error grows as x
    falls (4e-4 at x = -4). The kernel's sigmoid form x sigmoid(2u) does not cancel
    (docs/ops/gelu.md). Gap 15%.
* AdamW float32: the kernel and the twin both do the update in float64 and round once into p, m,
  v; they differ only in the order of the float64 operations, so p, m, v agree to the last ulp
  (same F32 bound).

The two building blocks of the kernels are tested on their own: ``fexp`` (the float32 polynomial
exp) against np.exp over a float32 grid that covers its clamps, the range where np.exp is
subnormal, and NaN; ``rowmax`` (eight accumulators) against np.max for every tail length.

The last test runs a tiny model with ``NUMBA_DISABLE_JIT=1`` in a subprocess (every kernel then
runs as the plain Python function) and checks it against the jitted run in this process.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
import numba
from numba import njit
from builders import noisy, token_batch
from strategies import dims, dtypes, float_array, seeds, token_array

from alh_ref.ops import (attention_backward_fast, attention_backward_ref, attention_forward_fast,
                         attention_forward_ref, bias_add_fast, bias_add_ref, embedding_backward_fast,
                         embedding_backward_ref, embedding_forward, gelu_backward_fast, gelu_backward_ref,
                         gelu_forward_fast, gelu_forward_ref,
                         layernorm_backward_fast, layernorm_backward_ref, layernorm_forward_fast,
                         layernorm_forward_ref, softmax_cross_entropy_backward_fast,
                         softmax_cross_entropy_backward_ref, softmax_cross_entropy_forward_fast,
                         softmax_cross_entropy_forward_ref, softmax_ref)
from alh_ref.ops._jit import fexp, rescale, rowmax
from alh_ref.optim import adamw_update_fast, adamw_update_ref

F64 = dict(rtol=1e-12, atol=1e-12)
F32 = dict(rtol=2e-5, atol=1e-5)


def tol(dtype):
    """Tolerance keywords {rtol, atol} at ``dtype`` (atol in units of the array's scale)."""
    return F64 if np.dtype(dtype) == np.float64 else F32


def close(got, expect, dtype):
    """Same dtype and shape; |got - expect| <= rtol |expect| + atol max(1, max |expect|)."""
    got, expect = np.asarray(got), np.asarray(expect)
    assert got.dtype == np.dtype(dtype) and expect.dtype == np.dtype(dtype)
    t = tol(dtype)
    scale = max(1.0, float(np.abs(expect).max())) if expect.size else 1.0
    np.testing.assert_allclose(got, expect, rtol=t["rtol"], atol=t["atol"] * scale)


# ----------------------------------------------------------------------------------------------
# kernel == twin

@given(dims(), dtypes, seeds, st.booleans())
@example({"B": 1, "T": 1, "NH": 1, "hs": 1, "C": 1}, np.float32, 0, True)
@example({"B": 3, "T": 7, "NH": 3, "hs": 5, "C": 15}, np.float64, 1, False)
def test_layernorm_parity(d, dtype, seed, need_dw):
    B, T, C = d["B"], d["T"], d["C"]
    x = float_array(seed, (B, T, C), dtype, scale=2.0, shift=0.3)      # (B,T,C)
    w = float_array(seed + 1, (C,), dtype, scale=0.3, shift=1.0)       # (C,)
    b = float_array(seed + 2, (C,), dtype, scale=0.1)                  # (C,)
    dout = float_array(seed + 3, (B, T, C), dtype)                     # (B,T,C)
    out, cache = layernorm_forward_fast(x, w, b)
    out_r, cache_r = layernorm_forward_ref(x, w, b)
    close(out, out_r, dtype)
    close(cache[2], cache_r[2], dtype)                                 # mean (B,T)
    close(cache[3], cache_r[3], dtype)                                 # rstd (B,T)
    dx, dw, db = layernorm_backward_fast(dout, cache, need_dw=need_dw)
    dx_r, dw_r, db_r = layernorm_backward_ref(dout, cache_r, need_dw=need_dw)
    close(dx, dx_r, dtype)
    if need_dw:
        close(dw, dw_r, dtype)
        close(db, db_r, dtype)
    else:
        assert dw is None and db is None and dw_r is None and db_r is None


@given(dims(), dtypes, seeds)
def test_bias_add_parity(d, dtype, seed):
    N, C = d["B"] * d["T"], d["C"]
    out = float_array(seed, (N, C), dtype, scale=3.0)                  # (N,C)
    b = float_array(seed + 1, (C,), dtype)                             # (C,)
    got, want = out.copy(), out.copy()                                 # (N,C) each
    bias_add_fast(got, b)
    bias_add_ref(want, b)
    close(got, want, dtype)


@given(st.integers(1, 40), dtypes, seeds)
def test_gelu_parity(n, dtype, seed):
    x = float_array(seed, (n, 3), dtype, scale=3.0)                    # (n,3)
    dout = float_array(seed + 1, (n, 3), dtype)                        # (n,3)
    out, cache = gelu_forward_fast(x)
    out_r, cache_r = gelu_forward_ref(x)
    close(out, out_r, dtype)
    close(gelu_backward_fast(dout, cache), gelu_backward_ref(dout, cache_r), dtype)


@given(dims(), dtypes, seeds)
@example({"B": 1, "T": 1, "NH": 1, "hs": 1, "C": 1}, np.float32, 0)
@example({"B": 3, "T": 7, "NH": 3, "hs": 5, "C": 15}, np.float32, 1)
@example({"B": 3, "T": 7, "NH": 3, "hs": 5, "C": 15}, np.float64, 2)
def test_attention_parity(d, dtype, seed):
    B, T, NH, C = d["B"], d["T"], d["NH"], d["C"]
    qkv = float_array(seed, (B, T, 3 * C), dtype)                      # (B,T,3C)
    dout = float_array(seed + 1, (B, T, C), dtype)                     # (B,T,C)
    out, cache = attention_forward_fast(qkv, NH)
    out_r, cache_r = attention_forward_ref(qkv, NH)
    close(out, out_r, dtype)
    close(cache[1], cache_r[1], dtype)                                 # att (B,NH,T,T)
    close(attention_backward_fast(dout, cache), attention_backward_ref(dout, cache_r), dtype)


@given(dims(), dtypes, seeds)
@example({"B": 2, "T": 9, "NH": 3, "hs": 4, "C": 12}, np.float32, 3)
def test_attention_fast_backward_takes_either_cache(d, dtype, seed):
    """The fast forward caches a query-major view of its key-major buffer; the reference caches a
    contiguous query-major att. The fast backward gives the same gradients from either."""
    B, T, NH, C = d["B"], d["T"], d["NH"], d["C"]
    qkv = float_array(seed, (B, T, 3 * C), dtype, scale=2.0)           # (B,T,3C)
    dout = float_array(seed + 1, (B, T, C), dtype)                     # (B,T,C)
    _, cache = attention_forward_fast(qkv, NH)
    _, cache_r = attention_forward_ref(qkv, NH)
    assert cache_r[1].flags.c_contiguous
    close(attention_backward_fast(dout, cache_r), attention_backward_fast(dout, cache), dtype)


@given(st.integers(1, 30), st.integers(1, 13), dtypes, seeds, st.floats(0.1, 3.0), st.booleans())
def test_softmax_ce_parity(N, V, dtype, seed, dloss, use_ignore):
    rng = np.random.default_rng(seed)
    logits = float_array(seed, (N, V), dtype, scale=3.0)               # (N,V)
    targets = rng.integers(0, V, size=N)                               # (N,)
    ignore = rng.random(N) < 0.3 if use_ignore else None               # (N,) bool
    loss, cache = softmax_cross_entropy_forward_fast(logits, targets, ignore)
    loss_r, cache_r = softmax_cross_entropy_forward_ref(logits, targets, ignore)
    close(loss, loss_r, dtype)
    close(cache[0], cache_r[0], dtype)                                 # probs (N,V)
    d_r = softmax_cross_entropy_backward_ref(dloss, cache_r)
    close(softmax_cross_entropy_backward_fast(dloss, cache), d_r, dtype)
    close(softmax_cross_entropy_backward_fast(dloss, cache, inplace=True), d_r, dtype)


@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 7), st.integers(1, 6), dtypes, seeds)
def test_embedding_parity(B, T, C, V, dtype, seed):
    ids = token_array(seed, (B, T), V)                                 # (B,T) few ids: many repeats
    table = float_array(seed + 1, (V, C), dtype)                       # (V,C)
    out, cache = embedding_forward(ids, table)
    np.testing.assert_array_equal(out, table[ids])                    # exact: a gather, no arithmetic
    dout = float_array(seed + 2, (B, T, C), dtype)                     # (B,T,C)
    close(embedding_backward_fast(dout, cache), embedding_backward_ref(dout, cache), dtype)


@given(st.integers(1, 50), dtypes, seeds, st.integers(1, 1000), st.sampled_from([0.0, 0.1]),
       st.floats(0.05, 1.0), st.floats(1e-4, 1e-2))
def test_adamw_kernel_parity(n, dtype, seed, t, wd, gscale, lr):
    b1, b2, eps = 0.9, 0.95, 1e-8
    p = float_array(seed, (n,), dtype)                                 # (n,)
    g = float_array(seed + 1, (n,), dtype)                             # (n,)
    m = float_array(seed + 2, (n,), dtype, scale=0.1)                  # (n,)
    v = np.abs(float_array(seed + 3, (n,), dtype, scale=0.1))          # (n,) second moments >= 0
    p_r, m_r, v_r = p.copy(), m.copy(), v.copy()                       # (n,) x3
    adamw_update_fast(p, g, m, v, lr, b1, b2, eps, wd, t, gscale)
    adamw_update_ref(p_r, g, m_r, v_r, lr, b1, b2, eps, wd, t, gscale)
    for got, expect in ((p, p_r), (m, m_r), (v, v_r)):
        close(got, expect, dtype)


@pytest.mark.parametrize("dtype,gap", [(np.float32, 120.0), (np.float64, 800.0)])
def test_softmax_ce_ref_matches_kernel_for_large_logit_gaps(dtype, gap):
    logits = np.array([[0.0, gap, 0.0]], dtype=dtype)                 # (N,V) target far below the max
    targets = np.array([0])                                           # (N,)
    loss, _ = softmax_cross_entropy_forward_fast(logits, targets)
    assert loss == pytest.approx(gap)                                 # the kernel is right
    with np.errstate(divide="ignore"):
        loss_r, _ = softmax_cross_entropy_forward_ref(logits, targets)
    assert loss_r == pytest.approx(gap)


# ----------------------------------------------------------------------------------------------
# the kernels' building blocks: fexp and rowmax (alh_ref/ops/_jit.py, docs/ops/jit.md)

@njit
def _fexp_all(x, out):
    """out[i] = fexp(x[i]) inside jitted code, where fexp is the float32 polynomial (or np.exp in float64)."""
    for i in range(x.shape[0]):
        out[i] = fexp(x[i])


F32_LO, F32_HI = np.float32(-87.33654), np.float32(88.0)    # fexp's clamps
jitted = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT=1: fexp is then np.exp itself")
TINY32 = np.finfo(np.float32).tiny                           # 2**-126, the smallest normal float32


@jitted
def test_fexp_float32_against_np_exp():
    grid = np.linspace(-110.0, 100.0, 400_001).astype(np.float32)                # (n,) step 5e-4
    special = np.array([F32_LO, np.nextafter(F32_LO, np.float32(0)), np.nextafter(F32_LO, np.float32(-200)),
                        F32_HI, np.nextafter(F32_HI, np.float32(200)), 0.0, -0.0, 1e-30, -1e-30,
                        np.inf, -np.inf, np.nan], dtype=np.float32)             # (12,)
    x = np.concatenate([grid, special])                                           # (n+12,)
    got = np.empty_like(x)                                                        # (n+12,)
    _fexp_all(x, got)
    assert got.dtype == np.float32
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64))                                      # (n+12,) float64 reference
        np32 = np.exp(x)                                                          # (n+12,) what np.exp gives in float32
    inside = (x >= F32_LO) & (x <= F32_HI)
    rel = np.abs(got[inside] - exact[inside]) / exact[inside]
    assert rel.max() <= 1e-7                    # < 1 ulp (1.19e-7); docs/ops/jit.md states 8.4e-8 measured
    np.testing.assert_allclose(got[inside], np32[inside], rtol=4 * np.finfo(np.float32).eps, atol=0)
    below = x < F32_LO                                                            # incl. -inf
    assert below.sum() > 30_000
    assert np.all(got[below] == 0)              # exactly 0 where np.exp is subnormal or 0 ...
    assert np.all(np32[below] < TINY32)         # ... which is below the smallest normal float32
    assert np.any((np32[below] > 0) & (np32[below] < TINY32))   # the grid does cover np.exp's subnormal range
    above = x > F32_HI                                                            # incl. +inf
    assert np.all(got[above] == got[x == F32_HI][0])   # clamped at exp(88) = 1.65e38 (the same arithmetic, so equal)
    assert np.all(np32[above] >= got[above])
    assert np.isnan(got[np.isnan(x)]).all()


def test_fexp_float64_is_np_exp():
    x = np.linspace(-700.0, 700.0, 10_001)                                        # (n,) float64
    got = np.empty_like(x)                                                        # (n,)
    _fexp_all(x, got)
    np.testing.assert_allclose(got, np.exp(x), rtol=4 * np.finfo(np.float64).eps, atol=0)   # libm exp vs NumPy's


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rowmax_every_tail_length(dtype):
    """rowmax(x, n) == np.max(x[:n]) for n = 1 .. 2*8+1 (every tail n % 8, one and two full blocks of 8
    accumulators), the maximum at every index in turn, and larger values beyond n that must be ignored."""
    rng = np.random.default_rng(0)
    for n in range(1, 18):
        for where in range(n):
            x = rng.standard_normal(n + 3).astype(dtype)                          # (n+3,)
            x[where] = 5.0                                                        # the maximum, at each index
            x[n:] = 9.0                                                           # beyond n: not part of the row
            assert rowmax(x, n) == np.max(x[:n])    # max is exact (no rounding): equal on every CPU
        x = -np.inf * np.ones(n, dtype=dtype)                                     # (n,) a fully masked row
        assert rowmax(x, n) == -np.inf
    x = rng.standard_normal(2048).astype(dtype)                                   # (2048,) a long row
    assert rowmax(x, 2048) == x.max()           # max is exact: equal on every CPU


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rescale_multiplies_the_first_n(dtype):
    """rescale(x, n, c): x[:n] * c, entry by entry, and x[n:] untouched, for every n up to 2*16+1."""
    rng = np.random.default_rng(1)
    for n in range(0, 34):
        x = rng.standard_normal(n + 5).astype(dtype)                              # (n+5,)
        c = dtype(1.0) / dtype(rng.random() + 0.5)
        want = x.copy()                                                           # (n+5,)
        want[:n] = x[:n] * c
        rescale(x, n, c)
        np.testing.assert_array_equal(x, want)   # exact: one IEEE multiply per entry, the same on every CPU


# ----------------------------------------------------------------------------------------------
# invariants

@given(st.integers(1, 8), st.integers(1, 13), dtypes, seeds)
def test_softmax_rows_sum_to_one_and_shift_invariant(N, V, dtype, seed):
    z = float_array(seed, (N, V), dtype, scale=3.0)                    # (N,V)
    shift = float_array(seed + 1, (N, 1), dtype, scale=10.0)           # (N,1) a constant per row
    zs = z + shift                                                     # (N,V)
    targets = token_array(seed + 2, (N,), V)                           # (N,)
    # rounding z + shift moves each logit by up to eps |z + shift|; p and the loss move by as much
    t = tol(dtype)
    shift_atol = t["atol"] + 2 * np.finfo(dtype).eps * float(np.abs(zs).max())
    p = softmax_ref(z)                                                 # (N,V)
    np.testing.assert_allclose(p.sum(-1), 1.0, **t)
    np.testing.assert_allclose(softmax_ref(zs), p, rtol=0, atol=shift_atol)
    loss, cache = softmax_cross_entropy_forward_fast(z, targets)
    loss_s, cache_s = softmax_cross_entropy_forward_fast(zs, targets)
    np.testing.assert_allclose(cache[0].sum(-1), 1.0, **t)             # the kernel's probs
    np.testing.assert_allclose(cache_s[0], cache[0], rtol=0, atol=shift_atol)
    np.testing.assert_allclose(loss_s, loss, rtol=t["rtol"], atol=2 * shift_atol)


@pytest.mark.parametrize("impl", [attention_forward_fast, attention_forward_ref], ids=["fast", "ref"])
@given(d=dims(), dtype=dtypes, seed=seeds)
@example(d={"B": 1, "T": 1, "NH": 1, "hs": 1, "C": 1}, dtype=np.float64, seed=0)
@example(d={"B": 3, "T": 7, "NH": 3, "hs": 5, "C": 15}, dtype=np.float32, seed=1)
def test_attention_rows_causal_and_normalised(impl, d, dtype, seed):
    B, T, NH, C = d["B"], d["T"], d["NH"], d["C"]
    qkv = float_array(seed, (B, T, 3 * C), dtype, scale=2.0)           # (B,T,3C)
    _, (_, att, _) = impl(qkv, NH)                                     # att (B,NH,T,T)
    assert att.shape == (B, NH, T, T) and att.dtype == np.dtype(dtype)
    assert np.all(np.triu(att, k=1) == 0)                              # exactly zero above the diagonal
    assert np.all(att >= 0)
    np.testing.assert_allclose(att.sum(-1), 1.0, **tol(dtype))


# ----------------------------------------------------------------------------------------------
# NUMBA_DISABLE_JIT=1: every kernel as plain Python gives the jitted result

_TINY = dict(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=6, tied=True)


def tiny_results():
    """Forward+backward of a tiny float64 model; returns {key: list of floats} (JSON-ready)."""
    from alh_ref.model import GPTConfig, gpt_backward, gpt_forward, init_params
    cfg = GPTConfig(**_TINY)
    rng = np.random.default_rng(2)
    params = noisy(init_params(cfg, seed=1, dtype=np.float64), 0.2, rng)  # non-degenerate values
    ids, targets, _ = token_batch(rng, cfg.vocab_size, 2, 5)           # (B,T), (B,T)
    logits, loss, cache = gpt_forward(params, cfg, ids, targets)
    grads, dtok = gpt_backward(1.3, cache)
    out = {"loss": [float(loss)], "logits": logits.ravel().tolist(), "dtok": dtok.ravel().tolist()}
    out.update({"grad." + n: g.ravel().tolist() for n, g in grads.items()})
    return out


def test_disable_jit_matches_jitted():
    script = ("import json, sys, numba; sys.path.insert(0, sys.argv[1]); "
              "from test_ops_parity import tiny_results; "
              "print(json.dumps({'jit_disabled': bool(numba.config.DISABLE_JIT), **tiny_results()}))")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    proc = subprocess.run([sys.executable, "-c", script, os.path.dirname(__file__)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    assert plain.pop("jit_disabled") is True                           # the kernels really ran as Python
    jitted = tiny_results()
    assert set(plain) == set(jitted)
    assert sum(k.startswith("grad.") for k in jitted) == 2 + 12 * _TINY["n_layer"] + 2  # every parameter
    for k in jitted:
        np.testing.assert_allclose(plain[k], jitted[k], rtol=1e-10, atol=1e-12, err_msg=k)


@given(st.lists(st.integers(1, 40), min_size=1, max_size=5), dtypes, seeds)
def test_grad_norm_kernel_matches_twin(sizes, dtype, seed):
    """optim.global_grad_norm_fast (Numba _sumsq_kernel) equals its NumPy twin (float64 sums either way)."""
    from alh_ref.optim import global_grad_norm_fast, global_grad_norm_ref
    grads = {f"g{i}": float_array(seed + i, (n,), dtype, scale=3.0) for i, n in enumerate(sizes)}
    got, ref = global_grad_norm_fast(grads, list(grads)), global_grad_norm_ref(grads, list(grads))
    assert got == pytest.approx(ref, rel=1e-12)
