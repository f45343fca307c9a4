"""Golden outputs for other implementations, and a checker that says exactly where a port diverges.

A golden *bundle* is a folder (format described, key by key, in docs/golden.md):

    manifest.json          format version, alh_ref / numpy versions, and per case: its full config,
                           dtype, seeds, recipes, the ordered tensor keys and, per tensor, shape,
                           dtype, sha256 and the tolerance (rtol, atol) to check it with
    <case>.safetensors     one file per case in :data:`CASES`: every parameter under its documented
                           name, the inputs, the outputs and the gradients (keys "param.wte",
                           "input.x", "output.logits", "grad.wte", "alh.theta.v", "train.losses", ...)

Nothing is found by offset: every tensor is named, and the manifest says what it is.

A port (PyTorch, JAX, ...) loads a case's ``param.*`` and ``input.*`` (or ``train.x`` / ``train.y``),
computes everything else, writes ``<case>.safetensors`` with the same keys, and runs
:func:`check_bundle` (CLI: ``alh-ref golden --check DIR``). Each tensor is compared with

    share = max_i |a_i - b_i| / (atol + rtol |b_i|)        pass  <=>  share <= 1

(a the port's value, b the reference), i.e. ``numpy.allclose(a, b, rtol, atol)`` element by element.
The tolerances come from the reference, never from the checked folder (policy: docs/golden.md).
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import safetensors.numpy as stnp

from . import __version__
from .alh.adapted import ALHConfig, alh_backward, alh_forward, alh_init, alh_param_shapes
from .alh.encoders import encoder_forward
from .checkpoint import tensor_sha256, to_jsonable
from .errors import ALHRefError, InputError
from .io_utils import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from .model import GPTConfig, decayed, gpt_backward, gpt_forward, init_params, param_shapes
from .optim import AdamW, AdamWConfig
from .train import gpt_loss_and_grads, sample_batch

FORMAT = "alh_ref.golden"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"

# ----------------------------------------------------------------------------------------------
# The cases

GPT_CFG = GPTConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=16, tied=True)
BATCH = {"B": 2, "T": 8}
ALH_DIMS = {"D": 8, "n_layer": 1, "n_head": 2, "K": 4, "R": 2}
SEEDS = {"base_init": 0, "base_perturb": 1, "hyp_init": 2, "hyp_perturb": 3, "data": 4, "train_data": 5}
TRAIN_STEPS = 5
TRAIN_OPT = AdamWConfig(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=2.2,
                        warmup_steps=2, total_steps=5, min_lr_frac=0.1)
STREAM_LEN = 512  # length of the synthetic token stream batches are cut from


def _case_table():
    """Ordered {name: spec}; spec = {kind, dtype, alh (ALHConfig fields) or None}."""
    cases = {"gpt_f64": {"kind": "gpt", "dtype": "float64", "alh": None},
             "gpt_f32": {"kind": "gpt", "dtype": "float32", "alh": None}}
    for family in ("householder", "lowrank", "film"):
        for site, encoder in (("input", "transformer"), ("output", "transformer"), ("both", "transformer"),
                              ("both", "mean")):
            cases[f"alh_{family}_{site}_{encoder}"] = {
                "kind": "alh", "dtype": "float64",
                "alh": dict(ALH_DIMS, family=family, site=site, encoder=encoder, out_context="current")}
    cases["alh_householder_both_transformer_prev"] = {
        "kind": "alh", "dtype": "float64",
        "alh": dict(ALH_DIMS, family="householder", site="both", encoder="transformer", out_context="prev")}
    cases["train_gpt_f64"] = {"kind": "train_gpt", "dtype": "float64", "alh": None}
    cases["train_alh_householder_f64"] = {
        "kind": "train_alh", "dtype": "float64",
        "alh": dict(ALH_DIMS, family="householder", site="both", encoder="transformer", out_context="current")}
    return cases


CASES = _case_table()
"""Ordered ``{case name: spec}``: 2 base GPT cases, 13 ALH cases, 2 training runs.

