"""Run the whole study: data, then every unit (per seed a base and every method under every protocol), then the report.

Entry point :func:`run_study`; it writes results.json (schema: docs/experiment.md), report.md and
the plots to ``out_dir``. The units are computed by units.compute_missing, here or in parallel
worker processes; the results are then assembled from the finished units alone. The
learning-rate sweep runs on the first seed; its choice is reused for the other seeds and its
tracked validation points are the retention/adaptation frontier.
"""
import json
import math
import sys
import time
from pathlib import Path

from ..errors import InputError, RunError
from ..io_utils import atomic_write_json, atomic_write_text, ensure_writable_dir
from .resume import StudyCache, manifest
from .data import DOMAINS, load_data, synthetic_floors
from ..parallel import blas_limit
from .measure import counts
from .plots import write_plots
from .protocol import base_config, resolve_matched
from .report import report_markdown
from .settings import resolve
from .summary import summarize
from .units import compute_missing, log, method_order, schedule
from .verdict import verdict


def _data_info(data, cfg):
    info = {"setting": cfg["setting"], "describe": data["describe"], "V": data["V"], "ln_V": math.log(data["V"]),
            "n_docs": {D: data["domains"][D]["n_docs"] for D in DOMAINS},
            "tokens": {D: data["domains"][D]["tokens"] for D in DOMAINS},
            "counts": {D: counts(data["domains"][D]["test"]) for D in DOMAINS}}
    if "P" in data:
        info["floors"] = synthetic_floors(data, cfg["block_size"])
    if "tokenizer_sha256" in data:
        info["tokenizer_sha256"] = data["tokenizer_sha256"]
    return info


def run_study(size="default", setting=None, out_dir=None, seed=0, progress=True, resume=False, jobs=1, **overrides):
    """Run the study and write its results.

    Parameters
    ----------
    size : "quick" | "default" | "full" (settings.SIZES)
    setting : "text" | "synthetic" | "paths" or None (text)
    out_dir : str or Path or None   folder for results.json, report.md and the PNGs (None: write nothing)
    seed : int   first seed; the study uses seed, seed+1, ..., seed+n_seeds-1
    progress : bool   one line per finished unit on stderr
    resume : bool   keep the units already in ``out_dir``/cache (same configuration and data, else
        InputError) and run only the missing ones; False starts the cache afresh (resume.py)
    jobs : int   worker processes that compute the units side by side on one cache, BLAS on one
        thread each (needs ``out_dir``); 1 computes them here with BLAS on every core. The units are
        the same computations either way (rounding aside), and so is the report
    **overrides : configuration keys to replace (settings.resolve)

    Returns
    -------
    dict   config, data, matched, seeds, base, protocols {p: {methods, frontier, frontier_table}},
           summary, verdict, runtime_s, cached_units, complete, files
    """
    t0 = time.perf_counter()
    if not isinstance(jobs, int) or jobs < 1 or (jobs > 1 and out_dir is None):
        raise InputError(f"jobs must be a whole number >= 1 (more than 1 needs an output folder); got {jobs!r}")
    cfg = resolve(size, setting, **overrides)
    if out_dir is not None:
        ensure_writable_dir(out_dir)
    setup = _setup(cfg, seed)
    data = setup["data"]
    log(progress, t0, data["describe"])
    cache = StudyCache(None if out_dir is None else Path(out_dir) / "cache", manifest(cfg, setup["seeds"], data), resume)
    if cache.warning:
        print(cache.warning, file=sys.stderr, flush=True)
    units = schedule(cfg, setup["seeds"])
    hits = sum(cache.has(u[0]) for u in units)
    if hits:
        log(progress, t0, f"{hits} of {len(units)} units from the cache")
    if jobs == 1:
        compute_missing(cache, setup, progress, t0)
    else:
        _compute_with_workers(jobs, (size, setting, str(out_dir), seed, progress, overrides), cache, setup, t0)
    results = _assemble(cache, setup, data)
    results["cached_units"] = hits
    results["runtime_s"] = time.perf_counter() - t0
    cache.mark_complete()
    return finish(results, out_dir, progress, t0)


