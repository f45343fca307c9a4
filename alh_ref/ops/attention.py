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

from ._jit import fexp, kernel, rescale, rowmax
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
# softmax and its backward, one row at a time. The products cover the causal blocks below (3/4 of
# the square; BLAS is ~5x faster than a loop that skips exactly the masked half); the kernels write
# exact zeros above the diagonal, so nothing masked leaks into att, dq or dk.

@kernel
def _causal_softmax_kernel(att, scale):
    """In place: att[m,t,:] <- softmax over s <= t of scale * att[m,t,s]; 0 for s > t.

    Parameters
    ----------
    att : ndarray (M, T, T), float32 or float64   raw scores q_t . k_s in, probabilities out
    scale : scalar of att's dtype                 1 / sqrt(hs)
    """
    M, T, _ = att.shape
    zero = att.dtype.type(0)
    one = att.dtype.type(1)
    for m in range(M):
        for t in range(T):
            row = att[m, t]                                 # (T,)
            mx = rowmax(row, t + 1) * scale                 # scale > 0: max(scale a) = scale max(a)
            tot = zero
            for s in range(t + 1):
                e = fexp(row[s] * scale - mx)
                row[s] = e
                tot += e
            rescale(row, t + 1, one / tot)                  # row /= tot, as a multiply (see _jit.rescale)
            for s in range(t + 1, T):
                row[s] = zero


@kernel
def _causal_softmax_backward_kernel(att, datt, scale):
    """In place: datt[m,t,s] <- scale * att (datt - sum_s' datt att) for s <= t; 0 for s > t.

    Parameters
    ----------
    att : ndarray (M, T, T)    probabilities from :func:`_causal_softmax_kernel`
    datt : ndarray (M, T, T)   dL/datt = dy v^T in; dL/d(q.k) out (the softmax and the scale inverted)
    scale : scalar of att's dtype
    """
    M, T, _ = att.shape
    zero = att.dtype.type(0)
    for m in range(M):
        for t in range(T):
            a = att[m, t]                                   # (T,)
            d = datt[m, t]                                  # (T,)
            dot = zero
            for s in range(t + 1):
                dot += a[s] * d[s]
            for s in range(T):                              # one full-length pass, zeros selected: 1.5-1.7x faster
                d[s] = a[s] * (d[s] - dot) * scale if s <= t else zero  # than a pass to t and a zero-fill after it


# The six products (scores q k^T and dy v^T, att v and dpre k, att^T dy and dpre^T q) by causal
# blocks. With h = T // 2, the rows t < h only need the columns s < h: each product is two batched
# matmuls over 3/4 of the square instead of one over all of it. At the model's sizes (T <= 128,
# hs <= 32) each per-head matmul of a half is also under OpenBLAS's threading threshold
# (M N K <= 4 * 65536), so it runs on the calling thread: the B NH small calls do not each wake and
# wait for a second BLAS thread, which on a busy 2-core machine cost 3-4x. The top-right block of a
# score matrix is left unwritten by the matmuls and zeroed by the softmax kernels, which never read it.

def _causal_scores(x, y, out):
    """out[..., t, s] = x_t . y_s on the causal blocks (the block t < h <= s is not written).

    x, y : (..., T, hs);  out : (..., T, T)
    """
    h = x.shape[-2] // 2
    np.matmul(x[..., :h, :], y[..., :h, :].swapaxes(-1, -2), out=out[..., :h, :h])  # (h,hs) @ (hs,h) -> (h,h)
    np.matmul(x[..., h:, :], y.swapaxes(-1, -2), out=out[..., h:, :])              # (T-h,hs) @ (hs,T) -> (T-h,T)


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
    att = np.empty((B, NH, T, T), dtype=qkv.dtype)          # (B,NH,T,T)
    _causal_scores(q, k, att)                               # (B,NH,T,hs) x (B,NH,T,hs) -> (B,NH,T,T) scores q.k
    _causal_softmax_kernel(att.reshape(B * NH, T, T), qkv.dtype.type(1.0 / math.sqrt(hs)))  # in place -> att
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
    dpre = np.empty_like(att)                               # (B,NH,T,T)
    _causal_scores(dy, v, dpre)                             # (B,NH,T,hs) x (B,NH,T,hs) -> datt = dy v^T
    _causal_softmax_backward_kernel(att.reshape(B * NH, T, T), dpre.reshape(B * NH, T, T),
                                    qkv.dtype.type(1.0 / math.sqrt(hs)))  # in place: datt -> dpre / sqrt(hs)
    _causal_apply(dpre, k, dq)                              # (B,NH,T,T) @ (B,NH,T,hs) -> dq = dpre k
    _causal_apply_t(dpre, q, dk)                            # (B,NH,T,T)^T @ (B,NH,T,hs) -> dk = dpre^T q
    return dqkv


attention_forward = dispatch(attention_forward_fast, attention_forward_ref)
attention_backward = dispatch(attention_backward_fast, attention_backward_ref)
