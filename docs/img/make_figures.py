"""Draw the three figures of docs/README.md (needs matplotlib, the plots extra).

    python docs/img/make_figures.py          # writes causal_mask.png, reflections.png, alh_dataflow.png here

Each figure is computed from alh_ref's own functions where there is one (the attention weights, the
Householder reflections), so the pictures show what the code does.
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from alh_ref.ops import attention_forward_ref  # noqa: E402

OUT = Path(__file__).resolve().parent


def causal_mask(T=8, NH=1, hs=4, seed=0):
    """Attention weights att[t, s] of one head: row t is a softmax over the keys s <= t, zero above."""
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((1, T, 3 * NH * hs))                           # (B,T,3C)
    _, cache = attention_forward_ref(qkv, NH)
    att = next(a for a in cache if isinstance(a, np.ndarray) and a.shape == (1, NH, T, T))[0, 0]  # (T,T)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    shown = np.where(np.tril(np.ones((T, T), bool)), att, np.nan)            # (T,T) masked entries blank
    im = ax.imshow(shown, cmap="viridis", vmin=0, vmax=1)
    for t in range(T):
        for s in range(T):
            ax.text(s, t, f"{att[t, s]:.2f}" if s <= t else "0", ha="center", va="center", fontsize=6,
                    color="white" if s <= t and att[t, s] < 0.6 else "black")
    ax.set_xlabel("key position s")
    ax.set_ylabel("query position t")
    ax.set_title("causal attention: att[t, s] = 0 for s > t\n(each row sums to 1)", fontsize=9)
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(OUT / "causal_mask.png", dpi=110)
    plt.close(fig)


def reflect(u, x):
    """H(u) x = x - 2 (u.x) / (u.u) u."""
    return x - 2.0 * (u @ x) / (u @ u) * u


def reflections():
    """Two reflections H(u) H(a) = the rotation by twice the angle from a to u, in the plane of a and u."""
    a = np.array([1.0, 0.0])
    phi = np.deg2rad(35)
    u = np.array([np.cos(phi), np.sin(phi)])
    e = 0.9 * np.array([np.cos(np.deg2rad(20)), np.sin(np.deg2rad(20))])
    e1 = reflect(a, e)
    e2 = reflect(u, e1)
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.add_patch(plt.Circle((0, 0), np.linalg.norm(e), fill=False, ls=":", color="gray"))
    for v, name, col in ((a, "a", "tab:blue"), (u, "u", "tab:orange")):
        perp = np.array([-v[1], v[0]])
        ax.plot(*np.stack([-1.2 * perp, 1.2 * perp]).T, color=col, lw=1, ls="--")
        ax.annotate("", xy=0.45 * v, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=col))
        ax.text(*(0.5 * v + 0.03), name, color=col)
        ax.text(*(1.15 * perp + [0.02, 0.0]), f"mirror of H({name})", color=col, fontsize=7)
    for v, name, col in ((e, "e", "black"), (e1, "H(a) e", "tab:blue"), (e2, "H(u) H(a) e", "tab:orange")):
        ax.annotate("", xy=v, xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color=col, lw=1.5))
        ax.text(*(v * 1.08), name, color=col, fontsize=8, ha="center")
    rot = np.degrees(np.arctan2(e2[1], e2[0]) - np.arctan2(e[1], e[0]))
    ax.set_title(f"two reflections = one rotation by 2 x 35 = {rot:.0f} degrees\n"
                 "in the plane of a and u; the rest of R^C is left alone", fontsize=9)
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(OUT / "reflections.png", dpi=110)
    plt.close(fig)


def alh_dataflow(T=4, dx=1.7):
    """Which context slot feeds which site: input site at t reads slot t, output site (current) slot t+1."""
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    box = dict(boxstyle="round,pad=0.3", fc="white", ec="black", lw=0.8)
    for t in range(T):
        x = t * dx
        ax.text(x, 0, f"$x_{t}$", ha="center", va="center", bbox=box)
        ax.text(x, 1.2, f"$T_{t}(\\mathrm{{wte}}[x_{t}])$", ha="center", va="center", fontsize=9,
                bbox=dict(box, fc="#dbe9f6"))
        ax.text(x, 2.4, f"$z_{t}$", ha="center", va="center", bbox=box)
        ax.text(x, 3.6, f"$A_{t + 1}^T z_{t}$", ha="center", va="center", fontsize=9, bbox=dict(box, fc="#fde4cf"))
        ax.text(x, 4.3, f"logits$_{t}$ vs $y_{t}$", ha="center", va="center", fontsize=8)
        for y0, y1 in ((0.25, 0.95), (1.45, 2.15), (2.65, 3.35), (3.85, 4.15)):
            ax.annotate("", xy=(x, y1), xytext=(x, y0), arrowprops=dict(arrowstyle="->"))
    ax.text((T - 0.5) * dx, 1.8, "frozen base body\n(wpe, L blocks, LN_f)", ha="left", va="center", fontsize=8,
            style="italic")
    for s in range(T + 1):
        x = (s - 0.5) * dx
        label = "slot 0: $c_0$\n(no context)" if s == 0 else f"slot {s}\nreads $x_0..x_{s - 1}$"
        ax.text(x, -1.5, label, ha="center", va="center", fontsize=7.5, bbox=dict(box, fc="#e2f0d9"))
        if s < T:
            ax.annotate("", xy=(s * dx - 0.25, 1.0), xytext=(x + 0.1, -1.15),
                        arrowprops=dict(arrowstyle="->", color="tab:blue", lw=1.0, connectionstyle="arc3,rad=-0.1"))
        if s >= 1:
            ax.annotate("", xy=((s - 1) * dx + 0.3, 3.4), xytext=(x - 0.1, -1.15),
                        arrowprops=dict(arrowstyle="->", color="tab:orange", lw=1.0, connectionstyle="arc3,rad=0.3"))
    ax.text(-1.6 * dx / 1.7 - 0.3, 1.2, "input site", color="tab:blue", fontsize=9, ha="right", va="center")
    ax.text(-1.6 * dx / 1.7 - 0.3, 3.6, "output site\n(current)", color="tab:orange", fontsize=9, ha="right",
            va="center")
    ax.set_xlim(-3.2, (T + 0.3) * dx)
    ax.set_ylim(-2.1, 4.7)
    ax.axis("off")
    ax.set_title("ALH data flow: position t's input transform uses slot t, its output transform slot t+1\n"
                 "(out_context 'prev' uses slot t at both sites)", fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT / "alh_dataflow.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    causal_mask()
    reflections()
    alh_dataflow()
    print(f"wrote causal_mask.png, reflections.png, alh_dataflow.png to {OUT}")