ALH: every family at every site with the transformer encoder, every family at site "both" with
the mean encoder, and out_context "prev" once (the encoder only makes the context vectors, so
crossing it with every site would add size, not coverage)."""

# ----------------------------------------------------------------------------------------------
# Tolerances: (rtol, atol) per tensor kind and dtype.  Measured, see docs/golden.md "Tolerances".

TOLERANCES = {
    "float64": {"exact": (0.0, 0.0), "forward": (1e-10, 1e-12), "grad": (1e-9, 1e-12),
                "train": (1e-7, 5e-8)},
    "float32": {"exact": (0.0, 0.0), "forward": (1e-4, 1e-5), "grad": (1e-3, 1e-5),
                "train": (1e-3, 1e-4)},
}


def tensor_kind(key):
    """The tolerance class of a tensor key.

    Parameters
    ----------
    key : str   e.g. "param.wte", "output.logits", "grad.h.0.ln_1.w", "train.final.wte"

    Returns
    -------
    kind : str  "exact" (param.*, input.*, train.x, train.y: must be bit-identical),
                "forward" (output.*, alh.*), "grad" (grad.*) or "train" (train.* results)
    """
    if key.startswith(("param.", "input.")) or key in ("train.x", "train.y"):
        return "exact"
    if key.startswith(("output.", "alh.")):
        return "forward"
    if key.startswith("grad."):
        return "grad"
    if key.startswith("train."):
        return "train"
    raise InputError(f"golden key {key!r} has no known prefix; expected param., input., output., alh., grad. or train.")


def tolerance(key, dtype):
    """(rtol, atol) to check tensor ``key`` of ``dtype`` with.

    Parameters
    ----------
    key : str;  dtype : numpy dtype or name (integer tensors are always exact)

    Returns
    -------
    (rtol, atol) : floats;  a passes against reference b iff |a - b| <= atol + rtol |b| elementwise
    """
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        return (0.0, 0.0)
    return TOLERANCES[dt.name][tensor_kind(key)]


# ----------------------------------------------------------------------------------------------
# Building a case: parameters and inputs from seeds, then alh_ref's forward / backward / training

PERTURB_RECIPE = ("p <- p + s * N(0,1), one np.random.default_rng(seed) drawing float64 standard normals "
                  "tensor by tensor in canonical name order (every tensor draws, full shape), then cast "
                  "to the case dtype; s = 0.2 for LayerNorm gains (names ending ln_1.w, ln_2.w, ln_f.w), "
                  "0.1 for names ending .b, 0.15 for everything else")


def _perturb_scale(name):
    """Noise scale s of PERTURB_RECIPE for one parameter name."""
    if name.endswith(("ln_1.w", "ln_2.w", "ln_f.w")):
        return 0.2
    if name.endswith(".b"):
        return 0.1
    return 0.15


def perturb(params, seed, dtype):
    """Move parameters off their initial values, reproducibly (see PERTURB_RECIPE).

    Parameters
    ----------
    params : dict name -> ndarray (any float dtype), in canonical order
    seed : int
    dtype : numpy dtype of the result

    Returns
    -------
    dict name -> ndarray   p + s(name) * N(0, 1), computed in float64 then cast to ``dtype``
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, p in params.items():
        noise = rng.standard_normal(p.shape)                                                    # shape of p, float64
        out[name] = (p.astype(np.float64) + _perturb_scale(name) * noise).astype(dtype)        # shape of p
    return out


def base_params(dtype):
    """The "pretrained-like" base GPT: init_params(GPT_CFG, seed 0) in float64, perturbed (seed 1), cast.

    Returns
    -------
    dict name -> ndarray of ``dtype``, in param_shapes order
    """
    p = init_params(GPT_CFG, seed=SEEDS["base_init"], dtype=np.float64)
    return perturb(p, SEEDS["base_perturb"], dtype)


def hyp_params(acfg, dtype):
    """The hypernetwork: alh_init(seed 2) in float64, perturbed (seed 3) so ALH differs from the base.

    Returns
    -------
    dict name -> ndarray of ``dtype``, in alh_param_shapes order
    """
    p = alh_init(GPT_CFG, acfg, seed=SEEDS["hyp_init"], dtype=np.float64)
    return perturb(p, SEEDS["hyp_perturb"], dtype)


def _stream(seed):
    """Synthetic token stream (STREAM_LEN,) int64, uniform in [0, V)."""
    return np.random.default_rng(seed).integers(0, GPT_CFG.vocab_size, size=STREAM_LEN)     # (STREAM_LEN,)


def batch_inputs():
    """x, y (B,T) int64: one train.sample_batch of the seeded stream (y[t] = x[t+1] within a window)."""
    rng = np.random.default_rng([SEEDS["data"], 1])
    return sample_batch(_stream(SEEDS["data"]), BATCH["B"], BATCH["T"], rng)                 # (B,T), (B,T)


