"""Finite-difference gradient checks of every layer family, Numba path and NumPy twin.

Each check builds the scalar L = sum(out * G) with G standard normal (dL/dout = G), computes the
analytic gradient with the family's backward, and compares it entry by entry with centered
differences (alh_ref.gradcheck) in float64. Inputs are non-degenerate (random LayerNorm gain and
bias, GELU inputs across its curved region, attention logits of order one, repeated token ids,
an ignore mask and dloss != 1).

Tolerance: max_i |a_i - n_i| / max(|a_i|, |n_i|, FLOOR) <= 1e-7. Centered differences of an
objective of order ten resolve a gradient only to about 3e-10 absolute (rounding eps |L| / h with
h = 1e-5, measured over 20 seeds), so an entry that happens to be near zero (GELU' vanishes at
x = -0.75) cannot be checked relatively; FLOOR = 1e-2 turns the bound into an absolute 1e-9 for
such entries (3x the measured noise), while entries of order one, where a wrong term would show,
are held to 1e-7 relative.
AdamW is an update rule, not a gradient: it is covered by tests/test_ops_parity.py.
"""
import numpy as np
import pytest
from strategies import float_array

from alh_ref.errors import InputError, RunError
from alh_ref.gradcheck import check_named, numerical_grad, rel_error
from alh_ref.ops import (attention_backward_fast, attention_backward_ref, attention_forward_fast,
                         attention_forward_ref, embedding_backward_fast, embedding_backward_ref, embedding_forward,
                         gelu_backward_fast, gelu_backward_ref, gelu_forward_fast, gelu_forward_ref,
                         layernorm_backward_fast, layernorm_backward_ref, layernorm_forward_fast,
                         layernorm_forward_ref, linear_backward, linear_forward,
                         softmax_cross_entropy_backward_fast, softmax_cross_entropy_backward_ref,
                         softmax_cross_entropy_forward_fast, softmax_cross_entropy_forward_ref)

TOL = 1e-7
FLOOR = 1e-2
SEEDS = [0, 1]

IMPLS = {
    "layernorm": {"fast": (layernorm_forward_fast, layernorm_backward_fast),
                  "ref": (layernorm_forward_ref, layernorm_backward_ref)},
    "gelu": {"fast": (gelu_forward_fast, gelu_backward_fast), "ref": (gelu_forward_ref, gelu_backward_ref)},
    "attention": {"fast": (attention_forward_fast, attention_backward_fast),
                  "ref": (attention_forward_ref, attention_backward_ref)},
    "softmax_ce": {"fast": (softmax_cross_entropy_forward_fast, softmax_cross_entropy_backward_fast),
                   "ref": (softmax_cross_entropy_forward_ref, softmax_cross_entropy_backward_ref)},
    "embedding": {"fast": (embedding_forward, embedding_backward_fast),
                  "ref": (embedding_forward, embedding_backward_ref)},
}


def _check(f, params, analytic):
    """Check every entry of every named input; assert the max relative error is within TOL."""
    errs = check_named(f, params, analytic, list(params), floor=FLOOR)
    assert len(errs) == len(params) and max(errs.values()) <= TOL, errs
    return errs


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_grad(seed, bias):
    x = float_array(seed, (2, 3, 5))                                   # (B,T,Cin)
    w = float_array(seed + 10, (5, 7))                                 # (Cin,Cout)
    b = float_array(seed + 20, (7,), scale=0.5) if bias else None      # (Cout,)
    G = float_array(seed + 30, (2, 3, 7))                              # (B,T,Cout) upstream gradient

    def f():
        return np.sum(linear_forward(x, w, b)[0] * G)

    _, cache = linear_forward(x, w, b)
    dx, dw, db = linear_backward(G, cache)
    params, analytic = {"x": x, "w": w}, {"x": dx, "w": dw}
    if bias:
        params["b"], analytic["b"] = b, db
    _check(f, params, analytic)


def test_linear_backward_skips():
    x, w = float_array(0, (4, 3)), float_array(1, (3, 2))              # (N,Cin), (Cin,Cout)
    _, cache = linear_forward(x, w)
    dout = float_array(2, (4, 2))                                      # (N,Cout)
    dx, dw, db = linear_backward(dout, cache, need_dw=False)
    assert dw is None and db is None
    np.testing.assert_array_equal(dx, dout @ w.T)                     # exact: the same BLAS call on the same buffers
    dx, dw, db = linear_backward(dout, cache, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw, x.T @ dout)                     # exact: the same BLAS call on the same buffers


@pytest.mark.parametrize("impl", ["fast", "ref"])
@pytest.mark.parametrize("seed", SEEDS)
def test_layernorm_grad(impl, seed):
    fwd, bwd = IMPLS["layernorm"][impl]
    x = float_array(seed, (2, 3, 7), scale=2.0, shift=0.5)            # (B,T,C)
    w = float_array(seed + 10, (7,), scale=0.3, shift=1.0)             # (C,) gain 1 + 0.3 N
    b = float_array(seed + 20, (7,), scale=0.1)                        # (C,)
    G = float_array(seed + 30, (2, 3, 7))                              # (B,T,C)

    def f():
        return np.sum(fwd(x, w, b)[0] * G)

    dx, dw, db = bwd(G, fwd(x, w, b)[1])
    _check(f, {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db})


@pytest.mark.parametrize("impl", ["fast", "ref"])
@pytest.mark.parametrize("seed", SEEDS)
def test_gelu_grad(impl, seed):
    fwd, bwd = IMPLS["gelu"][impl]
    x = float_array(seed, (3, 4, 5), scale=2.0)                        # (...) spans the curved region
    G = float_array(seed + 10, (3, 4, 5))                              # (...)

    def f():
        return np.sum(fwd(x)[0] * G)

    dx = bwd(G, fwd(x)[1])
    _check(f, {"x": x}, {"x": dx})


