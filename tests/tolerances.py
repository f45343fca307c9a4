"""Comparison helpers shared by tests whose two sides compute the same sums in different orders.

Two runs of the same NumPy/BLAS code on the same inputs agree bit for bit only when they also share
the allocation history: SIMD reductions and OpenBLAS kernels pick their blocking and summation order
by buffer alignment, shape and CPU, so a run that allocated one buffer more (e.g. a dW it did not
skip) may round differently in the last bits. Such pairs are compared at a few ulps instead.
"""
import numpy as np

# A reordered sum of n float64 terms moves by at most ~n * eps * sum|terms|; the tests' sums have
# tens of terms and have been seen to differ by 1 ulp (AVX2 vs AVX-512). 64 ulps of the tensor's
# largest entry (~1.4e-14 relative) leaves room for that and is still ~8 orders of magnitude below
# any real bug (a dropped or doubled term changes entries by O(their size)).
ULPS = 64


def assert_ulp_close(actual, expected, ulps=ULPS, err_msg=""):
    """Assert |actual - expected| <= ulps * spacing(max |expected|) elementwise (same shape and dtype)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (err_msg, actual.shape, expected.shape)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    atol = ulps * np.spacing(np.asarray(max(scale, np.finfo(expected.dtype).tiny), dtype=expected.dtype))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=float(atol), err_msg=err_msg)
