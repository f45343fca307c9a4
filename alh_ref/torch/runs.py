"""pretrain / adapt / eval with the torch port, on the run folders and checkpoints of alh_ref.runs.

A run written here is a run of ``alh-ref``: the same folder layout (tokenizer/, checkpoints/step-N/,
history.jsonl, summary.json), the same checkpoint files (``alh_ref.runs.save_state`` writes them,
through alh_ref.checkpoint: safetensors + manifest, validated, atomic), the same manifest keys, the
same seeded initialisation (from the NumPy methods) and the same batch sampler
(``alh_ref.train.sample_batch`` on ``default_rng([seed, 1])`` / ``[seed, 2]``). So
``alh-ref eval`` reads what this module trains, either backend resumes the other's runs, and the
same command gives the same run on both to float32 rounding. The loop and data parallel training
are in alh_ref.torch.train.
"""
import json
import math
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ..alh.adapted import ALHConfig
from ..corpora import BUILTIN_CORPORA
from ..checkpoint import RESERVED_KEYS, load_checkpoint, rng_from_json
from ..errors import InputError
from ..model import CONFIGS, init_params
from ..optim import AdamWConfig
from ..runs import find_tokenizer, list_checkpoints, load_model, load_split, model_config, run_path, stream_tokens
from ..runs.options import Schedule
from ..tokenizer import train_bpe
from .methods import load_trainable, make_method
from .optim import AdamW
from .train import fit, setup

RUN_FORMAT_VERSION = 1
SAVE_KEYS = ("step", "opt_t", "rng", "adamw_config")          # manifest keys save_state writes at every save
# The options that fix a run, with the defaults of ``alh-ref pretrain`` / ``alh-ref adapt``.
PRETRAIN_OPTIONS = {"split": "train", "vocab_size": None, "config": "tiny", "block_size": None, "n_layer": None,
                    "n_head": None, "n_embd": None, "batch_size": 16, "seed": 0}
_A = ALHConfig()
ADAPT_OPTIONS = {"method": None, "split": "train", "batch_size": 16, "seed": 0, "encoder": _A.encoder,
                 "site": _A.site, "out_context": _A.out_context, "D": _A.D, "hyper_layers": _A.n_layer,
                 "hyper_heads": _A.n_head, "K": _A.K, "R": _A.R, "lora_rank": 4}
SESSION = asdict(Schedule())                                    # steps, ckpt_every, keep: the CLI's defaults


def _resolve(given, defaults):
    return {k: (d if given.get(k) is None else given[k]) for k, d in defaults.items()}


def _adamw(opts, steps, saved=None):
    """AdamWConfig: the given optimiser options over the defaults (new run) or over the saved config (resume)."""
    cfg = AdamWConfig(total_steps=steps) if saved is None else AdamWConfig(**saved)
    new = {k: opts[k] for k in ("lr", "warmup_steps", "weight_decay", "grad_clip") if opts.get(k) is not None}
    if opts.get("decay_steps") is not None:
        new["total_steps"] = opts["decay_steps"]
    return replace(cfg, **new)


def _corpus_meta(opts, split, data, tokens):
    name = str(opts["corpus"])
    return {"name": name if name in BUILTIN_CORPORA else str(Path(name).resolve()), "opts": opts.get("corpus_opts") or {},
            "split": split, "n_documents": len(data.documents), "n_tokens": int(tokens.shape[0])}


def _check_method_options(method, opts):
    """Hypernetwork options only for alh-*/static-*/side, lora_rank only for lora-embed (as alh-ref adapt)."""
    has_alh = method.startswith(("alh-", "static-")) or method == "side"
    wrong = [k for k in ("encoder", "site", "out_context", "D", "hyper_layers", "hyper_heads", "K", "R")
             if opts.get(k) is not None and not has_alh]
    wrong += ["lora_rank"] if opts.get("lora_rank") is not None and method != "lora-embed" else []
    if wrong:
        raise InputError(f"--{wrong[0].replace('_', '-')} does not apply to method {method!r}; hypernetwork options "
                         "go with alh-*/static-*/side, --lora-rank with lora-embed")