@pytest.mark.parametrize("impl", ["fast", "ref"])
@pytest.mark.parametrize("B,T,NH,hs", [(2, 6, 3, 3), (1, 5, 2, 5)])
def test_attention_grad(impl, B, T, NH, hs):
    fwd, bwd = IMPLS["attention"][impl]
    qkv = float_array(T, (B, T, 3 * NH * hs))                          # (B,T,3C)
    G = float_array(T + 1, (B, T, NH * hs))                            # (B,T,C)

    def f():
        return np.sum(fwd(qkv, NH)[0] * G)

    dqkv = bwd(G, fwd(qkv, NH)[1])
    _check(f, {"qkv": qkv}, {"qkv": dqkv})


@pytest.mark.parametrize("impl", ["fast", "ref"])
@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_ce_grad(impl, seed):
    fwd, bwd = IMPLS["softmax_ce"][impl]
    N, V = 10, 7
    rng = np.random.default_rng(seed)
    logits = float_array(seed, (N, V), scale=2.0)                      # (N,V)
    targets = rng.integers(0, V, size=N)                               # (N,)
    ignore = np.zeros(N, dtype=bool)                                   # (N,)
    ignore[rng.choice(N, size=3, replace=False)] = True
    dloss = 1.7

    def f():
        return dloss * fwd(logits, targets, ignore)[0]

    dlogits = bwd(dloss, fwd(logits, targets, ignore)[1])
    assert np.all(dlogits[ignore] == 0)
    _check(f, {"logits": logits}, {"logits": dlogits})


@pytest.mark.parametrize("impl", ["fast", "ref"])
def test_softmax_ce_backward_inplace_matches(impl):
    fwd, bwd = IMPLS["softmax_ce"][impl]
    logits = float_array(3, (6, 5))                                    # (N,V)
    targets = np.array([0, 4, 4, 1, 2, 3])                             # (N,)
    expect = bwd(0.3, fwd(logits, targets)[1])
    _, cache = fwd(logits, targets)
    probs = cache[0]
    got = bwd(0.3, cache, inplace=True)
    assert got is probs                                                # written over the cached probs
    assert cache[0] is None                                            # and the cache is marked spent
    np.testing.assert_array_equal(got, expect)    # exact: elementwise ops only (no reduction), correctly rounded
    with pytest.raises(RunError, match="spent"):
        bwd(0.3, cache)


@pytest.mark.parametrize("impl", ["fast", "ref"])
def test_embedding_grad(impl):
    fwd, bwd = IMPLS["embedding"][impl]
    ids = np.array([[1, 3, 1, 0, 3], [3, 3, 2, 1, 1]])                # (B,T) repeats; rows 4, 5 unused
    table = float_array(0, (6, 4))                                     # (V,C)
    G = float_array(1, (2, 5, 4))                                      # (B,T,C)

    def f():
        return np.sum(fwd(ids, table)[0] * G)

    dtable = bwd(G, fwd(ids, table)[1])
    assert np.all(dtable[4:] == 0)
    _check(f, {"table": table}, {"table": dtable})


# ----------------------------------------------------------------------------------------------
# the helpers themselves (alh_ref.gradcheck)

def test_rel_error():
    assert rel_error([1.0, -2.0], [1.0, -2.0]) == 0.0
    assert rel_error([1.0, 2.0], [1.1, 2.0]) == pytest.approx(0.1 / 1.1)
    assert rel_error([0.0], [1e-12]) == pytest.approx(1e-2)             # floor 1e-10 in the denominator
    assert rel_error([0.0], [1e-12], floor=1e-2) == pytest.approx(1e-10)
    assert rel_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0
    with pytest.raises(InputError, match="shapes"):
        rel_error(np.zeros(2), np.zeros(3))


def test_numerical_grad_of_known_function_restores_input():
    x = float_array(5, (3, 4))                                         # (3,4)
    before = x.copy()                                                  # (3,4)
    G = float_array(6, (3, 4))                                         # (3,4)

    def f():
        return np.sum(np.sin(x) * G)

    g = numerical_grad(f, x)
    assert g.shape == x.shape and x.tobytes() == before.tobytes()
    assert rel_error(np.cos(x) * G, g, floor=1e-2) < 1e-8
    idx = [0, 7, 11]
    # exact: each entry is the same two evaluations of f on the same x, made by the same code
    np.testing.assert_array_equal(numerical_grad(f, x, index=idx), g.reshape(-1)[idx])
    with pytest.raises(InputError, match="float64"):
        numerical_grad(f, x.astype(np.float32))


def test_check_named_samples_and_detects_errors():
    params = {"a": float_array(7, (50,)), "b": float_array(8, (2, 3))}  # (50,), (2,3)

    def f():
        return np.sum(params["a"] ** 2) + np.sum(np.exp(params["b"]))

    good = {"a": 2 * params["a"], "b": np.exp(params["b"])}
    errs = check_named(f, params, good, ["a", "b"], n_samples=10, floor=FLOOR)
    assert list(errs) == ["a", "b"] and max(errs.values()) < 1e-8
    wrong = {"a": good["a"], "b": good["b"] * (1 + 1e-4)}
    assert check_named(f, params, wrong, ["b"], floor=FLOOR)["b"] > 1e-5
    with pytest.raises(InputError, match="shape"):
        check_named(f, params, {"a": good["a"][:3]}, ["a"])
