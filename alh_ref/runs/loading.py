"""Loading what runs saved: run checkpoints, the frozen base of an adapted run, a model to evaluate or sample.

A run checkpoint holds the trainable tensors under their own names (``wte``, ``h.0.ln_1.w``, ...;
``alh.*`` / ``lora.*`` for an adapter), the AdamW moments as ``opt.m.<name>`` / ``opt.v.<name>``,
and a manifest (docs/usage.md, "What a run folder holds"). Every load checks the tokenizer, the
run format and the kind; an adapted run's base is checked by sha256 on every load.
"""
import os
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..alh.adapted import ALHConfig
from ..alh.methods import make_method
from ..checkpoint import (
    MANIFEST_FILE,
    _check_shapes,
    load_checkpoint,
    rng_from_json,
    rng_state_to_json,
    save_checkpoint,
)
from ..errors import InputError, RunError
from ..model import GPTConfig, param_shapes
from .data import find_tokenizer
from .folders import checkpoint_path, resolve_checkpoint

RUN_FORMAT_VERSION = 1


def save_state(rd, step, params, opt, rng, manifest) -> Path:
    """Save trainable tensors, AdamW state and the sampler RNG as the checkpoint of ``step``.

    Parameters
    ----------
    rd : run folder;  step : int steps done
    params : dict name -> ndarray (trainable tensors)
    opt : AdamW;  rng : np.random.Generator (batch sampler, after this step's batch)
    manifest : dict   run metadata (see module docstring)

    Returns
    -------
    Path   the checkpoint folder
    """
    bad = [n for n, a in params.items() if not np.isfinite(a).all()]
    if bad:
        raise RunError(f"parameter {bad[0]} became non-finite at step {step}; stopping without saving it")
    if isinstance(rng, dict):                           # a bit-generator state (alh_ref.train's on_save)
        state, rng = rng, np.random.Generator(getattr(np.random, rng["bit_generator"])())
        rng.bit_generator.state = state
    tensors = dict(params)
    tensors.update({"opt." + k: v for k, v in opt.state_tensors().items()})
    meta = dict(manifest, step=int(step), opt_t=int(opt.t), rng=rng_state_to_json(rng),
                adamw_config=opt.cfg.to_dict())
    folder = checkpoint_path(rd, step)
    save_checkpoint(folder, tensors, meta)
    return folder


def _dataclass(cls, d, what):
    """Rebuild a config dataclass from its manifest dict; InputError on unknown or bad fields."""
    names = {f.name for f in fields(cls)}
    if not isinstance(d, dict) or set(d) - names:
        raise InputError(f"checkpoint manifest has a malformed {what} ({d!r}); expected the fields {sorted(names)}")
    return cls(**d)


def load_run_checkpoint(ckpt, tokenizer_sha256, kinds=("base", "adapt")):
    """Load a pretrain/adapt checkpoint, checking its tokenizer, run format and kind.

    Parameters
    ----------
    ckpt : Path   checkpoint folder
    tokenizer_sha256 : str   the tokenizer this run uses (must equal the checkpoint's)
    kinds : tuple of str   accepted manifest kinds

    Returns
    -------
    tensors : dict name -> ndarray;  manifest : dict;  cfg : GPTConfig
    """
    arrays, meta = load_checkpoint(ckpt, expect={"tokenizer_sha256": tokenizer_sha256})
    version, kind = meta.get("run_format_version"), meta.get("kind")
    if version != RUN_FORMAT_VERSION:
        raise InputError(f"checkpoint {str(ckpt)!r} has run_format_version {version!r}; this alh_ref reads "
                         f"{RUN_FORMAT_VERSION} (checkpoints written by alh-ref pretrain/adapt)")
    if kind not in kinds:
        raise InputError(f"checkpoint {str(ckpt)!r} is a {kind!r} checkpoint; expected {' or '.join(map(repr, kinds))}")
    cfg = _dataclass(GPTConfig, meta.get("gpt_config"), "gpt_config")
    return arrays, meta, cfg


def base_params(arrays, cfg):
    """The GPT parameters out of a checkpoint's tensors, after checking every name and shape."""
    shapes = param_shapes(cfg)
    _check_shapes(arrays, shapes)
    return {n: arrays[n] for n in shapes}


