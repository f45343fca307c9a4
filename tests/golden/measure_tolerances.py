"""Re-measure docs/golden.md section 8: how much of the tolerance rounding uses, and what real changes score.

    python tests/golden/measure_tolerances.py            (about a minute on 2 cores)

Prints two Markdown tables. Every figure is the largest share (err / (atol + rtol |b|)) over the
tensors of the named kind, against the committed bundle, and names the case and tensor it comes
from; a share above 1 fails the check. The changes are made to alh_ref in this process only.
"""
import contextlib
import dataclasses
import sys
from pathlib import Path

import numpy as np
import safetensors.numpy as stnp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from alh_ref import golden as g, model, ops, optim  # noqa: E402
from alh_ref.alh import adapted, encoders  # noqa: E402
from alh_ref.golden import cases as golden_cases  # noqa: E402
from alh_ref.ops import gelu, layernorm  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
COLUMNS = (("float64", "forward"), ("float64", "grad"), ("float64", "train"), ("float32", "forward"), ("float32", "grad"))


@contextlib.contextmanager
def patched(obj, name, value):
    """Set obj.name = value for the duration."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def twins():
    """Every layer on its NumPy twin: ops.using("ref"), or, in an alh_ref without it, the twins patched in."""
    if hasattr(ops, "using"):
        with ops.using("ref"):
            yield
        return
    names = {"attention_forward", "attention_backward", "gelu_forward", "gelu_backward", "layernorm_forward",
             "layernorm_backward", "softmax_cross_entropy_forward", "embedding_backward"}
    with contextlib.ExitStack() as stack:
        for mod in (model, adapted, encoders):
            for n in names:
                if hasattr(mod, n):
                    stack.enter_context(patched(mod, n, getattr(ops, n + "_ref")))
        for mod in (model, adapted):
            stack.enter_context(patched(mod, "softmax_cross_entropy_backward",
                                        lambda d, c, inplace=False: ops.softmax_cross_entropy_backward_ref(d, c)))
        yield


def worst(report, dtype=None, kind=None):
    """(share, "case/key") of the largest share among the report's entries of that dtype and kind."""
    best = (0.0, "-")
    man = g.read_manifest(GOLDEN)["cases"]
    for e in report["entries"]:
        ent = next((t for t in man[e["case"]]["tensors"] if t["key"] == e["key"]), None)
        if "share" not in e or ent is None or ent["kind"] == "exact":
            continue
        if (dtype is None or man[e["case"]]["dtype"] == dtype) and (kind is None or ent["kind"] == kind):
            best = max(best, (e["share"], f"{e['case']}/{e['key']}"))
    return best


def row(label, report):
    cells = []
    for dtype, kind in COLUMNS:
        s, where = worst(report, dtype, kind)
        cells.append("" if where == "-" else f"{s:.2g} ({where})")
    return f"| {label} | " + " | ".join(cells) + " |"


def perturbed_params_report(rng):
    """check_bundle-like report of case_outputs on parameters * (1 + 1e-15 N(0,1)) (float32: 1e-7)."""
    entries = []
    for name in g.CASES:
        ref = stnp.load_file(str(GOLDEN / f"{name}.safetensors"))
        p = {k: v for k, v in ref.items() if k.startswith("param.")}
        rel = 1e-15 if p["param.wte"].dtype == np.float64 else 1e-7
        given = dict(ref, **{k: (v * (1 + rel * rng.standard_normal(v.shape))).astype(v.dtype) for k, v in p.items()})
        for k, v in g.case_outputs(name, given).items():
            entries.append(dict(g.compare_tensor(v, ref[k], *g.tolerance(k, ref[k].dtype)), case=name, key=k))
    return {"entries": entries}


@contextlib.contextmanager
def gradient_noise(scale, rng):
    """Every gradient element off by scale * max|g| of its tensor, at every training step."""
    train = golden_cases._train

    def noisy(params, names, loss_and_grads, xs, ys, opt_cfg):
        def lg(x, y):
            loss, grads = loss_and_grads(x, y)
            return loss, {n: a + scale * np.abs(a).max() * rng.standard_normal(a.shape) for n, a in grads.items()}
        return train(params, names, lg, xs, ys, opt_cfg)
    with patched(golden_cases, "_train", noisy):
        yield


