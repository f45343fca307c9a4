"""The FiLM family: A = diag(1 + gamma), b = beta (gamma, beta: (C,) per position, zero at init).

Elementwise NumPy, O(C) per vector: one implementation, the same under "fast" and "ref".
Derivation: docs/alh.md, sections 6.3 and 10.4.
"""


def film_forward(theta, e, transpose=False):
    """y = (1 + gamma) * e + beta;  transposed (output site): y = (1 + gamma) * z, off = z . beta.

    theta : {"gamma": (B,S,C), "beta": (B,S,C)};  e : (B,S,C).
    Returns y (B,S,C), off (B,S) or None, cache (theta, e, transpose).
    """
    g, b = theta["gamma"], theta["beta"]
    y = (1.0 + g) * e                                                                       # (B,S,C)
    if transpose:
        off = (e * b).sum(-1)                                                               # (B,S)
        return y, off, (theta, e, transpose)
    return y + b, None, (theta, e, transpose)


def film_backward(dy, doff, cache):
    """Backward of :func:`film_forward`: dgamma = dy * e, dbeta = dy (or doff * z), de = (1+gamma) dy (+ doff beta)."""
    theta, e, transpose = cache
    g, b = theta["gamma"], theta["beta"]
    dg = dy * e                                                                             # (B,S,C)
    de = (1.0 + g) * dy                                                                     # (B,S,C)
    if transpose:
        db = doff[..., None] * e                                                            # (B,S,C)
        de = de + doff[..., None] * b                                                       # (B,S,C)
    else:
        db = dy
    return {"gamma": dg, "beta": db}, de
