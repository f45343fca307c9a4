"""The low-rank family: A = I + U^T V (U, V: (R,C) per position), b = 0; U is zero at init.

    A e   = e + U^T (V e)      (input site: read with V, write with U)
    A^T z = z + V^T (U z)      (output site: read with U, write with V)

Both directions are ``y = e + Rr^T (L e)`` with (L, Rr) = (V, U) or (U, V). ``lowrank_forward_fast``
/ ``lowrank_backward_fast`` are Numba kernels (one position at a time, reading strided views of the
head output in place); ``*_ref`` the NumPy twins; ``lowrank_forward`` / ``lowrank_backward`` call one
or the other, by ``alh_ref.ops.current()``. Derivation: docs/alh.md, sections 6.2 and 10.3.
"""
from typing import NamedTuple

import numpy as np

from ..ops._jit import kernel
from ..ops.impl import dispatch


class LowRankCache(NamedTuple):
    """What the low-rank backward needs (the same for the kernel and the twin)."""

    L: np.ndarray           # (B,S,R,C) the factor that reads e (V, or U when transposed)
    Rr: np.ndarray          # (B,S,R,C) the factor that writes y (U, or V when transposed)
    e: np.ndarray           # (B,S,C) input vectors
    s: np.ndarray           # (B,S,R) L e
    transpose: bool


def lowrank_forward_ref(theta, e, transpose=False):
    """y = e + U^T (V e)  (or the transpose, y = e + V^T (U e)); off None. NumPy reference.

    theta : {"U": (B,S,R,C), "V": (B,S,R,C)};  e : (B,S,C).  Returns y (B,S,C), None, cache (LowRankCache).
    """
    L, Rr = (theta["U"], theta["V"]) if transpose else (theta["V"], theta["U"])             # read with L, write with Rr
    s = (L * e[..., None, :]).sum(-1)                                                       # (B,S,R,C) * (B,S,1,C) -> (B,S,R)
    y = e + (s[..., None] * Rr).sum(-2)                                                     # (B,S,R,1) * (B,S,R,C) -> (B,S,C)
    return y, None, LowRankCache(L, Rr, e, s, transpose)


def lowrank_backward_ref(dy, doff, cache):
    """Backward of :func:`lowrank_forward_ref` (NumPy reference): dRr = s dy^T, ds = Rr dy, dL = ds e^T, de = dy + L^T ds."""
    L, Rr, e, s, transpose = cache
    dRr = s[..., :, None] * dy[..., None, :]                                                # (B,S,R,1)*(B,S,1,C) -> (B,S,R,C)
    ds = (Rr * dy[..., None, :]).sum(-1)                                                    # (B,S,R,C) * (B,S,1,C) -> (B,S,R)
    dL = ds[..., :, None] * e[..., None, :]                                                 # (B,S,R,C)
    de = dy + (ds[..., None] * L).sum(-2)                                                   # (B,S,R,1) * (B,S,R,C) -> (B,S,C)
    dtheta = {"U": dL, "V": dRr} if transpose else {"U": dRr, "V": dL}
    return dtheta, de


@kernel
def _lowrank_forward_kernel(L, Rr, x, y, s):
    # L, Rr: (B,S,R,C) strided views of the head output (read with L, write with Rr);
    # x, y: (B,S,C); s: (B,S,R)
    B, S, R, C = L.shape
    for b in range(B):
        for t in range(S):
            for c in range(C):
                y[b, t, c] = x[b, t, c]
            for r in range(R):
                acc = x.dtype.type(0)
                for c in range(C):
                    acc += L[b, t, r, c] * x[b, t, c]
                s[b, t, r] = acc
                for c in range(C):
                    y[b, t, c] += acc * Rr[b, t, r, c]


@kernel
def _lowrank_backward_kernel(L, Rr, x, s, dy, dL, dRr, dx):
    # L, Rr, dL, dRr: (B,S,R,C); x, dy, dx: (B,S,C); s: (B,S,R)
    B, S, R, C = L.shape
    for b in range(B):
        for t in range(S):
            for c in range(C):
                dx[b, t, c] = dy[b, t, c]
            for r in range(R):
                ds = x.dtype.type(0)
                for c in range(C):
                    ds += Rr[b, t, r, c] * dy[b, t, c]
                    dRr[b, t, r, c] = s[b, t, r] * dy[b, t, c]
                for c in range(C):
                    dL[b, t, r, c] = ds * x[b, t, c]
                    dx[b, t, c] += ds * L[b, t, r, c]


def lowrank_forward_fast(theta, e, transpose=False):
    """y = e + U^T (V e)  (or the transpose, y = e + V^T (U e)); off None. Numba kernel.

    Same contract as :func:`lowrank_forward_ref`: theta {"U": (B,S,R,C), "V": (B,S,R,C)} (strided
    views of the head output are read in place), e (B,S,C).
    """
    L, Rr = (theta["U"], theta["V"]) if transpose else (theta["V"], theta["U"])             # read with L, write with Rr
    y = np.empty_like(e)                                                                    # (B,S,C)
    s = np.empty(L.shape[:3], dtype=e.dtype)                                                # (B,S,R)
    _lowrank_forward_kernel(L, Rr, e, y, s)
    return y, None, LowRankCache(L, Rr, e, s, transpose)


def lowrank_backward_fast(dy, doff, cache):
    """Backward of :func:`lowrank_forward_fast` (Numba kernel). Same contract as :func:`lowrank_backward_ref`."""
    L, Rr, x, s, transpose = cache
    dL = np.empty(L.shape, dtype=x.dtype)                                                   # (B,S,R,C)
    dRr = np.empty(L.shape, dtype=x.dtype)                                                  # (B,S,R,C)
    dx = np.empty_like(x)                                                                   # (B,S,C)
    _lowrank_backward_kernel(L, Rr, x, s, dy, dL, dRr, dx)
    dtheta = {"U": dL, "V": dRr} if transpose else {"U": dRr, "V": dL}
    return dtheta, dx


lowrank_forward = dispatch(lowrank_forward_fast, lowrank_forward_ref)
lowrank_backward = dispatch(lowrank_backward_fast, lowrank_backward_ref)
