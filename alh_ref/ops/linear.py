"""Affine layer y = x @ W + b (weights oriented (in, out), as in GPT-2 checkpoints).

The matmuls are BLAS calls: a matmul is already as fast as this machine allows. The bias is added
in place by ``bias_add``: the Numba kernel ``bias_add_fast`` (NumPy's broadcast ``out += b`` walks
the rows one short inner loop at a time and is 2-3x slower at the model's shapes) or its twin
``bias_add_ref``, which is that broadcast add, by ``alh_ref.ops.current()``.
Derivation: docs/ops/linear.md.
"""
import numpy as np

from ._jit import kernel
from .impl import dispatch


def bias_add_ref(out, b):
    """In place: every row of ``out`` plus ``b``, NumPy reference (a broadcast add).

    Parameters
    ----------
    out : ndarray (N, Cout), float32 or float64, updated in place   out[n, :] <- out[n, :] + b
    b : ndarray (Cout,), same dtype
    """
    out += b                                              # (N,Cout) + (Cout,)


@kernel
def _bias_add_kernel(out, b):
    # out: (N,Cout) updated in place; b: (Cout,)
    N, C = out.shape
    for n in range(N):
        for c in range(C):
            out[n, c] += b[c]


def bias_add_fast(out, b):
    """In place: every row of ``out`` plus ``b`` (Numba kernel). Same contract as :func:`bias_add_ref`."""
    _bias_add_kernel(out, b)


bias_add = dispatch(bias_add_fast, bias_add_ref)


def linear_forward(x, w, b=None):
    """Affine map over the last axis.

    Parameters
    ----------
    x : ndarray (..., Cin), float32 or float64
    w : ndarray (Cin, Cout), same dtype
    b : ndarray (Cout,) or None

    Returns
    -------
    out : ndarray (..., Cout)          out = x @ w + b
    cache : tuple (x, w)
    """
    x2 = x.reshape(-1, x.shape[-1])                      # (...,Cin) -> (N,Cin)
    out = x2 @ w                                          # (N,Cin) @ (Cin,Cout) -> (N,Cout)
    if b is not None:
        bias_add(out, b)                                  # (N,Cout) + (Cout,), in place
    return out.reshape(*x.shape[:-1], w.shape[1]), (x, w)  # (N,Cout) -> (...,Cout)


def linear_backward(dout, cache, *, need_dx=True, need_dw=True):
    """Backward of :func:`linear_forward`.

    Parameters
    ----------
    dout : ndarray (..., Cout)   dL/dout
    cache : tuple (x, w) from the forward
    need_dx, need_dw : bool      skip work that nobody needs (frozen weights, first layer)

    Returns
    -------
    dx : ndarray (..., Cin) or None    dx = dout @ w^T
    dw : ndarray (Cin, Cout) or None   dw = x^T @ dout   (sum over all leading axes)
    db : ndarray (Cout,) or None       db = sum of dout over all leading axes
    """
    x, w = cache
    d2 = dout.reshape(-1, dout.shape[-1])                 # (...,Cout) -> (N,Cout)
    dx = dw = db = None
    if need_dx:
        dx = (d2 @ w.T).reshape(x.shape)                  # (N,Cout) @ (Cout,Cin) -> (...,Cin); inverts out = x @ w
    if need_dw:
        dw = x.reshape(-1, x.shape[-1]).T @ d2            # (Cin,N) @ (N,Cout) -> (Cin,Cout)
        db = np.ones(d2.shape[0], dtype=d2.dtype) @ d2    # (N,) @ (N,Cout) -> (Cout,); inverts out += b (a BLAS gemv: 2-4x faster than d2.sum(axis=0))
    return dx, dw, db
