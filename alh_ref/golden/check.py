"""Checking a port's bundle against alh_ref, tensor by tensor: where it diverges first, and by how much.

Each tensor is compared with

    share = max_i |a_i - b_i| / (atol + rtol |b_i|)        pass  <=>  share <= 1

(a the port's value, b the reference), i.e. ``numpy.allclose(a, b, rtol, atol)`` element by element.
The tolerances come from the reference, never from the checked folder (docs/golden.md section 7).
"""
from pathlib import Path

import numpy as np

from ..errors import InputError
from .bundle import _load_safetensors, _tensor_table, load_bundle, tolerance
from .cases import CASES, compute_case

# ----------------------------------------------------------------------------------------------
# Comparing

def compare_tensor(a, b, rtol, atol):
    """Compare a candidate tensor with the reference.

    Parameters
    ----------
    a : ndarray   the candidate (port) value
    b : ndarray   the reference value, same shape and dtype
    rtol, atol : float

    Returns
    -------
    dict with max_abs = max |a-b|; max_rel = max |a-b|/|b| over the elements where |b| >= atol/rtol
        (where the relative part of the tolerance dominates; rtol = 0: where b != 0), None if there
        is none (a mathematically zero gradient has no meaningful relative error);
        share = max (|a-b| / (atol + rtol |b|)) (0/0 = 0, x/0 = inf); worst_index = index tuple of the
        element with the largest share (then the largest |a-b|); ok = share <= 1 (NaN never passes)
    """
    a64 = np.asarray(a, dtype=np.float64) if a.dtype != np.float64 else a                       # same shape
    b64 = np.asarray(b, dtype=np.float64) if b.dtype != np.float64 else b
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        d = np.abs(a64 - b64)                                                                   # same shape
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))                                    # NaN == NaN, inf == inf
        d = np.where(same, 0.0, np.where(np.isnan(d), np.inf, d))                               # a NaN mismatch is inf
        tol = atol + rtol * np.abs(b64)                                                          # same shape
        share = np.where(d == 0, 0.0, np.where(tol > 0, d / np.where(tol > 0, tol, 1.0), np.inf))
        big = (b64 != 0) & (np.abs(b64) >= (atol / rtol if rtol > 0 else 0.0))                  # same shape, bool
        rel = d[big] / np.abs(b64[big])                                                          # (n_big,)
    max_rel = float(rel.max()) if rel.size else None
    if d.size == 0:
        return {"max_abs": 0.0, "max_rel": None, "share": 0.0, "worst_index": (), "ok": True}
    sf, df = share.ravel(), d.ravel()                                                           # (n,), (n,)
    ties = np.flatnonzero(sf == sf.max())                                                       # largest share ...
    k = ties[np.argmax(df[ties])]                                                               # ... then largest |a-b|, first
    worst = tuple(int(i) for i in np.unravel_index(k, d.shape))
    s = float(sf[k])
    return {"max_abs": float(d.max()), "max_rel": max_rel, "share": s, "worst_index": worst, "ok": bool(s <= 1.0)}


def _entry(case, key, ok, message="", **stats):
    return dict({"case": case, "key": key, "ok": ok, "message": message}, **stats)


def _compare_case(case, cand, ref, order, tols, allow_missing):
    """Entries for one case, in the reference's key order, extra candidate keys last."""
    out = []
    for key in order:
        b = ref[key]
        rtol, atol = tols[key]
        if key not in cand:
            out.append(_entry(case, key, allow_missing, "missing (not checked)" if allow_missing else
                              f"missing: the reference has {key!r} {b.dtype.name} {b.shape}; write it under this exact key",
                              rtol=rtol, atol=atol, missing=True))
            continue
        a = cand[key]
        if a.shape != b.shape:
            out.append(_entry(case, key, False, f"shape mismatch: got {a.shape}, expected {b.shape}", rtol=rtol, atol=atol))
            continue
        if a.dtype != b.dtype:
            out.append(_entry(case, key, False, f"dtype mismatch: got {a.dtype.name}, expected {b.dtype.name}",
                              rtol=rtol, atol=atol))
            continue
        r = compare_tensor(a, b, rtol, atol)
        msg = "" if r["ok"] else f"out of tolerance: share {r['share']:.3g} at {r['worst_index']}"
        out.append(_entry(case, key, r.pop("ok"), msg, rtol=rtol, atol=atol, **r))
    for key in cand:
        if key not in ref:
            out.append(_entry(case, key, False, "extra key: not in the reference; expected only the documented keys"))
    return out


def _candidate_cases(folder, known):
    """{case: path} for every <case>.safetensors in the folder whose case is known, and the other file names."""
    found, unknown = {}, []
    for p in sorted(folder.glob("*.safetensors")):
        if p.stem in known:
            found[p.stem] = p
        else:
            unknown.append(p.name)
    return found, unknown


def _reference_case(name, ref_bundle):
    """(tensors, order, tolerances) of one reference case: from the loaded bundle, or computed afresh."""
    if ref_bundle is None:
        ref, _ = compute_case(name)
        return ref, list(ref), {k: tolerance(k, a.dtype) for k, a in ref.items()}
    manifest, arrays = ref_bundle
    table = _tensor_table(manifest["cases"][name])
    return arrays[name], list(table), {k: (e["rtol"], e["atol"]) for k, e in table.items()}


