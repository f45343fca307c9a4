"""``alh-ref demo``, the main job: its options and its command (the study lives in alh_ref.study).

Kept apart from cli.py so the study's command-line surface has one owner; importing this module is
cheap (no NumPy / Numba), so ``alh-ref --help`` stays fast.
"""

DEMO_HELP = "run the ALH study's quick preset on its built-in corpus"
DEMO_DESCRIPTION = ("The main job: the study (alh_ref.study) comparing ALH with its baselines, quick preset, on the "
                    "built-in synthetic corpus; writes results.json, results.md and plots to <out>/<name>/.")


def add_demo_arguments(p):
    """The demo's own options (cli.py adds the common ones: --out, --name, --seed, --json, --progress)."""
    p.add_argument("--preset", default="quick", help="study preset: micro | quick | full | text (default quick)")


def cmd_demo(args):
    """``alh-ref demo``: alh_ref.study.run_study into <out>/<name>/ -> (summary, [results table])."""
    run_study = _study("run_study")
    from .runs import run_dir
    folder = run_dir(args.out, args.name)
    res = run_study(preset=args.preset, out_dir=str(folder), seed=0 if args.seed is None else args.seed,
                    progress=args.progress != "off")
    table = _study("results_markdown")(res)
    summary = {"job": "demo", "run": str(folder), "preset": args.preset, "files": res.get("files", []),
               "headline": res.get("headline"), "runtime_s": res.get("runtime_s")}
    return summary, [table, f"results written to {folder}"]


def _study(attr):
    from . import study
    return getattr(study, attr)