def train_batches():
    """train.x, train.y (S,B,T) int64: TRAIN_STEPS consecutive sample_batch draws of the seeded stream."""
    tokens = _stream(SEEDS["train_data"])
    rng = np.random.default_rng([SEEDS["train_data"], 1])
    xs, ys = zip(*(sample_batch(tokens, BATCH["B"], BATCH["T"], rng) for _ in range(TRAIN_STEPS)))
    return np.stack(xs), np.stack(ys)                                                           # (S,B,T), (S,B,T)


def _alh_cfg(spec):
    """The case's ALHConfig."""
    return ALHConfig(head="transform", **spec["alh"])


def _context(hyp, acfg, x):
    """c_ext (B,T+1,D): slot 0 = alh.c0, slot t+1 = the encoder's context vector at position t."""
    c, _ = encoder_forward(hyp, acfg.encoder, x, (GPT_CFG.vocab_size, GPT_CFG.block_size, acfg.D,
                                                  acfg.n_layer, acfg.n_head))                   # (B,T) -> (B,T,D)
    c0 = np.broadcast_to(hyp["alh.c0"], (x.shape[0], 1, acfg.D))                                # (B,1,D)
    return np.concatenate([c0, c], axis=1)                                                      # (B,T+1,D)


def _gpt_outputs(params, x, y):
    """output.* and grad.* (backward order) of the base GPT."""
    logits, loss, cache = gpt_forward(params, GPT_CFG, x, y)                                    # (B,T,V), ()
    grads, _ = gpt_backward(cache, params, GPT_CFG)
    out = {"output.logits": logits, "output.loss": np.asarray(loss)}
    out.update({"grad." + n: grads[n] for n in reversed(param_shapes(GPT_CFG))})               # backward order
    return out


def _alh_outputs(base, hyp, acfg, x, y):
    """alh.*, output.* and grad.alh.* (backward order) of the adapted model."""
    logits, loss, cache = alh_forward(base, hyp, GPT_CFG, acfg, x, y)                          # (B,T,V), ()
    out = {"alh.context": _context(hyp, acfg, x)}                                               # (B,T+1,D)
    out.update({"alh.theta." + k: v for k, v in cache["theta"].items()})
    out["alh.tok"] = cache["tok"]                                                               # (B,T,C)
    out.update({"output.logits": logits, "output.loss": np.asarray(loss)})
    grads = alh_backward(cache, base, hyp, GPT_CFG, acfg)
    out.update({"grad." + n: grads[n] for n in reversed(alh_param_shapes(GPT_CFG, acfg))})     # backward order
    return out


def _train(params, names, loss_and_grads, xs, ys):
    """TRAIN_STEPS AdamW steps (TRAIN_OPT) on the given batches; params updated in place.

    Returns losses, grad norms (before clipping), learning rates: 3 x (S,) float64.
    """
    opt = AdamW(params, names, TRAIN_OPT, decayed)
    rec = []
    for s in range(xs.shape[0]):
        loss, grads = loss_and_grads(xs[s], ys[s])
        norm, lr = opt.step(params, grads)
        rec.append((loss, norm, lr))
    return [np.array(col, dtype=np.float64) for col in zip(*rec)]                              # 3 x (S,)


def _train_outputs(base, hyp, acfg, xs, ys):
    """train.* tensors; trains a copy of hyp (ALH) or of base (GPT)."""
    if acfg is None:
        params = {n: a.copy() for n, a in base.items()}
        names = list(param_shapes(GPT_CFG))

        def loss_and_grads(x, y):
            return gpt_loss_and_grads(params, GPT_CFG, x, y)
    else:
        params = {n: a.copy() for n, a in hyp.items()}
        names = list(alh_param_shapes(GPT_CFG, acfg))

        def loss_and_grads(x, y):
            _, loss, cache = alh_forward(base, params, GPT_CFG, acfg, x, y)
            return float(loss), alh_backward(cache, base, params, GPT_CFG, acfg)
    losses, norms, lrs = _train(params, names, loss_and_grads, xs, ys)
    out = {"train.losses": losses, "train.grad_norm": norms, "train.lr": lrs}
    out.update({"train.final." + n: params[n] for n in names})
    return out


def _trainable(spec):
    """Canonical names of the parameters a case differentiates / trains."""
    if spec["alh"] is None:
        return list(param_shapes(GPT_CFG))
    return list(alh_param_shapes(GPT_CFG, _alh_cfg(spec)))