def restore(arrays, meta, params, opt):
    """Copy saved trainable tensors and AdamW state into ``params`` / ``opt``; return the sampler RNG."""
    _check_shapes(arrays, {n: a.shape for n, a in params.items()})
    _check_shapes(arrays, {"opt." + k: a.shape for k, a in opt.state_tensors().items()})
    for n, a in params.items():
        a[...] = arrays[n]
    opt.load_state({k[4:]: a for k, a in arrays.items() if k.startswith("opt.")}, meta["opt_t"])
    return rng_from_json(meta["rng"])


def base_ref(base_ckpt, bmeta, rd):
    """How an adapted run points at its frozen base: absolute and run-relative path, step, sha256."""
    p = Path(base_ckpt).resolve()
    return {"path": str(p), "relpath": os.path.relpath(p, Path(rd).resolve()), "step": int(bmeta["step"]),
            "safetensors_sha256": bmeta["safetensors_sha256"]}


def load_base(ref, rd, tokenizer_sha256, override=None):
    """Load the frozen base of an adapted run and check it is the very checkpoint it was adapted from.

    Parameters
    ----------
    ref : dict   the manifest's ``base`` entry {path, relpath, step, safetensors_sha256}
    rd : Path or None   the adapted run's folder (relpath is relative to it)
    tokenizer_sha256 : str
    override : str or Path or None   a checkpoint to use instead of the recorded path (moved base)

    Returns
    -------
    params : dict name -> ndarray;  cfg : GPTConfig;  found : Path (the checkpoint used)
    """
    cands = [Path(override)] if override is not None else \
        ([Path(rd) / ref["relpath"]] if rd is not None else []) + [Path(ref["path"])]
    found = next((p for p in cands if (p / MANIFEST_FILE).is_file()), None)
    if found is None:
        raise InputError(f"base checkpoint of this adapted run not found at {str(cands[-1])!r}; expected the pretrain "
                         f"checkpoint it was adapted from (step {ref['step']}, sha256 {ref['safetensors_sha256'][:12]}…)")
    arrays, bmeta, cfg = load_run_checkpoint(found, tokenizer_sha256, ("base",))
    if bmeta["safetensors_sha256"] != ref["safetensors_sha256"]:
        raise InputError(f"base checkpoint {str(found)!r} (sha256 {bmeta['safetensors_sha256'][:12]}…) is not the one this "
                         f"run was adapted from (sha256 {ref['safetensors_sha256'][:12]}…); restore it or adapt again")
    return base_params(arrays, cfg), cfg, found


def method_from_manifest(meta, base, cfg, make=make_method):
    """Rebuild an adapted run's method (freshly initialised) from its manifest, with ``make`` (a
    backend's make_method: alh_ref.alh.methods' or alh_ref.torch.methods')."""
    acfg = _dataclass(ALHConfig, meta.get("alh_config"), "alh_config")
    o = meta["options"]
    return make(meta["method"], base, cfg, acfg, seed=o["seed"], lora_rank=o["lora_rank"])

def load_model(ref, out="runs", tokenizer=None) -> dict:
    """Load a base or adapted run (or one checkpoint) for evaluation or sampling.

    Parameters
    ----------
    ref : str or Path   run name, run folder or checkpoint folder (see :func:`resolve_checkpoint`)
    out : run root for bare names
    tokenizer : path or None   tokenizer to use when the checkpoint is not inside a run folder

    Returns
    -------
    dict   method (a Method: ``forward(x (B,T), y=None)`` -> (logits (B,T,V), loss, cache); a
        base run is the frozen "none" method), tokenizer, cfg (GPTConfig), manifest,
        checkpoint (Path), run (Path or None)
    """
    ckpt, rd = resolve_checkpoint(ref, out)
    if tokenizer is None and rd is None:
        raise InputError(f"cannot find the tokenizer of {str(ckpt)!r} (not inside a run folder); pass --tokenizer")
    tok = find_tokenizer(tokenizer or rd)
    arrays, meta, cfg = load_run_checkpoint(ckpt, tok.sha256)
    if meta["kind"] == "base":
        method = make_method("none", base_params(arrays, cfg), cfg)
    else:
        base, bcfg, _ = load_base(meta["base"], rd, tok.sha256)
        if bcfg != cfg:
            raise InputError(f"base checkpoint config {bcfg} differs from the adapted run's {cfg}; expected the same model")
        method = method_from_manifest(meta, base, cfg)
        _check_shapes(arrays, {n: a.shape for n, a in method.params.items()})
        for n, a in method.params.items():
            a[...] = arrays[n]
    return {"method": method, "tokenizer": tok, "cfg": cfg, "manifest": meta, "checkpoint": ckpt, "run": rd}


