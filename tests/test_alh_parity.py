"""The transform Numba kernels equal their NumPy twins (alh_ref/alh/householder.py, lowrank.py).

``householder_forward_fast`` / ``householder_backward_fast`` (fused kernels that build u2 = a^ + P v
on the fly) against ``householder_forward_ref`` / ``householder_backward_ref`` (one vectorised NumPy
reflection at a time), and likewise ``lowrank_*_fast`` against ``lowrank_*_ref``, on random shapes including C=1, J=1 and S=1, both orientations, float64
(1e-12 relative to the values' scale) and float32 (1e-4: a chain of 2J reflections in single
precision, summation order differing).
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds

from alh_ref.alh.householder import (householder_backward_fast, householder_backward_ref, householder_forward_fast,
                                     householder_forward_ref)
from alh_ref.alh.lowrank import lowrank_backward_fast, lowrank_backward_ref, lowrank_forward_fast, lowrank_forward_ref


@given(seed=seeds, B=st.integers(1, 3), S=st.integers(1, 6), J=st.integers(1, 3), C=st.integers(1, 9),
       transpose=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]),
       vscale=st.sampled_from([0.0, 1e-8, 1.0, 1e3]))
def test_householder_kernel_matches_twin(seed, B, S, J, C, transpose, dtype, vscale):
    rng = np.random.default_rng(seed)
    theta = {"v": (vscale * rng.standard_normal((B, S, J, C))).astype(dtype),          # (B,S,J,C)
             "a": rng.standard_normal((J, C)).astype(dtype)}                            # (J,C)
    e = rng.standard_normal((B, S, C)).astype(dtype)                                     # (B,S,C)
    dy = rng.standard_normal((B, S, C)).astype(dtype)                                    # (B,S,C)
    y, off, cache = householder_forward_fast(theta, e, transpose)
    y_r, off_r, cache_r = householder_forward_ref(theta, e, transpose)
    dth, de = householder_backward_fast(dy, None, cache)
    dth_r, de_r = householder_backward_ref(dy, None, cache_r)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    assert off is None and off_r is None
    for got, ref in ((y, y_r), (de, de_r), (dth["v"], dth_r["v"]), (dth["a"], dth_r["a"])):
        assert got.dtype == dtype and got.shape == ref.shape
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * scale)


@given(seed=seeds, B=st.integers(1, 3), S=st.integers(1, 6), R=st.integers(1, 4), C=st.integers(1, 9),
       transpose=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]))
def test_lowrank_kernel_matches_twin(seed, B, S, R, C, transpose, dtype):
    """lowrank_forward_fast/backward_fast (kernels) against lowrank_forward_ref/backward_ref, with U and V as
    non-contiguous views of one head output, as the head produces them."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((B, S, 2, R, C)).astype(dtype)                            # (B,S,2,R,C)
    theta = {"U": raw[:, :, 0], "V": raw[:, :, 1]}                                      # 2 x (B,S,R,C) views
    e = rng.standard_normal((B, S, C)).astype(dtype)                                     # (B,S,C)
    dy = rng.standard_normal((B, S, C)).astype(dtype)                                    # (B,S,C)
    y, _, cache = lowrank_forward_fast(theta, e, transpose)
    y_r, _, cache_r = lowrank_forward_ref(theta, e, transpose)
    dth, de = lowrank_backward_fast(dy, None, cache)
    dth_r, de_r = lowrank_backward_ref(dy, None, cache_r)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for got, ref in ((y, y_r), (de, de_r), (dth["U"], dth_r["U"]), (dth["V"], dth_r["V"])):
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * max(1.0, float(np.abs(ref).max())))
