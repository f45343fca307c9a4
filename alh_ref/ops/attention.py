"""Causal multi-head self-attention core (between the two projections).

qkv (B,T,3C) holds q, k, v in that order along the last axis; each is split into NH contiguous
heads of size hs = C/NH. out = concat_heads(softmax(q k^T / sqrt(hs) + causal mask) v).

``attention_forward`` / ``attention_backward`` run the Numba kernels; ``*_ref`` are the NumPy
twins (batched matmuls). Derivation: docs/ops/attention.md.
"""
import math

import numpy as np

from ._jit import kernel


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
# Numba kernels: one (b, h, t) row at a time; the causal row only touches s <= t.

@kernel
def _attention_forward_kernel(qkv, NH, att, out):
    # qkv: (B,T,3C); att: (B,NH,T,T); out: (B,T,C)
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    scale = qkv.dtype.type(1.0 / math.sqrt(hs))
    zero = qkv.dtype.type(0)
    for b in range(B):
        for h in range(NH):
            qo = h * hs
            ko = C + h * hs
            vo = 2 * C + h * hs
            for t in range(T):
                mx = -np.inf
                for s in range(t + 1):
                    acc = zero
                    for i in range(hs):
                        acc += qkv[b, t, qo + i] * qkv[b, s, ko + i]
                    acc *= scale
                    att[b, h, t, s] = acc
                    if acc > mx:
                        mx = acc
                tot = zero
                for s in range(t + 1):
                    e = np.exp(att[b, h, t, s] - mx)
                    att[b, h, t, s] = e
                    tot += e
                inv = qkv.dtype.type(1) / tot
                for s in range(t + 1):
                    att[b, h, t, s] *= inv
                for s in range(t + 1, T):
                    att[b, h, t, s] = zero
                for i in range(hs):
                    out[b, t, qo + i] = zero
                for s in range(t + 1):
                    a = att[b, h, t, s]
                    for i in range(hs):
                        out[b, t, qo + i] += a * qkv[b, s, vo + i]


@kernel
def _attention_backward_kernel(dout, qkv, att, NH, dqkv):
    # dout: (B,T,C); qkv, dqkv: (B,T,3C) (dqkv zeroed by the caller); att: (B,NH,T,T)
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    scale = qkv.dtype.type(1.0 / math.sqrt(hs))
    zero = qkv.dtype.type(0)
    datt = np.empty(T, dtype=qkv.dtype)
    for b in range(B):
        for h in range(NH):
            qo = h * hs
            ko = C + h * hs
            vo = 2 * C + h * hs
            for t in range(T):
                # datt[s] = dy_t . v_s ;  dv_s += att[t,s] dy_t
                dot = zero
                for s in range(t + 1):
                    acc = zero
                    a = att[b, h, t, s]
                    for i in range(hs):
                        acc += dout[b, t, qo + i] * qkv[b, s, vo + i]
                        dqkv[b, s, vo + i] += a * dout[b, t, qo + i]
                    datt[s] = acc
                    dot += acc * a
                # dpre[s] = att[t,s] (datt[s] - dot); dq_t += dpre k_s; dk_s += dpre q_t
                for s in range(t + 1):
                    dp = att[b, h, t, s] * (datt[s] - dot) * scale
                    for i in range(hs):
                        dqkv[b, t, qo + i] += dp * qkv[b, s, ko + i]
                        dqkv[b, s, ko + i] += dp * qkv[b, t, qo + i]


def attention_forward(qkv, NH):
    """Causal attention forward (Numba kernel). Same contract as :func:`attention_forward_ref`."""
    B, T, C3 = qkv.shape
    qkv = np.ascontiguousarray(qkv)
    att = np.empty((B, NH, T, T), dtype=qkv.dtype)          # (B,NH,T,T)
    out = np.empty((B, T, C3 // 3), dtype=qkv.dtype)        # (B,T,C)
    _attention_forward_kernel(qkv, NH, att, out)
    return out, (qkv, att, NH)


def attention_backward(dout, cache):
    """Causal attention backward (Numba kernel). Same contract as :func:`attention_backward_ref`."""
    qkv, att, NH = cache
    dqkv = np.zeros_like(qkv)                               # (B,T,3C)
    _attention_backward_kernel(np.ascontiguousarray(dout), qkv, att, NH, dqkv)
    return dqkv
