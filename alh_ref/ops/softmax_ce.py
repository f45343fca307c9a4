"""Softmax and mean cross-entropy over the rows of a logits matrix, fused.

loss = sum_i w_i * (logsumexp(z_i) - z_i[y_i]) / sum_i w_i, with w_i = 0 for ignored positions
and 1 otherwise. ``softmax_cross_entropy_forward_fast`` / ``..._backward_fast`` run the Numba
kernels; ``*_ref`` are the NumPy twins; ``softmax_cross_entropy_forward`` / ``..._backward`` call one
or the other, by ``alh_ref.ops.current()``. Derivation: docs/ops/softmax_ce.md.
"""
import numpy as np

from ..errors import RunError
from ._jit import fexp, kernel, rescale, rowmax
from .impl import dispatch


def softmax_ref(z):
    """Row softmax, NumPy reference.

    Parameters
    ----------
    z : ndarray (..., V)

    Returns
    -------
    p : ndarray (..., V)   p = exp(z - max z) / sum exp(z - max z)
    """
    e = np.exp(z - z.max(axis=-1, keepdims=True))          # (...,V)
    return e / e.sum(axis=-1, keepdims=True)               # (...,V)


def _weights(targets, ignore, dtype):
    """(N,) 0/1 weights of the positions that count, and their count (>= 1 to avoid 0/0)."""
    w = np.ones(targets.shape[0], dtype=dtype) if ignore is None else (~ignore.reshape(-1)).astype(dtype)  # (N,)
    return w, max(float(w.sum()), 1.0)


def _unspent(cache):
    """The cached probs (N,V), or RunError if an in-place backward has already written over them."""
    if cache[0] is None:
        raise RunError("this softmax-cross-entropy cache was spent by an in-place backward; run the forward again")
    return cache[0]


def softmax_cross_entropy_forward_ref(logits, targets, ignore=None):
    """Mean cross-entropy of softmax(logits) against integer targets, NumPy reference.

    Parameters
    ----------
    logits : ndarray (N, V), float32 or float64
    targets : ndarray (N,), integer in [0, V)
    ignore : ndarray (N,) bool or None    True where a position does not count

    Returns
    -------
    loss : float (numpy scalar of logits' dtype)  loss = sum_i w_i (lse(z_i) - z_i[y_i]) / sum_i w_i
    cache : list [probs (N,V), targets (N,), w (N,), count float]   (a list: an in-place backward marks it spent)
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (N,V)
    lse = np.log(np.exp(shifted).sum(axis=-1))              # (N,)  log-sum-exp of the shifted row
    probs = softmax_ref(logits)                             # (N,V)
    w, count = _weights(targets, ignore, logits.dtype)      # (N,), float
    nll = lse - shifted[np.arange(targets.shape[0]), targets]  # (N,)  -log p[y], finite even when p[y] underflows
    loss = logits.dtype.type((nll.astype(np.float64) * w).sum() / count)
    return loss, [probs, targets, w, count]


def softmax_cross_entropy_backward_ref(dloss, cache, *, inplace=False):
    """Backward of the mean cross-entropy, NumPy reference.

    Parameters
    ----------
    dloss : float     dL/dloss (1.0 when loss is the objective)
    cache : list [probs, targets, w, count] from the forward
    inplace : bool    write dlogits over the cached probs (saves a (N,V) buffer); the cache is then
        spent: a second backward on it raises RunError instead of silently returning wrong gradients

    Returns
    -------
    dlogits : ndarray (N, V)   dlogits_i = dloss * w_i / count * (p_i - onehot(y_i))
    """
    probs = _unspent(cache)
    _, targets, w, count = cache
    d = probs if inplace else probs.copy()                  # (N,V)
    d[np.arange(targets.shape[0]), targets] -= 1            # (N,V)  p - onehot(y)
    d *= (w * probs.dtype.type(dloss / count))[:, None]     # (N,V)
    if inplace:
        cache[0] = None                                     # probs now hold dlogits
    return d


@kernel
def _softmax_ce_forward_kernel(logits, targets, w, probs, nll):
    """Row by row: probs = softmax(logits); nll_i = w_i (log sum_j exp(z_ij - max_i) - (z_iy - max_i)).

    logits, probs: (N,V) (float32 maths stays float32: fexp vectorises the exp pass);
    targets: (N,) int; w: (N,) 0/1 of logits' dtype; nll: (N,) float64 (lse - z_y, finite even when
    p_y underflows).
    """
    N, V = logits.shape
    zero = logits.dtype.type(0)
    one = logits.dtype.type(1)
    for i in range(N):
        z = logits[i]                                       # (V,)
        p = probs[i]                                        # (V,)
        mx = rowmax(z, V)
        tot = zero
        for j in range(V):
            e = fexp(z[j] - mx)
            p[j] = e
            tot += e
        rescale(p, V, one / tot)                            # p /= tot, as a multiply (see _jit.rescale)
        nll[i] = w[i] * (np.log(np.float64(tot)) - np.float64(z[targets[i]] - mx))


@kernel
def _softmax_ce_backward_kernel(probs, targets, w, scale, dlogits):
    # probs, dlogits: (N,V) (may be the same buffer); targets, w: (N,)
    N, V = probs.shape
    for i in range(N):
        s = w[i] * scale
        for j in range(V):
            dlogits[i, j] = probs[i, j] * s
        dlogits[i, targets[i]] -= s


def softmax_cross_entropy_forward_fast(logits, targets, ignore=None):
    """Fused softmax + mean cross-entropy (Numba kernel). Same contract as :func:`softmax_cross_entropy_forward_ref`."""
    logits = np.ascontiguousarray(logits)
    N = logits.shape[0]
    w, count = _weights(targets, ignore, logits.dtype)      # (N,), float
    probs = np.empty_like(logits)                           # (N,V)
    nll = np.empty(N, dtype=np.float64)                     # (N,)
    _softmax_ce_forward_kernel(logits, targets, w, probs, nll)
    return logits.dtype.type(nll.sum() / count), [probs, targets, w, count]


def softmax_cross_entropy_backward_fast(dloss, cache, *, inplace=False):
    """Backward of the fused softmax + cross-entropy (Numba kernel). Same contract as :func:`softmax_cross_entropy_backward_ref`."""
    probs = _unspent(cache)
    _, targets, w, count = cache
    d = probs if inplace else np.empty_like(probs)          # (N,V)
    _softmax_ce_backward_kernel(probs, targets, w, probs.dtype.type(dloss / count), d)
    if inplace:
        cache[0] = None                                     # probs now hold dlogits
    return d


softmax_cross_entropy_forward = dispatch(softmax_cross_entropy_forward_fast, softmax_cross_entropy_forward_ref)
softmax_cross_entropy_backward = dispatch(softmax_cross_entropy_backward_fast, softmax_cross_entropy_backward_ref)
