"""Causal multi-head self-attention core (between the two projections).

qkv (B,T,3C) holds q, k, v in that order along the last axis; each is split into NH contiguous
heads of size hs = C/NH. out = concat_heads(softmax(q k^T / sqrt(hs) + causal mask) v).

``attention_forward_fast`` / ``attention_backward_fast`` are the fast path (batched BLAS matmuls for
the products, Numba kernels for the causal softmax and its backward); ``*_ref`` are the NumPy twins;
``attention_forward`` / ``attention_backward`` call one or the other, by ``alh_ref.ops.current()``.
Derivation: docs/ops/attention.md.
"""
import math

import numpy as np

from ._jit import fexp, kernel
from .impl import dispatch


def _split_heads(qkv, NH):
    """(B,T,3C) -> three (B,NH,T,hs) views: q, k, v."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    x = qkv.reshape(B, T, 3, NH, hs)                        # (B,T,3C) -> (B,T,3,NH,hs)
    x = x.transpose(2, 0, 3, 1, 4)                          # -> (3,B,NH,T,hs)
    return x[0], x[1], x[2]


def attention_forward_ref(qkv, NH):
    """Causal attention forward, NumPy reference.

    Parameters
    ----------
    qkv : ndarray (B, T, 3C), float32 or float64   q | k | v along the last axis
    NH : int                                        number of heads, C % NH == 0

    Returns
    -------
    out : ndarray (B, T, C)   out[b,t,h*hs:(h+1)*hs] = sum_{s<=t} att[b,h,t,s] v[b,h,s]
    cache : tuple (qkv, att (B,NH,T,T), NH)   att = softmax_s(q_t . k_s / sqrt(hs)), zero for s > t
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    q, k, v = _split_heads(qkv, NH)                         # 3 x (B,NH,T,hs)
    scale = qkv.dtype.type(1.0 / math.sqrt(hs))
    pre = (q @ k.transpose(0, 1, 3, 2)) * scale             # (B,NH,T,hs) @ (B,NH,hs,T) -> (B,NH,T,T)
    causal = np.tril(np.ones((T, T), dtype=bool))           # (T,T)  s <= t
    pre = np.where(causal, pre, -np.inf)                    # (B,NH,T,T)
    pre = pre - pre.max(axis=-1, keepdims=True)             # (B,NH,T,T)  stable softmax
    e = np.exp(pre)                                         # (B,NH,T,T)
    att = (e / e.sum(axis=-1, keepdims=True)).astype(qkv.dtype)  # (B,NH,T,T)
    y = att @ v                                             # (B,NH,T,T) @ (B,NH,T,hs) -> (B,NH,T,hs)
    out = y.transpose(0, 2, 1, 3).reshape(B, T, C)          # (B,NH,T,hs) -> (B,T,C)
    return out, (qkv, att, NH)


def attention_backward_ref(dout, cache):
    """Causal attention backward, NumPy reference.

    Parameters
    ----------
    dout : ndarray (B, T, C)   dL/dout
    cache : tuple (qkv, att, NH) from the forward

    Returns
    -------
    dqkv : ndarray (B, T, 3C)
        dv = att^T dy;  datt = dy v^T;  dpre = att * (datt - rowsum(datt * att));
        dq = dpre k / sqrt(hs);  dk = dpre^T q / sqrt(hs)
    """
    qkv, att, NH = cache
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    q, k, v = _split_heads(qkv, NH)                         # 3 x (B,NH,T,hs)
    scale = qkv.dtype.type(1.0 / math.sqrt(hs))
    dy = dout.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)   # (B,T,C) -> (B,NH,T,hs)
    dv = att.transpose(0, 1, 3, 2) @ dy                     # (B,NH,T,T) @ (B,NH,T,hs) -> (B,NH,T,hs); inverts y = att @ v
    datt = dy @ v.transpose(0, 1, 3, 2)                     # (B,NH,T,hs) @ (B,NH,hs,T) -> (B,NH,T,T)
    dpre = att * (datt - (datt * att).sum(-1, keepdims=True))  # (B,NH,T,T); inverts the softmax (masked entries have att = 0)
    dq = (dpre @ k) * scale                                 # (B,NH,T,T) @ (B,NH,T,hs) -> (B,NH,T,hs)
    dk = (dpre.transpose(0, 1, 3, 2) @ q) * scale           # (B,NH,T,T) @ (B,NH,T,hs) -> (B,NH,T,hs)
    dqkv = np.stack([dq, dk, dv], axis=0)                   # (3,B,NH,T,hs)
    return dqkv.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * C)  # (3,B,NH,T,hs) -> (B,T,3C)


