"""The study's units of work, and the loop that computes the missing ones (alone or beside other processes).

A unit is one JSON file of the cache (resume.py): ``base-<seed>`` (the frozen base's record and
its own measurements as the method "none") or ``<protocol>-<method>-<seed>`` (one method's
per-seed record; on the first seed its whole learning-rate sweep too). With ALH sizes to tune
(``alh_sweep``, --full) each size's learning-rate sweep on the first seed is a unit of its own,
``<protocol>-alh-householder-<seed>-K<K>-D<D>`` (:func:`size_unit`), and the first seed's
alh-householder unit takes the best of them, first extending the sizes past an open edge
(:func:`next_size`). Dependencies: a later seed's unit reuses the first seed's tuning entry
(learning rate, strength, ALH size), embed-ft-l2 is tuned at embed-ft's learning rate,
alh-householder reads its sizes' units, and its controls are built at its size.
:func:`compute_missing` takes the units in :func:`schedule` order, skips one whose dependencies
are not finished yet or that another process holds (``StudyCache.claim``), and passes again until
every unit is finished.
"""
import math
import sys
import time

import numpy as np

from ..errors import RunError
from ..parallel import keep_freed_memory
from .measure import base_log_probs, measure
from .protocol import adapt, build, objective, pretrain_base, sweep, val_point
from .settings import ALH_CONTROLS, SIZE_KEYS, size_text


def log(progress, t0, msg, who=""):
    """One progress line on stderr: seconds since t0, the worker's tag, the message."""
    if progress:
        print(f"[study {time.perf_counter() - t0:7.1f}s{who}] {msg}", file=sys.stderr, flush=True)


def method_order(methods):
    """Methods in run order: embed-ft before embed-ft-l2 (tuned at embed-ft's learning rate)."""
    return sorted(methods, key=lambda n: (n == "embed-ft-l2", methods.index(n)))


def size_unit(p, s, size):
    """The unit of one ALH size's learning-rate sweep on seed s: e.g. ``shift-alh-householder-0-K16-D64``."""
    return f"{p}-alh-householder-{s}-" + "-".join(f"{k}{size[k]}" for k in SIZE_KEYS if k in size)


def schedule(cfg, seeds):
    """Every unit in the order a worker takes them: [(unit, seed index, protocol, method, size)].

    size is the ALH size of a size unit and None otherwise. Per seed its base first, then its
    methods per protocol; on the first seed with ALH sizes to sweep, the size units (the largest)
    and then alh-householder's units go first, so that parallel workers do not end on them.
    """
    out = []
    for si, s in enumerate(seeds):
        out.append((f"base-{s}", si, None, None, None))
        units = [(f"{p}-{n}-{s}", si, p, n, None) for p in cfg["protocols"] for n in method_order(cfg["methods"])
                 if n != "none"]
        if si == 0 and cfg["alh_sweep"] and "alh-householder" in cfg["methods"]:
            out += [(size_unit(p, s, v), si, p, "alh-householder", v) for p in cfg["protocols"] for v in cfg["alh_sweep"]]
            units.sort(key=lambda u: u[3] != "alh-householder")                          # stable sort
        out += units
    return out


def needs(si, p, name, seeds, methods, sizes=(), size=None):
    """The units a unit reads: [(unit, method)], method None for a size unit (else its tuning entry is read).

    On the first seed embed-ft-l2 reads embed-ft's entry (its learning rate), alh-householder its
    sizes' units (``sizes``: the alh_sweep), and alh-householder's controls its entry (its size).
    A size unit (``size`` given) reads nothing.
    """
    if name is None or size is not None:
        return []
    if si > 0:
        return [(f"{p}-{name}-{seeds[0]}", name)]
    if name == "embed-ft-l2":
        return [(f"{p}-embed-ft-{seeds[0]}", "embed-ft")]
    if name == "alh-householder" and sizes:
        return [(size_unit(p, seeds[0], v), None) for v in sizes]
    if name in ALH_CONTROLS and "alh-householder" in methods:
        return [(f"{p}-alh-householder-{seeds[0]}", "alh-householder")]
    return []


