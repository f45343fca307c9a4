"""Transform families: the "hypersurfaces" a hypernetwork generates, one per position.

A family maps per-position parameters theta_t to an affine map of latent vectors, T_t e = A_t e + b_t,
that is applied to a vector in O(KC), O(RC) or O(C) — no (C,C) matrix is ever built:

    householder  A = H(u_{K-1}) ... H(u_0),  H(u) = I - 2 u u^T / (u^T u),  b = 0   (orthogonal)   alh/householder.py
    lowrank      A = I + U^T V  (U, V: (R,C) rows),  b = 0;  U zero at init                  alh/lowrank.py
    film         A = diag(1 + gamma),  b = beta;  gamma, beta zero at init                   alh/film.py

Every family has ``y, off, cache = <family>_forward(theta, e, transpose)`` and
``dtheta, de = <family>_backward(dy, doff, cache)``: transpose=False gives y = T e (the input site:
latents entering the body); transpose=True gives y = A^T z and off = z . b, or None when b = 0 (the
output site: logits_v = z . (T e_v) = (A^T z) . e_v + z . b). This module is the table from a
family's name to those two functions. The head that produces theta is alh/theta_head.py.
Derivations: docs/alh.md.
"""
import numpy as np

from .film import film_backward, film_forward
from .householder import householder_backward, householder_forward
from .lowrank import lowrank_backward, lowrank_forward

FAMILIES = ("householder", "lowrank", "film")
_FORWARD = {"householder": householder_forward, "lowrank": lowrank_forward, "film": film_forward}
_BACKWARD = {"householder": householder_backward, "lowrank": lowrank_backward, "film": film_backward}


def transform_forward(family, theta, e, transpose=False):
    """Apply the family's transform to vectors.

    Parameters
    ----------
    family : "householder" | "lowrank" | "film"
    theta : dict of the family's parameters per position (see alh/theta_head.py), leading axes (B,S)
    e : ndarray (B,S,C)   vectors, one per position
    transpose : bool      False: y = A e + b (input site);  True: y = A^T e, off = e . b (output site)

    Returns
    -------
    y : ndarray (B,S,C);  off : ndarray (B,S) or None (None unless film, transposed)
    cache : (family, the family's cache)
    """
    y, off, cache = _FORWARD[family](theta, e, transpose)
    return y, off, (family, cache)


def transform_backward(dy, doff, cache):
    """Backward of :func:`transform_forward`.

    Parameters
    ----------
    dy : ndarray (B,S,C) dL/dy;  doff : ndarray (B,S) or None dL/doff
    cache : from transform_forward (run under the same implementation, alh_ref.ops.current())

    Returns
    -------
    dtheta : dict like theta (householder "a" (J,C) summed over positions);  de : ndarray (B,S,C)
    """
    family, family_cache = cache
    return _BACKWARD[family](dy, doff, family_cache)


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
