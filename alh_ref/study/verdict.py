"""The verdict on the proposal's four claims, computed from the measurements by fixed rules.

Every rule compares 95% bootstrap intervals over documents (summary.loss_diff); a claim is
"held" only when the control that could refute it was run and did not, "did not hold" when the
rule fails in every protocol, "mixed" otherwise. The rules (docs/experiment.md states them too):

    Claim 1  alh-householder's test loss on B minus the frozen base's: interval below 0.
    Claim 2  (i) alh-householder's C loss change vs the base has an interval upper end <= TOL,
             and (ii) embed-ft's C loss change is above alh-householder's (interval of the
             difference above 0). Per protocol: held if (i) and (ii).
    Claim 3  (a) alh-householder's centred and raw Gram drift (B contexts, every seed) <= GRAM_TOL;
             (b) across the trained methods, the Spearman correlation of centred Gram drift (C
             contexts) with the C loss change is positive with a one-sided permutation p < 0.05.
             held if (a) and (b) in every protocol; did not hold if (a) fails or (b) fails everywhere.
    Claim 4  objective = B test (shift) or mean of A and B test (mix).
             (a) controls: alh-householder and alh-householder-prev both beat
                 static-householder-matched (interval of the difference below 0);
             (b) position: the gain of alh-householder over static-householder-matched on B
                 grows from t < 4 to t >= 16 (interval of the growth above 0).
             The claim line is held if both parts hold, did not hold if both fail, else mixed.
"""
import numpy as np
from scipy.stats import rankdata

from .summary import fmt_interval, loss_diff, position_gain_growth

TOL = 0.02           # nats: "does not degrade" allows at most this much more loss on C
GRAM_TOL = 1e-4      # relative Gram drift below which the geometry counts as preserved
N_PERM = 10000


def combine(flags):
    """held if every protocol's rule held, did not hold if none did, mixed otherwise (None: not decided)."""
    if any(f is None for f in flags):
        return None
    return "held" if all(flags) else ("did not hold" if not any(flags) else "mixed")


def spearman_perm(x, y, n_perm=N_PERM, seed=0):
    """Spearman correlation of x and y and its one-sided permutation p-value (rho >= observed).

    Ties share their average rank (scipy.stats.rankdata), so equal values never get an order that
    round-off or the input order would decide.
    """
    rx = rankdata(x, method="average").astype(np.float64)                                     # (n,) ranks
    ry = rankdata(y, method="average").astype(np.float64)                                     # (n,)
    rho = float(np.corrcoef(rx, ry)[0, 1]) if rx.std() > 0 and ry.std() > 0 else 0.0
    rng = np.random.default_rng(seed)
    perm = np.array([np.corrcoef(rx, rng.permutation(ry))[0, 1] for _ in range(n_perm)]) if rx.std() > 0 else np.zeros(1)
    return rho, float((np.sum(perm >= rho - 1e-12) + 1) / (perm.size + 1))


def _need(results, names):
    have = set(results["config"]["methods"])
    missing = [n for n in names if n not in have]
    return f"not decided: {', '.join(missing)} not run" if missing else None


def claim1(results):
    miss = _need(results, ["alh-householder"])
    if miss:
        return None, miss
    flags, parts = [], []
    for p in results["config"]["protocols"]:
        d = loss_diff(results, p, "alh-householder", "none", ["B"])
        flags.append(d["ci"][1] < 0)
        parts.append(f"{p}: B test loss change vs frozen base {fmt_interval(d)}")
    return combine(flags), "; ".join(parts)


def claim2(results):
    miss = _need(results, ["alh-householder", "embed-ft"])
    if miss:
        return None, miss
    flags, parts = [], []
    for p in results["config"]["protocols"]:
        a = loss_diff(results, p, "alh-householder", "none", ["C"])
        e = loss_diff(results, p, "embed-ft", "none", ["C"])
        d = loss_diff(results, p, "embed-ft", "alh-householder", ["C"])
        flags.append(a["ci"][1] <= TOL and d["ci"][0] > 0)
        parts.append(f"{p}: C change alh {fmt_interval(a)} (tolerance {TOL}), embed-ft {fmt_interval(e)}, embed-ft minus alh {fmt_interval(d)}")
    return combine(flags), "; ".join(parts)


def claim3(results):
    miss = _need(results, ["alh-householder"])
    if miss:
        return None, miss
    gram = max(q["geometry"]["B"][k]["gram_drift"] for P in results["protocols"].values()
               for q in P["methods"]["alh-householder"]["per_seed"] for k in ("raw", "centred"))
    a = gram <= GRAM_TOL
    flags, parts = [], [f"alh-householder Gram drift <= {gram:.1e} (tolerance {GRAM_TOL:g}; a sanity check: "
                        "orthogonal by construction, so the claim rests on the correlation)"]
    for p in results["config"]["protocols"]:
        S = results["summary"][p]
        names = [n for n in S if n != "none"]
        x = [S[n]["geometry"]["C"]["centred"]["gram_drift"]["mean"] for n in names]
        x = [0.0 if v <= GRAM_TOL else v for v in x]              # preserved geometry: a tie, not round-off order
        y = [S[n]["test"]["C"]["delta"]["mean"] for n in names]
        rho, pv = spearman_perm(np.array(x), np.array(y))
        flags.append(rho > 0 and pv < 0.05)
        parts.append(f"{p}: Spearman(centred Gram drift, C change) over {len(names)} methods = {rho:+.2f} (p = {pv:.4f})")
    if not a:
        return "did not hold", "; ".join(parts)
    return combine(flags), "; ".join(parts)


def claim4(results):
    ctrl = "static-householder-matched"
    miss = _need(results, ["alh-householder", "alh-householder-prev", ctrl])
    if miss:
        return None, None, None, miss
    fa, fb, parts = [], [], []
    for p in results["config"]["protocols"]:
        doms = ["B"] if p == "shift" else ["A", "B"]
        d = loss_diff(results, p, "alh-householder", ctrl, doms)
        dp = loss_diff(results, p, "alh-householder-prev", ctrl, doms)
        g = position_gain_growth(results, p, ctrl, "alh-householder", "B")
        fa.append(d["ci"][1] < 0 and dp["ci"][1] < 0)
        fb.append(g["ci"][0] > 0)
        parts.append(f"{p} ({'+'.join(doms)} test): alh minus {ctrl} {fmt_interval(d)}, alh-prev minus it {fmt_interval(dp)}; "
                     f"gain on B t<4 {g['early']:+.3f}, t>=16 {g['late']:+.3f}, growth {g['growth']:+.3f} "
                     f"[{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]")
    a, b = combine(fa), combine(fb)
    overall = "held" if a == b == "held" else ("did not hold" if a == b == "did not hold" else "mixed")
    return overall, a, b, "; ".join(parts)


def verdict(results):
    """The four verdict lines and their parts: {"lines": [str], "claims": {1: {...}, ...}}."""
    out = {"claims": {}, "lines": []}
    for i, fn in ((1, claim1), (2, claim2), (3, claim3)):
        v, why = fn(results)
        out["claims"][i] = {"verdict": v or "not decided", "evidence": why}
        out["lines"].append(f"Claim {i}: {v or 'not decided'} — {why}")
    v, a, b, why = claim4(results)
    out["claims"][4] = {"verdict": v or "not decided", "controls": a, "position": b, "evidence": why}
    out["lines"].append(f"Claim 4: {v or 'not decided'} — (a) survives the prev and capacity-matched static "
                        f"controls: {a}; (b) grows with position: {b} — {why}")
    return out

