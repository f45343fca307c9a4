"""Example 4: verify an outside implementation against the golden bundle, without alh_ref.

A port (PyTorch, JAX, C, ...) does three things, mimicked here by a from-scratch NumPy forward pass
that imports nothing from alh_ref (docs/golden.md is all it relies on):

  1. load a case's parameters and inputs by name (safetensors), and its config from manifest.json;
  2. compute the case's tensors with its own code: the residual stream after every block
     (act.h.{l}), the final LayerNorm (act.ln_f), the logits, the loss and d loss / d logits;
  3. write its own <case>.safetensors with the same keys, and run the bundle's standalone checker
     tests/golden/check_bundle.py (numpy and safetensors only).

This port has no backward pass beyond dlogits, so its files have no grad.* keys: the checker runs
with --allow-missing, which lists them as "not checked" (a complete port leaves it out).

Run:  python examples/04_port_check.py [BUNDLE_DIR] [OUT_DIR]
      (defaults: tests/golden and a temporary folder). Exit code 0 when every tensor passes.
"""
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

CASES = ("gpt_f64", "gpt_f32")
ROOT = Path(__file__).resolve().parents[1]


def layernorm(x, w, b, eps=1e-5):
    """(x - mean) / sqrt(biased var + eps) * w + b over the last axis."""
    mu = x.mean(-1, keepdims=True)                                    # (...,1)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)                     # (...,1)
    return (x - mu) / np.sqrt(var + eps) * w + b                      # (...,C)


def gelu(x):
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(p, x, n_layer, n_head):
    """The GPT of docs/golden.md section 4. Weights are (in, out): y = x @ W + b.

    Returns {act.h.{l}, act.ln_f, output.logits}: (B,T,C) each, logits (B,T,V).
    """
    B, T = x.shape
    C = p["wte"].shape[1]
    hs = C // n_head
    out = {}
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
        out[f"act.h.{l}"] = h
    out["act.ln_f"] = z = layernorm(h, p["ln_f.w"], p["ln_f.b"])      # (B,T,C)
    out["output.logits"] = z @ p["wte"].T                             # (B,T,V) tied output embedding
    return out


def loss_and_dlogits(logits, y):
    """Mean cross-entropy over all B*T positions, and its gradient (softmax - onehot(y)) / (B*T)."""
    B, T, V = logits.shape
    mx = logits.max(-1, keepdims=True)                                # (B,T,1)
    e = np.exp(logits - mx)                                           # (B,T,V)
    lse = mx[..., 0] + np.log(e.sum(-1))                              # (B,T)
    loss = (lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]).mean()
    d = e / e.sum(-1, keepdims=True)                                  # (B,T,V) softmax
    d[np.arange(B)[:, None], np.arange(T)[None, :], y] -= 1.0
    return loss, d / (B * T)                                          # (), (B,T,V)


def port_case(bundle, case, out):
    """Load one case, compute it with this port's code, write <case>.safetensors to ``out``."""
    cfg = json.loads((bundle / "manifest.json").read_text())["cases"][case]["config"]["gpt"]
    t = load_file(str(bundle / f"{case}.safetensors"))                # dict key -> ndarray, nothing by offset
    params = {k[len("param."):]: v for k, v in t.items() if k.startswith("param.")}
    x, y = t["input.x"], t["input.y"]
    mine = {"param." + k: v for k, v in params.items()}               # parameters written back as loaded
    mine.update({"input.x": x, "input.y": y})
    mine.update(forward(params, x, cfg["n_layer"], cfg["n_head"]))
    loss, dlogits = loss_and_dlogits(mine["output.logits"], y)
    # safetensors.numpy stores an array's raw buffer: make views (slices, transposes) contiguous first
    mine = {k: np.ascontiguousarray(v) for k, v in mine.items()}
    mine["output.loss"] = np.asarray(loss, dtype=dlogits.dtype)       # 0-d (ascontiguousarray would make it (1,))
    mine["dlogits"] = np.ascontiguousarray(dlogits)
    save_file(mine, str(out / f"{case}.safetensors"))
    print(f"{case}: my loss {float(loss):.17g}, golden {float(t['output.loss']):.17g}")


def main(bundle="tests/golden", out=None):
    bundle = Path(bundle)
    out = Path(out or tempfile.mkdtemp(prefix="port_bundle_"))
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        port_case(bundle, case, out)
    checker = ROOT / "tests" / "golden" / "check_bundle.py"           # numpy + safetensors only
    return subprocess.run([sys.executable, str(checker), str(out), "--reference", str(bundle), "--allow-missing"]).returncode


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
