"""LayerNorm over the last axis: y = (x - mean) / sqrt(var + eps) * w + b.

``layernorm_forward_fast`` / ``layernorm_backward_fast`` run the Numba kernels; ``*_ref`` are the
pure-NumPy twins they are tested against (tests/test_ops_parity.py); ``layernorm_forward`` /
``layernorm_backward`` call one or the other, by ``alh_ref.ops.current()``. Derivation:
docs/ops/layernorm.md.
"""
import numpy as np

from ._jit import kernel
from .impl import dispatch

EPS = 1e-5


# ----------------------------------------------------------------------------------------------
# NumPy reference

def layernorm_forward_ref(x, w, b, eps=EPS):
    """LayerNorm forward, NumPy reference.

    Parameters
    ----------
    x : ndarray (..., C), float32 or float64
    w, b : ndarray (C,), same dtype (gain and bias)
    eps : float

    Returns
    -------
    out : ndarray (..., C)    out = (x - mu) * rstd * w + b,  rstd = 1/sqrt(var + eps), var biased
    cache : tuple (x, w, mean (...,), rstd (...,))
    """
    mean = x.mean(axis=-1)                                  # (...,C) -> (...,)
    xc = x - mean[..., None]                                # (...,C)
    var = (xc * xc).mean(axis=-1)                           # (...,C) -> (...,)
    rstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)       # (...,)
    out = xc * rstd[..., None] * w + b                      # (...,C)
    return out, (x, w, mean, rstd)


def layernorm_backward_ref(dout, cache, *, need_dw=True):
    """LayerNorm backward, NumPy reference.

    Parameters
    ----------
    dout : ndarray (..., C)   dL/dout
    cache : tuple (x, w, mean, rstd) from the forward
    need_dw : bool            False for a frozen LayerNorm (dw, db returned as None)

    Returns
    -------
    dx : ndarray (..., C)   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dout * w
    dw : ndarray (C,)       dw = sum(dout * xhat)
    db : ndarray (C,)       db = sum(dout)
    """
    x, w, mean, rstd = cache
    xhat = (x - mean[..., None]) * rstd[..., None]          # (...,C)   recompute, as in the forward
    g = dout * w                                            # (...,C)   inverts "* w"
    gm = g.mean(axis=-1, keepdims=True)                     # (...,1)
    gxm = (g * xhat).mean(axis=-1, keepdims=True)           # (...,1)
    dx = (g - gm - xhat * gxm) * rstd[..., None]            # (...,C)   inverts the normalisation
    dw = db = None
    if need_dw:
        dw = (dout * xhat).reshape(-1, x.shape[-1]).sum(0)  # (N,C) -> (C,)
        db = dout.reshape(-1, x.shape[-1]).sum(0)           # (N,C) -> (C,)
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# Numba kernels (one pass per row; float32 maths stays float32: constants are cast to the dtype)

@kernel
def _layernorm_forward_kernel(x, w, b, eps, out, mean, rstd):
    # x, out: (N,C); w, b: (C,); mean, rstd: (N,)
    N, C = x.shape
    n = x.dtype.type(C)                                     # C in x's dtype: an int divisor would promote float32 to float64
    for i in range(N):
        m = x.dtype.type(0)
        for c in range(C):
            m += x[i, c]
        m = m / n
        v = x.dtype.type(0)
        for c in range(C):
            d = x[i, c] - m
            v += d * d
        v = v / n
        r = x.dtype.type(1) / np.sqrt(v + eps)
        for c in range(C):
            out[i, c] = (x[i, c] - m) * r * w[c] + b[c]
        mean[i] = m
        rstd[i] = r


@kernel
def _layernorm_backward_kernel(dout, x, w, mean, rstd, dx, dw, db, need_dw):
    # dout, x, dx: (N,C); w, dw, db: (C,); mean, rstd: (N,)
    N, C = x.shape
    n = x.dtype.type(C)                                     # as in the forward: keep float32 maths float32
    for i in range(N):
        m = mean[i]
        r = rstd[i]
        gm = x.dtype.type(0)
        gxm = x.dtype.type(0)
        for c in range(C):
            xh = (x[i, c] - m) * r
            g = dout[i, c] * w[c]
            dx[i, c] = g                                    # g kept as rounded: an FMA of dout * w - gm would not cancel
            gm += g
            gxm += g * xh
            if need_dw:
                dw[c] += dout[i, c] * xh
                db[c] += dout[i, c]
        gm = gm / n
        gxm = gxm / n
        for c in range(C):
            xh = (x[i, c] - m) * r
            dx[i, c] = (dx[i, c] - gm - xh * gxm) * r


def layernorm_forward_fast(x, w, b, eps=EPS):
    """LayerNorm forward (Numba kernel). Same contract as :func:`layernorm_forward_ref`."""
    C = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, C)             # (...,C) -> (N,C)
    out = np.empty_like(x2)                                 # (N,C)
    mean = np.empty(x2.shape[0], dtype=x.dtype)             # (N,)
    rstd = np.empty(x2.shape[0], dtype=x.dtype)             # (N,)
    _layernorm_forward_kernel(x2, w, b, x.dtype.type(eps), out, mean, rstd)
    lead = x.shape[:-1]
    return out.reshape(x.shape), (x, w, mean.reshape(lead), rstd.reshape(lead))


def layernorm_backward_fast(dout, cache, *, need_dw=True):
    """LayerNorm backward (Numba kernel). Same contract as :func:`layernorm_backward_ref`."""
    x, w, mean, rstd = cache
    C = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, C)             # (N,C)
    d2 = np.ascontiguousarray(dout).reshape(-1, C)          # (N,C)
    dx = np.empty_like(x2)                                  # (N,C)
    dw = np.zeros(C, dtype=x.dtype)                         # (C,)
    db = np.zeros(C, dtype=x.dtype)                         # (C,)
    _layernorm_backward_kernel(d2, x2, w, mean.reshape(-1), rstd.reshape(-1), dx, dw, db, need_dw)
    if not need_dw:
        dw = db = None
    return dx.reshape(x.shape), dw, db


layernorm_forward = dispatch(layernorm_forward_fast, layernorm_forward_ref)
layernorm_backward = dispatch(layernorm_backward_fast, layernorm_backward_ref)
