"""Transform families: the "hypersurfaces" a hypernetwork generates, one per position.

A family maps per-position parameters theta_t to an affine map of latent vectors, T_t e = A_t e + b_t,
that is applied to a vector in O(KC), O(RC) or O(C) — no (C,C) matrix is ever built:

    householder  A = H(u_K) ... H(u_1),  H(u) = I - 2 u u^T / (u^T u),  b = 0           (orthogonal)
                 pairs j = 1..J (K = 2J):  u_{2j-1} = a^_j,  u_{2j} = a^_j + P_j v_j,
                 a^_j = a_j / ||a_j|| (learned, shared by all positions), P_j = I - a^_j a^_j^T,
                 v_j (from the head) zero at init  =>  H(a^_j) H(a^_j) = I: identity at init.
                 ||u_{2j}||^2 = 1 + ||P_j v_j||^2 >= 1, so no reflector can degenerate.
    lowrank      A = I + U^T V  (U, V: (R,C) rows),  b = 0;  U zero at init.
    film         A = diag(1 + gamma),  b = beta;  gamma, beta zero at init.

Each family has a forward ``y, off, cache = apply_forward(theta, e, transpose)``:
transpose=False gives y = T e (the input site: latents entering the body); transpose=True gives
y = A^T z and off = z . b (the output site: logits_v = z . (T e_v) = (A^T z) . e_v + z . b).
The head (a linear map of the context vector) produces theta. Derivations: docs/alh.md.
"""
import numpy as np

from ..ops import linear_backward, linear_forward
from ..ops._jit import kernel

FAMILIES = ("householder", "lowrank", "film")


# ----------------------------------------------------------------------------------------------
# Head: context vectors -> transform parameters

def head_param_shapes(family, D, C, K=4, R=4):
    """Ordered shapes of the head's parameters.

    householder: alh.head.w (D, J*C), alh.head.b (J*C,), alh.head.a (J, C)  with J = K/2
    lowrank:     alh.head.w (D, 2*R*C), alh.head.b (2*R*C,)   columns [U | V]
    film:        alh.head.w (D, 2*C), alh.head.b (2*C,)       columns [gamma | beta]
    """
    if family == "householder":
        J = K // 2
        return {"alh.head.w": (D, J * C), "alh.head.b": (J * C,), "alh.head.a": (J, C)}
    if family == "lowrank":
        return {"alh.head.w": (D, 2 * R * C), "alh.head.b": (2 * R * C,)}
    if family == "film":
        return {"alh.head.w": (D, 2 * C), "alh.head.b": (2 * C,)}
    raise ValueError(f"unknown family {family!r}")


def head_init(family, D, C, K, R, rng, dtype):
    """Initial head parameters: everything that moves T away from the identity starts at zero.

    householder: w, b zero (so v = 0); a ~ N(0, 1) rows (any nonzero direction works).
    lowrank: the U columns of w and b zero; the V columns of w ~ N(0, 0.02^2), of b ~ N(0, 1/C)
             (so dL/dU is nonzero at init).
    film: w, b zero.
    """
    shapes = head_param_shapes(family, D, C, K, R)
    p = {n: np.zeros(s, dtype=dtype) for n, s in shapes.items()}
    if family == "householder":
        p["alh.head.a"] = rng.standard_normal(shapes["alh.head.a"]).astype(dtype)           # (J,C)
    elif family == "lowrank":
        RC = R * C
        p["alh.head.w"][:, RC:] = (0.02 * rng.standard_normal((D, RC))).astype(dtype)      # (D,RC)
        p["alh.head.b"][RC:] = (rng.standard_normal(RC) / np.sqrt(C)).astype(dtype)        # (RC,)
    return p


