"""Run the whole study: data, then per seed a base and every method under every protocol, then the report.

Entry point :func:`run_study`; it writes results.json (schema: docs/experiment.md), report.md and
the plots to ``out_dir``. The learning-rate sweep runs on the first seed; its choice is reused
for the other seeds and its tracked validation points are the retention/adaptation frontier.
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, RunError
from ..io_utils import atomic_write_json, atomic_write_text, ensure_writable_dir
from .resume import StudyCache, manifest
from .data import DOMAINS, load_data, synthetic_floors
from .measure import base_log_probs, counts, measure
from .plots import write_plots
from .protocol import adapt, base_config, build, objective, pretrain_base, resolve_matched, sweep, val_point
from .report import report_markdown
from .settings import resolve
from .summary import summarize
from .verdict import verdict


def _log(progress, t0, msg):
    if progress:
        print(f"[study {time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


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


def _method_entry(name, m, cfg, matched):
    detail = {"K": matched["K"]} if name == "static-householder-matched" else (
        {"D": matched["D"]} if name == "alh-householder-matched" else {})
    return {"n_trainable": m.n_trainable, "n_effective": m.n_effective, "detail": detail, "per_seed": []}


def _run_method(name, p, si, s, ctx):
    """Adapt (and on the first seed tune) one method; returns its per-seed record."""
    base, gcfg, cfg, data, matched, P = ctx["base"], ctx["gcfg"], ctx["cfg"], ctx["data"], ctx["matched"], ctx["P"]
    entry = P["methods"].get(name)
    if si == 0:
        tune_l2 = name == "embed-ft-l2"
        lr0 = P["methods"]["embed-ft"]["lr"] if tune_l2 else None
        variants = cfg["alh_sweep"] if name == "alh-householder" and cfg["alh_sweep"] else [{}]
        tuned = []
        for var in variants:                                                                # ALH's own K / D (--full)

            def run(v, var=var):
                m = build(name, base, gcfg, cfg, matched, s, l2=v if tune_l2 else None, alh=var)
                try:
                    losses, track, sec = adapt(m, data, cfg, p, lr0 if tune_l2 else v, s)
                except RunError:
                    return math.inf, None
                return objective(track[-1], p), (m, losses, track, sec)

            tuned.append((var, sweep(run, cfg["l2s"] if tune_l2 else cfg["lrs"], cfg["max_extend"])))
        score = [math.inf if sw[2][sw[0]] is None else objective(sw[2][sw[0]][2][-1], p) for _, sw in tuned]
        var, (best, tried, payloads, extended, edge) = tuned[int(np.argmin(score))]
        if payloads[best] is None:
            raise RunError(f"{name} diverged at every value {sorted(payloads)} under {p}; expected a stable run")
        m, losses, track, sec = payloads[best]
        entry = P["methods"][name] = _method_entry(name, m, cfg, matched)
        entry.update(lr=lr0 if tune_l2 else best, l2=best if tune_l2 else None, tuned="l2" if tune_l2 else "lr",
                     sweep=tried, extended=[float(v) for v in extended], on_edge=bool(edge), alh_overrides=var,
                     variants=[{"alh": v, "val": sc if math.isfinite(sc) else None} for (v, _), sc in zip(tuned, score)])
        entry["detail"].update(var)
        P["frontier"][name] = [dict(q, value=float(v)) for _, sw in tuned for v, pl in sw[2].items() if pl for q in pl[2]]
    else:
        m = build(name, base, gcfg, cfg, matched, s, l2=entry["l2"], alh=entry.get("alh_overrides"))
        try:
            losses, track, sec = adapt(m, data, cfg, p, entry["lr"], s, track=False)
        except RunError as e:
            raise RunError(f"{e} on seed {s} at the value chosen on seed {ctx['seeds'][0]}") from None
    rec = {"seed": s, "train_seconds": sec, "ms_per_step": 1e3 * sec / max(1, len(losses)), "train_loss": losses,
           "val": track[-1]}
    rec.update(measure(m, ctx["E_ref"], ctx["base_logp"], data, cfg))
    if not np.array_equal(base["wte"], ctx["E_ref"]):
        raise RunError(f"method {name!r} wrote the frozen base's wte; expected methods to leave the base untouched")
    return rec


def _prepare_base(ctx, s):
    """Pretrain seed s's base (deterministic in s) and measure it as the method "none" into ctx."""
    gcfg, cfg, data, matched = ctx["gcfg"], ctx["cfg"], ctx["data"], ctx["matched"]
    base, final = pretrain_base(data, gcfg, cfg, s)
    none = build("none", base, gcfg, cfg, matched, s)
    ctx.update(base=base, E_ref=base["wte"].copy(), base_logp=base_log_probs(none, data))
    none_rec = {"seed": s, "train_seconds": 0.0, "ms_per_step": 0.0, "train_loss": [], "val": val_point(none, data, 0)}
    none_rec.update(measure(none, ctx["E_ref"], ctx["base_logp"], data, cfg))
    ctx.update(none_rec=none_rec, base_rec={"seed": s, "pretrain_final_loss": final, "val": none_rec["val"]},
               none_entry={k: v for k, v in _method_entry("none", none, cfg, matched).items() if k != "per_seed"}
               | {"lr": None, "l2": None, "tuned": None})