def case_meta(name):
    """Everything about a case except its tensors: config, dtype, seeds, recipes, trainable names.

    Parameters
    ----------
    name : str, a key of CASES

    Returns
    -------
    dict (JSON-able)
    """
    spec = _spec(name)
    train = spec["kind"].startswith("train")
    meta = {
        "kind": spec["kind"], "dtype": spec["dtype"],
        "config": {"gpt": GPT_CFG.to_dict(), "alh": None if spec["alh"] is None else _alh_cfg(spec).to_dict(),
                   "batch": dict(BATCH)},
        "seeds": dict(SEEDS),
        "param_recipe": {
            "base": (f"alh_ref.model.init_params(config.gpt, seed={SEEDS['base_init']}, dtype=float64), then "
                     f"perturbed with seed {SEEDS['base_perturb']}: {PERTURB_RECIPE}"),
            "alh": None if spec["alh"] is None else
                   (f"alh_ref.alh.alh_init(config.gpt, config.alh, seed={SEEDS['hyp_init']}, dtype=float64), then "
                    f"perturbed with seed {SEEDS['hyp_perturb']}: same recipe"),
            "note": "ports do not reproduce this: they load param.* from the bundle"},
        "data_recipe": (f"a token stream of {STREAM_LEN} ids = default_rng(seed).integers(0, V, {STREAM_LEN}); "
                        "windows cut by alh_ref.train.sample_batch with default_rng([seed, 1]); "
                        + ("seed = seeds.train_data, one batch per step" if train else "seed = seeds.data")),
        "trainable": _trainable(spec),
    }
    if train:
        meta["train"] = {
            "steps": TRAIN_STEPS, "optimizer": TRAIN_OPT.to_dict(),
            "decayed": [n for n in _trainable(spec) if decayed(n)],
            "grad_clip_rule": "g <- g * min(1, grad_clip / (||g||_2 + 1e-6)), ||g||_2 over all trainable tensors",
            "lr_rule": ("lr(s) = lr*(s+1)/warmup_steps for s < warmup_steps; else min_lr + (lr - min_lr) * "
                        "(1 + cos(pi*(s - warmup_steps)/(total_steps - warmup_steps)))/2, min_lr = min_lr_frac*lr; "
                        "s = 0-based step"),
            "update_rule": ("t = s+1; m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2; "
                            "p <- p - lr(s) * ((m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + wd * p), "
                            "wd = weight_decay for names in 'decayed', else 0; m, v start at 0"),
        }
    return meta


def _spec(name):
    """CASES[name], or InputError naming the known cases."""
    if name not in CASES:
        raise InputError(f"unknown golden case {name!r}; expected one of {', '.join(CASES)}")
    return CASES[name]


def compute_case(name):
    """Build one case: parameters and inputs from seeds, outputs from alh_ref.

    Parameters
    ----------
    name : str, a key of CASES

    Returns
    -------
    tensors : dict key -> ndarray, C-contiguous, in check order (params, inputs, forward values,
        gradients in backward order / training results)
    meta : dict, :func:`case_meta`
    """
    spec = _spec(name)
    dtype = np.dtype(spec["dtype"])
    t = {"param." + n: a for n, a in base_params(dtype).items()}
    if spec["alh"] is not None:
        t.update({"param." + n: a for n, a in hyp_params(_alh_cfg(spec), dtype).items()})     # names start "alh."
    if spec["kind"].startswith("train"):
        t["train.x"], t["train.y"] = train_batches()                                            # (S,B,T) x 2
    else:
        t["input.x"], t["input.y"] = batch_inputs()                                             # (B,T) x 2
    t.update(case_outputs(name, t))
    return _c_order(t), case_meta(name)


def case_outputs(name, given):
    """alh_ref's outputs of a case from given parameters and inputs (what a port computes).

    Parameters
    ----------
    name : str, a key of CASES
    given : dict with the case's "param.<name>" tensors and "input.x", "input.y" (B,T) int64
        (training cases: "train.x", "train.y" (S,B,T) int64); other keys are ignored

    Returns
    -------
    dict key -> ndarray (C order) of every other key of the case, in check order: alh.*, output.*,
        grad.* (gpt / alh cases) or train.* results (training cases)
    """
    spec = _spec(name)
    base = {k[len("param."):]: v for k, v in given.items() if k.startswith("param.") and not k.startswith("param.alh.")}
    hyp = {k[len("param."):]: v for k, v in given.items() if k.startswith("param.alh.")}
    acfg = None if spec["alh"] is None else _alh_cfg(spec)
    if spec["kind"].startswith("train"):
        out = _train_outputs(base, hyp, acfg, given["train.x"], given["train.y"])
    elif acfg is None:
        out = _gpt_outputs(base, given["input.x"], given["input.y"])
    else:
        out = _alh_outputs(base, hyp, acfg, given["input.x"], given["input.y"])
    return _c_order(out)


