"""The golden cases: what each case is (config, seeds, parameters, inputs) and what alh_ref computes for it.

A case is a named, seeded problem (:data:`CASES`): a tiny GPT (V=64, T=8, C=16, L=2), an ALH
hypernetwork on top of it, or a 5-step AdamW run. :func:`compute_case` builds its parameters and
inputs from the seeds and computes every other tensor with alh_ref; :func:`case_outputs` computes
those tensors from given parameters and inputs (what a port does). Keys and their meaning are
documented once, in docs/golden.md sections 2-6.

Every computation goes through the layers' process-wide implementation (``alh_ref.ops``): run it
under ``with ops.using("ref"):`` to compute a case on the NumPy twins alone.
"""
import dataclasses

import numpy as np

from .. import ops
from ..alh.adapted import ALHConfig, alh_backward, alh_forward, alh_init, alh_loss_and_grads, alh_param_shapes
from ..errors import InputError
from ..model import GPTConfig, block_forward, decayed, embed_forward, gpt_backward, gpt_forward, init_params, param_shapes
from ..optim import AdamW, AdamWConfig
from ..train import gpt_loss_and_grads, sample_batch

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
# train_alh_lowrank_clip_f64: a low-rank hypernetwork just off its saddle (U = V = 0 has zero gradient),
# so step 0's gradient norm (2.1e-6) is of the order of the clip constant 1e-6 of the clipping rule
CLIP_CASE_HEAD_SCALE = 1e-6
CLIP_CASE_GRAD_CLIP = 1e-6


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
    cases["train_alh_lowrank_clip_f64"] = {
        "kind": "train_alh", "dtype": "float64", "head_scale": CLIP_CASE_HEAD_SCALE,
        "opt": {"grad_clip": CLIP_CASE_GRAD_CLIP},
        "alh": dict(ALH_DIMS, family="lowrank", site="both", encoder="mean", out_context="current")}
    return cases


CASES = _case_table()
"""Ordered ``{case name: spec}``: 2 base GPT cases, 13 ALH cases, 3 training runs.

ALH: every family at every site with the transformer encoder, every family at site "both" with
the mean encoder, and out_context "prev" once (the encoder only makes the context vectors, so
crossing it with every site would add size, not coverage). A spec may carry "head_scale" (the
perturbed ``alh.head.*`` tensors are multiplied by it) and "opt" (fields replacing TRAIN_OPT's)."""

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


def hyp_params(acfg, dtype, head_scale=1.0):
    """The hypernetwork: alh_init(seed 2) in float64, perturbed (seed 3) so ALH differs from the base.

    Parameters
    ----------
    acfg : ALHConfig;  dtype : numpy dtype of the result
    head_scale : float   the perturbed ``alh.head.*`` tensors are multiplied by it (in float64)

    Returns
    -------
    dict name -> ndarray of ``dtype``, in alh_param_shapes order
    """
    p = alh_init(GPT_CFG, acfg, seed=SEEDS["hyp_init"], dtype=np.float64)
    p = perturb(p, SEEDS["hyp_perturb"], np.float64)
    return {n: (a * head_scale if n.startswith("alh.head.") and head_scale != 1.0 else a).astype(dtype)
            for n, a in p.items()}                                                              # shapes of p


def _stream(seed):
    """Synthetic token stream (STREAM_LEN,) int64, uniform in [0, V)."""
    return np.random.default_rng(seed).integers(0, GPT_CFG.vocab_size, size=STREAM_LEN)     # (STREAM_LEN,)


def batch_inputs():
    """x, y (B,T) int64: one train.sample_batch of the seeded stream (y[t] = x[t+1] within a window)."""
    rng = np.random.default_rng([SEEDS["data"], 1])
    return sample_batch(_stream(SEEDS["data"]), BATCH["B"], BATCH["T"], rng)                 # (B,T), (B,T)


def train_batches():
    """train.x, train.y (steps,B,T) int64: TRAIN_STEPS consecutive sample_batch draws of the seeded stream."""
    tokens = _stream(SEEDS["train_data"])
    rng = np.random.default_rng([SEEDS["train_data"], 1])
    xs, ys = zip(*(sample_batch(tokens, BATCH["B"], BATCH["T"], rng) for _ in range(TRAIN_STEPS)))
    return np.stack(xs), np.stack(ys)                                                           # (steps,B,T), (steps,B,T)


def _alh_cfg(spec):
    """The case's ALHConfig."""
    return ALHConfig(head="transform", **spec["alh"])


def _activations(params, x):
    """act.h.{l} (B,T,C) after each block and act.ln_f (B,T,C), through the model's own stage functions."""
    tok, _ = embed_forward(params, x)                                                           # (B,T) -> (B,T,C)
    h = tok + params["wpe"][:x.shape[1]]                                                        # (B,T,C)
    out = {}
    for l in range(GPT_CFG.n_layer):
        h, _ = block_forward(params, l, h, GPT_CFG.n_head)                                      # (B,T,C)
        out[f"act.h.{l}"] = h
    out["act.ln_f"], _ = ops.layernorm_forward(h, params["ln_f.w"], params["ln_f.b"])              # (B,T,C)
    return out


