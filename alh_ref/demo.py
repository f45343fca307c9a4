"""``alh-ref demo``, the main job: its options and its command (the experiment lives in alh_ref.study).

Kept apart from cli.py so the experiment's command-line surface has one owner; importing this
module is cheap (no NumPy / Numba), so ``alh-ref --help`` stays fast.

    alh-ref demo                     text setting (pydoc -> pycode, docstrings unseen), both protocols,
                                     every method, 3 seeds, reduced sizes (under 15 minutes on 2 cores)
    alh-ref demo --quick             the same at toy size (under 90 s): a smoke test, not a result
    alh-ref demo --full              documented strength (C=128, L=4, 1500 adaptation steps, 3 seeds)
    alh-ref demo --full --resume     the same, keeping the finished units of an interrupted run (re-run until complete)
    alh-ref demo --full --jobs 2     the units computed by 2 worker processes side by side (one core each)
    alh-ref demo --setting synthetic three latent-chain domains with exact loss floors
    alh-ref demo --corpus-a A --corpus-b B --corpus-c C    your own text files or folders
"""

DEMO_HELP = "run the experiment that answers the proposal's four claims (report.md ends with the verdict)"
DEMO_DESCRIPTION = ("The main job: pretrain a small GPT on domain A, adapt it to domain B with ALH and every baseline "
                    "under two protocols (shift: B only; mix: A and B), measure A, B and an unseen domain C, and "
                    "write report.md (ending with the verdict on each claim), results.json and plots to <out>/<name>/.")


def add_demo_arguments(p):
    """The demo's own options (cli.py adds the common ones: --out, --name, --seed, --json, --progress)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="toy size, under 90 s (a smoke test of every code path)")
    g.add_argument("--full", action="store_true", help="documented strength: C=128, L=4, 1500 adaptation steps (hours)")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished units in <out>/<name>/cache and run only the missing ones (re-run until complete)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="worker processes computing the study's units side by side, BLAS on one thread each "
                        "(default 1: one process, BLAS on every core); the same units, rounding aside")
    p.add_argument("--setting", choices=("text", "synthetic"), default=None,
                   help="text (default: A = pydoc, B = pycode, C = docstrings) or synthetic (three latent chains)")
    for D, what in (("a", "domain A (the base is pretrained on it)"), ("b", "domain B (the new domain)"),
                    ("c", "domain C (never trained on)")):
        p.add_argument(f"--corpus-{D}", metavar="PATH", default=None,
                       help=f"{what}: a UTF-8 text file or a folder of .txt/.md files (give all three)")


def demo_config(args):
    """(size, setting, overrides) of run_study from the parsed options; InputError on a bad combination."""
    from .errors import InputError
    size = "quick" if args.quick else ("full" if args.full else "default")
    paths = {k: getattr(args, k) for k in ("corpus_a", "corpus_b", "corpus_c")}
    given = {k: v for k, v in paths.items() if v is not None}
    if given and len(given) < 3:
        missing = ", ".join("--" + k.replace("_", "-") for k in paths if k not in given)
        raise InputError(f"own corpora need all of --corpus-a, --corpus-b and --corpus-c; missing {missing}")
    if given and args.setting == "synthetic":
        raise InputError("--setting synthetic takes no --corpus-a/-b/-c; expected one or the other")
    setting = "paths" if given else args.setting
    return size, setting, given


def cmd_demo(args):
    """``alh-ref demo``: alh_ref.study.run_study into <out>/<name>/ -> (summary, [report lines])."""
    size, setting, overrides = demo_config(args)
    from .runs import run_dir
    from .study import run_study
    folder = run_dir(args.out, args.name)
    res = run_study(size=size, setting=setting, out_dir=str(folder), seed=0 if args.seed is None else args.seed,
                    progress=args.progress != "off", resume=args.resume, jobs=args.jobs, **overrides)
    summary = {"job": "demo", "run": str(folder), "size": size, "setting": res["config"]["setting"],
               "files": res.get("files", []), "verdict": res["verdict"]["lines"], "runtime_s": res.get("runtime_s")}
    lines = res["verdict"]["lines"] + [f"study complete: wall time {res['runtime_s']:.0f} s ({res['cached_units']} units "
                                       f"from the cache); report, results.json and plots in {folder}"]
    return summary, lines