class NormWithoutClipConstant(float):
    """A gradient norm n with n + 1e-6 == n: the clip factor becomes grad_clip / n."""

    def __add__(self, other):
        return float(self)

    __radd__ = __add__


@contextlib.contextmanager
def no_clip_constant():
    with contextlib.ExitStack() as stack:
        for fn in ("global_grad_norm", "global_grad_norm_ref"):
            real = getattr(optim, fn)
            stack.enter_context(patched(optim, fn, lambda gr, names, real=real: NormWithoutClipConstant(real(gr, names))))
        yield


def adamw_eps_inside_sqrt(p, g_, m, v, lr, b1, b2, eps, wd, inv_bc1, inv_sqrt_bc2, gscale):
    """The AdamW kernel's update with eps moved inside the square root: sqrt(v_hat + eps)."""
    gi = g_ * gscale
    m[:] = b1 * m + (1.0 - b1) * gi
    v[:] = b2 * v + (1.0 - b2) * gi * gi
    p[:] = p - lr * ((m * inv_bc1) / np.sqrt(v * inv_sqrt_bc2**2 + eps) + wd * p)


def train_opt(**fields):
    return patched(golden_cases, "TRAIN_OPT", dataclasses.replace(golden_cases.TRAIN_OPT, **fields))


def check(cases=None):
    return g.check_bundle(GOLDEN, cases=cases)


def main():
    rng = np.random.default_rng(0)
    train_cases = [n for n, s in g.CASES.items() if s["kind"].startswith("train")]
    print("| perturbation | f64 forward | f64 grad | f64 train | f32 forward | f32 grad |")
    print("| --- | --- | --- | --- | --- | --- |")
    with twins():
        print(row("other summation orders: every layer on its NumPy twin", check()))
    print(row("parameters x (1 + 1e-15 N(0,1)), float32 1e-7", perturbed_params_report(rng)))
    for scale in (1e-15, 1e-14):
        with gradient_noise(scale, rng):
            print(row(f"gradient noise of {scale:g} max|g| per tensor at every training step", check(train_cases)))
    gpt_alh = ["gpt_f64", "gpt_f32", "alh_householder_both_transformer", "alh_film_both_mean"]
    changes = [
        ("GELU constant 0.044715 -> 0.0447", None, gpt_alh, [(gelu, "GELU_CUBE", 0.0447)]),
        ("sqrt(2/pi) as the 10-digit literal 0.7978845608", None, gpt_alh, [(gelu, "GELU_SCALE", 0.7978845608)]),
        ("LayerNorm eps 1e-5 -> 1e-6", None, gpt_alh, [(layernorm.layernorm_forward_ref, "__defaults__", (1e-6,))]),
        ("AdamW eps 1e-8 -> 1.1e-8", train_opt(eps=1.1e-8), train_cases, []),
        ("AdamW eps inside the square root", None, train_cases, [(optim, "_adamw_kernel", adamw_eps_inside_sqrt)]),
        ("weight decay 0.1 -> 0.099", train_opt(weight_decay=0.099), train_cases, []),
        ("warmup 2 -> 3 steps", train_opt(warmup_steps=3), train_cases, []),
        ("clipping without the +1e-6", no_clip_constant(), train_cases, []),
    ]
    for cases in (gpt_alh, train_cases):
        print()
        print("| change | " + " | ".join(f"`{c}`" for c in cases) + " | first failing tensor |")
        print("| --- " * (len(cases) + 2) + "|")
        for label, ctx, which, patches in changes:
            if which is not cases:
                continue
            with contextlib.ExitStack() as stack:
                stack.enter_context(twins())                # the twins read their constants at call time
                if ctx is not None:
                    stack.enter_context(ctx)
                for obj, name, value in patches:
                    stack.enter_context(patched(obj, name, value))
                report = check(cases)
            shares = [worst(dict(report, entries=[e for e in report["entries"] if e["case"] == c]))[0] for c in cases]
            print(f"| {label} | " + " | ".join(f"{v:.2g}" for v in shares) + f" | `{report['first_failure']}` |")


if __name__ == "__main__":
    main()