def _c_order(tensors):
    """Every array C-contiguous (0-d kept 0-d).

    safetensors.numpy writes an array's underlying buffer, so a non-contiguous view (a slice, a
    transpose) would be stored with the wrong values.
    """
    return {k: np.array(v, order="C", copy=None) for k, v in tensors.items()}                  # same shapes, C order


# ----------------------------------------------------------------------------------------------
# Writing and reading bundles

def _tensor_entry(key, a):
    rtol, atol = tolerance(key, a.dtype)
    return {"key": key, "kind": tensor_kind(key) if np.issubdtype(a.dtype, np.floating) else "exact",
            "dtype": a.dtype.name, "shape": list(a.shape), "rtol": rtol, "atol": atol, "sha256": tensor_sha256(a)}


def _json_text(obj, indent=0):
    """Deterministic JSON: dict keys sorted, one line per tensor entry and per list of scalars.

    One line per tensor keeps the manifest small and makes a regenerated bundle's diff read as
    "these tensors changed".
    """
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, dict) and "sha256" in obj:
        return json.dumps(obj)                                                                  # tensor entry, own order
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_json_text(obj[k], indent + 2)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _json_text(v, indent + 2) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def write_bundle(out_dir, cases=None):
    """Compute the cases and write the bundle: one <case>.safetensors each, then manifest.json.

    Parameters
    ----------
    out_dir : str or Path   created if needed; existing files of the same names are replaced atomically
    cases : list of case names or None (all of CASES, in order)

    Returns
    -------
    manifest : dict   what was written to manifest.json
    """
    names = list(CASES) if cases is None else [n for n in CASES if n in set(cases)]
    unknown = [n for n in (cases or ()) if n not in CASES]
    if unknown:
        raise InputError(f"unknown golden case(s) {', '.join(unknown)}; expected names from {', '.join(CASES)}")
    folder = ensure_writable_dir(out_dir)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "alh_ref_version": __version__,
                "numpy_version": np.__version__, "case_order": names, "cases": {}}
    for name in names:
        tensors, meta = compute_case(name)                                                      # C order (see _c_order)
        # one metadata key: safetensors writes a multi-key header map in no fixed order
        blob = stnp.save(tensors, metadata={FORMAT: json.dumps({"case": name, "format_version": FORMAT_VERSION})})
        atomic_write_bytes(folder / f"{name}.safetensors", blob)
        meta.update(file=f"{name}.safetensors", file_sha256=hashlib.sha256(blob).hexdigest(),
                    tensors=[_tensor_entry(k, a) for k, a in tensors.items()])             # in check order
        manifest["cases"][name] = meta
    manifest = to_jsonable(manifest)
    atomic_write_text(folder / MANIFEST_FILE, _json_text(manifest) + "\n")                     # commit point, last
    return manifest


def _load_safetensors(path, blob=None):
    """Read one safetensors file (or its bytes ``blob``); InputError with one line if it cannot be parsed."""
    try:
        return stnp.load(path.read_bytes() if blob is None else blob)
    except Exception as e:  # SafetensorError and friends -> one line
        msg = " ".join(str(e).split())
        raise InputError(f"{str(path)!r} is not a valid safetensors file ({type(e).__name__}: {msg}); "
                         "expected a file written by safetensors save/save_file") from None


def read_manifest(folder):
    """Read and check a bundle's manifest.json (format, version, cases table).

    Parameters
    ----------
    folder : str or Path, a bundle folder

    Returns
    -------
    manifest : dict   as in docs/golden.md; InputError if missing, not JSON, or another format/version
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise InputError(f"{str(folder)!r} has no {MANIFEST_FILE}; expected a golden bundle written by write_bundle")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{str(path)!r} is not valid JSON ({e}); expected the manifest write_bundle wrote") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise InputError(f"{str(path)!r} is not a golden manifest (format {m.get('format') if isinstance(m, dict) else None!r}); "
                         f"expected format {FORMAT!r}")
    if m.get("format_version") != FORMAT_VERSION:
        raise InputError(f"golden format_version {m.get('format_version')!r} is not supported; "
                         f"this alh_ref reads format_version {FORMAT_VERSION}")
    if not isinstance(m.get("cases"), dict) or not isinstance(m.get("case_order"), list):
        raise InputError(f"{str(path)!r} has no cases table; expected 'cases' and 'case_order'")
    return m


def _tensor_table(meta):
    """{key: entry} from a case's manifest "tensors" list (check order kept)."""
    return {e["key"]: e for e in meta["tensors"]}


