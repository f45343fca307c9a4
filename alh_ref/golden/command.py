"""``alh-ref golden``: write a bundle or check one, on the implementation asked for; returns lines, prints nothing."""
from pathlib import Path

from .. import ops
from ..errors import InputError
from .bundle import MANIFEST_FILE, write_bundle
from .check import check_bundle, format_report

def golden_command(out=None, check=None, reference=None, impl="fast"):
    """What ``alh-ref golden --out DIR`` / ``--check DIR [--reference DIR] [--impl fast|ref]`` do.

    Parameters
    ----------
    out : str or None        write the bundle here
    check : str or None      check the bundle in this folder (against ``reference`` or fresh values)
    reference : str or None  a bundle to compare against instead of recomputing
    impl : "fast" or "ref"   the layers' implementation the cases are computed on ("ref": the NumPy
        twins alone, ``with ops.using("ref")``); unused with ``reference``, which computes nothing

    Returns
    -------
    exit_code : int   0 written / every tensor passes; 1 a tensor failed
    lines : list of str   what to print on stdout (the per-tensor report, or one line for --out)

    Raises
    ------
    InputError  on bad input (the CLI prints ``error: <message>`` and exits 2)
    """
    if (out is None) == (check is None):
        raise InputError("golden needs exactly one of --out DIR (write a bundle) or --check DIR (check one)")
    if reference is not None and check is None:
        raise InputError("--reference only goes with --check DIR")
    if impl not in ops.IMPLS:                               # named as the flag the user typed
        raise InputError(f"unknown --impl {impl!r}; expected one of {', '.join(ops.IMPLS)}")
    with ops.using(impl):
        if out is not None:
            m = write_bundle(out)
            size = sum((Path(out) / c["file"]).stat().st_size for c in m["cases"].values())
            return 0, [f"wrote {len(m['case_order'])} golden cases to {out} ({size / 1e6:.2f} MB) and {MANIFEST_FILE}"]
        report = check_bundle(check, reference)
    return (0 if report["ok"] else 1), format_report(report).split("\n")
