"""The Householder family: A = H(u_{K-1}) ... H(u_0), a product of K = 2J reflections (orthogonal), b = 0.

    H(u) = I - 2 u u^T / (u . u)
    pairs j = 0..J-1 (0-based):  u_{2j} = a^_j,  u_{2j+1} = a^_j + P_j v_j,   a^_j = a_j / ||a_j||,  P_j = I - a^_j a^_j^T
    a (J,C) learned and shared by every position; v (B,S,J,C) from the head, zero at init, so that
    H(a^_j) H(a^_j) = I (identity at init);  ||u_{2j+1}||^2 = 1 + ||P_j v_j||^2 >= 1 (never degenerate).

``householder_forward_fast`` / ``householder_backward_fast`` are fused Numba kernels (the whole
chain of reflections per position, u2 built on the fly); ``*_ref`` the NumPy twins, one vectorised
reflection at a time; ``householder_forward`` / ``householder_backward`` call one or the other, by
``alh_ref.ops.current()``. Derivation: docs/alh.md, sections 6.1, 10.1 and 10.2.
"""
from typing import NamedTuple

import numpy as np

from ..ops._jit import kernel
from ..ops.impl import dispatch


class HouseholderRefCache(NamedTuple):
    """What :func:`householder_backward_ref` needs from :func:`householder_forward_ref`."""

    v: np.ndarray           # (B,S,J,C) head output
    ahat: np.ndarray        # (J,C) a^ = a / ||a||
    sa: np.ndarray          # (J,) a^ . a^
    u2: np.ndarray          # (B,S,J,C) a^ + P v
    s2: np.ndarray          # (B,S,J) u2 . u2
    anorm: np.ndarray       # (J,) ||a||
    proj: np.ndarray        # (B,S,J) a^ . v
    steps: list             # (kind "a" | "u", j) of each reflection, in application order
    xs: list                # the input (B,S,C) of each reflection, in application order


class HouseholderCache(NamedTuple):
    """What :func:`householder_backward_fast` needs from :func:`householder_forward_fast` (it recomputes the rest)."""

    ahat: np.ndarray        # (J,C)
    anorm: np.ndarray       # (J,)
    sa: np.ndarray          # (J,)
    v: np.ndarray           # (N,J,C) head output, flat positions
    e: np.ndarray           # (N,C) input vectors
    transpose: bool


def reflect(u, s, x):
    """y = H(u) x = x - 2 (u . x) / s u,  s = u . u.  u (...,C) broadcasts against x (...,C)."""
    alpha = (u * x).sum(-1, keepdims=True)                                                  # (...,1)
    return x - (2.0 / s)[..., None] * alpha * u                                             # (...,C)


def reflect_backward(dy, cache):
    """Backward of :func:`reflect`; ``cache`` is the forward's inputs ``(u, s, x)`` (it keeps none of its own).

    du = -(2/s) (alpha dy + beta x) + (4 alpha beta / s^2) u;  dx = H(u) dy  (H symmetric),
    alpha = u . x, beta = u . dy.  Returns du (...,C) (not summed over broadcast axes; s = u . u is
    differentiated too), dx (...,C): the order of reflect's arguments.
    """
    u, s, x = cache
    alpha = (u * x).sum(-1, keepdims=True)                                                  # (...,1)
    beta = (u * dy).sum(-1, keepdims=True)                                                  # (...,1)
    s_ = s[..., None]                                                                       # (...,1)
    dx = dy - (2.0 / s_) * beta * u                                                         # (...,C)
    du = -(2.0 / s_) * (alpha * dy + beta * x) + (4.0 * alpha * beta / (s_ * s_)) * u      # (...,C)
    return du, dx


def householder_vectors(theta):
    """The 2J reflector vectors from theta = {"v": (B,S,J,C), "a": (J,C)}.

    Returns ahat (J,C), sa (J,) = ahat.ahat, u2 (B,S,J,C), s2 (B,S,J) = u2.u2 (>= 1 up to rounding),
    anorm (J,), proj (B,S,J) = ahat . v.
    """
    v = theta["v"]
    ahat, anorm, sa = _ahat(theta["a"])                                                     # (J,C), (J,), (J,)
    proj = (v * ahat).sum(-1)                                                               # (B,S,J)
    u2 = ahat + v - proj[..., None] * ahat                                                  # (B,S,J,C)  a^ + P v
    s2 = (u2 * u2).sum(-1)                                                                  # (B,S,J)
    return ahat, sa, u2, s2, anorm, proj