def _read_verified(folder):
    """(manifest, {case: tensors}, problems): every file read once and checked against the manifest."""
    folder = Path(folder)
    m = read_manifest(folder)
    problems, cases = [], {}
    listed = {m["cases"][n].get("file") for n in m["case_order"] if n in m["cases"]}
    for p in sorted(folder.glob("*.safetensors")):
        if p.name not in listed:
            problems.append(f"{p.name}: not listed in {MANIFEST_FILE}")
    for name in m["case_order"]:
        meta = m["cases"].get(name)
        if meta is None:
            problems.append(f"{name}: in case_order but not in cases")
            continue
        path = folder / meta["file"]
        if not path.is_file():
            problems.append(f"{name}: file {meta['file']} is missing")
            continue
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta["file_sha256"]:
            problems.append(f"{name}: {meta['file']} sha256 differs from the manifest's file_sha256")
        try:
            arrays = cases[name] = _load_safetensors(path, blob)
        except InputError as e:
            problems.append(f"{name}: {e}")
            continue
        table = _tensor_table(meta)
        if set(arrays) != set(table) or len(table) != len(meta["tensors"]):
            problems.append(f"{name}: file and manifest list different tensors "
                            f"(only in file: {sorted(set(arrays) - set(table))}, "
                            f"only in manifest: {sorted(set(table) - set(arrays))})")
        for key, ent in table.items():
            a = arrays.get(key)
            if a is None:
                continue
            if list(a.shape) != ent["shape"] or a.dtype.name != ent["dtype"]:
                problems.append(f"{name}/{key}: file has {a.dtype.name} {a.shape}, "
                                f"manifest says {ent['dtype']} {tuple(ent['shape'])}")
            elif tensor_sha256(a) != ent["sha256"]:
                problems.append(f"{name}/{key}: sha256 differs from the manifest")
    return m, cases, problems


def verify_bundle(folder):
    """Check that a bundle describes itself exactly: files, keys, shapes, dtypes and sha256s.

    Parameters
    ----------
    folder : str or Path, a bundle written by :func:`write_bundle`

    Returns
    -------
    problems : list of str, one line each (empty when the bundle is consistent); files in the folder
        that the manifest does not list are problems too
    """
    return _read_verified(folder)[2]


def load_bundle(folder):
    """Load a verified bundle written by :func:`write_bundle`.

    Parameters
    ----------
    folder : str or Path

    Returns
    -------
    manifest : dict
    cases : dict case name -> dict key -> ndarray

    Raises
    ------
    InputError  if :func:`verify_bundle` finds any problem (the first is named)
    """
    m, cases, problems = _read_verified(folder)
    if problems:
        raise InputError(f"golden bundle {str(folder)!r} is inconsistent: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return m, cases


# ----------------------------------------------------------------------------------------------
# Comparing

def compare_tensor(a, b, rtol, atol):
    """Compare a candidate tensor with the reference.

    Parameters
    ----------
    a : ndarray   the candidate (port) value
    b : ndarray   the reference value, same shape and dtype
    rtol, atol : float

    Returns
    -------
    dict with max_abs = max |a-b|; max_rel = max |a-b|/|b| over elements with b != 0 (0.0 if none);
        share = max (|a-b| / (atol + rtol |b|)) (0/0 = 0, x/0 = inf); worst_index = index tuple of the
        element with the largest share (then the largest |a-b|); ok = share <= 1 (NaN never passes)
    """
    a64 = np.asarray(a, dtype=np.float64) if a.dtype != np.float64 else a                       # same shape
    b64 = np.asarray(b, dtype=np.float64) if b.dtype != np.float64 else b
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        d = np.abs(a64 - b64)                                                                   # same shape
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))                                    # NaN == NaN, inf == inf
        d = np.where(same, 0.0, np.where(np.isnan(d), np.inf, d))                               # a NaN mismatch is inf
        tol = atol + rtol * np.abs(b64)                                                          # same shape
        share = np.where(d == 0, 0.0, np.where(tol > 0, d / np.where(tol > 0, tol, 1.0), np.inf))
        nz = b64 != 0
        rel = d[nz] / np.abs(b64[nz]) if nz.any() else np.zeros(1)
    if d.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "share": 0.0, "worst_index": (), "ok": True}
    sf, df = share.ravel(), d.ravel()                                                           # (n,), (n,)
    ties = np.flatnonzero(sf == sf.max())                                                       # largest share ...
    k = ties[np.argmax(df[ties])]                                                               # ... then largest |a-b|, first
    worst = tuple(int(i) for i in np.unravel_index(k, d.shape))
    s = float(sf[k])
    return {"max_abs": float(d.max()), "max_rel": float(rel.max()), "share": s, "worst_index": worst,
            "ok": bool(s <= 1.0)}