def next_size(tried, best, n_head):
    """The ALH size past the edge of the sizes tried that ``best`` sits on, or None if it sits on none.

    For K and for D, each only if the sizes tried take more than one value of it: the best's value is
    doubled when it is the largest tried and halved when it is the smallest (both axes at once when
    both are on an edge). None also when that size was tried already or cannot be built (K, D >= 1,
    D a multiple of the encoder's n_head).
    """
    new = dict(best)
    for a in ("K", "D"):
        vals = {t[a] for t in tried if a in t}
        if a not in best or len(vals) < 2:
            continue
        if best[a] == max(vals):
            new[a] = 2 * best[a]
        elif best[a] == min(vals) and best[a] >= 2:
            new[a] = best[a] // 2
    if new == best or new in tried or new.get("D", n_head) % new.get("n_head", n_head):
        return None
    return new


def counts(m):
    """A method's trainable and effective parameter counts (the table's columns)."""
    return {"n_trainable": m.n_trainable, "n_effective": m.n_effective}


def method_entry(name, n, cfg, matched):
    """A method's table entry: n (its :func:`counts`), its matched size, and per_seed records."""
    detail = {"K": matched["K"]} if name == "static-householder-matched" else (
        {"D": matched["D"]} if name == "alh-householder-matched" else {})
    return {**n, "detail": detail, "per_seed": []}


def tune(name, p, s, ctx, alh):
    """Sweep a method's learning rate (embed-ft-l2: its strength) at ALH size overrides ``alh`` on the first seed.

    Returns
    -------
    part : dict (JSON)  alh, lr, l2, tuned ("lr" | "l2"), sweep {value: val objective or None},
        extended, on_edge, val (the best's val objective; None if every value diverged), frontier
        (every run's val points, each with its "value")
    best : (model, train_loss, track, seconds) of the best value's run, or None if every value diverged
    """
    base, gcfg, cfg, data, matched, P = ctx["base"], ctx["gcfg"], ctx["cfg"], ctx["data"], ctx["matched"], ctx["P"]
    tune_l2 = name == "embed-ft-l2"
    lr0 = P["methods"]["embed-ft"]["lr"] if tune_l2 else None

    def run(v):
        m = build(name, base, gcfg, cfg, matched, s, l2=v if tune_l2 else None, alh=alh)
        what = f"seed {s} {p} {name} {'l2' if tune_l2 else 'lr'} {v:g}" + "".join(f" {k}={x}" for k, x in alh.items())
        try:
            losses, track, sec = adapt(m, data, cfg, p, lr0 if tune_l2 else v, s)
        except RunError:
            ctx["say"](f"  {what}: diverged")
            return math.inf, None
        ctx["say"](f"  {what}: val objective {objective(track[-1], p):.4f} ({sec:.1f}s)")
        return objective(track[-1], p), (m, losses, track, sec)

    best, tried, payloads, extended, edge = sweep(run, cfg["l2s"] if tune_l2 else cfg["lrs"], cfg["max_extend"])
    got = payloads[best]
    part = {"alh": dict(alh), "lr": lr0 if tune_l2 else best, "l2": best if tune_l2 else None,
            "tuned": "l2" if tune_l2 else "lr", "sweep": tried, "extended": [float(v) for v in extended],
            "on_edge": bool(edge), "val": None if got is None else objective(got[2][-1], p),
            "frontier": [dict(q, value=float(v)) for v, pl in payloads.items() if pl for q in pl[2]]}
    return part, got


def record(name, got, s, ctx):
    """The per-seed record of a trained method: its run (got = model, train_loss, track, seconds) and measurements."""
    m, losses, track, sec = got
    rec = {"seed": s, "train_seconds": sec, "ms_per_step": 1e3 * sec / max(1, len(losses)), "train_loss": losses,
           "val": track[-1]}
    rec.update(measure(m, ctx["E_ref"], ctx["base_logp"], ctx["data"], ctx["cfg"]))
    if not np.array_equal(ctx["base"]["wte"], ctx["E_ref"]):
        raise RunError(f"method {name!r} wrote the frozen base's wte; expected methods to leave the base untouched")
    return rec


