"""report.md: the study's tables, written from results (never typed by hand), ending with the verdict."""
import math

from .data import DOMAINS
from .measure import position_bins
from .settings import size_text
from .summary import fmt_interval


def _ci(e, nd=3):
    return f"{e['mean']:.{nd}f} ± {e['std']:.{nd}f} [{e['ci'][0]:.{nd}f}, {e['ci'][1]:.{nd}f}]"


def _v(x, nd=3):
    return "not reached" if x is None else f"{x:.{nd}f}"


def _setup(results):
    c, d = results["config"], results["data"]
    nd = d["n_docs"]
    lines = [f"# ALH experiment — size `{c['size']}`, setting `{c['setting']}`", "",
             f"- data: {d['describe']}; ln V = {d['ln_V']:.3f}",
             "- documents (train / val / test; val and test capped at "
             f"{c['max_val_docs']} / {c['max_test_docs']} evenly spaced documents, one window each, aligned to the "
             "document start): " + "; ".join(f"{D} {nd[D]['train']} / {nd[D]['val']} / {nd[D]['test']}" for D in DOMAINS),
             f"- base: C={c['n_embd']}, L={c['n_layer']}, NH={c['n_head']}, T={c['block_size']}, V={d['V']}; pretrained "
             f"on A (lr {c['pretrain_lr']:g}, batch {c['batch_size']}) for at most {c['pretrain_steps']} steps, early-stopped on A "
             f"val loss (evaluated every {c['pretrain_eval_every']} steps, patience {c['pretrain_patience']}): kept step "
             + ", ".join(f"{b['pretrain']['best_step']} of {b['pretrain']['stopped_step']}" for b in results["base"])
             + " (per seed; train / A val loss at the kept step: "
             + ", ".join(f"{b['pretrain_final_loss']:.3f} / {b['val']['A']:.3f}" for b in results["base"]) + ")",
             f"- adaptation: {c['adapt_steps']} steps, batch {c['batch_size']} (mix: half A, half B), AdamW (wd 0.1, "
             f"clip 1.0, {int(100 * c['warmup_frac'])}% warmup, cosine); protocols {', '.join(c['protocols'])}",
             f"- tuning: lr grid {c['lrs']} for every trained method (embed-ft-l2: strength grid {c['l2s']} at "
             f"embed-ft's lr), chosen on val (shift: B; mix: mean of A and B) on seed {results['seeds'][0]} and reused; "
             f"extended past an open edge (the objective still falling toward it) at most {c['max_extend']} times",
             "- hypernetwork: " + ", ".join(f"{k}={v}" for k, v in sorted(c["alh"].items())) +
             f"; matched sizes: static-householder-matched K = {results['matched']['K']}, alh-householder-matched "
             f"D = {results['matched']['D']} (embed-ft trains {results['matched']['embed_ft']:,})",
             f"- seeds {results['seeds']}; tables: mean ± std over seeds [95% bootstrap interval over test documents, "
             f"{c['n_boot']} resamplings]; Δ = paired change against the frozen base",
             f"- wall time: {results.get('runtime_s', 0.0):.0f} s", ""]
    fl = d.get("floors")
    if fl:
        cnt = d["counts"]
        lines += ["Loss floors on the test windows (exact, nats per token):", "", "| floor | A | B | C |", "|---|---|---|---|"]
        for kind, what in (("known", "domain known"), ("history", "domain inferred from the history (uniform prior)")):
            lines.append(f"| {what} | " + " | ".join(f"{sum(fl[D][kind]['doc_sum']) / sum(cnt[D]['doc']):.3f}"
                                                        for D in DOMAINS) + " |")
        lines.append("")
    return lines


