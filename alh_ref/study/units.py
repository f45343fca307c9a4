"""The study's units of work, and the loop that computes the missing ones (alone or beside other processes).

A unit is one JSON file of the cache (resume.py): ``base-<seed>`` (the frozen base's record and
its own measurements as the method "none") or ``<protocol>-<method>-<seed>`` (one method's
per-seed record; on the first seed its whole learning-rate sweep too). Dependencies: a later
seed's unit reuses the first seed's tuning entry (learning rate, strength, ALH size),
embed-ft-l2 is tuned at embed-ft's learning rate, and alh-householder's controls are built at its
size. :func:`compute_missing` takes the units in :func:`schedule` order, skips one whose
dependencies are not finished yet or that another process holds (``StudyCache.claim``), and passes
again until every unit is finished.
"""
import math
import sys
import time

import numpy as np

from ..errors import RunError
from ..parallel import keep_freed_memory
from .measure import base_log_probs, measure
from .protocol import adapt, build, objective, pretrain_base, sweep, val_point
from .settings import ALH_CONTROLS


def log(progress, t0, msg, who=""):
    """One progress line on stderr: seconds since t0, the worker's tag, the message."""
    if progress:
        print(f"[study {time.perf_counter() - t0:7.1f}s{who}] {msg}", file=sys.stderr, flush=True)


def method_order(methods):
    """Methods in run order: embed-ft before embed-ft-l2 (tuned at embed-ft's learning rate)."""
    return sorted(methods, key=lambda n: (n == "embed-ft-l2", methods.index(n)))


def schedule(cfg, seeds):
    """Every unit in the order a worker takes them: [(unit, seed index, protocol, method)].

    Per seed its base first, then its methods per protocol; on the first seed with ALH sizes to
    sweep, alh-householder's units (the largest: sizes x learning rates) go first so that parallel
    workers do not end on them.
    """
    out = []
    for si, s in enumerate(seeds):
        out.append((f"base-{s}", si, None, None))
        units = [(f"{p}-{n}-{s}", si, p, n) for p in cfg["protocols"] for n in method_order(cfg["methods"])
                 if n != "none"]
        if si == 0 and cfg["alh_sweep"]:
            units.sort(key=lambda u: u[3] != "alh-householder")                          # stable sort
        out += units
    return out


def needs(si, p, name, seeds, methods):
    """The units a unit reads: [(unit, method)] (their tuning entries). On the first seed embed-ft-l2
    reads embed-ft's (its learning rate), and alh-householder's controls read alh-householder's (its size)."""
    if name is None:
        return []
    if si > 0:
        return [(f"{p}-{name}-{seeds[0]}", name)]
    if name == "embed-ft-l2":
        return [(f"{p}-embed-ft-{seeds[0]}", "embed-ft")]
    if name in ALH_CONTROLS and "alh-householder" in methods:
        return [(f"{p}-alh-householder-{seeds[0]}", "alh-householder")]
    return []


def method_entry(name, m, cfg, matched):
    """A method's table entry: trainable and effective counts, its matched size, and per_seed records."""
    detail = {"K": matched["K"]} if name == "static-householder-matched" else (
        {"D": matched["D"]} if name == "alh-householder-matched" else {})
    return {"n_trainable": m.n_trainable, "n_effective": m.n_effective, "detail": detail, "per_seed": []}


def run_method(name, p, si, s, ctx):
    """Adapt (and on the first seed tune) one method; returns its per-seed record."""
    base, gcfg, cfg, data, matched, P = ctx["base"], ctx["gcfg"], ctx["cfg"], ctx["data"], ctx["matched"], ctx["P"]
    entry = P["methods"].get(name)
    if si == 0:
        tune_l2 = name == "embed-ft-l2"
        lr0 = P["methods"]["embed-ft"]["lr"] if tune_l2 else None
        if name == "alh-householder" and cfg["alh_sweep"]:
            variants = cfg["alh_sweep"]                                                     # ALH's own K / D (--full)
        elif name in ALH_CONTROLS and "alh-householder" in P["methods"]:
            variants = [P["methods"]["alh-householder"]["alh_overrides"]]                  # the size ALH was tuned to
        else:
            variants = [{}]
        tuned = []
        for var in variants:

            def run(v, var=var):
                m = build(name, base, gcfg, cfg, matched, s, l2=v if tune_l2 else None, alh=var)
                what = f"seed {s} {p} {name} {'l2' if tune_l2 else 'lr'} {v:g}" + "".join(f" {k}={x}" for k, x in var.items())
                try:
                    losses, track, sec = adapt(m, data, cfg, p, lr0 if tune_l2 else v, s)
                except RunError:
                    ctx["say"](f"  {what}: diverged")
                    return math.inf, None
                ctx["say"](f"  {what}: val objective {objective(track[-1], p):.4f} ({sec:.1f}s)")
                return objective(track[-1], p), (m, losses, track, sec)

            tuned.append((var, sweep(run, cfg["l2s"] if tune_l2 else cfg["lrs"], cfg["max_extend"])))
        score = [math.inf if sw[2][sw[0]] is None else objective(sw[2][sw[0]][2][-1], p) for _, sw in tuned]
        var, (best, tried, payloads, extended, edge) = tuned[int(np.argmin(score))]
        if payloads[best] is None:
            raise RunError(f"{name} diverged at every value {sorted(payloads)} under {p}; expected a stable run")
        m, losses, track, sec = payloads[best]
        entry = P["methods"][name] = method_entry(name, m, cfg, matched)
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


