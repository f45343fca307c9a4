"""The hypernetwork's head: context vectors -> the transform parameters theta of every slot.

    theta_raw = c @ alh.head.w + alh.head.b        (B,S,D) -> (B,S,P), an affine layer (ops.linear)
    householder  v (B,S,J,C) = theta_raw;          a = alh.head.a (J,C), shared by every slot
    lowrank      U, V (B,S,R,C) = the two halves of theta_raw
    film         gamma, beta (B,S,C) = the two halves of theta_raw

Named ``theta_*`` (not ``head_*``) so it is never mistaken for the language-model head,
model.head_forward. Derivation: docs/alh.md, sections 5 and 10.
"""
from typing import NamedTuple

import numpy as np

from ..ops import linear_backward, linear_forward


class ThetaCache(NamedTuple):
    """What :func:`theta_backward` and :func:`theta_grad_buffers` need from :func:`theta_forward`."""

    family: str             # householder | lowrank | film
    c_lin: tuple            # the linear layer's cache (c (B,S,D), alh.head.w (D,P))
    raw_shape: tuple        # (B,S,P)
    C: int
    K: int
    R: int


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


def theta_forward(hyp, family, c, C, K=4, R=4):
    """Transform parameters for every slot: theta_raw = c @ alh.head.w + alh.head.b, split by family.

    Parameters
    ----------
    hyp : dict with the head's named parameters
    c : ndarray (B,S,D)   context vectors
    C : int, K : int, R : int

    Returns
    -------
    theta : dict   householder {"v": (B,S,J,C), "a": (J,C)};  lowrank {"U": (B,S,R,C), "V": (B,S,R,C)};
                   film {"gamma": (B,S,C), "beta": (B,S,C)}     theta_raw = c @ w + b, split by theta_views
    cache : ThetaCache
    """
    raw, c_lin = linear_forward(c, hyp["alh.head.w"], hyp["alh.head.b"])                    # (B,S,D) -> (B,S,P)
    theta = theta_views(family, raw, C, K, R)
    if family == "householder":
        theta["a"] = hyp["alh.head.a"]                                                      # (J,C) shared by all positions
    return theta, ThetaCache(family, c_lin, raw.shape, C, K, R)


def theta_grad_buffers(cache, dtype):
    """Zeroed gradient buffers for :func:`theta_backward`: draw (B,S,P) and dtheta, its views.

    Slot gradients from the two sites are accumulated into ``dtheta`` (householder "a" gets its
    own (J,C) buffer); ``draw`` then already holds dL/dtheta_raw, with no stacking copy.
    """
    draw = np.zeros(cache.raw_shape, dtype=dtype)                                           # (B,S,P)
    dtheta = theta_views(cache.family, draw, cache.C, cache.K, cache.R)
    if cache.family == "householder":
        dtheta["a"] = np.zeros((cache.K // 2, cache.C), dtype=dtype)                        # (J,C)
    return draw, dtheta


def theta_backward(draw, dtheta, cache, *, frozen=frozenset()):
    """Backward of :func:`theta_forward`.

    Parameters
    ----------
    draw, dtheta : the upstream gradient dL/dtheta, as :func:`theta_grad_buffers` gives it and the
        sites filled it: draw (B,S,P) = dL/dtheta_raw, dtheta its views plus householder "a" (J,C)
    cache : ThetaCache from theta_forward
    frozen : set of parameter names whose gradients are not returned (decided per name: freezing
        alh.head.w keeps alh.head.b's gradient, and the dW matmul is skipped only when both are frozen)

    Returns
    -------
    grads : dict  alh.head.w (D,P) = c^T draw, alh.head.b (P,) = sum draw [, alh.head.a (J,C)], minus frozen
    dc : ndarray (B,S,D) = draw @ w^T
    """
    need = not {"alh.head.w", "alh.head.b"} <= frozen                                       # db is free once dw runs
    dc, dw, db = linear_backward(draw, cache.c_lin, need_dw=need)                           # (B,S,P) -> (B,S,D)
    grads = {n: g for n, g in (("alh.head.w", dw), ("alh.head.b", db), ("alh.head.a", dtheta.get("a")))
             if g is not None and n not in frozen}                                          # decided per name
    return grads, dc