def _new_run(out, name, opts):
    rd = run_path(out, name)
    if list_checkpoints(rd):
        raise InputError(f"run {str(rd)!r} already has checkpoints; pass --resume to continue it, or choose another --name")
    if opts.get("corpus") is None:
        raise InputError("this job needs a corpus: --corpus NAME|PATH")
    return rd


def pretrain(out="runs", name="base", *, resume=False, progress=False, device="cpu", dtype="float32", **opts):
    """Pretrain a base GPT with the torch port into ``out/name``, or resume it (options as alh_ref.runs.pretrain).

    Returns the summary dict (as ``alh-ref pretrain --json``), plus device, dtype, world_size.
    """
    if resume:
        return _resume(run_path(out, name), "pretrain", opts, progress, device, dtype)
    rank, world, dev, dt = setup(device, dtype)
    rd = _new_run(out, name, opts)
    o = _resolve(opts, PRETRAIN_OPTIONS)
    s = _resolve(opts, SESSION)
    data = load_split(opts["corpus"], opts.get("corpus_opts"), o["split"])
    if opts.get("tokenizer") is not None:
        tok = find_tokenizer(opts["tokenizer"])
    elif o["vocab_size"] is None and (rd / "tokenizer" / "tokenizer.json").is_file():
        tok = find_tokenizer(rd)
    else:
        tok = train_bpe(data.documents, o["vocab_size"] or CONFIGS[o["config"]].vocab_size)
    cfg = model_config(tok.n_vocab, o["config"], o["block_size"], o["n_layer"], o["n_head"], o["n_embd"])
    o.update(block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd)
    tokens = stream_tokens(tok, data, cfg.block_size)                                          # (n,)
    base = init_params(cfg, seed=o["seed"], dtype=np.float64)                                  # NumPy init, then cast
    method = make_method("full-ft", base, cfg, dtype=dt, device=dev)
    manifest = {"run_format_version": RUN_FORMAT_VERSION, "kind": "base", "gpt_config": cfg.to_dict(),
                "tokenizer_sha256": tok.sha256, "corpus_fingerprint": data.fingerprint,
                "corpus": _corpus_meta(opts, o["split"], data, tokens), "options": o, "target_steps": s["steps"],
                "schedule": s}
    if rank == 0:
        tok.save(rd / "tokenizer")
    info = {"n_params": int(sum(a.size for a in base.values())), "gpt_config": cfg.to_dict()}
    opt = AdamW(method.trainable(), _adamw(opts, s["steps"]), method.decay)
    return fit(rd, "pretrain", method, opt, tokens, o, s, np.random.default_rng([o["seed"], 1]), manifest, info,
               progress, rank, world, dev)


