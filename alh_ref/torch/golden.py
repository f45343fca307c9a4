"""golden-check: recompute every case of a golden bundle with the torch port and compare.

The bundle (docs/golden.md) is loaded and verified by alh_ref.golden.bundle.load_bundle:
``manifest.json`` for each case's config, tensor keys, check order and tolerances,
``<case>.safetensors`` for the parameters and inputs. For each
case the port computes every key the manifest lists, in the case's dtype, on ``device``:

    param.*, input.*, train.x, train.y     written back from the loaded model (exact)
    output.logits, output.loss             forward;  act.h.{l}, act.ln_f, dlogits when listed
    alh.context, alh.theta.<k>, alh.tok    ALH forward
    grad.<name>                            autograd, d loss / d parameter (trainable names)
    train.losses, train.grad_norm, train.lr, train.final.<name>, train.step0.grad.<name>
                                           S AdamW steps on train.x[s], train.y[s] (docs/golden.md section 6)

The comparison and the report are alh-ref's own (alh_ref.golden.check: check_case, format_report):
a tensor passes when max |a - b| / (atol + rtol |b|) <= 1 (docs/golden.md section 7).
"""
import numpy as np
import torch

from ..alh.adapted import ALHConfig
from ..errors import InputError
from ..golden.bundle import load_bundle
from ..golden.check import check_case, format_report
from ..model import GPTConfig, decayed
from ..optim import AdamWConfig
from .alh import ALHNet, alh_forward
from .model import GPT, load_numpy
from .optim import AdamW

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _models(case, arrays, dtype, device):
    """(base GPT, ALHNet or None) with the case's param.* loaded."""
    bcfg = GPTConfig(**case["config"]["gpt"])
    base = GPT(bcfg).to(dtype=dtype, device=device)
    load_numpy(base, {n[6:]: a for n, a in arrays.items() if n.startswith("param.")}, list(dict(base.named_parameters())))
    net = None
    if case["config"]["alh"] is not None:
        net = ALHNet(bcfg, ALHConfig(**case["config"]["alh"])).to(dtype=dtype, device=device)
        load_numpy(net, {n[4:]: arrays["param." + n] for n in net.canonical()})
    return base, net


def _trainable(case, base, net):
    """{name: Parameter} of the case's trainable names (base frozen for ALH)."""
    named = dict(base.named_parameters()) if net is None else net.canonical()
    for p in list(base.parameters()) + ([] if net is None else list(net.parameters())):
        p.requires_grad_(False)
    out = {n: named[n] for n in case["trainable"]}
    for p in out.values():
        p.requires_grad_(True)
    return out


def _loss(base, net, x, y, extras=None):
    if net is None:
        return base(x, y, acts=extras)
    return alh_forward(net, base, x, y, None, extras)


def _np(t):
    return t.detach().cpu().numpy().copy()


def compute_case(case, arrays, device="cpu"):
    """Every tensor of one case recomputed by the port: {key: ndarray} (keys the port cannot name are absent).

    case : the manifest's case entry;  arrays : {key: ndarray} of the case file (param.*, input.*, train.x/y used)
    """
    dtype = DTYPES[case["dtype"]]
    keys = [t["key"] for t in case["tensors"]]
    base, net = _models(case, arrays, dtype, device)
    train = _trainable(case, base, net)
    out = {}
    every = dict(base.named_parameters()) if net is None else \
        dict(base.named_parameters(), **net.canonical())
    out.update({"param." + n: _np(p) for n, p in every.items()})
    dev = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    if "input.x" in arrays:
        x, y = dev(arrays["input.x"]), dev(arrays["input.y"])
        out["input.x"], out["input.y"] = _np(x), _np(y)
        extras = {}
        logits, loss = _loss(base, net, x, y, extras)
        if "dlogits" in keys:
            logits.retain_grad()
        loss.backward()
        out.update({k: _np(v) for k, v in extras.items()})
        out["output.logits"], out["output.loss"] = _np(logits), _np(loss)
        if "dlogits" in keys:
            out["dlogits"] = _np(logits.grad)
        out.update({"grad." + n: _np(p.grad) for n, p in train.items()})
    if "train.x" in arrays:
        out.update(_train(case, base, net, train, arrays, device))
    return {k: v for k, v in out.items() if k in keys}


def _train(case, base, net, train, arrays, device):
    """S AdamW steps on the stored batches (docs/golden.md section 6)."""
    tc = case["train"]
    opt = AdamW(train, AdamWConfig(**tc["optimizer"]), lambda n: n in tc["decayed"] if "decayed" in tc else decayed(n))
    xs, ys = arrays["train.x"], arrays["train.y"]
    out = {"train.x": xs.copy(), "train.y": ys.copy()}
    losses, norms, lrs = [], [], []
    for s in range(tc["steps"]):
        opt.zero_grad()
        _, loss = _loss(base, net, torch.as_tensor(xs[s], device=device), torch.as_tensor(ys[s], device=device))
        loss.backward()
        if s == 0:
            out.update({"train.step0.grad." + n: _np(p.grad) for n, p in train.items()})
        norm, lr = opt.step()
        losses.append(float(loss.detach()))
        norms.append(norm)
        lrs.append(lr)
    out["train.losses"], out["train.grad_norm"], out["train.lr"] = (np.array(v, dtype=np.float64)
                                                                    for v in (losses, norms, lrs))
    out.update({"train.final." + n: _np(p) for n, p in train.items()})
    return out


def golden_check(folder, device="cpu", cases=None):
    """Recompute the cases of the bundle ``folder`` with the port and compare every tensor.

    Returns
    -------
    dict   as alh_ref.golden.check.check_bundle's (ok, first_failure, entries: one per tensor with
        case, key, ok, message, rtol, atol, max_abs, max_rel, share, worst_index, in case and check
        order; skipped, reference), plus device; :func:`format_report` prints it
    """
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device {device!r}; expected cpu or cuda")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch finds no CUDA device here; use --device cpu")
        torch.backends.cuda.matmul.allow_tf32 = False                               # TF32 would fail float32, correctly
        torch.backends.cudnn.allow_tf32 = False
    bundle = load_bundle(folder)                                                    # files, keys, shapes, sha256 checked
    man, ref = bundle
    bad = [c for c in cases or () if c not in man["cases"]]
    if bad:
        raise InputError(f"unknown golden case(s) {', '.join(bad)}; expected names from {', '.join(man['case_order'])}")
    entries = []
    for name in man["case_order"]:
        if cases is None or name in cases:
            entries += check_case(name, compute_case(man["cases"][name], ref[name], device), bundle)
    first = next((f"{e['case']}/{e['key']}" for e in entries if not e["ok"]), None)
    return {"ok": first is None, "first_failure": first, "entries": entries, "skipped": [], "reference": str(folder),
            "device": device}


__all__ = ["compute_case", "format_report", "golden_check"]