def check_case(name, cand, ref_bundle=None, allow_missing=False):
    """The entries of one case: a candidate's tensors against the reference's, in the reference's key order.

    Parameters
    ----------
    name : str   the case;  cand : dict key -> ndarray   the port's tensors of that case
    ref_bundle : (manifest, cases) of :func:`alh_ref.golden.bundle.load_bundle`, or None (computed afresh)
    allow_missing : bool   as for :func:`check_bundle`

    Returns
    -------
    list of dict   one entry per tensor (case, key, ok, message, rtol, atol, max_abs, max_rel, share,
        worst_index: :func:`compare_tensor`), extra candidate keys last
    """
    ref, order, tols = _reference_case(name, ref_bundle)
    return _compare_case(name, cand, ref, order, tols, allow_missing)


def check_bundle(folder, reference=None, *, cases=None, allow_missing=False, require_all_cases=False):
    """Compare a bundle written by another implementation with alh_ref's values, tensor by tensor.

    Parameters
    ----------
    folder : str or Path   holds <case>.safetensors files (its manifest.json, if any, is not read:
        names and tolerances come from the reference)
    reference : str or Path or None   a bundle written by :func:`write_bundle` to compare against;
        None computes the reference values afresh with :func:`compute_case`
    cases : list of case names or None   check only these (default: every case file in ``folder``)
    allow_missing : bool   keys the candidate lacks are reported as "not checked" instead of failing
        (for a port that so far computes the forward pass only)
    require_all_cases : bool   a reference case without a file in ``folder`` fails (else it is skipped)

    Returns
    -------
    report : dict  {"ok": bool, "first_failure": "case/key" or None, "entries": [per-tensor dicts with
        case, key, ok, message, rtol, atol, max_abs, max_rel, share, worst_index], "skipped": [case names],
        "reference": "fresh" or the reference path}.  Entries follow the reference's case order and,
        within a case, its key order (parameters, inputs, forward values in computation order, gradients
        in backward order), so the first failure is the earliest place the port diverges.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"golden folder {str(folder)!r} does not exist or is not a folder; "
                         "expected a folder of <case>.safetensors files")
    ref_bundle = None if reference is None else load_bundle(reference)
    known = list(CASES) if reference is None else list(ref_bundle[0]["case_order"])
    if cases is not None:
        bad = [c for c in cases if c not in known]
        if bad:
            raise InputError(f"unknown golden case(s) {', '.join(bad)}; expected names from {', '.join(known)}")
    names = known if cases is None else [n for n in known if n in set(cases)]
    found, unknown = _candidate_cases(folder, known)
    if not found and not unknown:
        raise InputError(f"{str(folder)!r} holds no <case>.safetensors file; expected files named after "
                         "the golden cases, e.g. gpt_f64.safetensors")
    entries, skipped = [], []
    if cases is None:
        entries += [_entry(Path(f).stem, "<file>", False, f"unknown case file {f}; expected one of the reference's cases")
                    for f in unknown]
    for name in names:
        if name not in found:
            if require_all_cases:
                entries.append(_entry(name, "<file>", False, f"case file {name}.safetensors is missing"))
            else:
                skipped.append(name)
            continue
        try:
            cand = _load_safetensors(found[name])
        except InputError as e:
            entries.append(_entry(name, "<file>", False, str(e)))
            continue
        entries.extend(check_case(name, cand, ref_bundle, allow_missing))
    first = next((e for e in entries if not e["ok"]), None)
    return {"ok": first is None, "first_failure": None if first is None else f"{first['case']}/{first['key']}",
            "entries": entries, "skipped": skipped,
            "reference": "fresh" if reference is None else str(reference)}


def format_report(report, only_failures=False):
    """The report as text: one line per tensor, then a summary naming the first failure.

    Parameters
    ----------
    report : dict from :func:`check_bundle`
    only_failures : bool   print only the failing tensors' lines

    Returns
    -------
    str
    """
    head = f"{'case':<40} {'tensor':<38} {'max_abs':>9} {'max_rel':>9} {'share':>9}  {'worst_index':<14} status"
    lines = [head, "-" * len(head)]
    for e in report["entries"]:
        if only_failures and e["ok"]:
            continue
        if "share" in e:
            rel = f"{e['max_rel']:9.2e}" if e["max_rel"] is not None else f"{'-':>9}"
            stats = f"{e['max_abs']:9.2e} {rel} {e['share']:9.2e}  {str(e['worst_index']):<14}"
        else:
            stats = f"{'-':>9} {'-':>9} {'-':>9}  {'-':<14}"
        status = "ok" if e["ok"] and not e["message"] else ("ok, " + e["message"] if e["ok"] else "FAIL " + e["message"])
        lines.append(f"{e['case']:<40} {e['key']:<38} {stats} {status}")
    n_fail = sum(not e["ok"] for e in report["entries"])
    n_missing = sum(bool(e.get("missing")) and e["ok"] for e in report["entries"])
    n_cases = len({e["case"] for e in report["entries"]})
    if report["skipped"]:
        lines.append(f"skipped (no file in the checked folder): {', '.join(report['skipped'])}")
    if report["ok"]:
        lines.append(f"PASS: {len(report['entries']) - n_missing} tensors in {n_cases} case(s) within tolerance"
                     + (f", {n_missing} missing and not checked" if n_missing else "")
                     + f" (reference: {report['reference']})")
    else:
        lines.append(f"FAIL: {n_fail} of {len(report['entries'])} tensors failed; first failing tensor: "
                     f"{report['first_failure']} (reference: {report['reference']})")
    return "\n".join(lines)