def _dlogits(logits, y):
    """d(mean loss)/d logits (B,T,V) = (softmax(logits) - onehot(y)) / (B T)."""
    V = logits.shape[-1]
    _, c = ops.softmax_cross_entropy_forward(logits.reshape(-1, V), y.reshape(-1))                  # (N,V) -> ()
    return ops.softmax_cross_entropy_backward(1.0, c).reshape(logits.shape)                         # (N,V) -> (B,T,V)


def _gpt_outputs(params, x, y):
    """act.*, output.*, dlogits and grad.* (backward order) of the base GPT."""
    out = _activations(params, x)
    logits, loss, cache = gpt_forward(params, GPT_CFG, x, y)                                    # (B,T,V), ()
    out.update({"output.logits": logits, "output.loss": np.asarray(loss), "dlogits": _dlogits(logits, y)})
    grads, _ = gpt_backward(1.0, cache)
    out.update({"grad." + n: grads[n] for n in reversed(param_shapes(GPT_CFG))})               # backward order
    return out


def _alh_outputs(base, hyp, acfg, x, y):
    """alh.*, output.* and grad.alh.* (backward order) of the adapted model."""
    logits, loss, cache = alh_forward(base, hyp, GPT_CFG, acfg, x, y)                          # (B,T,V), ()
    out = {"alh.context": cache.c_ext}                                                          # (B,T+1,D)
    out.update({"alh.theta." + k: v for k, v in cache.theta.items()})
    out["alh.tok"] = cache.tok                                                                  # (B,T,C)
    out.update({"output.logits": logits, "output.loss": np.asarray(loss)})
    grads = alh_backward(1.0, cache)
    out.update({"grad." + n: grads[n] for n in reversed(alh_param_shapes(GPT_CFG, acfg))})     # backward order
    return out


def train_config(name):
    """The AdamWConfig of a training case: TRAIN_OPT with the case's "opt" fields replaced."""
    return dataclasses.replace(TRAIN_OPT, **_spec(name).get("opt", {}))


def _train(params, names, loss_and_grads, xs, ys, opt_cfg):
    """TRAIN_STEPS AdamW steps (opt_cfg) on the given batches; params updated in place.

    Returns
    -------
    losses, grad norms (before clipping), learning rates : 3 x (steps,) float64
    grads0 : dict name -> ndarray, step 0's gradients before clipping
    """
    opt = AdamW(params, names, opt_cfg, decayed)
    rec, grads0 = [], None
    for s in range(xs.shape[0]):
        loss, grads = loss_and_grads(xs[s], ys[s])
        if s == 0:
            grads0 = {n: grads[n].copy() for n in names}                                        # before the step clips
        norm, lr = opt.step(params, grads)
        rec.append((loss, norm, lr))
    return [np.array(col, dtype=np.float64) for col in zip(*rec)] + [grads0]                  # 3 x (steps,), dict


def _train_outputs(base, hyp, acfg, xs, ys, opt_cfg):
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
            return alh_loss_and_grads(base, params, GPT_CFG, acfg, x, y)
    losses, norms, lrs, grads0 = _train(params, names, loss_and_grads, xs, ys, opt_cfg)
    out = {"train.step0.grad." + n: grads0[n] for n in reversed(names)}                        # backward order
    out.update({"train.losses": losses, "train.grad_norm": norms, "train.lr": lrs})
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
                    f"perturbed with seed {SEEDS['hyp_perturb']}: same recipe"
                    + (f"; then every alh.head.* tensor multiplied by {spec['head_scale']:g}"
                       if "head_scale" in spec else "")),
            "note": "ports do not reproduce this: they load param.* from the bundle"},
        "data_recipe": (f"a token stream of {STREAM_LEN} ids = default_rng(seed).integers(0, V, {STREAM_LEN}); "
                        "windows cut by alh_ref.train.sample_batch with default_rng([seed, 1]); "
                        + ("seed = seeds.train_data, one batch per step" if train else "seed = seeds.data")),
        "trainable": _trainable(spec),
    }
    if train:
        meta["train"] = {
            "steps": TRAIN_STEPS, "optimizer": train_config(name).to_dict(),
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
        t.update({"param." + n: a for n, a in hyp_params(_alh_cfg(spec), dtype, spec.get("head_scale", 1.0)).items()})     # names start "alh."
    if spec["kind"].startswith("train"):
        t["train.x"], t["train.y"] = train_batches()                                            # (steps,B,T) x 2
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
        (training cases: "train.x", "train.y" (steps,B,T) int64); other keys are ignored

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
        out = _train_outputs(base, hyp, acfg, given["train.x"], given["train.y"], train_config(name))
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