def _order(methods):
    """Methods in run order: embed-ft before embed-ft-l2 (tuned at embed-ft's learning rate)."""
    return sorted(methods, key=lambda n: (n == "embed-ft-l2", methods.index(n)))


def run_study(size="default", setting=None, out_dir=None, seed=0, progress=True, resume=False, **overrides):
    """Run the study and write its results.

    Parameters
    ----------
    size : "quick" | "default" | "full" (settings.SIZES)
    setting : "text" | "synthetic" | "paths" or None (text)
    out_dir : str or Path or None   folder for results.json, report.md and the PNGs (None: write nothing)
    seed : int   first seed; the study uses seed, seed+1, ..., seed+n_seeds-1
    progress : bool   one line per finished run on stderr
    resume : bool   keep the units already in ``out_dir``/cache (same configuration and data, else
        InputError) and run only the missing ones; False starts the cache afresh (resume.py)
    **overrides : configuration keys to replace (settings.resolve)

    Returns
    -------
    dict   config, data, matched, seeds, base, protocols {p: {methods, frontier, frontier_table}},
           summary, verdict, runtime_s, cached_units, complete, files
    """
    t0 = time.perf_counter()
    cfg = resolve(size, setting, **overrides)
    if out_dir is not None:
        ensure_writable_dir(out_dir)
    data = load_data(cfg)
    gcfg = base_config(cfg, data["V"])
    matched = resolve_matched(cfg, gcfg)
    seeds = [int(seed) + i for i in range(cfg["n_seeds"])]
    results = {"config": cfg, "data": _data_info(data, cfg), "matched": matched, "seeds": seeds, "base": [],
               "protocols": {p: {"methods": {}, "frontier": {}} for p in cfg["protocols"]}, "complete": False}
    _log(progress, t0, data["describe"])
    cache = StudyCache(None if out_dir is None else Path(out_dir) / "cache", manifest(cfg, seeds, data), resume)
    for si, s in enumerate(seeds):
        ctx = {"gcfg": gcfg, "cfg": cfg, "data": data, "matched": matched, "seeds": seeds}
        b = cache.get(f"base-{s}")
        if b is None:
            _prepare_base(ctx, s)
            b = {"base": ctx["base_rec"], "none": ctx["none_rec"], "none_entry": ctx["none_entry"]}
            b = cache.put(f"base-{s}", b)
        results["base"].append(b["base"])
        none_rec = b["none"]
        _log(progress, t0, f"seed {s}: base {'from the cache' if 'base' not in ctx else 'pretrained'} (train loss "
             f"{b['base']['pretrain_final_loss']:.3f}); test A {none_rec['test']['A']['loss']:.3f} "
             f"B {none_rec['test']['B']['loss']:.3f} C {none_rec['test']['C']['loss']:.3f}")
        for p in cfg["protocols"]:
            P = ctx["P"] = results["protocols"][p]
            for name in _order(cfg["methods"]):
                if name == "none":
                    P["methods"].setdefault("none", dict(b["none_entry"], per_seed=[]))["per_seed"].append(none_rec)
                    P["frontier"].setdefault("none", [dict(none_rec["val"], value=0.0)])
                    continue
                unit = f"{p}-{name}-{s}"
                got = cache.get(unit)
                if got is None:
                    if "base" not in ctx:
                        _prepare_base(ctx, s)                                               # only when a unit needs it
                    rec = _run_method(name, p, si, s, ctx)
                    got = {"rec": rec}
                    if si == 0:
                        got.update(entry={k: v for k, v in P["methods"][name].items() if k != "per_seed"},
                                   frontier=P["frontier"][name])
                    got = cache.put(unit, got)
                    where = f"({got['rec']['train_seconds']:.1f}s)"
                else:
                    if si == 0:
                        P["methods"][name] = dict(got["entry"], per_seed=[])
                        P["frontier"][name] = got["frontier"]
                    where = "(from the cache)"
                rec = got["rec"]
                P["methods"][name]["per_seed"].append(rec)
                _log(progress, t0, f"seed {s} {p:5s} {name:27s} test A {rec['test']['A']['loss']:.3f} "
                     f"B {rec['test']['B']['loss']:.3f} C {rec['test']['C']['loss']:.3f} {where}")
            P["methods"] = {n: P["methods"][n] for n in cfg["methods"]}                     # table order
        if out_dir is not None:
            atomic_write_json(f"{out_dir}/results.json", results)                               # per-seed records so far
    results["cached_units"] = cache.hits
    results["runtime_s"] = time.perf_counter() - t0
    cache.mark_complete()
    return finish(results, out_dir, progress, t0)


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
            _log(progress, t0, f"wrote {', '.join(results['files'])} to {out_dir}")
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