def householder_forward_ref(theta, e, transpose=False):
    """y = A e (or A^T e) with A = H(u_{K-1})...H(u_0); off is None (b = 0). NumPy reference.

    Parameters
    ----------
    theta : {"v": (B,S,J,C), "a": (J,C)}
    e : ndarray (B,S,C)
    transpose : bool

    Returns
    -------
    y : (B,S,C);  off : None;  cache : HouseholderRefCache
    """
    ahat, sa, u2, s2, anorm, proj = householder_vectors(theta)
    J = ahat.shape[0]
    steps = []                                                                              # (kind, j) in application order
    for j in range(J):
        steps += [("a", j), ("u", j)]                                                       # H(u_{2j}) first, then H(u_{2j+1})
    if transpose:
        steps.reverse()                                                                     # A^T = H(u_0) ... H(u_{K-1})
    xs = []
    x = e
    for kind, j in steps:
        xs.append(x)
        if kind == "a":
            x = reflect(ahat[j], sa[j], x)                                                  # (B,S,C)
        else:
            x = reflect(u2[:, :, j], s2[:, :, j], x)                                        # (B,S,C)
    return x, None, HouseholderRefCache(theta["v"], ahat, sa, u2, s2, anorm, proj, steps, xs)


def householder_backward_ref(dy, doff, cache):
    """Backward of :func:`householder_forward_ref`: returns dtheta {"v","a"}, de (B,S,C). NumPy reference."""
    v, ahat, sa, u2, s2, anorm, proj, steps, xs = cache
    dahat = np.zeros_like(ahat)                                                             # (J,C)
    du2 = np.zeros_like(u2)                                                                 # (B,S,J,C)
    dx = dy
    for (kind, j), x in zip(reversed(steps), reversed(xs)):
        if kind == "a":
            du, dx = reflect_backward(dx, (ahat[j], np.full(x.shape[:-1], sa[j]), x))       # (B,S,C)
            dahat[j] += du.reshape(-1, du.shape[-1]).sum(0)                                 # shared by all positions
        else:
            du2[:, :, j], dx = reflect_backward(dx, (u2[:, :, j], s2[:, :, j], x))          # (B,S,C)
    # (reflect_backward differentiates s = u . u too, so du already holds the whole dependence on u)
    dtheta = _householder_vectors_backward(du2, dahat, v, ahat, anorm, proj)
    return dtheta, dx


def _householder_vectors_backward(du2, dahat, v, ahat, anorm, proj):
    """Backward of :func:`householder_vectors`: from dL/du2 (B,S,J,C) and dL/dahat (J,C) to dv, da.

    u2 = a^ + v - (a^ . v) a^  and  a^ = a / ||a||  (docs/alh.md, section 10.2).
    """
    # u2 = ahat + v - (ahat . v) ahat
    dproj = -(du2 * ahat).sum(-1)                                                           # (B,S,J)
    dv = du2 + dproj[..., None] * ahat                                                      # (B,S,J,C)  = P du2
    dahat += (du2 + dproj[..., None] * v - proj[..., None] * du2).reshape(-1, *ahat.shape).sum(0)  # (J,C)
    return {"v": dv, "a": _ahat_backward(dahat, ahat, anorm)}


# Numba kernels: the whole chain of 2J reflections for one position at a time, in registers/L1,
# with u2 = a^ + P v built on the fly (no (B,S,J,C) temporaries). Reflection k (0-based,
# application order k = 0..2J-1, reversed when transposed) is H(a^_j) for even k and H(u2_j) for
# odd k, with j = k // 2.

@kernel
def _householder_u2(ahat, v, n, u2, s2, proj):
    # ahat: (J,C); v: (N,J,C) -> u2: (J,C), s2: (J,), proj: (J,) for position n
    J, C = ahat.shape
    for j in range(J):
        p = v.dtype.type(0)
        for c in range(C):
            p += ahat[j, c] * v[n, j, c]
        ss = v.dtype.type(0)
        for c in range(C):
            u = ahat[j, c] + v[n, j, c] - p * ahat[j, c]
            u2[j, c] = u
            ss += u * u
        s2[j] = ss
        proj[j] = p


@kernel
def _householder_forward_kernel(ahat, sa, v, x, transpose, y):
    # ahat: (J,C); sa: (J,); v: (N,J,C); x, y: (N,C)
    N, C = x.shape
    J = ahat.shape[0]
    K = 2 * J
    two = x.dtype.type(2)
    u2 = np.empty((J, C), dtype=x.dtype)
    s2 = np.empty(J, dtype=x.dtype)
    proj = np.empty(J, dtype=x.dtype)
    for n in range(N):
        _householder_u2(ahat, v, n, u2, s2, proj)
        for c in range(C):
            y[n, c] = x[n, c]
        for step in range(K):
            k = K - 1 - step if transpose else step
            j = k // 2
            u = ahat[j] if k % 2 == 0 else u2[j]
            s = sa[j] if k % 2 == 0 else s2[j]
            alpha = x.dtype.type(0)
            for c in range(C):
                alpha += u[c] * y[n, c]
            f = two * alpha / s
            for c in range(C):
                y[n, c] -= f * u[c]


