"""Summaries of the study's measurements: means over seeds, bootstrap intervals over documents, frontiers.

Bootstrap: R resamplings of a domain's test documents with replacement (multinomial weights w,
drawn from rng (boot_seed, domain index), so every statistic of one domain uses the same
resamplings and differences are paired). A statistic on resampling r is the mean over seeds of
the token-weighted ratio sum_d w_d s_{d,seed} / sum_d w_d n_d; its 95% interval is the 2.5th
and 97.5th percentile over r.
"""
import numpy as np

from .data import DOMAINS
from .measure import position_bins

LEVEL_FRACS = (0.25, 0.5, 0.75, 1.0)


def mean_std(values):
    """{"mean", "std" (sample std over seeds, 0 for one value), "n"} of a list of floats."""
    v = np.asarray(values, dtype=np.float64)                                                    # (n,)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def boot_weights(results, D):
    """The resampling weights of domain D's test documents: (R, N) float64, row r sums to N."""
    N = len(results["data"]["counts"][D]["doc"])
    rng = np.random.default_rng([results["config"]["boot_seed"], DOMAINS.index(D)])
    return rng.multinomial(N, np.full(N, 1.0 / N), size=results["config"]["n_boot"]).astype(np.float64)  # (R,N)


def _sums(results, protocol, name, D, key="doc_sum"):
    """Per-document sums of a method on domain D, one column per seed: (N, S)."""
    return np.array([r["test"][D][key] for r in results["protocols"][protocol]["methods"][name]["per_seed"]]).T


def boot_stat(W, sums, cnt):
    """Mean over seeds of the resampled ratio: W (R,N), sums (N,S), cnt (N,) or (N,S) -> (R,)."""
    c = W @ cnt                                                                                 # (R,) or (R,S)
    return ((W @ sums) / (c[:, None] if c.ndim == 1 else c)).mean(1)                           # (R,)


def interval(v):
    """95% percentile interval of bootstrap values: [lo, hi]."""
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]


def loss_diff(results, protocol, m1, m2, domains):
    """Test loss of m1 minus m2 (same seeds, same documents), averaged over ``domains``.

    Returns
    -------
    dict  {"mean": point estimate (mean over seeds of the ratio difference), "ci": [lo, hi]}
    """
    point, boot = 0.0, 0.0
    for D in domains:
        W = boot_weights(results, D)                                                            # (R,N)
        cnt = np.asarray(results["data"]["counts"][D]["doc"], dtype=np.float64)                # (N,)
        d = _sums(results, protocol, m1, D) - _sums(results, protocol, m2, D)                  # (N,S)
        point += (d.sum(0) / cnt.sum()).mean() / len(domains)
        boot = boot + boot_stat(W, d, cnt) / len(domains)                                       # (R,)
    return {"mean": float(point), "ci": interval(boot)}


def position_gain_growth(results, protocol, ctrl, name, D):
    """How much more ``name`` beats ``ctrl`` late in a document than early, on domain D.

    gain(bins) = loss_ctrl - loss_name over the targets in those bins; growth = gain(late) -
    gain(early), early = t < 4, late = t >= 16 (the last bin when T <= 16).

    Returns
    -------
    dict  {"early": float, "late": float, "growth": float, "ci": [lo, hi] of growth}
    """
    bins = position_bins(results["config"]["block_size"])
    early = [i for i, (lo, hi) in enumerate(bins) if hi <= 4] or [0]
    late = [i for i, (lo, hi) in enumerate(bins) if lo >= 16] or [len(bins) - 1]
    W = boot_weights(results, D)                                                                # (R,N)
    cnt = np.asarray(results["data"]["counts"][D]["bin"], dtype=np.float64)                    # (N,nb)
    d = np.array([np.asarray(r["test"][D]["bin_sum"])                                          # (S,N,nb)
                  for r in results["protocols"][protocol]["methods"][ctrl]["per_seed"]]) - \
        np.array([np.asarray(r["test"][D]["bin_sum"]) for r in results["protocols"][protocol]["methods"][name]["per_seed"]])
    out, boot = {}, {}
    for tag, idx in (("early", early), ("late", late)):
        s = d[:, :, idx].sum(2).T                                                               # (N,S)
        c = cnt[:, idx].sum(1)                                                                  # (N,)
        out[tag] = float((s.sum(0) / c.sum()).mean())
        boot[tag] = boot_stat(W, s, c)                                                          # (R,)
    out["growth"] = out["late"] - out["early"]
    out["ci"] = interval(boot["late"] - boot["early"])
    return out


