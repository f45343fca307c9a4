"""GELU, tanh approximation (as GPT-2): y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

``gelu_forward`` / ``gelu_backward`` run the Numba kernels; ``*_ref`` are the NumPy twins.
Derivation: docs/ops/gelu.md.
"""
import math

import numpy as np

from ._jit import kernel

GELU_SCALE = math.sqrt(2.0 / math.pi)
GELU_CUBE = 0.044715


def gelu_forward_ref(x):
    """GELU forward, NumPy reference.

    Parameters
    ----------
    x : ndarray (...), float32 or float64

    Returns
    -------
    out : ndarray (...)     out = 0.5 x (1 + tanh(s (x + a x^3))),  s = sqrt(2/pi), a = 0.044715
    cache : tuple (x,)
    """
    s = x.dtype.type(GELU_SCALE)
    a = x.dtype.type(GELU_CUBE)
    out = 0.5 * x * (1.0 + np.tanh(s * (x + a * x**3)))     # (...) -> (...)
    return out.astype(x.dtype, copy=False), (x,)


def gelu_backward_ref(dout, cache):
    """GELU backward, NumPy reference.

    Parameters
    ----------
    dout : ndarray (...)   dL/dout
    cache : tuple (x,)

    Returns
    -------
    dx : ndarray (...)     dx = dout * (0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 a x^2)),  t = tanh(s (x + a x^3))
    """
    (x,) = cache
    s = x.dtype.type(GELU_SCALE)
    a = x.dtype.type(GELU_CUBE)
    t = np.tanh(s * (x + a * x**3))                                        # (...)
    local = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * s * (1.0 + 3.0 * a * x * x)  # (...)
    return (dout * local).astype(x.dtype, copy=False)


@kernel
def _gelu_forward_kernel(x, out):
    # x, out: (n,) flat
    s = x.dtype.type(GELU_SCALE)
    a = x.dtype.type(GELU_CUBE)
    half = x.dtype.type(0.5)
    one = x.dtype.type(1)
    for i in range(x.shape[0]):
        xi = x[i]
        out[i] = half * xi * (one + np.tanh(s * (xi + a * xi * xi * xi)))


@kernel
def _gelu_backward_kernel(dout, x, dx):
    # dout, x, dx: (n,) flat
    s = x.dtype.type(GELU_SCALE)
    a = x.dtype.type(GELU_CUBE)
    half = x.dtype.type(0.5)
    one = x.dtype.type(1)
    three = x.dtype.type(3)
    for i in range(x.shape[0]):
        xi = x[i]
        t = np.tanh(s * (xi + a * xi * xi * xi))
        dx[i] = dout[i] * (half * (one + t) + half * xi * (one - t * t) * s * (one + three * a * xi * xi))


def gelu_forward(x):
    """GELU forward (Numba kernel). Same contract as :func:`gelu_forward_ref`."""
    xf = np.ascontiguousarray(x).reshape(-1)                # (...) -> (n,)
    out = np.empty_like(xf)                                 # (n,)
    _gelu_forward_kernel(xf, out)
    return out.reshape(x.shape), (x,)


def gelu_backward(dout, cache):
    """GELU backward (Numba kernel). Same contract as :func:`gelu_backward_ref`."""
    (x,) = cache
    xf = np.ascontiguousarray(x).reshape(-1)                # (n,)
    df = np.ascontiguousarray(dout).reshape(-1)             # (n,)
    dx = np.empty_like(xf)                                  # (n,)
    _gelu_backward_kernel(df, xf, dx)
    return dx.reshape(x.shape)