def adapt(out="runs", name=None, *, resume=False, progress=False, device="cpu", dtype="float32", **opts):
    """Adapt a pretrained base (a run of either backend) with the torch port, or resume (options as alh_ref.runs.adapt)."""
    if opts.get("method") is None and name is None:
        raise InputError("adapt needs --method NAME (or --name of the run to resume)")
    name = name or f"adapt-{opts['method']}"
    if resume:
        return _resume(run_path(out, name), "adapt", opts, progress, device, dtype)
    rank, world, dev, dt = setup(device, dtype)
    if opts.get("method") is None:
        raise InputError("adapt needs --method NAME")
    rd = _new_run(out, name, opts)
    if opts.get("base") is None:
        raise InputError("adapt needs --base RUN_OR_CKPT")
    _check_method_options(opts["method"], opts)
    o = _resolve(opts, ADAPT_OPTIONS)
    s = _resolve(opts, SESSION)
    m = load_model(opts["base"], out, opts.get("tokenizer"))                                    # checks tokenizer, names, shapes
    if m["manifest"]["kind"] != "base":
        raise InputError(f"--base {opts['base']!r} is an adapted run; expected a pretrain run or checkpoint")
    tok, cfg, bmeta, base_ckpt, base = m["tokenizer"], m["cfg"], m["manifest"], m["checkpoint"], m["method"].base
    data = load_split(opts["corpus"], opts.get("corpus_opts"), o["split"])
    tokens = stream_tokens(tok, data, cfg.block_size)                                          # (n,)
    acfg = ALHConfig(encoder=o["encoder"], site=o["site"], out_context=o["out_context"], D=o["D"],
                     n_layer=o["hyper_layers"], n_head=o["hyper_heads"], K=o["K"], R=o["R"])
    method = make_method(o["method"], base, cfg, acfg, seed=o["seed"], lora_rank=o["lora_rank"], dtype=dt, device=dev)
    p = Path(base_ckpt).resolve()
    manifest = {"run_format_version": RUN_FORMAT_VERSION, "kind": "adapt", "gpt_config": cfg.to_dict(),
                "tokenizer_sha256": tok.sha256, "corpus_fingerprint": data.fingerprint,
                "corpus": _corpus_meta(opts, o["split"], data, tokens), "options": o, "target_steps": s["steps"],
                "schedule": s, "method": o["method"], "alh_config": acfg.to_dict(),
                "base": {"path": str(p), "relpath": os.path.relpath(p, Path(rd).resolve()), "step": int(bmeta["step"]),
                         "safetensors_sha256": bmeta["safetensors_sha256"]}}
    if rank == 0:
        tok.save(rd / "tokenizer")
    info = {"method": o["method"], "n_trainable": int(sum(p.numel() for p in method.trainable().values())),
            "base": str(p)}
    opt = AdamW(method.trainable(), _adamw(opts, s["steps"]), method.decay)
    return fit(rd, "adapt", method, opt, tokens, o, s, np.random.default_rng([o["seed"], 2]), manifest, info,
               progress, rank, world, dev)


def _resume(rd, job, opts, progress, device, dtype):
    """Continue the newest checkpoint of run ``rd`` (written by either backend): parameters, AdamW moments
    and step, the batch sampler's RNG and the history, so the run goes on as if it had not stopped."""
    ckpts = list_checkpoints(rd)
    if not ckpts:
        raise InputError(f"nothing to resume: {str(rd)!r} has no checkpoint; run without --resume to start it")
    if opts.get("base") is not None:
        raise InputError("--base with --resume (a moved base) is handled by alh-ref adapt --resume --base")
    rank, world, dev, dt = setup(device, dtype)
    m = load_method(ckpts[-1][1], tokenizer=opts.get("tokenizer"), device=device, dtype=dtype,
                    name="full-ft" if job == "pretrain" else None)
    meta, method, tok = m["manifest"], m["method"].train(), m["tokenizer"]
    if meta["kind"] != ("base" if job == "pretrain" else "adapt"):
        raise InputError(f"run {str(rd)!r} is a {meta['kind']!r} run; resume it with the {'adapt' if job == 'pretrain' else 'pretrain'} command")
    o = meta["options"]
    for k in (PRETRAIN_OPTIONS if job == "pretrain" else ADAPT_OPTIONS):
        if opts.get(k) is not None and opts[k] != o.get(k):
            raise InputError(f"--{k.replace('_', '-')} {opts[k]} differs from this run's {o.get(k)}; a resumed run keeps "
                             "its data, model, method and seed (drop the option, or start a new run with another --name)")
    s = _resolve(opts, dict(SESSION, **(meta.get("schedule") or {})))   # the run's own --keep/--ckpt-every
    s["steps"] = opts["steps"] if opts.get("steps") is not None else meta["target_steps"]
    if s["steps"] < meta["step"]:
        raise InputError(f"--steps {s['steps']} is below the {meta['step']} steps this run has done; expected the new total")
    c = meta["corpus"]
    data = load_split(opts.get("corpus") or c["name"], opts.get("corpus_opts") or c["opts"], c["split"])
    if data.fingerprint != meta["corpus_fingerprint"]:
        raise InputError(f"corpus mismatch: this run was trained on corpus fingerprint {meta['corpus_fingerprint'][:12]}…, "
                         f"the text now has {data.fingerprint[:12]}…; restore the original text or start a new run")
    tokens = stream_tokens(tok, data, m["cfg"].block_size)                                     # (n,)
    opt = AdamW(method.trainable(), _adamw(opts, s["steps"], meta["adamw_config"]), method.decay)
    arrays = load_checkpoint(m["checkpoint"])[0]
    opt.load_state({k[4:]: a for k, a in arrays.items() if k.startswith("opt.")}, meta["opt_t"])
    manifest = {k: v for k, v in meta.items() if k not in RESERVED_KEYS + SAVE_KEYS}
    manifest["target_steps"], manifest["schedule"] = s["steps"], s
    path = rd / "history.jsonl"
    history = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    info = {"resumed_from": int(meta["step"]), "n_trainable": int(sum(p.numel() for p in method.trainable().values()))}
    if job == "adapt":
        info.update(method=meta["method"], base=meta["base"]["path"])
    return fit(rd, job, method, opt, tokens, o, s, rng_from_json(meta["rng"]), manifest, info, progress, rank, world,
               dev, [r for r in history if r["step"] <= meta["step"]])