# ----------------------------------------------------------------------------------------------
# Fast path: the T x T products per head are batched BLAS matmuls (np.matmul over (B,NH) on
# strided views of qkv, dqkv and out: no copies), and Numba kernels do what BLAS cannot, the causal
# softmax and its backward. The score matrices are stored key-major, P[m, s, t] = att[m, t, s]:
# the softmax over the keys s of a query t is then a column, and the kernels update T-long vectors
# (one max, sum or dot product per query) row after row, elementwise, where a query-major kernel
# reduces T short rows of varying length (about 1.5x slower here, docs/ops/attention.md). Every
# kernel loop runs over whole rows (a fixed trip count T, which vectorises with no scalar tail)
# and selects the masked entries away. The cache holds att = P.swapaxes(-1, -2), the query-major
# view the reference returns; BLAS reads either orientation.

@kernel
def _causal_softmax_kernel(P, scale):
    """In place, key-major: P[m,:,t] <- softmax over s <= t of scale * P[m,s,t]; 0 for s > t.

    Parameters
    ----------
    P : ndarray (M, T, T), float32 or float64   raw scores k_s . q_t in, probabilities out (P[m,s,t] = att[m,t,s])
    scale : scalar of P's dtype                 1 / sqrt(hs)
    """
    M, T, _ = P.shape
    zero = P.dtype.type(0)
    one = P.dtype.type(1)
    mx = np.empty(T, dtype=P.dtype)                         # (T,) running max over s, per query t
    tot = np.empty(T, dtype=P.dtype)                        # (T,) sum of exponentials, per query t
    for m in range(M):
        for t in range(T):
            mx[t] = P[m, 0, t]                              # key 0 is visible to every query
        for s in range(1, T):
            row = P[m, s]                                   # (T,) key s against every query
            for t in range(T):                              # whole rows, the keys s > t selected away:
                x = row[t]                                  # a fixed trip count T vectorises with no scalar tail
                mx[t] = x if (t >= s and x > mx[t]) else mx[t]
        for t in range(T):
            mx[t] *= scale                                  # scale > 0: max(scale a) = scale max(a)
            tot[t] = zero
        for s in range(T):
            row = P[m, s]                                   # (T,)
            for t in range(T):
                e = fexp(row[t] * scale - mx[t])
                e = e if t >= s else zero                   # the exact 0 of a masked entry
                row[t] = e
                tot[t] += e
        for t in range(T):
            tot[t] = one / tot[t]                           # T divisions per matrix, then multiplies
        for s in range(T):
            row = P[m, s]                                   # (T,)
            for t in range(T):
                row[t] *= tot[t]


@kernel
def _causal_softmax_backward_kernel(P, dP, scale):
    """In place, key-major: dP[m,s,t] <- scale * P (dP - sum_s' P dP); 0 (or -0) for s > t, where P = 0.

    Parameters
    ----------
    P : ndarray (M, T, T)    probabilities from :func:`_causal_softmax_kernel` (key-major), exactly 0 for s > t
    dP : ndarray (M, T, T)   dL/dP = (dy v^T)^T in, finite everywhere; dL/d(k.q) out (the softmax and the scale inverted)
    scale : scalar of P's dtype
    """
    M, T, _ = P.shape
    zero = P.dtype.type(0)
    dot = np.empty(T, dtype=P.dtype)                        # (T,) sum_s P dP, per query t
    for m in range(M):
        for t in range(T):
            dot[t] = zero
        for s in range(T):
            p = P[m, s]                                     # (T,)
            d = dP[m, s]                                    # (T,)
            for t in range(T):                              # masked entries add p * d = 0 * finite = 0
                dot[t] += p[t] * d[t]
        for s in range(T):
            p = P[m, s]                                     # (T,)
            d = dP[m, s]                                    # (T,)
            for t in range(T):
                d[t] = p[t] * (d[t] - dot[t]) * scale


# The four products att v, dpre k, att^T dy and dpre^T q by causal blocks. With h = T // 2, the
# queries t < h only need the keys s < h: each product is two batched matmuls over 3/4 of the
# square instead of one over all of it. At the model's sizes (T <= 128, hs <= 32) each per-head
# matmul of a half is also under OpenBLAS's threading threshold (M N K <= 4 * 65536), so it runs on
# the calling thread: the B NH small calls do not each wake and wait for a second BLAS thread,
# which on a busy 2-core machine cost 3-4x. The two score products (k q^T, v dy^T) cover the whole
# square: their masked entries are then finite, so the backward kernel can multiply them by the
# exact zeros of P instead of selecting them away, and one matmul per head was as fast as two.

