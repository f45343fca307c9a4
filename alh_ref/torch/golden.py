"""golden-check: recompute every case of a golden bundle with the torch port and compare.

The bundle (docs/golden.md) is read directly: ``manifest.json`` for each case's config, tensor
keys, check order and tolerances, ``<case>.safetensors`` for the parameters and inputs. For each
case the port computes every key the manifest lists, in the case's dtype, on ``device``:

    param.*, input.*, train.x, train.y     written back from the loaded model (exact)
    output.logits, output.loss             forward;  act.h.{l}, act.ln_f, dlogits when listed
    alh.context, alh.theta.<k>, alh.tok    ALH forward
    grad.<name>                            autograd, d loss / d parameter (trainable names)
    train.losses, train.grad_norm, train.lr, train.final.<name>, train.step0.grad.<name>
                                           S AdamW steps on train.x[s], train.y[s] (docs/golden.md section 6)

Each tensor passes when max |a - b| / (atol + rtol |b|) <= 1 (docs/golden.md section 7).
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

from ..alh.adapted import ALHConfig
from ..errors import InputError
from ..model import GPTConfig, decayed
from ..optim import AdamWConfig
from .alh import ALHNet, alh_forward
from .model import GPT, load_numpy
from .optim import AdamW

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def read_bundle(folder):
    """The manifest of a bundle folder, after checking every case file's sha256 (InputError otherwise)."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise InputError(f"golden bundle {str(folder)!r} has no manifest.json; expected a folder like tests/golden")
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{str(path)!r} is not valid JSON ({e})") from None
    if man.get("format") != "alh_ref.golden":
        raise InputError(f"{str(path)!r} has format {man.get('format')!r}; expected 'alh_ref.golden'")
    for name in man["case_order"]:
        case = man["cases"][name]
        f = folder / case["file"]
        if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != case["file_sha256"]:
            raise InputError(f"golden file {str(f)!r} is missing or does not match its sha256 in manifest.json")
    return man


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


def compare(a, b, rtol, atol):
    """max_abs, max_rel (over b != 0), share = max |a-b| / (atol + rtol |b|) (0/0 = 0, x/0 = inf), worst_index.

    a, b : ndarrays of one shape.  A NaN in a where b is not NaN counts as an infinite error.
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        d = np.abs(a64 - b64)                                                       # same shape
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        d = np.where(same, 0.0, np.where(np.isnan(d), np.inf, d))
        tol = atol + rtol * np.abs(b64)
        share = np.where(d == 0, 0.0, np.where(tol > 0, d / np.where(tol > 0, tol, 1.0), np.inf))
        nz = b64 != 0
        rel = d[nz] / np.abs(b64[nz]) if nz.any() else np.zeros(1)
    if d.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "share": 0.0, "worst_index": ()}
    sf, df = share.ravel(), d.ravel()
    ties = np.flatnonzero(sf == sf.max())
    k = ties[np.argmax(df[ties])]                                                   # largest share, then largest error
    return {"max_abs": float(d.max()), "max_rel": float(rel.max()), "share": float(sf[k]),
            "worst_index": tuple(int(i) for i in np.unravel_index(k, d.shape))}


def golden_check(folder, device="cpu", cases=None):
    """Recompute the cases of the bundle ``folder`` with the port and compare every tensor.

    Returns
    -------
    dict   ok, first_failure ("case/key" or None), entries (one per tensor: case, key, ok, message,
        rtol, atol, max_abs, max_rel, share, worst_index), in case order and check order
    """
    folder = Path(folder)
    man = read_bundle(folder)
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device {device!r}; expected cpu or cuda")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch finds no CUDA device here; use --device cpu")
        torch.backends.cuda.matmul.allow_tf32 = False                               # TF32 would fail float32, correctly
        torch.backends.cudnn.allow_tf32 = False
    entries = []
    for name in man["case_order"]:
        if cases is not None and name not in cases:
            continue
        case = man["cases"][name]
        ref = load_file(str(folder / case["file"]))
        got = compute_case(case, ref, device)
        for t in case["tensors"]:
            key, b = t["key"], ref[t["key"]]
            e = {"case": name, "key": key, "rtol": t["rtol"], "atol": t["atol"], "message": ""}
            a = got.get(key)
            if a is None:
                e.update(ok=False, message="missing: the port does not compute this key")
            elif a.shape != b.shape or a.dtype != b.dtype:
                e.update(ok=False, message=f"got {a.dtype.name} {a.shape}, expected {b.dtype.name} {b.shape}")
            else:
                e.update(compare(a, b, t["rtol"], t["atol"]))
                e["ok"] = bool(e["share"] <= 1.0)
            entries.append(e)
    first = next((f"{e['case']}/{e['key']}" for e in entries if not e["ok"]), None)
    return {"ok": first is None, "first_failure": first, "entries": entries, "device": device}


def format_report(report):
    """One line per tensor (max_abs, max_rel, share of tolerance, worst index, status), then PASS or FAIL."""
    head = f"{'case':<40} {'tensor':<38} {'max_abs':>9} {'max_rel':>9} {'share':>9}  {'worst_index':<14} status"
    lines = [head, "-" * len(head)]
    for e in report["entries"]:
        if "share" in e:
            stats = f"{e['max_abs']:9.2e} {e['max_rel']:9.2e} {e['share']:9.2e}  {str(e['worst_index']):<14}"
        else:
            stats = f"{'-':>9} {'-':>9} {'-':>9}  {'-':<14}"
        lines.append(f"{e['case']:<40} {e['key']:<38} {stats} {'ok' if e['ok'] else 'FAIL ' + e['message']}")
    n_cases = len({e["case"] for e in report["entries"]})
    worst = max((e.get("share", 0.0) for e in report["entries"]), default=0.0)
    if report["ok"]:
        lines.append(f"PASS: {len(report['entries'])} tensors in {n_cases} case(s) within tolerance "
                     f"(torch port on {report['device']}; largest share {worst:.2e})")
    else:
        n_fail = sum(not e["ok"] for e in report["entries"])
        lines.append(f"FAIL: {n_fail} of {len(report['entries'])} tensors failed; first failing tensor: "
                     f"{report['first_failure']} (torch port on {report['device']})")
    return "\n".join(lines)
