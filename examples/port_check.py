"""How an outside implementation checks itself against alh_ref's golden bundle.

A port (PyTorch, JAX, C, ...) does three things, mimicked here with a from-scratch NumPy forward
that does NOT import alh_ref's model (docs/golden.md is all it relies on):

  1. load a case's parameters and inputs by name (safetensors), and its config from manifest.json;
  2. compute the outputs with its own code and compare the loss;
  3. write its own <case>.safetensors with the same keys and run alh_ref.golden.check_bundle.

This port only has a forward pass, so its bundle has no grad.* keys: the check runs with
allow_missing=True, which lists them as "not checked" (a complete port leaves it False).

Run:  python examples/port_check.py [BUNDLE_DIR] [OUT_DIR]
      (defaults: tests/golden and a temporary folder). Exit code 0 when every tensor passes.
"""
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

CASE = "gpt_f64"


def layernorm(x, w, b, eps=1e-5):
    """(x - mean) / sqrt(biased var + eps) * w + b over the last axis."""
    mu = x.mean(-1, keepdims=True)                                    # (...,1)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)                     # (...,1)
    return (x - mu) / np.sqrt(var + eps) * w + b                      # (...,C)


def gelu(x):
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(p, x, n_layer, n_head):
    """The GPT of docs/golden.md: returns logits (B,T,V). Weights are (in, out): y = x @ W + b."""
    B, T = x.shape
    C = p["wte"].shape[1]
    hs = C // n_head
    h = p["wte"][x] + p["wpe"][:T]                                    # (B,T,C)
    causal = np.tril(np.ones((T, T), dtype=bool))                     # (T,T) key s <= query t
    for l in range(n_layer):
        q = f"h.{l}."
        a = layernorm(h, p[q + "ln_1.w"], p[q + "ln_1.b"]) @ p[q + "attn.c_attn.w"] + p[q + "attn.c_attn.b"]  # (B,T,3C)
        qh, kh, vh = (a[..., i * C:(i + 1) * C].reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
                      for i in range(3))                              # 3 x (B,NH,T,hs): q | k | v, heads contiguous
        s = np.where(causal, qh @ kh.transpose(0, 1, 3, 2) / math.sqrt(hs), -np.inf)  # (B,NH,T,T)
        att = np.exp(s - s.max(-1, keepdims=True))                    # (B,NH,T,T)
        att /= att.sum(-1, keepdims=True)
        y = (att @ vh).transpose(0, 2, 1, 3).reshape(B, T, C)         # (B,T,C) heads concatenated
        h = h + y @ p[q + "attn.c_proj.w"] + p[q + "attn.c_proj.b"]   # (B,T,C)
        m = layernorm(h, p[q + "ln_2.w"], p[q + "ln_2.b"]) @ p[q + "mlp.c_fc.w"] + p[q + "mlp.c_fc.b"]  # (B,T,4C)
        h = h + gelu(m) @ p[q + "mlp.c_proj.w"] + p[q + "mlp.c_proj.b"]  # (B,T,C)
    z = layernorm(h, p["ln_f.w"], p["ln_f.b"])                        # (B,T,C)
    return z @ p["wte"].T                                             # (B,T,V) tied output embedding


def mean_cross_entropy(logits, y):
    """mean over all B*T positions of logsumexp(logits) - logits[y]."""
    mx = logits.max(-1, keepdims=True)                                # (B,T,1)
    lse = mx[..., 0] + np.log(np.exp(logits - mx).sum(-1))            # (B,T)
    return (lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]).mean()


def main(bundle="tests/golden", out=None):
    bundle = Path(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    cfg = manifest["cases"][CASE]["config"]["gpt"]
    t = load_file(str(bundle / f"{CASE}.safetensors"))                # dict key -> ndarray, nothing by offset
    params = {k[len("param."):]: v for k, v in t.items() if k.startswith("param.")}
    x, y = t["input.x"], t["input.y"]

    logits = forward(params, x, cfg["n_layer"], cfg["n_head"])
    loss = mean_cross_entropy(logits, y)
    tol = {e["key"]: e for e in manifest["cases"][CASE]["tensors"]}["output.loss"]
    ref = float(t["output.loss"])
    print(f"{CASE}: my loss {loss:.17g}, golden {ref:.17g}, |diff| {abs(loss - ref):.2e} "
          f"(allowed {tol['atol'] + tol['rtol'] * abs(ref):.2e})")

    out = Path(out or tempfile.mkdtemp(prefix="port_bundle_"))
    out.mkdir(parents=True, exist_ok=True)
    mine = {"param." + k: v for k, v in params.items()}               # parameters written back as loaded
    mine.update({"input.x": x, "input.y": y, "output.logits": logits})
    # safetensors.numpy stores an array's raw buffer: make views (slices, transposes) contiguous first
    mine = {k: np.ascontiguousarray(v) for k, v in mine.items()}
    mine["output.loss"] = np.asarray(loss)                            # 0-d (ascontiguousarray would make it 1-d)
    save_file(mine, str(out / f"{CASE}.safetensors"))

    from alh_ref.golden import check_bundle, format_report           # the checker is the only alh_ref import
    report = check_bundle(out, reference=bundle, cases=[CASE], allow_missing=True)
    print(format_report(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
