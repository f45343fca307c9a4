"""Evaluation metrics: held-out loss, and the geometry of an effective token dictionary.

The proposal's claim is geometric: editing token latents directly disturbs the geometry of the
whole dictionary, while ALH's per-position transforms (orthogonal for the householder family)
should not. These functions measure that for a dictionary E' (V,C) against the original E (V,C):

    mean |cos|        (2 / (V (V-1))) sum_{i<j} |e'_i . e'_j| / (||e'_i|| ||e'_j||)
    Gram drift        ||G' - G||_F / ||G||_F,          G = E E^T (V,V)
    effective rank    exp(-sum_k p_k log p_k),         p = s / sum(s), s the singular values of E'
    energy            (2 / (V (V-1))) sum_{i<j} 1 / ||e^'_i - e^'_j||,   e^ = e / ||e||
    displacement      ||E' - E||_F / ||E||_F

An orthogonal map of every row (E' = E Q^T) leaves the first four unchanged and moves the
fifth. Each is also taken on centred rows (E - mean row), where a shift shared by every row
does not count. The effective dictionary of a method comes from the method itself
(``Method.dictionaries``): the trained wte for embed-ft / full-ft, wte + A B for lora-embed, wte
itself for none and side, and for the ALH methods the per-position dictionary T_t wte at sampled
evaluation positions (:func:`method_dictionary_metrics` averages over them).
"""
import math

import numpy as np

from .errors import InputError
from .train import sample_batch

__all__ = ["METRIC_NAMES", "centre_rows", "dictionary_metrics", "displacement", "effective_rank", "eval_loss",
           "eval_windows", "gram_drift", "hyperspherical_energy", "log_softmax", "mean_abs_cos",
           "method_dictionary_metrics", "perplexity", "token_losses", "unit_rows"]

METRIC_NAMES = ("mean_abs_cos", "gram_drift", "eff_rank", "energy", "displacement")


# ----------------------------------------------------------------------------------------------
# Geometry of one dictionary

def _check_dict(E, name="E"):
    """Raise InputError unless E is a finite 2-D float array with at least 2 rows."""
    if not isinstance(E, np.ndarray) or E.ndim != 2 or E.shape[0] < 2:
        shape = getattr(E, "shape", type(E).__name__)
        raise InputError(f"{name} has shape {shape}; expected a 2-D array (V,C) with V >= 2")
    if not np.issubdtype(E.dtype, np.floating) or not np.isfinite(E).all():
        raise InputError(f"{name} must be a finite float array; got dtype {E.dtype}")


def unit_rows(E, eps=1e-12):
    """Rows scaled to unit length (zero rows stay zero).

    Parameters
    ----------
    E : ndarray (V,C) float

    Returns
    -------
    ndarray (V,C) float64   e^_i = e_i / max(||e_i||, eps)
    """
    E = np.asarray(E, dtype=np.float64)                                     # (V,C)
    n = np.linalg.norm(E, axis=1, keepdims=True)                            # (V,1)
    return E / np.maximum(n, eps)                                           # (V,C)


def _offdiag_mean(M):
    """Mean of the off-diagonal entries of a square (V,V) matrix (= mean over distinct pairs if M is symmetric)."""
    V = M.shape[0]
    return float((M.sum() - np.trace(M)) / (V * (V - 1)))


def mean_abs_cos(E):
    """Mean absolute cosine similarity over distinct token pairs.

    Parameters
    ----------
    E : ndarray (V,C) float, V >= 2

    Returns
    -------
    float   (2 / (V (V-1))) sum_{i<j} |cos(e_i, e_j)|   (0 for orthogonal rows, 1 for parallel)
    """
    _check_dict(E)
    U = unit_rows(E)                                                        # (V,C)
    return _offdiag_mean(np.abs(U @ U.T))                                   # (V,C) @ (C,V) -> (V,V)


