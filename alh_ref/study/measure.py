"""The study's measurements of one adapted method on document-aligned windows.

Per domain (A, B, C) on the test windows (data.doc_windows): the summed loss of every document
(for bootstrap intervals over documents), the loss summed by position t (t tokens of context)
and by position bin, and the KL divergence from the frozen base's next-token distribution,
KL(p_base || p_method) = sum_v p_base(v) (log p_base(v) - log p_method(v)), summed per document.
Geometry: the metrics of the method's effective input dictionary, raw and centred, on B and C
test contexts (alh_ref.metrics).
"""
import numpy as np

from ..metrics import METRIC_NAMES, log_softmax, method_dictionary_metrics, token_losses

CHUNK = 64          # windows per forward pass


def position_bins(T):
    """Position bins [lo, hi) of the loss-by-position tables: t = 0, 1-3, 4-15, 16-63, 64-... (up to T)."""
    edges = [e for e in (0, 1, 4, 16, 64, 256, 1024) if e < T] + [T]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]


def _logp(m, x):
    """log p of a method on windows x (N,T), in chunks:  (N,T,V) float64."""
    return np.concatenate([log_softmax(m.forward(x[i:i + CHUNK])[0]) for i in range(0, x.shape[0], CHUNK)])


def mean_loss(m, windows):
    """Token-weighted mean cross-entropy on windows (x, y, valid)."""
    x, y, valid = windows
    tl = token_losses(_logp(m, x), y)                                                       # (N,T)
    return float(tl[valid].sum() / valid.sum())


def counts(windows):
    """What every method's sums are divided by: valid targets per document, per position and per bin."""
    _, _, valid = windows
    T = valid.shape[1]
    return {"doc": valid.sum(1).tolist(), "pos": valid.sum(0).tolist(),
            "bin": np.stack([valid[:, lo:hi].sum(1) for lo, hi in position_bins(T)], 1).tolist()}


def score(m, windows, base_logp=None):
    """Loss sums (and KL from the base) of a method on test windows.

    Parameters
    ----------
    m : Method;  windows : (x (N,T), y (N,T), valid (N,T))
    base_logp : ndarray (N,T,V) float64 or None   the frozen base's log-probabilities on x

    Returns
    -------
    dict  doc_sum (N,), pos_sum (T,), bin_sum (N, n_bins), kl_doc_sum (N,) [with base_logp], loss, kl
    """
    x, y, valid = windows
    T = x.shape[1]
    logp = _logp(m, x)                                                                      # (N,T,V)
    tl = np.where(valid, token_losses(logp, y), 0.0)                                        # (N,T)
    out = {"doc_sum": tl.sum(1).tolist(), "pos_sum": tl.sum(0).tolist(),
           "bin_sum": np.stack([tl[:, lo:hi].sum(1) for lo, hi in position_bins(T)], 1).tolist(),
           "loss": float(tl.sum() / valid.sum())}
    if base_logp is not None:
        kl = np.where(valid, (np.exp(base_logp) * (base_logp - logp)).sum(-1), 0.0)          # (N,T)
        out["kl_doc_sum"] = kl.sum(1).tolist()
        out["kl"] = float(kl.sum() / valid.sum())
    return out


def geometry(m, E_ref, data, cfg):
    """Metrics of the effective input dictionary on B and C test contexts, raw and centred.

    Returns
    -------
    dict  {"B": {"raw": {metric: float}, "centred": {...}}, "C": {...}}
    """
    out = {}
    for D in ("B", "C"):
        x = data["domains"][D]["test"][0][:cfg["batch_size"]]                                  # (B,T) context
        out[D] = {}
        for kind, centred in (("raw", False), ("centred", True)):
            r = method_dictionary_metrics(m, E_ref, x, cfg["n_positions"], seed=cfg["boot_seed"], centred=centred)
            out[D][kind] = {k: r[k] for k in METRIC_NAMES}
    return out


def base_log_probs(base_method, data):
    """The frozen base's log-probabilities on the test windows of A, B and C: {D: (N,T,V) float64}."""
    return {D: _logp(base_method, data["domains"][D]["test"][0]) for D in ("A", "B", "C")}


def measure(m, E_ref, base_logp, data, cfg):
    """Every test measurement of an adapted method: {"test": {D: score}, "geometry": ...}."""
    return {"test": {D: score(m, data["domains"][D]["test"], base_logp[D]) for D in ("A", "B", "C")},
            "geometry": geometry(m, E_ref, data, cfg)}
