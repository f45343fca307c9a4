"""Check a port's golden outputs with nothing but numpy and safetensors (no alh_ref, no Numba).

    python check_bundle.py OUTPUT_DIR [--reference BUNDLE_DIR] [--allow-missing] [--only-failures]

OUTPUT_DIR holds the port's <case>.safetensors files, written with the keys of docs/golden.md
section 3. BUNDLE_DIR (default: the folder this script is in) is a golden bundle: its manifest.json
gives the cases, every tensor's key in check order and its tolerance. This script implements
docs/golden.md section 7 on its own, so a port author can run it anywhere:

    err = |a - b|  (a the port's value, b the reference; a NaN where b is not NaN counts as inf)
    share = err / (atol + rtol |b|)   (0 where err = 0)          pass  <=>  max share <= 1

For each tensor it prints max_abs, max_rel (over the elements with |b| >= atol/rtol, where the
relative part of the tolerance dominates; "-" if there are none, e.g. a gradient that is
mathematically zero), share (the fraction of the tolerance used) and the worst element's index,
then names the first failing tensor: the earliest place, in computation order, where the port
diverges. --allow-missing lists the keys the port does not write yet as "not checked" instead of
failing (for a port that so far computes the forward pass only). Exit code 0: every tensor
passes; 1: a tensor fails; 2: bad input.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def compare(a, b, rtol, atol):
    """max_abs, max_rel (None if no |b| >= atol/rtol), share, worst_index of candidate a vs reference b."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)                                   # same shape
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.abs(a64 - b64)                                                             # same shape
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        err = np.where(same, 0.0, np.where(np.isnan(err), np.inf, err))
        tol = atol + rtol * np.abs(b64)
        share = np.where(err == 0, 0.0, np.where(tol > 0, err / np.where(tol > 0, tol, 1.0), np.inf))
        big = (b64 != 0) & (np.abs(b64) >= (atol / rtol if rtol > 0 else 0.0))
        rel = err[big] / np.abs(b64[big])                                                   # (n_big,)
    if err.size == 0:
        return 0.0, None, 0.0, ()
    s, e = share.ravel(), err.ravel()
    ties = np.flatnonzero(s == s.max())
    k = ties[np.argmax(e[ties])]                                                            # largest share, then err
    worst = tuple(int(i) for i in np.unravel_index(k, err.shape))
    return float(err.max()), (float(rel.max()) if rel.size else None), float(s[k]), worst


def check(out_dir, ref_dir, allow_missing=False):
    """Per-tensor rows (case, key, ok, max_abs, max_rel, share, worst_index, message) and skipped cases."""
    manifest = json.loads((ref_dir / "manifest.json").read_text(encoding="utf-8"))
    known = set(manifest["case_order"])
    rows, skipped = [], []
    for p in sorted(out_dir.glob("*.safetensors")):
        if p.stem not in known:
            rows.append((p.stem, "<file>", False, None, None, None, None, f"unknown case file {p.name}"))
    for case in manifest["case_order"]:
        meta = manifest["cases"][case]
        path = out_dir / f"{case}.safetensors"
        if not path.is_file():
            skipped.append(case)
            continue
        blob = (ref_dir / meta["file"]).read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta["file_sha256"]:
            raise ValueError(f"reference {meta['file']} does not match its manifest's file_sha256")
        ref = load_file(str(ref_dir / meta["file"]))
        try:
            mine = load_file(str(path))
        except Exception as e:  # a broken file is one failing row, not a traceback
            rows.append((case, "<file>", False, None, None, None, None, f"unreadable: {type(e).__name__}"))
            continue
        for ent in meta["tensors"]:                                                         # check order
            key, b = ent["key"], ref[ent["key"]]
            a = mine.get(key)
            if a is None and allow_missing:
                rows.append((case, key, True, None, None, None, None, "missing (not checked)"))
                continue
            if a is None:
                msg = f"missing: the reference has {key!r} {b.dtype.name} {b.shape}; write it under this exact key"
            elif a.shape != b.shape:
                msg = f"shape mismatch: got {a.shape}, expected {b.shape}"
            elif a.dtype != b.dtype:
                msg = f"dtype mismatch: got {a.dtype.name}, expected {b.dtype.name}"
            else:
                mx, rel, share, worst = compare(a, b, ent["rtol"], ent["atol"])
                ok = share <= 1.0
                rows.append((case, key, ok, mx, rel, share, worst,
                             "" if ok else f"out of tolerance: share {share:.3g} at {worst}"))
                continue
            rows.append((case, key, False, None, None, None, None, msg))
        listed = {e["key"] for e in meta["tensors"]}
        rows += [(case, k, False, None, None, None, None, "extra key: not in the reference")
                 for k in mine if k not in listed]
    return rows, skipped


def report(rows, skipped, ref_dir, only_failures=False):
    """The report text: the columns of alh-ref golden --check, then PASS or FAIL with the first failure."""
    head = f"{'case':<40} {'tensor':<38} {'max_abs':>9} {'max_rel':>9} {'share':>9}  {'worst_index':<14} status"
    lines = [head, "-" * len(head)]
    for case, key, ok, mx, rel, share, worst, msg in rows:
        if only_failures and ok:
            continue
        if share is None:
            stats = f"{'-':>9} {'-':>9} {'-':>9}  {'-':<14}"
        else:
            r = f"{rel:9.2e}" if rel is not None else f"{'-':>9}"
            stats = f"{mx:9.2e} {r} {share:9.2e}  {worst!s:<14}"
        status = ("ok, " + msg if msg else "ok") if ok else "FAIL " + msg
        lines.append(f"{case:<40} {key:<38} {stats} {status}")
    if skipped:
        lines.append(f"skipped (no file in the checked folder): {', '.join(skipped)}")
    failed = [r for r in rows if not r[2]]
    missing = sum(r[2] and bool(r[7]) for r in rows)
    if not rows:
        lines.append("FAIL: no case file of the reference was found")
    elif failed:
        lines.append(f"FAIL: {len(failed)} of {len(rows)} tensors failed; first failing tensor: "
                     f"{failed[0][0]}/{failed[0][1]} (reference: {ref_dir})")
    else:
        lines.append(f"PASS: {len(rows) - missing} tensors in {len({r[0] for r in rows})} case(s) within tolerance"
                     + (f", {missing} missing and not checked" if missing else "") + f" (reference: {ref_dir})")
    return "\n".join(lines), bool(rows) and not failed


def main(argv):
    args = [a for a in argv if a not in ("--only-failures", "--allow-missing")]
    ref_dir = Path(__file__).resolve().parent
    if "--reference" in args:
        i = args.index("--reference")
        if i + 1 >= len(args):
            print("error: --reference needs a folder", file=sys.stderr)
            return 2
        ref_dir = Path(args[i + 1])
        del args[i:i + 2]
    if len(args) != 1:
        print("usage: python check_bundle.py OUTPUT_DIR [--reference BUNDLE_DIR] [--allow-missing] [--only-failures]",
              file=sys.stderr)
        return 2
    out_dir = Path(args[0])
    if not out_dir.is_dir() or not (ref_dir / "manifest.json").is_file():
        print(f"error: {out_dir} must be a folder and {ref_dir} must hold a manifest.json", file=sys.stderr)
        return 2
    try:
        rows, skipped = check(out_dir, ref_dir, "--allow-missing" in argv)
    except (ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text, ok = report(rows, skipped, ref_dir, "--only-failures" in argv)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