@kernel
def _householder_backward_kernel(ahat, sa, v, x, transpose, dy, dx, dv, dahat):
    # ahat, dahat: (J,C) (dahat zeroed by the caller); sa: (J,); v, dv: (N,J,C); x, dy, dx: (N,C).
    # Recomputes u2 and each reflection's input instead of storing them; then maps dL/du2 to
    # dL/dv = P du2 and accumulates dL/da^ (see _householder_vectors_backward, the NumPy form).
    N, C = x.shape
    J = ahat.shape[0]
    K = 2 * J
    two = x.dtype.type(2)
    four = x.dtype.type(4)
    buf = np.empty((K, C), dtype=x.dtype)                   # inputs of the K reflections
    u2 = np.empty((J, C), dtype=x.dtype)
    s2 = np.empty(J, dtype=x.dtype)
    proj = np.empty(J, dtype=x.dtype)
    du2 = np.empty((J, C), dtype=x.dtype)
    for n in range(N):
        _householder_u2(ahat, v, n, u2, s2, proj)
        du2[:] = 0
        for c in range(C):
            dx[n, c] = x[n, c]                              # dx doubles as the running vector
        for step in range(K):
            k = K - 1 - step if transpose else step
            j = k // 2
            u = ahat[j] if k % 2 == 0 else u2[j]
            s = sa[j] if k % 2 == 0 else s2[j]
            alpha = x.dtype.type(0)
            for c in range(C):
                buf[step, c] = dx[n, c]
                alpha += u[c] * dx[n, c]
            f = two * alpha / s
            for c in range(C):
                dx[n, c] -= f * u[c]
        for c in range(C):
            dx[n, c] = dy[n, c]                             # now the running gradient
        for step in range(K - 1, -1, -1):
            k = K - 1 - step if transpose else step
            j = k // 2
            u = ahat[j] if k % 2 == 0 else u2[j]
            s = sa[j] if k % 2 == 0 else s2[j]
            alpha = x.dtype.type(0)
            beta = x.dtype.type(0)
            for c in range(C):
                alpha += u[c] * buf[step, c]
                beta += u[c] * dx[n, c]
            f = two / s
            h = four * alpha * beta / (s * s)
            du = dahat[j] if k % 2 == 0 else du2[j]         # a view: accumulate into it
            for c in range(C):
                du[c] += h * u[c] - f * (alpha * dx[n, c] + beta * buf[step, c])
            for c in range(C):
                dx[n, c] -= f * beta * u[c]                 # dx = H(u) dy
        # u2 = a^ + v - (a^ . v) a^:  dv = du2 + dproj a^,  da^ += du2 + dproj v - proj du2,  dproj = -(du2 . a^)
        for j in range(J):
            dp = x.dtype.type(0)
            for c in range(C):
                dp -= du2[j, c] * ahat[j, c]
            for c in range(C):
                dv[n, j, c] = du2[j, c] + dp * ahat[j, c]
                dahat[j, c] += du2[j, c] + dp * v[n, j, c] - proj[j] * du2[j, c]


def _ahat(a):
    """a^ = a / ||a|| (J,C), its norms (J,) and sa = a^ . a^ (J,) (1 up to rounding)."""
    anorm = np.sqrt((a * a).sum(-1))                                                        # (J,)
    ahat = a / anorm[:, None]                                                               # (J,C)
    return ahat, anorm, (ahat * ahat).sum(-1)                                               # (J,C), (J,), (J,)


def _ahat_backward(dahat, ahat, anorm):
    """Backward of :func:`_ahat`: da = (da^ - (da^ . a^) a^) / ||a||  (J,C), orthogonal to a."""
    return (dahat - (dahat * ahat).sum(-1, keepdims=True) * ahat) / anorm[:, None]          # (J,C)


def householder_forward_fast(theta, e, transpose=False):
    """y = A e (or A^T e), the fused Numba kernel; same contract as :func:`householder_forward_ref` (cache: HouseholderCache)."""
    ahat, anorm, sa = _ahat(theta["a"])
    B, S, C = e.shape
    J = ahat.shape[0]
    e2 = np.ascontiguousarray(e).reshape(B * S, C)                                          # (N,C)
    vf = np.ascontiguousarray(theta["v"]).reshape(B * S, J, C)                              # (N,J,C)
    y = np.empty_like(e2)                                                                   # (N,C)
    _householder_forward_kernel(ahat, sa, vf, e2, transpose, y)
    return y.reshape(B, S, C), None, HouseholderCache(ahat, anorm, sa, vf, e2, transpose)


def householder_backward_fast(dy, doff, cache):
    """Backward of :func:`householder_forward_fast` (Numba kernel). Same contract as :func:`householder_backward_ref`."""
    ahat, anorm, sa, vf, e2, transpose = cache
    N, J, C = vf.shape
    dx = np.empty_like(e2)                                                                  # (N,C)
    dv = np.empty_like(vf)                                                                  # (N,J,C)
    dahat = np.zeros_like(ahat)                                                             # (J,C)
    _householder_backward_kernel(ahat, sa, vf, e2, transpose, np.ascontiguousarray(dy).reshape(N, C), dx, dv, dahat)
    return {"v": dv.reshape(dy.shape[:-1] + (J, C)), "a": _ahat_backward(dahat, ahat, anorm)}, dx.reshape(dy.shape)


householder_forward = dispatch(householder_forward_fast, householder_forward_ref)
householder_backward = dispatch(householder_backward_fast, householder_backward_ref)