def prepare_base(ctx, s):
    """Pretrain seed s's base (deterministic in s) and measure it as the method "none" into ctx."""
    gcfg, cfg, data, matched = ctx["gcfg"], ctx["cfg"], ctx["data"], ctx["matched"]
    base, info = pretrain_base(data, gcfg, cfg, s)
    none = build("none", base, gcfg, cfg, matched, s)
    ctx.update(base=base, E_ref=base["wte"].copy(), base_logp=base_log_probs(none, data))
    none_rec = {"seed": s, "train_seconds": 0.0, "ms_per_step": 0.0, "train_loss": [], "val": val_point(none, data, 0)}
    none_rec.update(measure(none, ctx["E_ref"], ctx["base_logp"], data, cfg))
    ctx.update(none_rec=none_rec, base_rec={"seed": s, "pretrain_final_loss": info["final_loss"],
                                            "pretrain": info, "val": none_rec["val"]},
               none_entry={k: v for k, v in method_entry("none", none, cfg, matched).items() if k != "per_seed"}
               | {"lr": None, "l2": None, "tuned": None})


def compute_unit(unit, si, p, name, setup, ctxs, cache, say=lambda msg: None):
    """Compute one unit into the cache; returns its progress line. ctxs: seed -> prepared base (kept);
    say: called with a progress line after every run of a learning-rate sweep."""
    seeds = setup["seeds"]
    s = seeds[si]
    if s not in ctxs:
        ctxs[s] = dict(setup)
        prepare_base(ctxs[s], s)
    ctx = ctxs[s]
    ctx["say"] = say
    if name is None:
        cache.put(unit, {"base": ctx["base_rec"], "none": ctx["none_rec"], "none_entry": ctx["none_entry"]})
        t = ctx["none_rec"]["test"]
        pre = ctx["base_rec"]["pretrain"]
        return (f"seed {s}: base pretrained, kept step {pre['best_step']} of {pre['stopped_step']} by A val loss "
                f"(train loss {ctx['base_rec']['pretrain_final_loss']:.3f}); "
                f"test A {t['A']['loss']:.3f} B {t['B']['loss']:.3f} C {t['C']['loss']:.3f}")
    ctx["P"] = {"methods": {n: dict(cache.get(u)["entry"], per_seed=[])
                            for u, n in needs(si, p, name, seeds, setup["cfg"]["methods"])},
                "frontier": {}}
    rec = run_method(name, p, si, s, ctx)
    got = {"rec": rec}
    if si == 0:
        got.update(entry={k: v for k, v in ctx["P"]["methods"][name].items() if k != "per_seed"},
                   frontier=ctx["P"]["frontier"][name])
    cache.put(unit, got)
    t = rec["test"]
    return (f"seed {s} {p:5s} {name:27s} test A {t['A']['loss']:.3f} B {t['B']['loss']:.3f} "
            f"C {t['C']['loss']:.3f} ({rec['train_seconds']:.1f}s)")


def compute_missing(cache, setup, progress=False, t0=None, who="", poll=5.0):
    """Compute every unfinished unit of the study into the cache (see the module docstring).

    Returns the number of units this process computed. Another process working on the same cache
    only shortens the work: a unit it holds is skipped, and waited for if a unit here needs it.
    """
    t0 = time.perf_counter() if t0 is None else t0
    keep_freed_memory()                      # freed step buffers stay for reuse, as in a DataParallel (docs/performance.md)
    seeds = setup["seeds"]
    todo = [u for u in schedule(setup["cfg"], seeds) if not cache.has(u[0])]
    ctxs, done = {}, 0
    while todo:
        waiting = []
        for unit, si, p, name in todo:
            if cache.has(unit):
                continue                                                                    # another process did it
            if not all(cache.has(d) for d, _ in needs(si, p, name, seeds, setup["cfg"]["methods"])):
                waiting.append((unit, si, p, name))
                continue
            with cache.claim(unit) as mine:
                if not mine:
                    waiting.append((unit, si, p, name))
                    continue
                if not cache.has(unit):
                    say = lambda msg: log(progress, t0, msg, who)                          # noqa: E731
                    say(compute_unit(unit, si, p, name, setup, ctxs, cache, say))
                    done += 1
        todo = waiting
        ctxs = {s: c for s, c in ctxs.items() if any(seeds[u[1]] == s for u in todo)}      # free finished bases
        if todo:
            time.sleep(poll)
    return done