def theta_views(family, raw, C, K=4, R=4):
    """Split a head output (or its gradient) into the family's named parameters, as views.

    raw : ndarray (B,S,P).  Returns householder {"v": (B,S,J,C)}; lowrank {"U", "V": (B,S,R,C)};
    film {"gamma", "beta": (B,S,C)} — views into ``raw``, so writing a view writes ``raw``.
    """
    B, S, _ = raw.shape
    if family == "householder":
        return {"v": raw.reshape(B, S, K // 2, C)}                                          # (B,S,J,C)
    if family == "lowrank":
        r = raw.reshape(B, S, 2, R, C)                                                      # (B,S,P) -> (B,S,2,R,C)
        return {"U": r[:, :, 0], "V": r[:, :, 1]}                                           # 2 x (B,S,R,C)
    r = raw.reshape(B, S, 2, C)                                                             # (B,S,P) -> (B,S,2,C)
    return {"gamma": r[:, :, 0], "beta": r[:, :, 1]}                                        # 2 x (B,S,C)


def head_forward(hyp, family, c, C, K=4, R=4):
    """Transform parameters for every position.

    Parameters
    ----------
    hyp : dict with the head's named parameters
    c : ndarray (B,S,D)   context vectors
    C : int, K : int, R : int

    Returns
    -------
    theta : dict   householder {"v": (B,S,J,C), "a": (J,C)};  lowrank {"U": (B,S,R,C), "V": (B,S,R,C)};
                   film {"gamma": (B,S,C), "beta": (B,S,C)}     theta_raw = c @ w + b, split by theta_views
    cache : tuple
    """
    raw, c_lin = linear_forward(c, hyp["alh.head.w"], hyp["alh.head.b"])                    # (B,S,D) -> (B,S,P)
    theta = theta_views(family, raw, C, K, R)
    if family == "householder":
        theta["a"] = hyp["alh.head.a"]                                                      # (J,C) shared by all positions
    return theta, (family, c_lin, raw.shape, C, K, R)


def head_grad_buffers(cache, dtype):
    """Zeroed gradient buffers for :func:`head_backward`: draw (B,S,P) and dtheta, its views.

    Slot gradients from the two sites are accumulated into ``dtheta`` (householder "a" gets its
    own (J,C) buffer); ``draw`` then already holds dL/dtheta_raw, with no stacking copy.
    """
    family, _, raw_shape, C, K, R = cache
    draw = np.zeros(raw_shape, dtype=dtype)                                                 # (B,S,P)
    dtheta = theta_views(family, draw, C, K, R)
    if family == "householder":
        dtheta["a"] = np.zeros((K // 2, C), dtype=dtype)                                    # (J,C)
    return draw, dtheta


def head_backward(draw, dtheta, cache, frozen=frozenset()):
    """Backward of :func:`head_forward`.

    Parameters
    ----------
    draw : ndarray (B,S,P)   dL/dtheta_raw (from :func:`head_grad_buffers`, filled through dtheta)
    dtheta : dict of views into draw, plus householder "a" (J,C)
    frozen : set of parameter names whose gradients are not returned (decided per name: freezing
        alh.head.w keeps alh.head.b's gradient, and the dW matmul is skipped only when both are frozen)

    Returns
    -------
    grads : dict  alh.head.w (D,P) = c^T draw, alh.head.b (P,) = sum draw [, alh.head.a (J,C)], minus frozen
    dc : ndarray (B,S,D) = draw @ w^T
    """
    family, c_lin = cache[0], cache[1]
    need = not {"alh.head.w", "alh.head.b"} <= frozen                                       # db is free once dw runs
    dc, dw, db = linear_backward(draw, c_lin, need_dw=need)                                 # (B,S,P) -> (B,S,D)
    grads = {n: g for n, g in (("alh.head.w", dw), ("alh.head.b", db), ("alh.head.a", dtheta.get("a")))
             if g is not None and n not in frozen}                                          # decided per name
    return grads, dc


# ----------------------------------------------------------------------------------------------
# Householder

def reflect(u, s, x):
    """y = H(u) x = x - 2 (u . x) / s u,  s = u . u.  u (...,C) broadcasts against x (...,C)."""
    alpha = (u * x).sum(-1, keepdims=True)                                                  # (...,1)
    return x - (2.0 / s)[..., None] * alpha * u                                             # (...,C)


def reflect_backward(dy, u, s, x):
    """Backward of :func:`reflect`.

    dx = H(u) dy  (H symmetric);  du = -(2/s) (alpha dy + beta x) + (4 alpha beta / s^2) u,
    alpha = u . x, beta = u . dy.  Returns dx (...,C), du (...,C) (not summed over broadcast axes).
    """
    alpha = (u * x).sum(-1, keepdims=True)                                                  # (...,1)
    beta = (u * dy).sum(-1, keepdims=True)                                                  # (...,1)
    s_ = s[..., None]                                                                       # (...,1)
    dx = dy - (2.0 / s_) * beta * u                                                         # (...,C)
    du = -(2.0 / s_) * (alpha * dy + beta * x) + (4.0 * alpha * beta / (s_ * s_)) * u      # (...,C)
    return dx, du


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
    """y = A e (or A^T e) with A = H(u_K)...H(u_1); off is None (b = 0). NumPy reference.

    Parameters
    ----------
    theta : {"v": (B,S,J,C), "a": (J,C)}
    e : ndarray (B,S,C)
    transpose : bool

    Returns
    -------
    y : (B,S,C);  off : None;  cache
    """
    ahat, sa, u2, s2, anorm, proj = householder_vectors(theta)
    J = ahat.shape[0]
    ops = []                                                                                # (kind, j) in application order
    for j in range(J):
        ops += [("a", j), ("u", j)]                                                         # H(u_{2j-1}) first, then H(u_{2j})
    if transpose:
        ops.reverse()                                                                       # A^T = H(u_1) ... H(u_K)
    xs = []
    x = e
    for kind, j in ops:
        xs.append(x)
        if kind == "a":
            x = reflect(ahat[j], sa[j], x)                                                  # (B,S,C)
        else:
            x = reflect(u2[:, :, j], s2[:, :, j], x)                                        # (B,S,C)
    return x, None, ("householder_ref", theta, ahat, sa, u2, s2, anorm, proj, ops, xs)


def householder_backward_ref(dy, doff, cache):
    """Backward of :func:`householder_forward_ref`: returns dtheta {"v","a"}, de (B,S,C). NumPy reference."""
    _, theta, ahat, sa, u2, s2, anorm, proj, ops, xs = cache
    dahat = np.zeros_like(ahat)                                                             # (J,C)
    du2 = np.zeros_like(u2)                                                                 # (B,S,J,C)
    dx = dy
    for (kind, j), x in zip(reversed(ops), reversed(xs)):
        if kind == "a":
            dx, du = reflect_backward(dx, ahat[j], np.full(x.shape[:-1], sa[j]), x)         # (B,S,C)
            dahat[j] += du.reshape(-1, du.shape[-1]).sum(0)                                 # shared by all positions
        else:
            dx, du2[:, :, j] = reflect_backward(dx, u2[:, :, j], s2[:, :, j], x)            # (B,S,C)
    # (reflect_backward differentiates s = u . u too, so du already holds the whole dependence on u)
    dtheta = _householder_vectors_backward(du2, dahat, theta, ahat, anorm, proj)
    return dtheta, dx


def _householder_vectors_backward(du2, dahat, theta, ahat, anorm, proj):
    """Backward of :func:`householder_vectors`: from dL/du2 (B,S,J,C) and dL/dahat (J,C) to dv, da.

    u2 = a^ + v - (a^ . v) a^  and  a^ = a / ||a||  (docs/alh.md, "Householder backward").
    """
    v = theta["v"]
    # u2 = ahat + v - (ahat . v) ahat
    dproj = -(du2 * ahat).sum(-1)                                                           # (B,S,J)
    dv = du2 + dproj[..., None] * ahat                                                      # (B,S,J,C)  = P du2
    dahat += (du2 + dproj[..., None] * v - proj[..., None] * du2).reshape(-1, *ahat.shape).sum(0)  # (J,C)
    # ahat = a / ||a||
    da = (dahat - (dahat * ahat).sum(-1, keepdims=True) * ahat) / anorm[:, None]            # (J,C)
    return {"v": dv, "a": da}


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


def householder_forward(theta, e, transpose=False):
    """y = A e (or A^T e) with A = H(u_K)...H(u_1); off is None (b = 0). Numba kernel.

    Same contract as :func:`householder_forward_ref`.

    Parameters
    ----------
    theta : {"v": (B,S,J,C), "a": (J,C)}
    e : ndarray (B,S,C)
    transpose : bool

    Returns
    -------
    y : (B,S,C);  off : None;  cache
    """
    ahat, anorm, sa = _ahat(theta["a"])
    B, S, C = e.shape
    J = ahat.shape[0]
    e2 = np.ascontiguousarray(e).reshape(B * S, C)                                          # (N,C)
    vf = np.ascontiguousarray(theta["v"]).reshape(B * S, J, C)                              # (N,J,C)
    y = np.empty_like(e2)                                                                   # (N,C)
    _householder_forward_kernel(ahat, sa, vf, e2, transpose, y)
    return y.reshape(B, S, C), None, ("householder", ahat, anorm, sa, vf, e2, transpose)


def householder_backward(dy, doff, cache):
    """Backward of :func:`householder_forward` (Numba kernel): returns dtheta {"v","a"}, de (B,S,C)."""
    _, ahat, anorm, sa, vf, e2, transpose = cache
    N, J, C = vf.shape
    dx = np.empty_like(e2)                                                                  # (N,C)
    dv = np.empty_like(vf)                                                                  # (N,J,C)
    dahat = np.zeros_like(ahat)                                                             # (J,C)
    _householder_backward_kernel(ahat, sa, vf, e2, transpose, np.ascontiguousarray(dy).reshape(N, C), dx, dv, dahat)
    da = (dahat - (dahat * ahat).sum(-1, keepdims=True) * ahat) / anorm[:, None]            # (J,C)  a^ = a/||a||
    return {"v": dv.reshape(dy.shape[:-1] + (J, C)), "a": da}, dx.reshape(dy.shape)


# ----------------------------------------------------------------------------------------------
# Low rank

def lowrank_forward_ref(theta, e, transpose=False):
    """y = e + U^T (V e)  (or the transpose, y = e + V^T (U e)); off None. NumPy reference.

    theta : {"U": (B,S,R,C), "V": (B,S,R,C)};  e : (B,S,C).  Returns y (B,S,C), None, cache.
    """
    L, Rr = (theta["U"], theta["V"]) if transpose else (theta["V"], theta["U"])             # read with L, write with Rr
    s = (L * e[..., None, :]).sum(-1)                                                       # (B,S,R,C) * (B,S,1,C) -> (B,S,R)
    y = e + (s[..., None] * Rr).sum(-2)                                                     # (B,S,R,1) * (B,S,R,C) -> (B,S,C)
    return y, None, ("lowrank_ref", theta, e, s, transpose)


def lowrank_backward_ref(dy, doff, cache):
    """Backward of :func:`lowrank_forward_ref` (NumPy reference): dRr = s dy^T, ds = Rr dy, dL = ds e^T, de = dy + L^T ds."""
    _, theta, e, s, transpose = cache
    L, Rr = (theta["U"], theta["V"]) if transpose else (theta["V"], theta["U"])
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


def lowrank_forward(theta, e, transpose=False):
    """y = e + U^T (V e)  (or the transpose, y = e + V^T (U e)); off None. Numba kernel.

    Same contract as :func:`lowrank_forward_ref`: theta {"U": (B,S,R,C), "V": (B,S,R,C)} (strided
    views of the head output are read in place), e (B,S,C).
    """
    L, Rr = (theta["U"], theta["V"]) if transpose else (theta["V"], theta["U"])             # read with L, write with Rr
    y = np.empty_like(e)                                                                    # (B,S,C)
    s = np.empty(L.shape[:3], dtype=e.dtype)                                                # (B,S,R)
    _lowrank_forward_kernel(L, Rr, e, y, s)
    return y, None, ("lowrank", L, Rr, e, s, transpose)


def lowrank_backward(dy, doff, cache):
    """Backward of :func:`lowrank_forward` (Numba kernel): dRr = s dy^T, ds = Rr dy, dL = ds e^T, de = dy + L^T ds."""
    _, L, Rr, x, s, transpose = cache
    dL = np.empty(L.shape, dtype=x.dtype)                                                   # (B,S,R,C)
    dRr = np.empty(L.shape, dtype=x.dtype)                                                  # (B,S,R,C)
    dx = np.empty_like(x)                                                                   # (B,S,C)
    _lowrank_backward_kernel(L, Rr, x, s, dy, dL, dRr, dx)
    dtheta = {"U": dL, "V": dRr} if transpose else {"U": dRr, "V": dL}
    return dtheta, dx


# ----------------------------------------------------------------------------------------------
# FiLM

def film_forward(theta, e, transpose=False):
    """y = (1 + gamma) * e + beta;  transposed (output site): y = (1 + gamma) * z, off = z . beta.

    theta : {"gamma": (B,S,C), "beta": (B,S,C)};  e : (B,S,C).  Returns y (B,S,C), off (B,S) or None, cache.
    """
    g, b = theta["gamma"], theta["beta"]
    y = (1.0 + g) * e                                                                       # (B,S,C)
    if transpose:
        off = (e * b).sum(-1)                                                               # (B,S)
        return y, off, ("film", theta, e, transpose)
    return y + b, None, ("film", theta, e, transpose)


def film_backward(dy, doff, cache):
    """Backward of :func:`film_forward`: dgamma = dy * e, dbeta = dy (or doff * z), de = (1+gamma) dy (+ doff beta)."""
    _, theta, e, transpose = cache
    g, b = theta["gamma"], theta["beta"]
    dg = dy * e                                                                             # (B,S,C)
    de = (1.0 + g) * dy                                                                     # (B,S,C)
    if transpose:
        db = doff[..., None] * e                                                            # (B,S,C)
        de = de + doff[..., None] * b                                                       # (B,S,C)
    else:
        db = dy
    return {"gamma": dg, "beta": db}, de


_FORWARD = {"householder": householder_forward, "lowrank": lowrank_forward, "film": film_forward}
_BACKWARD = {"householder": householder_backward, "householder_ref": householder_backward_ref,
             "lowrank": lowrank_backward, "lowrank_ref": lowrank_backward_ref, "film": film_backward}


def transform_forward(family, theta, e, transpose=False):
    """Apply the family's transform to vectors: returns y (B,S,C), off (B,S) or None, cache."""
    return _FORWARD[family](theta, e, transpose)


def transform_backward(dy, doff, cache):
    """Backward of :func:`transform_forward`: returns dtheta (dict like theta), de (B,S,C)."""
    return _BACKWARD[cache[0]](dy, doff, cache)


def dense_matrix(family, theta_t, C):
    """The (C,C) matrix A and (C,) offset b of one position's transform (for tests and metrics only).

    theta_t : theta indexed at one position (householder "v" (J,C) with shared "a"; lowrank U, V (R,C);
    film gamma, beta (C,)).
    """
    I = np.eye(C)                                                                           # (C,C)
    th = {k: (val[None, None] if k != "a" else val) for k, val in theta_t.items()}          # add (B,S) = (1,1)
    cols = []
    for i in range(C):
        y, _, _ = transform_forward(family, th, I[i][None, None], False)                    # (1,1,C)
        cols.append(y[0, 0])
    zero, _, _ = transform_forward(family, th, np.zeros((1, 1, C)), False)                  # (1,1,C)
    b = zero[0, 0]                                                                          # (C,)
    A = np.stack(cols, axis=1) - b[:, None]                                                 # (C,C)  column i = T e_i - b
    return A, b