def envelope(points, key):
    """Lower envelope of (B val, key val) points: [(b, min key over points with B val <= b)], b increasing."""
    env, best = [], np.inf
    for p in sorted(points, key=lambda q: q["B"]):
        if p[key] < best:
            best = p[key]
            env.append((float(p["B"]), float(best)))
    return env


def read_envelope(env, level):
    """The envelope's value at B val = level (None when no point reaches the level)."""
    got = [a for b, a in env if b <= level]
    return got[-1] if got else None


def frontier_table(results, protocol, ref="alh-householder"):
    """A and C val loss read off each method's lower envelope at B val levels set by ``ref``.

    L_f = b0 - f (b0 - b_ref), b0 the frozen base's B val (first seed), b_ref the lowest B val on
    ref's envelope, f in LEVEL_FRACS.

    Returns
    -------
    dict or None  {"ref", "fracs", "levels", "methods": {name: {"A": [..], "C": [..]}}}
    """
    fr = results["protocols"][protocol]["frontier"]
    if ref not in fr or not fr[ref]:
        return None
    b0 = results["base"][0]["val"]["B"]
    b_ref = min(p["B"] for p in fr[ref])
    levels = [b0 - f * (b0 - b_ref) for f in LEVEL_FRACS]
    out = {"ref": ref, "fracs": list(LEVEL_FRACS), "levels": levels, "methods": {}}
    for name in results["config"]["methods"]:
        pts = fr[name]
        out["methods"][name] = {k: [read_envelope(envelope(pts, k), L) for L in levels] for k in ("A", "C")}
    return out


def summarize(results):
    """Per protocol, method and domain: test loss mean / std / interval, its change against the
    frozen base, KL from the base, geometry and loss by position (in place; returns results)."""
    summ = {}
    for p in results["config"]["protocols"]:
        P = results["protocols"][p]
        summ[p] = {}
        for name in results["config"]["methods"]:
            r = P["methods"][name]
            ps = r["per_seed"]
            s = {"test": {}, "geometry": {}}
            for D in DOMAINS:
                W = boot_weights(results, D)                                                    # (R,N)
                cnt = np.asarray(results["data"]["counts"][D]["doc"], dtype=np.float64)        # (N,)
                pos_cnt = np.maximum(np.asarray(results["data"]["counts"][D]["pos"], dtype=np.float64), 1)  # (T,)
                e = dict(mean_std([q["test"][D]["loss"] for q in ps]))
                e["ci"] = interval(boot_stat(W, _sums(results, p, name, D), cnt))
                e["delta"] = loss_diff(results, p, name, "none", [D])
                e["delta"]["std"] = mean_std([q["test"][D]["loss"] - b["test"][D]["loss"]
                                              for q, b in zip(ps, P["methods"]["none"]["per_seed"])])["std"]
                e["kl"] = dict(mean_std([q["test"][D]["kl"] for q in ps]))
                e["kl"]["ci"] = interval(boot_stat(W, _sums(results, p, name, D, "kl_doc_sum"), cnt))
                e["by_position"] = (np.mean([q["test"][D]["pos_sum"] for q in ps], 0) / pos_cnt).tolist()
                s["test"][D] = e
            for D in ("B", "C"):
                s["geometry"][D] = {kind: {k: mean_std([q["geometry"][D][kind][k] for q in ps])
                                           for k in ps[0]["geometry"][D][kind]} for kind in ("raw", "centred")}
            summ[p][name] = s
        results["protocols"][p]["frontier_table"] = frontier_table(results, p)
    results["summary"] = summ
    return results


def fmt_interval(e, nd=3):
    """``+m [+lo, +hi]`` of a summary entry {"mean", "ci"} (the form every report and verdict line uses)."""
    return f"{e['mean']:+.{nd}f} [{e['ci'][0]:+.{nd}f}, {e['ci'][1]:+.{nd}f}]"