def gram_drift(E_new, E_ref):
    """Relative change of the Gram matrix of all pairwise inner products.

    Parameters
    ----------
    E_new, E_ref : ndarray (V,C) float

    Returns
    -------
    float   ||E' E'^T - E E^T||_F / ||E E^T||_F   (0 iff every inner product is kept)
    """
    _check_dict(E_new, "E_new")
    _check_dict(E_ref, "E_ref")
    A = np.asarray(E_new, dtype=np.float64)                                 # (V,C)
    R = np.asarray(E_ref, dtype=np.float64)                                 # (V,C)
    G = R @ R.T                                                             # (V,C) @ (C,V) -> (V,V)
    Gn = A @ A.T                                                            # (V,C) @ (C,V) -> (V,V)
    den = np.linalg.norm(G)
    if den == 0.0:
        raise InputError("E_ref is all zeros; expected a nonzero reference dictionary")
    return float(np.linalg.norm(Gn - G) / den)


def effective_rank(E):
    """Effective rank (Roy & Vetterli 2007): the exponential of the entropy of the normalised spectrum.

    Parameters
    ----------
    E : ndarray (V,C) float

    Returns
    -------
    float   exp(-sum_k p_k log p_k),  p = s / sum(s),  s the singular values of E  (in [1, min(V,C)])
    """
    _check_dict(E)
    s = np.linalg.svd(np.asarray(E, dtype=np.float64), compute_uv=False)    # (min(V,C),)
    tot = s.sum()
    if tot == 0.0:
        return 0.0
    p = s[s > 0] / tot                                                      # (k,)
    return float(math.exp(-(p * np.log(p)).sum()))


def hyperspherical_energy(E, eps=1e-6):
    """Mean inverse distance between distinct unit-normalised rows (Riesz 1-energy; Liu et al. 2018).

    Parameters
    ----------
    E : ndarray (V,C) float
    eps : float   distances are floored at eps, so identical rows give a large finite 1/eps term

    Returns
    -------
    float   (2 / (V (V-1))) sum_{i<j} 1 / max(||e^_i - e^_j||, eps),   e^ = e / ||e||
    """
    _check_dict(E)
    U = unit_rows(E)                                                        # (V,C)
    cos = np.clip(U @ U.T, -1.0, 1.0)                                       # (V,C) @ (C,V) -> (V,V)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * cos, 0.0))                        # (V,V)  ||u - w||^2 = 2 - 2 cos
    return _offdiag_mean(1.0 / np.maximum(dist, eps))                       # (V,V)


def displacement(E_new, E_ref):
    """Relative movement of the dictionary's rows.

    Parameters
    ----------
    E_new, E_ref : ndarray (V,C) float

    Returns
    -------
    float   ||E' - E||_F / ||E||_F
    """
    _check_dict(E_new, "E_new")
    _check_dict(E_ref, "E_ref")
    if E_new.shape != E_ref.shape:
        raise InputError(f"E_new has shape {E_new.shape} and E_ref {E_ref.shape}; expected equal shapes (V,C)")
    R = np.asarray(E_ref, dtype=np.float64)                                 # (V,C)
    den = np.linalg.norm(R)
    if den == 0.0:
        raise InputError("E_ref is all zeros; expected a nonzero reference dictionary")
    return float(np.linalg.norm(np.asarray(E_new, dtype=np.float64) - R) / den)


def centre_rows(E):
    """E minus its mean row: E - 1 mean(E)  (V,C) float64, so a shift shared by every row is not geometry."""
    E = np.asarray(E, dtype=np.float64)                                     # (V,C)
    return E - E.mean(0, keepdims=True)                                     # (V,C)


def dictionary_metrics(E_new, E_ref, centred=False):
    """All five geometry metrics of E' against E, plus the reference values of the intrinsic ones.

    Parameters
    ----------
    E_new : ndarray (V,C) float   the effective dictionary E'
    E_ref : ndarray (V,C) float   the original dictionary E
    centred : bool   measure E' - mean row and E - mean row instead (:func:`centre_rows`): a shift
        added to every row (film's offset) then moves nothing, while the raw metrics would read
        it as rows collapsing toward one direction

    Returns
    -------
    dict   mean_abs_cos, gram_drift, eff_rank, energy, displacement (of E' vs E), and
           mean_abs_cos_ref, eff_rank_ref, energy_ref (of E), all floats
    """
    _check_dict(E_new, "E_new")
    _check_dict(E_ref, "E_ref")
    if E_new.shape != E_ref.shape:
        raise InputError(f"E_new has shape {E_new.shape} and E_ref {E_ref.shape}; expected equal shapes (V,C)")
    if centred:
        E_new, E_ref = centre_rows(E_new), centre_rows(E_ref)               # (V,C), (V,C)
    return {
        "mean_abs_cos": mean_abs_cos(E_new), "gram_drift": gram_drift(E_new, E_ref),
        "eff_rank": effective_rank(E_new), "energy": hyperspherical_energy(E_new),
        "displacement": displacement(E_new, E_ref),
        "mean_abs_cos_ref": mean_abs_cos(E_ref), "eff_rank_ref": effective_rank(E_ref),
        "energy_ref": hyperspherical_energy(E_ref),
    }


