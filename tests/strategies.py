"""Shared hypothesis strategies for the op, model and ALH tests.

Arrays are built from a drawn integer seed with ``np.random.default_rng(seed)``: much faster than
``hypothesis.extra.numpy.arrays`` and still reproducible (hypothesis shrinks the seed and the
shapes; the values follow). Shapes deliberately include T = 1, NH = 1 and sizes that are not
powers of two.
"""
import numpy as np
from hypothesis import strategies as st

DTYPES = (np.float32, np.float64)

batch_size = st.integers(1, 3)         # B
seq_len = st.integers(1, 9)            # T, including T = 1 (dims(min_T=...) narrows it)
heads = st.integers(1, 3)              # NH
head_size = st.integers(1, 5)          # hs, including 3 and 5
seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(DTYPES)


@st.composite
def dims(draw, min_T=1):
    """Attention-shaped dimensions.

    Returns
    -------
    dict with B, T, NH, hs and C = NH * hs (ints); T >= ``min_T``.
    """
    B, T = draw(batch_size), draw(st.integers(max(1, min_T), 9))
    NH, hs = draw(heads), draw(head_size)
    return {"B": B, "T": T, "NH": NH, "hs": hs, "C": NH * hs}


@st.composite
def alh_dims(draw, min_T=1):
    """Small adapted-model shapes (a base GPT with 2 heads and a hypernetwork).

    Returns
    -------
    dict: V, C (even, 2 heads), L, T, block (>= T), B, D, K (even), R.  D is 4 or 6: a LayerNorm
    over D = 2 features outputs only +-(1,-1) w + b, so a D = 2 encoder carries one bit
    """
    T = draw(st.integers(min_T, 6))
    return {"V": draw(st.integers(2, 13)), "C": 2 * draw(st.integers(1, 4)), "L": draw(st.integers(1, 2)),
            "T": T, "block": T + draw(st.integers(0, 2)), "B": draw(st.integers(1, 3)),
            "D": 2 * draw(st.integers(2, 3)), "K": 2 * draw(st.integers(1, 2)), "R": draw(st.integers(1, 3))}


def float_array(seed, shape, dtype=np.float64, scale=1.0, shift=0.0):
    """Standard normal array from a seed (a plain function, not a strategy).

    Parameters
    ----------
    seed : int;  shape : tuple;  dtype : float32 or float64
    scale, shift : float      out = shift + scale * N(0, 1), drawn in float64 then cast

    Returns
    -------
    ndarray ``shape`` of ``dtype``, C-contiguous
    """
    rng = np.random.default_rng(seed)
    return (shift + scale * rng.standard_normal(shape)).astype(dtype)  # shape


@st.composite
def float_arrays(draw, shape, dtype=np.float64, scale=1.0):
    """Strategy: a ``float_array`` of the given shape from a drawn seed."""
    return float_array(draw(seeds), shape, dtype, scale)


def token_array(seed, shape, V):
    """Token ids in [0, V) from a seed: ndarray ``shape`` int64."""
    return np.random.default_rng(seed).integers(0, V, size=shape, dtype=np.int64)  # shape


@st.composite
def token_ids(draw, shape, V):
    """Strategy: int64 token ids of ``shape`` in [0, V), from a drawn seed."""
    return token_array(draw(seeds), shape, V)
