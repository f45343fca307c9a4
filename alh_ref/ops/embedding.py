"""Table lookup (token embeddings) and its scatter-add backward.

out[b,t] = table[ids[b,t]];  dtable[v] = sum over positions (b,t) with ids[b,t] = v of dout[b,t].
``embedding_backward_fast`` runs the Numba scatter-add; ``embedding_backward_ref`` is the NumPy twin
(np.add.at); ``embedding_backward`` calls one or the other, by ``alh_ref.ops.current()``. The
forward is a NumPy gather in both. Derivation: docs/ops/embedding.md.
"""
import numpy as np

from ._jit import kernel
from .impl import dispatch


def embedding_forward(ids, table):
    """Row lookup (a gather; no kernel needed: NumPy fancy indexing is already one pass).

    Parameters
    ----------
    ids : ndarray (B, T), integer in [0, V)
    table : ndarray (V, C)

    Returns
    -------
    out : ndarray (B, T, C)   out[b,t] = table[ids[b,t]]
    cache : tuple (ids, V)
    """
    return table[ids], (ids, table.shape[0])                # (B,T) -> (B,T,C)


def embedding_backward_ref(dout, cache):
    """Scatter-add backward of the lookup, NumPy reference.

    Parameters
    ----------
    dout : ndarray (B, T, C)   dL/dout
    cache : tuple (ids, V)

    Returns
    -------
    dtable : ndarray (V, C)    dtable[v] = sum_{(b,t): ids[b,t] = v} dout[b,t]
    """
    ids, V = cache
    C = dout.shape[-1]
    dtable = np.zeros((V, C), dtype=dout.dtype)             # (V,C)
    np.add.at(dtable, ids.reshape(-1), dout.reshape(-1, C))  # inverts out = table[ids]
    return dtable


@kernel
def _embedding_backward_kernel(ids, dout, dtable):
    # ids: (N,); dout: (N,C); dtable: (V,C) zeroed by the caller
    N, C = dout.shape
    for i in range(N):
        v = ids[i]
        for c in range(C):
            dtable[v, c] += dout[i, c]


def embedding_backward_fast(dout, cache):
    """Scatter-add backward (Numba kernel). Same contract as :func:`embedding_backward_ref`."""
    ids, V = cache
    C = dout.shape[-1]
    dtable = np.zeros((V, C), dtype=dout.dtype)             # (V,C)
    _embedding_backward_kernel(np.ascontiguousarray(ids).reshape(-1),
                               np.ascontiguousarray(dout).reshape(-1, C), dtable)
    return dtable


embedding_backward = dispatch(embedding_backward_fast, embedding_backward_ref)
