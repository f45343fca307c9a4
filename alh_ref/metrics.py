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
fifth. The effective dictionary of a method (:func:`method_dictionary_metrics`): the trained wte
for embed-ft / full-ft, wte + A B for lora-embed, wte itself for none and side (they do not touch
the dictionary), and for the ALH methods the per-position dictionary T_t wte, averaged over a
sample of evaluation positions (:func:`alh_effective_dictionary_metrics`).
"""
import math

import numpy as np

from .errors import InputError
from .alh.transforms import transform_forward
from .train import sample_batch

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


def dictionary_metrics(E_new, E_ref):
    """All five geometry metrics of E' against E, plus the reference values of the intrinsic ones.

    Parameters
    ----------
    E_new : ndarray (V,C) float   the effective dictionary E'
    E_ref : ndarray (V,C) float   the original dictionary E

    Returns
    -------
    dict   mean_abs_cos, gram_drift, eff_rank, energy, displacement (of E' vs E), and
           mean_abs_cos_ref, eff_rank_ref, energy_ref (of E), all floats
    """
    _check_dict(E_new, "E_new")
    _check_dict(E_ref, "E_ref")
    if E_new.shape != E_ref.shape:
        raise InputError(f"E_new has shape {E_new.shape} and E_ref {E_ref.shape}; expected equal shapes (V,C)")
    return {
        "mean_abs_cos": mean_abs_cos(E_new), "gram_drift": gram_drift(E_new, E_ref),
        "eff_rank": effective_rank(E_new), "energy": hyperspherical_energy(E_new),
        "displacement": displacement(E_new, E_ref),
        "mean_abs_cos_ref": mean_abs_cos(E_ref), "eff_rank_ref": effective_rank(E_ref),
        "energy_ref": hyperspherical_energy(E_ref),
    }


def _mean_dicts(ds):
    """Key-wise mean of a list of dicts of floats."""
    return {k: float(np.mean([d[k] for d in ds])) for k in ds[0]}


# ----------------------------------------------------------------------------------------------
# Effective dictionaries of the methods

def transformed_dictionary(family, theta, slot, b, E):
    """The dictionary seen at one position: every row of E through that position's transform.

    Parameters
    ----------
    family : "householder" | "lowrank" | "film"
    theta : dict of per-slot transform parameters from the ALH forward cache (slots 0..T on axis 1)
    slot : int   the slot (input site: slot t is the transform applied to x_t)
    b : int      batch item
    E : ndarray (V,C)

    Returns
    -------
    ndarray (V,C)   row v = T_{b,slot} e_v = A e_v + b_t
    """
    V = E.shape[0]
    th = {k: (v if k == "a" else np.broadcast_to(v[b:b + 1, slot:slot + 1], (1, V) + v.shape[2:]))
          for k, v in theta.items()}                                        # (1,V,...) the same theta for every row; "a" shared
    y, _, _ = transform_forward(family, th, E[None], False)                 # (1,V,C): the V rows as V "positions"
    return y[0]                                                             # (V,C)


def alh_effective_dictionary_metrics(method, x_eval, n_positions=16, seed=0, E_ref=None, site="input"):
    """Geometry metrics of ALH's per-position effective dictionary, averaged over sampled positions.

    Parameters
    ----------
    method : alh_ref.alh.methods.Method of an ALH kind (alh-*, static-*, alh-shuffled)
    x_eval : ndarray (B,T) int   evaluation inputs; the transforms are generated from this context
    n_positions : int            number of (b, t) positions sampled (without replacement)
    seed : int                   which positions
    E_ref : ndarray (V,C) or None   reference dictionary (default the frozen base wte)
    site : "input" | "output"    input: E'_t = T_{slot t} wte (what enters the body at x_t);
        output: E'_t = T_{slot t+1} wte ("current" context) or T_{slot t} ("prev"), the dictionary
        the logits at t are scored against

    Returns
    -------
    dict   :func:`dictionary_metrics` keys, each the mean over the sampled positions, plus n_positions
    """
    info = method.info.get("alh")
    if info is None or info.get("head") != "transform":
        raise InputError(f"method {method.name!r} has no latent transform; expected an alh-*, static-* or alh-shuffled method")
    if site not in ("input", "output"):
        raise InputError(f"site={site!r}; expected 'input' or 'output'")
    if (site, info["site"]) in (("input", "output"), ("output", "input")):
        raise InputError(f"method {method.name!r} transforms only the {info['site']} site; asked for the {site} site")
    wte = method.base["wte"]
    E_ref = wte if E_ref is None else E_ref
    _, _, cache = method.forward(x_eval)
    theta = cache.theta
    B, T = x_eval.shape
    rng = np.random.default_rng(seed)
    n = min(int(n_positions), B * T)
    if n < 1:
        raise InputError(f"n_positions={n_positions}; expected at least 1")
    flat = rng.choice(B * T, size=n, replace=False)                         # (n,)
    shift = 0 if site == "input" else (1 if info["out_context"] == "current" else 0)
    out = []
    for f in flat.tolist():
        b, t = divmod(f, T)
        E_t = transformed_dictionary(info["family"], theta, t + shift, b, wte)   # (V,C)
        out.append(dictionary_metrics(E_t, E_ref))
    res = _mean_dicts(out)
    res["n_positions"] = n
    return res


def method_effective_dictionary(method):
    """The context-free effective dictionary of a non-ALH method (None for ALH methods).

    Returns
    -------
    ndarray (V,C) or None   trained wte (embed-ft, full-ft), wte + A B (lora-embed), wte (none, side)
    """
    if method.name == "lora-embed":
        return method.base["wte"] + method.params["lora.a"] @ method.params["lora.b"]  # (V,C) + (V,R) @ (R,C)
    if method.name in ("none", "embed-ft", "full-ft", "side"):
        return method.base["wte"]                                           # (V,C)
    return None


def method_dictionary_metrics(method, E_ref, x_eval=None, n_positions=16, seed=0):
    """Geometry metrics of any method's effective input dictionary against the pretrained E.

    Parameters
    ----------
    method : Method
    E_ref : ndarray (V,C)   the pretrained wte (the *-ft methods train a copy, so pass the original)
    x_eval : ndarray (B,T) int or None   needed for the ALH methods (their dictionary depends on context)
    n_positions, seed : see :func:`alh_effective_dictionary_metrics`

    Returns
    -------
    dict   :func:`dictionary_metrics` keys (ALH: averaged over positions)
    """
    E = method_effective_dictionary(method)
    if E is not None:
        return dictionary_metrics(E, E_ref)
    if x_eval is None:
        raise InputError(f"method {method.name!r} needs x_eval: its dictionary depends on the context")
    return alh_effective_dictionary_metrics(method, x_eval, n_positions, seed, E_ref)


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
