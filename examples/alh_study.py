"""Run the ALH experiment from Python with any configuration key replaced (``alh-ref demo`` is the CLI).

    python examples/alh_study.py                                  # quick size -> runs/study-quick
    python examples/alh_study.py --size default --setting synthetic
    python examples/alh_study.py --size quick --set adapt_steps=60 --set n_seeds=2

Writes results.json, report.md and PNG plots (if matplotlib is installed) to --out, and prints
the report. The protocol is in docs/experiment.md, the recorded results in docs/results.md.
"""
import argparse
import ast
import sys

from alh_ref.errors import ALHRefError, InputError
from alh_ref.study import SETTINGS, SIZES, run_study


def parse_set(items):
    """``key=value`` strings -> dict; values parsed as Python literals (numbers, tuples, strings)."""
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set {item!r} is not key=value; expected e.g. --set adapt_steps=60")
        try:
            out[key] = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            out[key] = val
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="quick", choices=sorted(SIZES))
    ap.add_argument("--setting", default=None, choices=SETTINGS, help="data setting (default text)")
    ap.add_argument("--out", default=None, help="output folder (default runs/study-<size>)")
    ap.add_argument("--seed", type=int, default=0, help="first seed (the study uses seed .. seed+n_seeds-1)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset key")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    a = ap.parse_args(argv)
    try:
        out = a.out or f"runs/study-{a.size}"
        res = run_study(a.size, a.setting, out_dir=out, seed=a.seed, progress=not a.quiet, **parse_set(a.set))
    except ALHRefError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    with open(f"{out}/report.md", encoding="utf-8") as f:
        print(f.read())
    print(f"runtime {res['runtime_s']:.0f} s; files in {out}: {', '.join(res['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