def tune_size(p, s, size, ctx):
    """One size unit: alh-householder's sweep at ALH size ``size``, with the best run's counts and record
    (both None if every learning rate diverged)."""
    part, got = tune("alh-householder", p, s, ctx, size)
    return dict(part, counts=None if got is None else counts(got[0]),
                rec=None if got is None else record("alh-householder", got, s, ctx))


def size_count(size, ctx):
    """The trainable count of alh-householder at ALH size overrides ``size`` (built, not trained)."""
    return counts(build("alh-householder", ctx["base"], ctx["gcfg"], ctx["cfg"], ctx["matched"], 0, alh=size))["n_trainable"]


def size_cap(ctx):
    """The largest trainable count an extended ALH size may have: the whole base's (full-ft's count)."""
    return counts(build("full-ft", ctx["base"], ctx["gcfg"], ctx["cfg"], ctx["matched"], 0))["n_trainable"]


def best_size(p, s, ctx):
    """alh-householder's first-seed choice over its size units, extending the sizes past an open edge.

    While the best size (lowest val objective) sits on an edge of the sizes tried (:func:`next_size`),
    the size past that edge is swept and stored as a size unit too, at most max_extend times, and
    only while that size trains no more parameters than the whole base (:func:`size_cap`): a
    hypernetwork larger than the model it adapts is no longer the light adapter ALH proposes, and
    past it full-ft is the comparison.

    Returns
    -------
    best : the best size's unit;  parts : every size's unit in the order tried (the alh_sweep's,
    then the extensions);  edge : None if the best is inside the sizes tried, else {"alh": the size
    past the edge, "n_trainable": its count, "reason": "cap" | "max_extend" (why it was not tried)}
    """
    cfg, cache = ctx["cfg"], ctx["cache"]
    parts = [cache.get(size_unit(p, s, v)) for v in cfg["alh_sweep"]]
    n_head, cap = cfg["alh"]["n_head"], size_cap(ctx)
    while True:
        best = min(parts, key=lambda q: math.inf if q["val"] is None else q["val"])
        nxt = next_size([q["alh"] for q in parts], best["alh"], n_head)
        if nxt is None:
            edge = None
            break
        edge = {"alh": nxt, "n_trainable": size_count(nxt, ctx), "reason": None}
        if len(parts) - len(cfg["alh_sweep"]) >= cfg["max_extend"] or edge["n_trainable"] > cap:
            edge["reason"] = "max_extend" if edge["n_trainable"] <= cap else "cap"
            break
        unit = size_unit(p, s, nxt)
        if not cache.has(unit):                                      # kept if an interrupted unit computed it
            ctx["say"](f"  seed {s} {p} alh-householder: the best size {size_text(best['alh'])} is on an edge of "
                       f"the sizes tried; extending to {size_text(nxt)}")
            cache.put(unit, tune_size(p, s, nxt, ctx))
        parts.append(cache.get(unit))
    if best["rec"] is None:
        raise RunError(f"alh-householder diverged at every learning rate of every size under {p}; expected a stable run")
    return best, parts, edge