def _entry(case, key, ok, message="", **stats):
    return dict({"case": case, "key": key, "ok": ok, "message": message}, **stats)


def _compare_case(case, cand, ref, order, tols, allow_missing):
    """Entries for one case, in the reference's key order, extra candidate keys last."""
    out = []
    for key in order:
        b = ref[key]
        rtol, atol = tols[key]
        if key not in cand:
            out.append(_entry(case, key, allow_missing, "missing (not checked)" if allow_missing else
                              f"missing: the reference has {key!r} {b.dtype.name} {b.shape}; write it under this exact key",
                              rtol=rtol, atol=atol, missing=True))
            continue
        a = cand[key]
        if a.shape != b.shape:
            out.append(_entry(case, key, False, f"shape mismatch: got {a.shape}, expected {b.shape}", rtol=rtol, atol=atol))
            continue
        if a.dtype != b.dtype:
            out.append(_entry(case, key, False, f"dtype mismatch: got {a.dtype.name}, expected {b.dtype.name}",
                              rtol=rtol, atol=atol))
            continue
        r = compare_tensor(a, b, rtol, atol)
        msg = "" if r["ok"] else f"out of tolerance: share {r['share']:.3g} at {r['worst_index']}"
        out.append(_entry(case, key, r.pop("ok"), msg, rtol=rtol, atol=atol, **r))
    for key in cand:
        if key not in ref:
            out.append(_entry(case, key, False, "extra key: not in the reference; expected only the documented keys"))
    return out


def _candidate_cases(folder, known):
    """{case: path} for every <case>.safetensors in the folder whose case is known, and the other file names."""
    found, unknown = {}, []
    for p in sorted(folder.glob("*.safetensors")):
        if p.stem in known:
            found[p.stem] = p
        else:
            unknown.append(p.name)
    return found, unknown


def _reference_case(name, reference, ref_bundle):
    """(tensors, order, tolerances) of one reference case: from the loaded bundle, or computed afresh."""
    if reference is None:
        ref, _ = compute_case(name)
        return ref, list(ref), {k: tolerance(k, a.dtype) for k, a in ref.items()}
    manifest, arrays = ref_bundle
    table = _tensor_table(manifest["cases"][name])
    return arrays[name], list(table), {k: (e["rtol"], e["atol"]) for k, e in table.items()}