def _setup(cfg, seed):
    """What every unit reads: cfg, the data, the base's GPTConfig, the matched sizes and the seeds."""
    data = load_data(cfg)
    gcfg = base_config(cfg, data["V"])
    return {"gcfg": gcfg, "cfg": cfg, "data": data, "matched": resolve_matched(cfg, gcfg),
            "seeds": [int(seed) + i for i in range(cfg["n_seeds"])]}


def _compute_with_workers(jobs, args, cache, setup, t0):
    """compute_missing here and in jobs - 1 spawned worker processes, BLAS on one thread in each."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=args + (k,), name=f"study-worker-{k}") for k in range(1, jobs)]
    try:
        for w in procs:
            w.start()
        with blas_limit(1):
            compute_missing(cache, setup, args[4], t0, who=" worker 0")
        for w in procs:
            w.join()
    finally:
        for w in procs:
            if w.is_alive():
                w.terminate()
                w.join()
    failed = [f"{w.name} (exit {w.exitcode})" for w in procs if w.exitcode != 0]
    if failed:
        raise RunError(f"{', '.join(failed)} stopped before the study was complete; the finished units are kept: "
                       "run the same command with --resume")


def _worker(size, setting, out_dir, seed, progress, overrides, k):
    """One spawned worker: the same configuration and data, the same cache (resumed), BLAS on one thread."""
    t0 = time.perf_counter()
    try:
        setup = _setup(resolve(size, setting, **overrides), seed)
        cache = StudyCache(Path(out_dir) / "cache", manifest(setup["cfg"], setup["seeds"], setup["data"]), resume=True)
        with blas_limit(1):
            compute_missing(cache, setup, progress, t0, who=f" worker {k}")
    except (InputError, RunError, OSError) as e:
        print(f"alh-ref: study worker {k}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:                                      # Ctrl-C reaches every worker: the parent reports it
        sys.exit(130)


def _assemble(cache, setup, data):
    """The raw results (config, data, bases, per-protocol methods and frontiers) from the finished units."""
    cfg, seeds = setup["cfg"], setup["seeds"]
    results = {"config": cfg, "data": _data_info(data, cfg), "matched": setup["matched"], "seeds": seeds,
               "base": [], "protocols": {p: {"methods": {}, "frontier": {}} for p in cfg["protocols"]},
               "complete": False}
    for si, s in enumerate(seeds):
        b = cache.get(f"base-{s}")
        results["base"].append(b["base"])
        for p in cfg["protocols"]:
            P = results["protocols"][p]
            for name in method_order(cfg["methods"]):
                if name == "none":
                    P["methods"].setdefault("none", dict(b["none_entry"], per_seed=[]))["per_seed"].append(b["none"])
                    P["frontier"].setdefault("none", [dict(b["none"]["val"], value=0.0)])
                    continue
                got = cache.get(f"{p}-{name}-{s}")
                if si == 0:
                    P["methods"][name] = dict(got["entry"], per_seed=[])
                    P["frontier"][name] = got["frontier"]
                P["methods"][name]["per_seed"].append(got["rec"])
            P["methods"] = {n: P["methods"][n] for n in cfg["methods"]}                     # table order
    return results


def finish(results, out_dir, progress=False, t0=None):
    """Summaries, verdict, report.md, plots and results.json (complete) from the raw records."""
    summarize(results)
    results["verdict"] = verdict(results)
    results["complete"] = True
    results["files"] = []
    if out_dir is not None:
        atomic_write_text(f"{out_dir}/report.md", report_markdown(results))
        results["files"] = ["results.json", "report.md"] + write_plots(results, out_dir)
        atomic_write_json(f"{out_dir}/results.json", results)
        if t0 is not None:
            log(progress, t0, f"wrote {', '.join(results['files'])} to {out_dir}")
    return results


def rewrite_report(out_dir):
    """Re-summarise a finished study's results.json and rewrite report.md and the plots (no training)."""
    path = Path(out_dir) / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read study results {str(path)!r}: {e}; expected a folder written by run_study") from None
    if not results.get("complete"):
        raise InputError(f"{str(path)!r} is from an unfinished study; expected a complete run")
    return finish(results, out_dir)