def run_method(name, p, si, s, ctx):
    """Adapt (and on the first seed tune) one method; returns its per-seed record."""
    base, gcfg, cfg, data, matched, P = ctx["base"], ctx["gcfg"], ctx["cfg"], ctx["data"], ctx["matched"], ctx["P"]
    entry = P["methods"].get(name)
    if si > 0:
        m = build(name, base, gcfg, cfg, matched, s, l2=entry["l2"], alh=entry.get("alh_overrides"))
        try:
            losses, track, sec = adapt(m, data, cfg, p, entry["lr"], s, track=False)
        except RunError as e:
            raise RunError(f"{e} on seed {s} at the value chosen on seed {ctx['seeds'][0]}") from None
        return record(name, (m, losses, track, sec), s, ctx)
    if name == "alh-householder" and cfg["alh_sweep"]:
        part, parts, size_edge = best_size(p, s, ctx)                                 # ALH's own K / D (--full)
        variants = [{"alh": q["alh"], "val": q["val"], "extended": i >= len(cfg["alh_sweep"])} for i, q in enumerate(parts)]
        n, rec, frontier = part["counts"], part["rec"], [pt for q in parts for pt in q["frontier"]]
    else:
        alh = P["methods"]["alh-householder"]["alh_overrides"] if (
            name in ALH_CONTROLS and "alh-householder" in P["methods"]) else {}          # the size ALH was tuned to
        part, got = tune(name, p, s, ctx, alh)
        if got is None:
            raise RunError(f"{name} diverged at every value {sorted(float(v) for v in part['sweep'])} under {p}; "
                           "expected a stable run")
        variants = [{"alh": alh, "val": part["val"]}]
        n, rec, frontier = counts(got[0]), record(name, got, s, ctx), part["frontier"]
    entry = P["methods"][name] = method_entry(name, n, cfg, matched)
    entry.update({k: part[k] for k in ("lr", "l2", "tuned", "sweep", "extended", "on_edge")},
                 alh_overrides=part["alh"], variants=variants)
    if name == "alh-householder" and cfg["alh_sweep"]:
        entry.update(size_on_edge=size_edge is not None, size_next=size_edge, size_cap=size_cap(ctx))
    entry["detail"].update(part["alh"])
    P["frontier"][name] = frontier
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
               none_entry={k: v for k, v in method_entry("none", counts(none), cfg, matched).items() if k != "per_seed"}
               | {"lr": None, "l2": None, "tuned": None})


def compute_unit(unit, si, p, name, setup, ctxs, cache, say=lambda msg: None, size=None):
    """Compute one unit into the cache; returns its progress line. ctxs: seed -> prepared base (kept);
    say: called with a progress line after every run of a learning-rate sweep; size: a size unit's ALH size."""
    seeds, cfg = setup["seeds"], setup["cfg"]
    s = seeds[si]
    if s not in ctxs:
        ctxs[s] = dict(setup)
        prepare_base(ctxs[s], s)
    ctx = ctxs[s]
    ctx.update(say=say, cache=cache)
    if name is None:
        cache.put(unit, {"base": ctx["base_rec"], "none": ctx["none_rec"], "none_entry": ctx["none_entry"]})
        t = ctx["none_rec"]["test"]
        pre = ctx["base_rec"]["pretrain"]
        return (f"seed {s}: base pretrained, kept step {pre['best_step']} of {pre['stopped_step']} by A val loss "
                f"(train loss {ctx['base_rec']['pretrain_final_loss']:.3f}); "
                f"test A {t['A']['loss']:.3f} B {t['B']['loss']:.3f} C {t['C']['loss']:.3f}")
    ctx["P"] = {"methods": {n: dict(cache.get(u)["entry"], per_seed=[])
                            for u, n in needs(si, p, name, seeds, cfg["methods"], cfg["alh_sweep"], size) if n},
                "frontier": {}}
    if size is not None:
        part = tune_size(p, s, size, ctx)
        cache.put(unit, part)
        val = "diverged at every lr" if part["val"] is None else f"val objective {part['val']:.4f} at lr {part['lr']:g}"
        return f"seed {s} {p:5s} alh-householder at {size_text(size)}: {val}"
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
    seeds, cfg = setup["seeds"], setup["cfg"]
    todo = [u for u in schedule(cfg, seeds) if not cache.has(u[0])]
    ctxs, done = {}, 0
    while todo:
        waiting = []
        for unit, si, p, name, size in todo:
            if cache.has(unit):
                continue                                                                    # another process did it
            if not all(cache.has(d) for d, _ in needs(si, p, name, seeds, cfg["methods"], cfg["alh_sweep"], size)):
                waiting.append((unit, si, p, name, size))
                continue
            with cache.claim(unit) as mine:
                if not mine:
                    waiting.append((unit, si, p, name, size))
                    continue
                if not cache.has(unit):
                    say = lambda msg: log(progress, t0, msg, who)                          # noqa: E731
                    say(compute_unit(unit, si, p, name, setup, ctxs, cache, say, size))
                    done += 1
        todo = waiting
        ctxs = {s: c for s, c in ctxs.items() if any(seeds[u[1]] == s for u in todo)}      # free finished bases
        if todo:
            time.sleep(poll)
    return done