def load_method(ref, out="runs", tokenizer=None, device="cpu", dtype="float32", name=None):
    """A run of either backend (base or adapted) as a TorchMethod, with alh_ref.runs.load_model's checks.

    name : the method to build (default the run's; a base run is "none", or "full-ft" to train it on).
    Returns the dict of ``load_model`` with "method" replaced by the TorchMethod (eval mode) and "device".
    """
    _, _, dev, dt = setup(device, dtype)
    m = load_model(ref, out, tokenizer)
    meta, cfg, npm = m["manifest"], m["cfg"], m["method"]
    name = name or meta.get("method", "none")
    acfg = ALHConfig(**meta["alh_config"]) if meta.get("alh_config") else None
    o = meta.get("options", {})
    tm = make_method(name, npm.base, cfg, acfg, seed=o.get("seed", 0), lora_rank=o.get("lora_rank", 4), dtype=dt, device=dev)
    load_trainable(tm, dict(npm.base, **npm.params))                                          # full-ft of a base: its own tensors
    return dict(m, method=tm.eval(), device=dev)


@torch.no_grad()
def evaluate(ref, *, out="runs", corpus=None, corpus_opts=None, split="val", batch_size=16, max_tokens=None,
             tokenizer=None, device="cpu", dtype="float32"):
    """Mean next-token loss of a run over consecutive windows (the windows of ``alh-ref eval``).

    Windows w = 0..W-1 read x = tokens[wT : wT+T], y = tokens[wT+1 : wT+T+1], W = (n-1)//T (capped at
    max_tokens // T).  Returns {job, run, checkpoint, step, method, corpus, split, loss, perplexity,
    n_tokens, T, backend, device, dtype}; nothing is written.
    """
    m = load_method(ref, out, tokenizer, device, dtype)
    meta, cfg, tm, dev = m["manifest"], m["cfg"], m["method"], m["device"]
    if corpus is None:
        corpus, corpus_opts = meta["corpus"]["name"], meta["corpus"]["opts"]
    tokens = stream_tokens(m["tokenizer"], load_split(corpus, corpus_opts, split), cfg.block_size)  # (n,)
    T = cfg.block_size
    W = (tokens.shape[0] - 1) // T
    if max_tokens is not None:
        W = max(1, min(W, max_tokens // T))
    x = torch.as_tensor(tokens[:W * T].reshape(W, T).astype(np.int64), device=dev)             # (W,T)
    y = torch.as_tensor(tokens[1:W * T + 1].reshape(W, T).astype(np.int64), device=dev)        # (W,T)
    total = 0.0
    for i in range(0, W, batch_size):
        _, loss = tm(x[i:i + batch_size], y[i:i + batch_size])                                # (b,T) -> ()
        total += float(loss) * x[i:i + batch_size].numel()
    loss = total / (W * T)
    return {"job": "eval", "run": None if m["run"] is None else str(m["run"]), "checkpoint": str(m["checkpoint"]),
            "step": int(meta["step"]), "method": meta.get("method", "base"), "corpus": str(corpus), "split": split,
            "loss": loss, "perplexity": math.exp(min(loss, 700.0)), "n_tokens": W * T, "T": T, "backend": "torch",
            "device": str(dev), "dtype": dtype}
