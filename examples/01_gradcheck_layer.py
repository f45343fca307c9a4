"""Example 1: gradient-check one layer by hand (LayerNorm), the way every backward in alh_ref is tested.

A backward pass is a claim about derivatives. To test it, pick a scalar L = sum(out * G) with a
random upstream gradient G (so dL/dout = G, never all ones), and compare the analytic gradient
with centered differences of the forward:

    dL/dx_i  ~=  (L(x + h e_i) - L(x - h e_i)) / (2 h),      in float64, h = 1e-5.

Both errors of this estimate (truncation ~h^2, rounding ~eps |L| / h) are near 1e-10, so a correct
backward agrees to about 1e-8 relative error or better; a wrong one is off by order one.
The layer and its derivation: alh_ref/ops/layernorm.py, docs/ops/layernorm.md.

Run:  python examples/01_gradcheck_layer.py          (a second; exit code 0 when every check passes)
"""
import sys

import numpy as np

from alh_ref.ops import layernorm_backward_ref, layernorm_forward_ref


def loss(x, w, b, G):
    """The scalar checked: L = sum(LN(x; w, b) * G)."""
    out, _ = layernorm_forward_ref(x, w, b)                        # (B,T,C)
    return float((out * G).sum())


def centered_difference(f, a, h=1e-5):
    """dL/da by centered differences, one entry at a time (a is changed in place and restored)."""
    g = np.zeros_like(a)                                           # shape of a
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        up = f()
        a[i] = old - h
        dn = f()
        a[i] = old
        g[i] = (up - dn) / (2 * h)
    return g


def main():
    rng = np.random.default_rng(0)
    B, T, C = 2, 3, 5
    x = rng.standard_normal((B, T, C))                             # (B,T,C) float64
    w = 1.0 + 0.3 * rng.standard_normal(C)                         # (C,)  gains not all one
    b = 0.1 * rng.standard_normal(C)                               # (C,)  biases not all zero
    G = rng.standard_normal((B, T, C))                             # (B,T,C) random upstream gradient

    out, cache = layernorm_forward_ref(x, w, b)                    # (B,T,C)
    dx, dw, db = layernorm_backward_ref(G, cache)                  # (B,T,C), (C,), (C,)

    worst = 0.0
    for name, a, analytic in (("x", x, dx), ("w", w, dw), ("b", b, db)):
        numeric = centered_difference(lambda: loss(x, w, b, G), a)  # shape of a
        err = np.max(np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-10))
        worst = max(worst, err)
        print(f"d L / d {name}: {a.size:3d} entries, max relative error {err:.1e}")
    print(f"sum over C of dL/dx (LayerNorm removes the mean, so it is ~0): {np.abs(dx.sum(-1)).max():.1e}")
    ok = worst < 1e-7
    print("PASS: the backward matches centered differences" if ok else "FAIL: the backward is wrong")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