def check_bundle(folder, reference=None, *, cases=None, allow_missing=False, require_all_cases=False):
    """Compare a bundle written by another implementation with alh_ref's values, tensor by tensor.

    Parameters
    ----------
    folder : str or Path   holds <case>.safetensors files (its manifest.json, if any, is not read:
        names and tolerances come from the reference)
    reference : str or Path or None   a bundle written by :func:`write_bundle` to compare against;
        None computes the reference values afresh with :func:`compute_case`
    cases : list of case names or None   check only these (default: every case file in ``folder``)
    allow_missing : bool   keys the candidate lacks are reported as "not checked" instead of failing
        (for a port that so far computes the forward pass only)
    require_all_cases : bool   a reference case without a file in ``folder`` fails (else it is skipped)

    Returns
    -------
    report : dict  {"ok": bool, "first_failure": "case/key" or None, "entries": [per-tensor dicts with
        case, key, ok, message, rtol, atol, max_abs, max_rel, share, worst_index], "skipped": [case names],
        "reference": "fresh" or the reference path}.  Entries follow the reference's case order and,
        within a case, its key order (parameters, inputs, forward values in computation order, gradients
        in backward order), so the first failure is the earliest place the port diverges.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"golden folder {str(folder)!r} does not exist or is not a folder; "
                         "expected a folder of <case>.safetensors files")
    ref_bundle = None if reference is None else load_bundle(reference)
    known = list(CASES) if reference is None else list(ref_bundle[0]["case_order"])
    if cases is not None:
        bad = [c for c in cases if c not in known]
        if bad:
            raise InputError(f"unknown golden case(s) {', '.join(bad)}; expected names from {', '.join(known)}")
    names = known if cases is None else [n for n in known if n in set(cases)]
    found, unknown = _candidate_cases(folder, known)
    if not found and not unknown:
        raise InputError(f"{str(folder)!r} holds no <case>.safetensors file; expected files named after "
                         "the golden cases, e.g. gpt_f64.safetensors")
    entries, skipped = [], []
    if cases is None:
        entries += [_entry(Path(f).stem, "<file>", False, f"unknown case file {f}; expected one of the reference's cases")
                    for f in unknown]
    for name in names:
        if name not in found:
            if require_all_cases:
                entries.append(_entry(name, "<file>", False, f"case file {name}.safetensors is missing"))
            else:
                skipped.append(name)
            continue
        try:
            cand = _load_safetensors(found[name])
        except InputError as e:
            entries.append(_entry(name, "<file>", False, str(e)))
            continue
        ref, order, tols = _reference_case(name, reference, ref_bundle)
        entries.extend(_compare_case(name, cand, ref, order, tols, allow_missing))
    first = next((e for e in entries if not e["ok"]), None)
    return {"ok": first is None, "first_failure": None if first is None else f"{first['case']}/{first['key']}",
            "entries": entries, "skipped": skipped,
            "reference": "fresh" if reference is None else str(reference)}


def format_report(report, only_failures=False):
    """The report as text: one line per tensor, then a summary naming the first failure.

    Parameters
    ----------
    report : dict from :func:`check_bundle`
    only_failures : bool   print only the failing tensors' lines

    Returns
    -------
    str
    """
    head = f"{'case':<40} {'tensor':<38} {'max_abs':>9} {'max_rel':>9} {'share':>9}  {'worst_index':<14} status"
    lines = [head, "-" * len(head)]
    for e in report["entries"]:
        if only_failures and e["ok"]:
            continue
        if "share" in e:
            stats = f"{e['max_abs']:9.2e} {e['max_rel']:9.2e} {e['share']:9.2e}  {str(e['worst_index']):<14}"
        else:
            stats = f"{'-':>9} {'-':>9} {'-':>9}  {'-':<14}"
        status = "ok" if e["ok"] and not e["message"] else ("ok, " + e["message"] if e["ok"] else "FAIL " + e["message"])
        lines.append(f"{e['case']:<40} {e['key']:<38} {stats} {status}")
    n_fail = sum(not e["ok"] for e in report["entries"])
    n_missing = sum(bool(e.get("missing")) and e["ok"] for e in report["entries"])
    n_cases = len({e["case"] for e in report["entries"]})
    if report["skipped"]:
        lines.append(f"skipped (no file in the checked folder): {', '.join(report['skipped'])}")
    if report["ok"]:
        lines.append(f"PASS: {len(report['entries']) - n_missing} tensors in {n_cases} case(s) within tolerance"
                     + (f", {n_missing} missing and not checked" if n_missing else "")
                     + f" (reference: {report['reference']})")
    else:
        lines.append(f"FAIL: {n_fail} of {len(report['entries'])} tensors failed; first failing tensor: "
                     f"{report['first_failure']} (reference: {report['reference']})")
    return "\n".join(lines)


def golden_command(out=None, check=None, reference=None):
    """What ``alh-ref golden --out DIR`` / ``--check DIR [--reference DIR]`` do.

    Parameters
    ----------
    out : str or None        write the bundle here
    check : str or None      check the bundle in this folder (against ``reference`` or fresh values)
    reference : str or None  a bundle to compare against instead of recomputing

    Returns
    -------
    exit code : int   0 written / all tensors pass; 1 a tensor failed; 2 bad input (message printed
        as ``error: ...`` on stderr)
    """
    try:
        if (out is None) == (check is None):
            raise InputError("golden needs exactly one of --out DIR (write a bundle) or --check DIR (check one)")
        if reference is not None and check is None:
            raise InputError("--reference only goes with --check DIR")
        if out is not None:
            m = write_bundle(out)
            size = sum((Path(out) / c["file"]).stat().st_size for c in m["cases"].values())
            print(f"wrote {len(m['case_order'])} golden cases to {out} ({size / 1e6:.2f} MB) and {MANIFEST_FILE}")
            return 0
        report = check_bundle(check, reference)
        print(format_report(report))
        return 0 if report["ok"] else 1
    except ALHRefError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
