"""Sampling from a language model: draw the next token from logits, continue a token sequence.

Works with any ``forward(x (1,t) int64) -> (logits (1,t,V), ...)``: the base GPT (alh_ref.model)
or an adapted model (alh_ref.alh). A seed fixes the sample: one ``rng.random()`` draw per token.
"""
import math

import numpy as np

from .errors import InputError
from .model import check_ids


def next_token(logits, temperature, top_k, rng) -> int:
    """Draw one token id from the last position's logits.

    p_v proportional to exp(logits_v / temperature) over the top_k largest logits (all if None);
    temperature 0 is greedy (argmax). One ``rng.random()`` draw per call, inverted through the
    cumulative distribution, so a seed fixes the sample.

    Parameters
    ----------
    logits : ndarray (V,);  temperature : float >= 0;  top_k : int >= 1 or None
    rng : np.random.Generator

    Returns
    -------
    int   token id in [0, V)
    """
    z = logits.astype(np.float64)                                                              # (V,)
    if temperature == 0:
        return int(np.argmax(z))
    z = z / temperature                                                                        # (V,)
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= kth, z, -np.inf)                                                     # (V,)
    c = np.cumsum(np.exp(z - z.max()))                                                         # (V,)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), z.size - 1))


def generate(forward, ids, cfg, *, max_new_tokens=100, temperature=1.0, top_k=None, rng=None, stop_id=None):
    """Continue a token sequence autoregressively (each step sees the last block_size tokens).

    Parameters
    ----------
    forward : callable (x (1,t) int64) -> (logits (1,t,V), ...)
    ids : ndarray (t,) int, t >= 1, ids in [0, V)
    cfg : GPTConfig;  max_new_tokens : int >= 0;  temperature : float >= 0;  top_k : int >= 1 or None
    rng : np.random.Generator;  stop_id : int or None   stop (without emitting it) at this id

    Returns
    -------
    new : ndarray (m,) int64, m <= max_new_tokens   the generated ids
    """
    if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.size == 0:
        raise InputError(f"prompt ids must be a non-empty 1-D numpy integer array (t,); got "
                         f"{type(ids).__name__} {getattr(ids, 'shape', '')}")
    check_ids(ids[None, :], cfg.vocab_size, "prompt ids")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens={max_new_tokens!r}; expected an integer >= 0")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise InputError(f"temperature={temperature!r}; expected a finite number >= 0 (0 = greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise InputError(f"top_k={top_k!r}; expected an integer >= 1 or None")
    seq = ids.astype(np.int64)                                                                 # (t,)
    new = []
    for _ in range(max_new_tokens):
        logits = forward(seq[None, -cfg.block_size:])[0]                                       # (1,t',V)
        nxt = next_token(logits[0, -1], temperature, top_k, rng)
        if nxt == stop_id:
            break
        new.append(nxt)
        seq = np.append(seq, nxt)                                                              # (t+1,)
    return np.array(new, dtype=np.int64)                                                       # (m,)