def method_dictionary_metrics(method, E_ref, x_eval=None, n_positions=16, seed=0, centred=False):
    """Geometry metrics of a method's effective input dictionary against the pretrained E.

    The method supplies its dictionaries (``Method.dictionaries``): one for a context-free method
    (trained wte, wte + A B, or wte itself), or T_t wte at ``n_positions`` sampled positions of
    ``x_eval`` for a context-dependent one; the metrics are averaged over them.

    Parameters
    ----------
    method : alh_ref.alh.methods.Method
    E_ref : ndarray (V,C)   the pretrained wte (the *-ft methods train a copy, so pass the original)
    x_eval : ndarray (B,T) int or None   the context (needed when the dictionary depends on it)
    n_positions, seed : int   how many positions of x_eval, and which
    centred : bool   see :func:`dictionary_metrics`

    Returns
    -------
    dict   :func:`dictionary_metrics` keys (mean over the dictionaries) and n_positions (how many)
    """
    ds = [dictionary_metrics(E, E_ref, centred) for E in method.dictionaries(x_eval, n_positions, seed)]
    out = {k: float(np.mean([d[k] for d in ds])) for k in ds[0]}
    out["n_positions"] = len(ds)
    return out


# ----------------------------------------------------------------------------------------------
# Held-out loss

def perplexity(loss):
    """Perplexity of a mean cross-entropy in nats: exp(loss) (inf on overflow)."""
    try:
        return math.exp(float(loss))
    except OverflowError:
        return math.inf


def eval_windows(tokens, B, T, n_batches, seed):
    """The deterministic evaluation windows: ``n_batches`` batches from ``sample_batch`` with rng(seed).

    Parameters
    ----------
    tokens : ndarray (n,) int;  B, T, n_batches, seed : int

    Returns
    -------
    list of (x (B,T) int64, y (B,T) int64, starts (B,) int64)   the same for every method given the seed
    """
    if n_batches < 1 or B < 1:
        raise InputError(f"n_batches={n_batches}, B={B}; expected positive integers")
    rng = np.random.default_rng(seed)
    return [sample_batch(tokens, B, T, rng, return_starts=True) for _ in range(n_batches)]


def eval_loss(method, tokens, B, T, n_batches, seed=0):
    """Mean next-token cross-entropy of a method on deterministic windows of a token stream.

    Parameters
    ----------
    method : Method (its ``forward(x, y)`` returns the mean CE as the second output)
    tokens : ndarray (n,) int, n >= T + 1
    B, T, n_batches : int
    seed : int   picks the windows (same seed -> same windows for every method: a paired comparison)

    Returns
    -------
    float   mean over batches of mean_{b,t} -log p(y_{b,t} | x_{b,<=t})  (nats; equal batch sizes)
    """
    losses = [float(method.forward(x, y)[1]) for x, y, _ in eval_windows(tokens, B, T, n_batches, seed)]
    return float(np.mean(losses))


def log_softmax(logits):
    """Log-probabilities in float64: logits - logsumexp(logits) over the last axis.

    Parameters
    ----------
    logits : ndarray (..., V) float

    Returns
    -------
    ndarray (..., V) float64   log p_v = l_v - max l - log sum_u exp(l_u - max l)
    """
    z = np.asarray(logits, dtype=np.float64)                                # (...,V)
    z = z - z.max(-1, keepdims=True)                                        # (...,V)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))                     # (...,V)


def token_losses(logp, y):
    """Per-token cross-entropy -log p(y) from log-probabilities.

    Parameters
    ----------
    logp : ndarray (B,T,V) float64;  y : ndarray (B,T) int

    Returns
    -------
    ndarray (B,T) float64
    """
    return -np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]         # (B,T)