def _size_cells(results, name):
    """The method's size label and its trainable / effective counts, and whether they are given per protocol:
    they are where ALH's own size sweep chose a different size for each (--full), e.g.
    `` (shift: D=64 K=128; mix: D=128 K=8) | 660,480 / 404,480 | 16,384 / 1,024``."""
    protos = results["config"]["protocols"]
    es = [results["protocols"][p]["methods"][name] for p in protos]
    if all((e["detail"], e["n_trainable"], e["n_effective"]) == (es[0]["detail"], es[0]["n_trainable"],
                                                                 es[0]["n_effective"]) for e in es):
        label = "".join(f" ({k}={v})" for k, v in es[0]["detail"].items())
        return f"{label} | {es[0]['n_trainable']:,} | {es[0]['n_effective']:,}", False
    det = [" ".join(f"{k}={v}" for k, v in e["detail"].items()) or "preset" for e in es]
    label = " (" + "; ".join(f"{p}: {d}" for p, d in zip(protos, det)) + ")"
    return (label + " | " + " / ".join(f"{e['n_trainable']:,}" for e in es) + " | "
            + " / ".join(f"{e['n_effective']:,}" for e in es)), True


def _methods_table(results):
    lines = ["## Methods and tuning", "", "| method | trainable | effective | " +
             " | ".join(f"{p}: chosen (val objective per grid value)" for p in results["config"]["protocols"]) + " |",
             "|---|---|---|" + "---|" * len(results["protocols"])]
    protos = results["config"]["protocols"]
    per_protocol = False
    for name in results["config"]["methods"]:
        cells = []
        for P in (results["protocols"][p] for p in protos):
            e = P["methods"][name]
            if e["tuned"] is None:
                cells.append("—")
                continue
            val = e["l2"] if e["tuned"] == "l2" else e["lr"]
            sw = ", ".join(f"{k}: {'diverged' if v is None else f'{v:.3f}'}"
                           for k, v in sorted(e["sweep"].items(), key=lambda kv: float(kv[0])))
            flag = (" extended " + ", ".join(f"{v:g}" for v in e["extended"]) if e["extended"] else "") + \
                   (" **on edge**" if e["on_edge"] else "")
            cells.append(f"{e['tuned']} {val:g} ({sw}){flag}")
        size, split = _size_cells(results, name)
        per_protocol |= split
        lines.append(f"| {name}{size} | " + " | ".join(cells) + " |")
    lines.append("")
    if per_protocol:
        lines += ["Where ALH's own size sweep chose a different size per protocol, the size and the counts are given "
                  "per protocol (" + " / ".join(protos) + ").", ""]
    for name in results["config"]["methods"]:                                  # ALH's own sizes (--full)
        for p in protos:
            e = results["protocols"][p]["methods"][name]
            if len(e.get("variants") or []) > 1:
                vals = ", ".join(size_text(x["alh"]) + ": " + ("diverged" if x["val"] is None else f"{x['val']:.3f}")
                                 + (" (extended)" if x.get("extended") else "") for x in e["variants"])
                nx = e.get("size_next")
                flag = "" if not e.get("size_on_edge") else (
                    f"; **the best size is still on an edge**: the next, {size_text(nx['alh'])} "
                    f"({nx['n_trainable']:,} trainable), was not tried: " +
                    (f"it trains more than the whole base ({e['size_cap']:,}, the cap)" if nx["reason"] == "cap"
                     else "the extensions reached max_extend"))
                lines.append(f"- {name} under {p}, val objective per size (each at its own best lr; sizes past an "
                             f"edge of the best marked extended): {vals}{flag}")
    return lines + ([""] if lines[-1] != "" else [])