def _causal_apply(a, y, out):
    """out = a @ y for a causal a (zero above the diagonal): rows t < h read only y[:h].

    a : (..., T, T);  y, out : (..., T, hs)
    """
    h = a.shape[-1] // 2
    np.matmul(a[..., :h, :h], y[..., :h, :], out=out[..., :h, :])                  # (h,h) @ (h,hs) -> (h,hs)
    np.matmul(a[..., h:, :], y, out=out[..., h:, :])                               # (T-h,T) @ (T,hs) -> (T-h,hs)


def _causal_apply_t(a, y, out):
    """out = a^T @ y for a causal a: rows s >= h of the result read only a[h:, h:] and y[h:].

    a : (..., T, T);  y, out : (..., T, hs)
    """
    h = a.shape[-1] // 2
    np.matmul(a[..., :, :h].swapaxes(-1, -2), y, out=out[..., :h, :])              # (h,T) @ (T,hs) -> (h,hs)
    np.matmul(a[..., h:, h:].swapaxes(-1, -2), y[..., h:, :], out=out[..., h:, :])  # (T-h,T-h) @ (T-h,hs) -> (T-h,hs)


def attention_forward_fast(qkv, NH):
    """Causal attention forward (BLAS products + Numba softmax). Same contract as :func:`attention_forward_ref`."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    qkv = np.ascontiguousarray(qkv)
    q, k, v = _split_heads(qkv, NH)                         # 3 x (B,NH,T,hs) strided views
    P = np.empty((B, NH, T, T), dtype=qkv.dtype)            # (B,NH,T,T) key-major: P[b,h,s,t]
    np.matmul(k, q.swapaxes(-1, -2), out=P)                 # (B,NH,T,hs) @ (B,NH,hs,T) -> (B,NH,T,T) scores k_s . q_t
    _causal_softmax_kernel(P.reshape(B * NH, T, T), qkv.dtype.type(1.0 / math.sqrt(hs)))  # in place -> probabilities
    att = P.swapaxes(-1, -2)                                # (B,NH,T,T) view, att[b,h,t,s] = P[b,h,s,t]
    out = np.empty((B, T, C), dtype=qkv.dtype)              # (B,T,C)
    y = out.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)     # (B,T,C) viewed as (B,NH,T,hs)
    _causal_apply(att, v, y)                                # (B,NH,T,T) @ (B,NH,T,hs) -> (B,NH,T,hs), into out
    return out, (qkv, att, NH)


def attention_backward_fast(dout, cache):
    """Causal attention backward (BLAS products + Numba softmax backward). Same contract as :func:`attention_backward_ref`."""
    qkv, att, NH = cache
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    q, k, v = _split_heads(qkv, NH)                         # 3 x (B,NH,T,hs) views
    dy = dout.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)   # (B,T,C) -> (B,NH,T,hs) view
    dqkv = np.empty_like(qkv)                               # (B,T,3C), every entry written below
    dq, dk, dv = _split_heads(dqkv, NH)                     # 3 x (B,NH,T,hs) views into dqkv
    _causal_apply_t(att, dy, dv)                            # (B,NH,T,T)^T @ (B,NH,T,hs) -> dv = att^T dy
    P = np.ascontiguousarray(att.swapaxes(-1, -2))          # (B,NH,T,T) key-major; no copy for the fast forward's cache
    dP = np.empty_like(P)                                   # (B,NH,T,T) key-major
    np.matmul(v, dy.swapaxes(-1, -2), out=dP)               # (B,NH,T,hs) @ (B,NH,hs,T) -> (B,NH,T,T) dP[s,t] = v_s . dy_t = datt[t,s]
    _causal_softmax_backward_kernel(P.reshape(B * NH, T, T), dP.reshape(B * NH, T, T),
                                    qkv.dtype.type(1.0 / math.sqrt(hs)))  # in place: datt -> dpre / sqrt(hs)
    dpre = dP.swapaxes(-1, -2)                              # (B,NH,T,T) view, query-major
    _causal_apply(dpre, k, dq)                              # (B,NH,T,T) @ (B,NH,T,hs) -> dq = dpre k
    _causal_apply_t(dpre, q, dk)                            # (B,NH,T,T)^T @ (B,NH,T,hs) -> dk = dpre^T q
    return dqkv


attention_forward = dispatch(attention_forward_fast, attention_forward_ref)
attention_backward = dispatch(attention_backward_fast, attention_backward_ref)
