"""The study's plots (PNG, written atomically); without matplotlib they are skipped with a one-line note.

    curves.png     adaptation training loss per method, one panel per protocol
    deltas.png     change in A, B and C test loss against the frozen base, one panel per protocol
    geometry.png   centred Gram drift of the effective dictionary against the change in C loss
    position.png   B test loss by position for alh / alh-prev / static / side / none
    frontier.png   lower envelopes of A val against B val over lr x checkpoints
"""
import io
import sys

import numpy as np

from ..io_utils import atomic_write_bytes
from .data import DOMAINS
from .summary import envelope

POSITION_METHODS = ("none", "alh-householder", "alh-householder-prev", "static-householder",
                    "static-householder-matched", "side", "side-prev")


def _save(fig, out_dir, name):
    import matplotlib.pyplot as plt
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(f"{out_dir}/{name}", buf.getvalue())
    return name


def _style(name):
    return "--" if name.startswith(("static", "side", "none")) or name.endswith(("prev", "shuffled")) else "-"


def _label(ax, xlabel, ylabel, title, fontsize=7, ncol=1):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=fontsize, ncol=ncol)


def _panels(plt, results, w=6.0, h=4.6):
    protos = results["config"]["protocols"]
    fig, axes = plt.subplots(1, len(protos), figsize=(w * len(protos), h), squeeze=False)
    return fig, dict(zip(protos, axes[0]))


def _curves(plt, results, colors):
    fig, axes = _panels(plt, results)
    k = max(1, results["config"]["adapt_steps"] // 20)
    for p, ax in axes.items():
        for i, name in enumerate(results["config"]["methods"]):
            r = results["protocols"][p]["methods"][name]
            curves = [q["train_loss"] for q in r["per_seed"] if q["train_loss"]]
            if not curves:
                continue
            m = np.mean(curves, axis=0)                                                       # (S,)
            m = np.convolve(m, np.ones(k) / k, mode="valid") if m.size >= k > 1 else m        # (S-k+1,)
            ax.plot(np.arange(m.size) + k, m, color=colors(i % 20), ls=_style(name), lw=1.2, label=name)
        _label(ax, "adaptation step", f"training loss (nats; mean of seeds, moving average {k})",
               f"{p}: training loss on {'B' if p == 'shift' else 'half A + half B'} batches", 6, 2)
    return fig


def _deltas(plt, results):
    fig, axes = _panels(plt, results, w=7.5)
    for p, ax in axes.items():
        S = results["summary"][p]
        names = list(S)
        x = np.arange(len(names))                                                             # (M,)
        for j, D in enumerate(DOMAINS):
            e = [S[n]["test"][D]["delta"] for n in names]
            mean = np.array([v["mean"] for v in e])                                           # (M,)
            err = np.array([[v["mean"] - v["ci"][0] for v in e], [v["ci"][1] - v["mean"] for v in e]])  # (2,M)
            ax.bar(x + (j - 1) * 0.27, mean, 0.27, yerr=err, capsize=2, label=f"Δ{D} test")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
        ax.set_yscale("symlog", linthresh=0.05)
        _label(ax, "", "Δ test loss vs frozen base (nats, symlog)",
               f"{p}: change in A, B, C test loss, 95% intervals (below 0 = better than the base)")
    return fig


def _geometry(plt, results, colors):
    fig, axes = _panels(plt, results)
    for p, ax in axes.items():
        for i, (name, s) in enumerate(results["summary"][p].items()):
            g = s["geometry"]["C"]["centred"]["gram_drift"]["mean"]
            d = s["test"]["C"]["delta"]
            ax.errorbar(max(g, 1e-9), d["mean"], yerr=[[d["mean"] - d["ci"][0]], [d["ci"][1] - d["mean"]]],
                        fmt="o", color=colors(i % 20), capsize=2, label=name)
        ax.set_xscale("log")
        ax.axhline(0, color="k", lw=0.8)
        _label(ax, "centred Gram drift of the effective dictionary on C contexts (log; 1e-9 = none)",
               "C test loss minus frozen base (nats)", f"{p}: dictionary geometry vs damage on unseen domain C", 6, 2)
    return fig


def _position(plt, results, colors):
    fig, axes = _panels(plt, results)
    for p, ax in axes.items():
        S = results["summary"][p]
        for i, name in enumerate(n for n in POSITION_METHODS if n in S):
            bp = np.array(S[name]["test"]["B"]["by_position"])                                 # (T,)
            ax.plot(np.arange(bp.size), bp, ls=_style(name), color=plt.get_cmap("tab10")(i % 10),
                    lw=2.2 if name == "alh-householder" else 1.2, label=name)
        ax.set_xscale("symlog", linthresh=1)
        _label(ax, "position t (tokens of document context)", "B test loss at position t (nats, mean of seeds)",
               f"{p}: loss by position on B")
    return fig


def _frontier(plt, results, colors):
    fig, axes = _panels(plt, results)
    for p, ax in axes.items():
        fr = results["protocols"][p]["frontier"]
        for i, name in enumerate(results["config"]["methods"]):
            pts = fr[name]
            env = envelope(pts, "A")
            if not env:
                continue
            b, a = zip(*env)
            ax.step(b, a, where="post", color=colors(i % 20), ls=_style(name), lw=1.2, label=name)
            ax.plot([q["B"] for q in pts], [q["A"] for q in pts], ".", color=colors(i % 20), ms=2, alpha=0.4)
        b0, a0 = results["base"][0]["val"]["B"], results["base"][0]["val"]["A"]
        envs = [e for n in results["config"]["methods"] for e in envelope(fr[n], "A")]
        ax.set_xlim(min(b for b, _ in envs) - 0.1, b0 + 0.15)                                   # outliers of diverging lrs off-axis
        ax.set_ylim(min(a for _, a in envs) - 0.1, max(a0 + 1.0, max(a for _, a in envs) + 0.1))
        _label(ax, "B val loss (new domain, nats)", "A val loss (original domain, nats)",
               f"{p}: lower envelope over lr x checkpoints (base at the lower right; lower-left is better)", 6, 2)
    return fig


def write_plots(results, out_dir):
    """Write the five PNGs to out_dir; returns their names (empty without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; skipping the plots (pip install matplotlib)", file=sys.stderr)
        return []
    colors = plt.get_cmap("tab20")
    return [_save(_curves(plt, results, colors), out_dir, "curves.png"),
            _save(_deltas(plt, results), out_dir, "deltas.png"),
            _save(_geometry(plt, results, colors), out_dir, "geometry.png"),
            _save(_position(plt, results, colors), out_dir, "position.png"),
            _save(_frontier(plt, results, colors), out_dir, "frontier.png")]