def _protocol_tables(results, p):
    S = results["summary"][p]
    T = results["config"]["block_size"]
    lines = [f"## Protocol `{p}`", "", "Test loss (nats):", "", "| method | A | B | C |", "|---|---|---|---|"]
    lines += [f"| {n} | " + " | ".join(_ci(s["test"][D]) for D in DOMAINS) + " |" for n, s in S.items()]
    lines += ["", "Change against the frozen base, perplexity, and KL(base || method) on A and C:", "",
              "| method | ΔA | ΔB | ΔC | ppl A / B / C | KL A | KL C |", "|---|---|---|---|---|---|---|"]
    for n, s in S.items():
        t = s["test"]
        ppl = " / ".join(f"{math.exp(t[D]['mean']):.2f}" for D in DOMAINS)
        lines.append(f"| {n} | {fmt_interval(t['A']['delta'])} | {fmt_interval(t['B']['delta'])} | {fmt_interval(t['C']['delta'])} | {ppl} | "
                     f"{_ci(t['A']['kl'], 4)} | {_ci(t['C']['kl'], 4)} |")
    lines += ["", "Geometry of the effective input dictionary against the pretrained wte (mean over seeds; B and C "
              "test contexts; centred = rows minus their mean):", "",
              "| method | Gram drift raw (B) | Gram drift centred (B) | Gram drift centred (C) | mean abs cos raw / centred (C) "
              "| eff. rank centred (C) | energy centred (C) | displacement raw (C) |", "|---|---|---|---|---|---|---|---|"]
    for n, s in S.items():
        g = s["geometry"]
        gc, gr = g["C"]["centred"], g["C"]["raw"]
        lines.append(f"| {n} | {g['B']['raw']['gram_drift']['mean']:.2e} | {g['B']['centred']['gram_drift']['mean']:.2e} | "
                     f"{gc['gram_drift']['mean']:.2e} | {gr['mean_abs_cos']['mean']:.3f} / {gc['mean_abs_cos']['mean']:.3f} | "
                     f"{gc['eff_rank']['mean']:.2f} | {gc['energy']['mean']:.3f} | {gr['displacement']['mean']:.3f} |")
    bins = position_bins(T)
    cnt = results["data"]["counts"]["B"]["pos"]
    lines += ["", "B test loss by position t (t tokens of document context; mean over seeds):", "",
              "| method | " + " | ".join(f"t = {lo}" if hi == lo + 1 else f"t = {lo}-{hi - 1}" for lo, hi in bins) + " |",
              "|---|" + "---|" * len(bins)]
    for n, s in S.items():
        bp = s["test"]["B"]["by_position"]
        cells = [sum(bp[t] * cnt[t] for t in range(lo, hi)) / max(1, sum(cnt[lo:hi])) for lo, hi in bins]
        lines.append(f"| {n} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    ft = results["protocols"][p].get("frontier_table")
    if ft:
        lines += ["", f"Retention at matched adaptation, read off each method's lower envelope of (B val, A val) and "
                  f"(B val, C val) over lr × checkpoints (seed {results['seeds'][0]}): the lowest A (C) val loss among "
                  f"its points whose B val is at most L = b0 - f (b0 - b_ref), b0 the base's B val, b_ref the lowest B "
                  f"val on {ft['ref']}'s envelope:", "",
                  "| method | " + " | ".join(f"A at f={f:g} (L={L:.3f})" for f, L in zip(ft["fracs"], ft["levels"])) +
                  " | " + " | ".join(f"C at f={f:g}" for f in ft["fracs"]) + " |",
                  "|---|" + "---|" * (2 * len(ft["fracs"]))]
        for n in results["config"]["methods"]:
            row = ft["methods"][n]
            lines.append(f"| {n} | " + " | ".join(_v(v) for v in row["A"]) + " | " + " | ".join(_v(v) for v in row["C"]) + " |")
    return lines + [""]


def report_markdown(results):
    """The whole report: setup, methods and tuning, per-protocol tables, and the `## Verdict` section last."""
    lines = _setup(results) + _methods_table(results)
    for p in results["config"]["protocols"]:
        lines += _protocol_tables(results, p)
    lines += ["## Verdict", "", "Computed from the measurements by the rules in docs/experiment.md "
              "(intervals: 95% bootstrap over test documents).", ""]
    lines += results["verdict"]["lines"]
    return "\n".join(lines) + "\n"
