"""Runs: the library behind the command line — tokenizer, pretrain, adapt, evaluate, sample.

Each job that trains writes one **run folder** ``<out>/<name>/`` (``out`` defaults to ``runs``):

    tokenizer/                      tokenizer.tiktoken + tokenizer.json (alh_ref.tokenizer)
    checkpoints/step-NNNNNN/        model.safetensors + manifest.json (alh_ref.checkpoint), one
                                    folder per saved step; the newest ``keep`` are kept
    history.jsonl                   one JSON record per optimisation step {step, loss, grad_norm, lr, dt}
    summary.json                    what the job did (the CLI's ``--json`` line)
    eval/<split>-<fingerprint>.json results of :func:`evaluate` on this run

A checkpoint holds the trainable tensors under their own names (``wte``, ``h.0.ln_1.w``, ...;
``alh.*`` / ``lora.*`` for an adapter) and the AdamW moments as ``opt.m.<name>`` /
``opt.v.<name>``. Its manifest holds, besides what save_checkpoint adds:

    run_format_version  RUN_FORMAT_VERSION           kind        "base" | "adapt"
    gpt_config          GPTConfig as a dict           adamw_config  AdamWConfig as a dict
    tokenizer_sha256    Tokenizer.sha256              corpus_fingerprint  of the training split
    corpus              {name, opts, split, n_documents, n_tokens}
    options             the options that fix the run (seed, batch size, split, dims, method ...)
    target_steps        planned number of steps       step, opt_t  steps done (equal)
    rng                 rng_state_to_json of the batch sampler, after step ``step``
    method, alh_config, lora_rank, base   (kind "adapt" only) base = {path, relpath, step,
                        safetensors_sha256}: the frozen base checkpoint, checked on every load

Resuming (``resume=True``) restores parameters, AdamW moments and step count, and the batch
sampler's RNG, so the run continues bit-for-bit as if it had never stopped (tests/test_cli.py).
Seeds: parameters are initialised from ``seed``, batches are drawn by ``default_rng([seed, 1])``
(pretrain) or ``default_rng([seed, 2])`` (adapt).

Every function here does work and returns a JSON-able summary dict; printing is the CLI's job
(alh_ref.cli). Bad input raises :class:`alh_ref.errors.InputError`, failed runs
:class:`alh_ref.errors.RunError`, each with a one-line message.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from .alh.adapted import ALHConfig
from .alh.methods import METHODS, make_method
from .checkpoint import (MANIFEST_FILE, RESERVED_KEYS, _check_shapes, load_checkpoint, rng_from_json,
                         rng_state_to_json, save_checkpoint)
from .corpora import BUILTIN_CORPORA, SPLITS, encode_documents, load_corpus, split_documents
from .errors import InputError, RunError
from .io_utils import atomic_write_json, atomic_write_text, ensure_writable_dir
from .model import CONFIGS, GPTConfig, check_ids, decayed, init_params, param_shapes
from .optim import AdamW, AdamWConfig
from .tokenizer import META_FILE, Tokenizer, train_bpe
from .train import gpt_loss_and_grads, train

RUN_FORMAT_VERSION = 1
CKPT_DIR, TOKENIZER_DIR = "checkpoints", "tokenizer"
HISTORY_FILE, SUMMARY_FILE = "history.jsonl", "summary.json"
CKPT_PREFIX = "step-"
SPLIT_CHOICES = SPLITS + ("all",)
SAVE_KEYS = ("step", "opt_t", "rng", "adamw_config")          # manifest keys written at every save

# Options of a training job. IDENTITY options fix what a run is (a resumed run must keep them);
# OPTIM options may be changed on resume (e.g. a lower lr after a NaN); the rest are per session.
OPTIM_DEFAULTS = {"lr": AdamWConfig.lr, "warmup_steps": AdamWConfig.warmup_steps, "decay_steps": None,
                  "weight_decay": AdamWConfig.weight_decay, "grad_clip": AdamWConfig.grad_clip}
SESSION_DEFAULTS = {"steps": 200, "ckpt_every": 50, "keep": 3}
PRETRAIN_IDENTITY = {"split": "train", "vocab_size": None, "config": "tiny", "block_size": None, "n_layer": None,
                     "n_head": None, "n_embd": None, "batch_size": 16, "seed": 0}
_A = ALHConfig()
ADAPT_IDENTITY = {"method": None, "split": "train", "batch_size": 16, "seed": 0, "encoder": _A.encoder,
                  "site": _A.site, "out_context": _A.out_context, "D": _A.D, "hyper_layers": _A.n_layer,
                  "hyper_heads": _A.n_head, "K": _A.K, "R": _A.R, "lora_rank": 4}
ALH_OPTIONS = ("encoder", "site", "out_context", "D", "hyper_layers", "hyper_heads", "K", "R")
SOURCE_OPTIONS = ("corpus", "corpus_opts", "tokenizer", "base")   # checked by fingerprint / sha256, not by value


# ----------------------------------------------------------------------------------------------
# Run folders, corpora, tokenizers

def run_path(out, name) -> Path:
    """The run folder ``out/name``, after checking ``name`` is a plain folder name and ``out`` a writable folder.

    ``out`` is created if needed; ``out/name`` is not: the job creates it with its first file, after
    its inputs are checked, so a command that fails on bad input leaves no empty run folder.

    Parameters
    ----------
    out : str or Path   root of all runs (e.g. ``runs``)
    name : str          a plain folder name (no path separators)

    Returns
    -------
    Path
    """
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name:
        raise InputError(f"run name {name!r} is not a plain folder name; expected e.g. 'base' (no '/' or '..')")
    return ensure_writable_dir(out) / name


def run_dir(out, name) -> Path:
    """The run folder ``out/name``, created (with parents) and checked writable."""
    return ensure_writable_dir(run_path(out, name))


def load_split(corpus, corpus_opts=None, split="train"):
    """Load a corpus and take one split of it (by document hash, alh_ref.corpora.split_documents).

    Parameters
    ----------
    corpus : str   a built-in name (pydoc, docstrings, pycode, synthetic) or a text file / folder path
    corpus_opts : dict or None   options of the synthetic corpus
    split : str   train | val | test | all

    Returns
    -------
    Corpus   non-empty
    """
    if split not in SPLIT_CHOICES:
        raise InputError(f"split {split!r} is unknown; expected one of {', '.join(SPLIT_CHOICES)}")
    whole = load_corpus(corpus, **(corpus_opts or {}))
    if split == "all":
        return whole
    part = split_documents(whole)[split]
    if not any(d.strip() for d in part.documents):
        raise InputError(f"split {split!r} of corpus {corpus!r} is empty (its {len(whole.documents)} document(s) are "
                         "assigned to train/val/test by a hash of their text); separate documents with two blank "
                         "lines, use --split all, or pass another file with --corpus")
    return part


def corpus_key(corpus) -> str:
    """How a corpus is named in manifests: a built-in name as is, a path made absolute."""
    name = str(corpus)
    return name if name in BUILTIN_CORPORA else str(Path(name).resolve())


def stream_tokens(tokenizer, corpus, T):
    """Encode a corpus into one token stream (documents joined by end-of-text) of at least T+1 ids.

    Parameters
    ----------
    tokenizer : Tokenizer;  corpus : Corpus;  T : int context length

    Returns
    -------
    tokens : ndarray (n,) int32, n >= T + 1
    """
    tokens = encode_documents(tokenizer, corpus.documents)                                    # (n,)
    if tokens.shape[0] < T + 1:
        raise InputError(f"corpus {corpus.name!r} gives {tokens.shape[0]} tokens, shorter than one context of "
                         f"T+1 = {T + 1}; use more text, --split all, or a smaller --block-size")
    return tokens


def find_tokenizer(path) -> Tokenizer:
    """Load a tokenizer from a tokenizer folder or from a run folder holding ``tokenizer/``.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Tokenizer
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"tokenizer path {str(p)!r} does not exist; expected a run folder or its tokenizer/ folder")
    if not (p / META_FILE).is_file() and (p / TOKENIZER_DIR / META_FILE).is_file():
        p = p / TOKENIZER_DIR
    return Tokenizer.load(p)


def train_tokenizer(out, name, *, corpus, corpus_opts=None, split="train", vocab_size=512) -> dict:
    """Train a byte-level BPE on a corpus split and save it to ``out/name/tokenizer/``.

    Parameters
    ----------
    out, name : run root and run name
    corpus, corpus_opts, split : what to train on (see :func:`load_split`)
    vocab_size : int   wanted V = 256 bytes + merges + 1 special (>= 257)

    Returns
    -------
    dict   job, run, tokenizer (folder), n_vocab, vocab_size (asked), sha256, corpus, corpus_fingerprint
    """
    rd = run_path(out, name)
    if list_checkpoints(rd):
        raise InputError(f"run {str(rd)!r} already has checkpoints trained with its tokenizer; choose another --name")
    data = load_split(corpus, corpus_opts, split)
    tok = train_bpe(data.documents, vocab_size)
    folder = tok.save(rd / TOKENIZER_DIR)
    return {"job": "tokenizer", "run": str(rd), "tokenizer": str(folder), "n_vocab": tok.n_vocab,
            "vocab_size": vocab_size, "sha256": tok.sha256, "corpus": data.name, "corpus_fingerprint": data.fingerprint}


# ----------------------------------------------------------------------------------------------
# Checkpoint folders

def checkpoint_path(rd, step) -> Path:
    """``rd/checkpoints/step-NNNNNN`` for a step count."""
    return Path(rd) / CKPT_DIR / f"{CKPT_PREFIX}{int(step):06d}"


def list_checkpoints(rd) -> list:
    """Complete checkpoints of a run (manifest present), oldest first, as [(step, Path)]."""
    folder = Path(rd) / CKPT_DIR
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        tail = p.name[len(CKPT_PREFIX):]
        if p.name.startswith(CKPT_PREFIX) and tail.isdigit() and (p / MANIFEST_FILE).is_file():
            out.append((int(tail), p))
    return sorted(out)


def resolve_checkpoint(ref, out="runs"):
    """Find the checkpoint a user means: a checkpoint folder, a run folder (its newest), or a run name.

    Parameters
    ----------
    ref : str or Path   checkpoint folder, run folder, or the name of a run under ``out``
    out : str or Path   run root used for bare names

    Returns
    -------
    ckpt : Path   the checkpoint folder
    rd : Path or None   the run folder it belongs to (None for a loose checkpoint)
    """
    p = Path(ref)
    if not p.exists() and (Path(out) / str(ref)).exists():
        p = Path(out) / str(ref)
    if not p.exists():
        raise InputError(f"run or checkpoint {str(ref)!r} not found (looked at {str(ref)!r} and "
                         f"{str(Path(out) / str(ref))!r}); "
                         "expected a run folder written by pretrain/adapt, or one of its checkpoint folders")
    if (p / MANIFEST_FILE).is_file():
        rd = p.parent.parent if p.parent.name == CKPT_DIR else None
        return p, rd
    ckpts = list_checkpoints(p)
    if not ckpts:
        raise InputError(f"{str(p)!r} holds no checkpoint; expected a run folder with {CKPT_DIR}/{CKPT_PREFIX}* "
                         "(written by pretrain/adapt) or a checkpoint folder")
    return ckpts[-1][1], p


def _prune(rd, keep):
    """Delete all but the newest ``keep`` complete checkpoints (keep 0: keep all)."""
    if keep:
        for _, p in list_checkpoints(rd)[:-keep]:
            shutil.rmtree(p, ignore_errors=True)


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
        raise RunError(f"parameter {bad[0]} became non-finite at step {step}; stopping without saving it "
                       "(lower the learning rate; the last good checkpoint is kept)")
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


def _base_params(arrays, cfg):
    """The GPT parameters out of a checkpoint's tensors, after checking every name and shape."""
    shapes = param_shapes(cfg)
    _check_shapes(arrays, shapes)
    return {n: arrays[n] for n in shapes}


def _restore(arrays, meta, params, opt):
    """Copy saved trainable tensors and AdamW state into ``params`` / ``opt``; return the sampler RNG."""
    _check_shapes(arrays, {n: a.shape for n, a in params.items()})
    _check_shapes(arrays, {"opt." + k: a.shape for k, a in opt.state_tensors().items()})
    for n, a in params.items():
        a[...] = arrays[n]
    opt.load_state({k[4:]: a for k, a in arrays.items() if k.startswith("opt.")}, meta["opt_t"])
    return rng_from_json(meta["rng"])


# ----------------------------------------------------------------------------------------------
# History, summaries and the shared training driver

def read_history(rd, upto) -> list:
    """Records of ``rd/history.jsonl`` with step <= ``upto`` (steps after the last checkpoint are dropped)."""
    path = Path(rd) / HISTORY_FILE
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            rec = json.loads(line)
            step = int(rec["step"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{str(path)!r} line {i + 1} is not a history record; expected JSON with a 'step'") from None
        if step <= upto:
            out.append(rec)
    return out


def _write_history(rd, history):
    atomic_write_text(Path(rd) / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in history))


def _options(given, defaults, saved=None):
    """Resolve a job's options: given (not None) over defaults; on resume, given must equal saved."""
    out = {}
    for k, default in defaults.items():
        v = given.get(k)
        if saved is None:
            out[k] = default if v is None else v
            continue
        if v is not None and v != saved.get(k):
            raise InputError(f"--{k.replace('_', '-')} {v} differs from this run's {saved.get(k)}; a resumed run keeps "
                             "its data, model, method and seed (drop the option, or start a new run with another --name)")
        out[k] = saved.get(k)
    return out


def _adamw(given, steps, saved=None):
    """AdamWConfig from the optimiser options (defaults, or the saved config with given ones replaced)."""
    if saved is None:
        o = _options(given, OPTIM_DEFAULTS)
        return AdamWConfig(lr=o["lr"], warmup_steps=o["warmup_steps"], weight_decay=o["weight_decay"],
                           grad_clip=o["grad_clip"], total_steps=o["decay_steps"] or steps)
    cfg = _dataclass(AdamWConfig, saved, "adamw_config")
    new = {k: given[k] for k in ("lr", "warmup_steps", "weight_decay", "grad_clip") if given.get(k) is not None}
    if given.get("decay_steps") is not None:
        new["total_steps"] = given["decay_steps"]
    return replace(cfg, **new)


def _fit(rd, job, *, params, opt, loss_and_grads, tokens, B, T, rng, target, manifest, history,
         ckpt_every, keep, progress, info):
    """Train up to ``target`` steps with periodic checkpoints; write history and summary.

    Parameters
    ----------
    rd : run folder;  job : "pretrain" | "adapt"
    params, opt, loss_and_grads, tokens, B, T, rng : as for alh_ref.train.train
    target : int   total steps wanted (steps already done: opt.t)
    manifest : dict   run metadata saved with every checkpoint
    history : list   records of the steps already done (appended to)
    ckpt_every, keep : checkpoint period and how many to keep;  progress : bool
    info : dict   extra summary fields

    Returns
    -------
    dict   the summary (also written to rd/summary.json)
    """
    start, t0 = opt.t, time.perf_counter()
    ckpts = list_checkpoints(rd)
    last = [ckpts[-1][1] if ckpts else None]

    def on_step(step, rec):
        history.append({k: rec[k] for k in ("step", "loss", "grad_norm", "lr", "dt")})
        if step % ckpt_every == 0 or step == target:
            _write_history(rd, history)
            last[0] = save_state(rd, step, params, opt, rng, manifest)
            _prune(rd, keep)

    def summary(status, message=None):
        sec = time.perf_counter() - t0
        step = history[-1]["step"] if history else start                                     # last completed step
        done = step - start
        s = dict(info, job=job, run=str(rd), status=status, step=step, target_steps=target,
                 checkpoint=None if last[0] is None else str(last[0]), steps_this_session=done,
                 loss_first=history[0]["loss"] if history else None, loss_last=history[-1]["loss"] if history else None,
                 elapsed_s=round(sec, 3), tokens_per_s=round(done * B * T / sec, 1) if done and sec > 0 else None,
                 tokenizer_sha256=manifest["tokenizer_sha256"], corpus_fingerprint=manifest["corpus_fingerprint"])
        if message:
            s["message"] = message
        atomic_write_json(Path(rd) / SUMMARY_FILE, s)
        return s

    try:
        train(params, opt, loss_and_grads, tokens, B, T, max(0, target - start), rng, on_step=on_step, progress=progress)
    except KeyboardInterrupt:
        _write_history(rd, history)
        summary("interrupted")
        raise
    except RunError as e:
        _write_history(rd, history)
        msg = (f"{e}: {str(last[0])!r} (continue with --resume and a lower --lr)" if last[0] is not None
               else f"{e}, but none was saved yet (use a smaller --ckpt-every)")
        summary("failed", msg)
        raise RunError(msg) from None
    return summary("done")


# ----------------------------------------------------------------------------------------------
# pretrain

def model_config(vocab_size, config="tiny", block_size=None, n_layer=None, n_head=None, n_embd=None) -> GPTConfig:
    """A GPTConfig from a preset (alh_ref.model.CONFIGS) with some dimensions replaced.

    Parameters
    ----------
    vocab_size : int V (the tokenizer's n_vocab);  config : "tiny" | "small"
    block_size, n_layer, n_head, n_embd : int or None (None: the preset's)

    Returns
    -------
    GPTConfig
    """
    if config not in CONFIGS:
        raise InputError(f"model config {config!r} is unknown; expected one of {', '.join(CONFIGS)}")
    p = CONFIGS[config]
    pick = lambda v, d: d if v is None else v  # noqa: E731
    return GPTConfig(vocab_size=vocab_size, block_size=pick(block_size, p.block_size), n_layer=pick(n_layer, p.n_layer),
                     n_head=pick(n_head, p.n_head), n_embd=pick(n_embd, p.n_embd))


def _pretrain_tokenizer(rd, tokenizer, vocab_size, data, preset):
    """The tokenizer of a new base run.

    ``tokenizer`` given: load it. Else ``vocab_size`` given: train a BPE of that size on the
    training split. Else reuse ``rd/tokenizer`` if there is one (from ``alh-ref tokenizer``), or
    train a BPE of the preset's vocabulary size.
    """
    own = rd / TOKENIZER_DIR
    if tokenizer is not None:
        if vocab_size is not None:
            raise InputError("give either --tokenizer (use an existing tokenizer) or --vocab-size (train one), not both")
        return find_tokenizer(tokenizer)
    if vocab_size is None and (own / META_FILE).is_file():
        return find_tokenizer(own)
    return train_bpe(data.documents, CONFIGS[preset].vocab_size if vocab_size is None else vocab_size)


def pretrain(out="runs", name="base", *, resume=False, progress=False, **opts) -> dict:
    """Pretrain a base GPT on a corpus (or resume it), with periodic checkpoints in ``out/name``.

    Parameters
    ----------
    out, name : run root and run name
    resume : bool   continue from the newest checkpoint of ``out/name`` (bit-for-bit)
    progress : bool   tqdm bar with loss and tokens/s
    **opts : None means "not given" (defaults, or the saved value on resume)
        corpus (str, required for a new run), corpus_opts (dict), split (train|val|test|all),
        tokenizer (path of a tokenizer or run folder), vocab_size (int, when training the
        tokenizer), config (tiny|small), block_size, n_layer, n_head, n_embd (int),
        batch_size, seed, steps (total), ckpt_every, keep (int), lr, warmup_steps, decay_steps,
        weight_decay, grad_clip (AdamW; may be changed on resume).

    Returns
    -------
    dict   summary: job, run, status, step, target_steps, checkpoint, loss_first, loss_last,
        tokens_per_s, n_params, tokenizer_sha256, corpus_fingerprint, ...
    """
    _known(opts, PRETRAIN_IDENTITY, ("corpus", "corpus_opts", "tokenizer"))
    rd = run_path(out, name)
    if resume:
        _check_resumable(rd)
        return _resume_pretrain(rd, opts, progress)
    if list_checkpoints(rd):
        raise InputError(f"run {str(rd)!r} already has checkpoints; pass --resume to continue it, "
                         "or choose another --name")
    if opts.get("corpus") is None:
        raise InputError("pretrain needs a corpus: --corpus NAME|PATH (a built-in name or your text file)")
    o = _options(opts, PRETRAIN_IDENTITY)
    s = _options(opts, SESSION_DEFAULTS)
    data = load_split(opts["corpus"], opts.get("corpus_opts"), o["split"])
    tok = _pretrain_tokenizer(rd, opts.get("tokenizer"), o["vocab_size"], data, o["config"])
    cfg = model_config(tok.n_vocab, o["config"], o["block_size"], o["n_layer"], o["n_head"], o["n_embd"])
    o.update(block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd)
    tokens = stream_tokens(tok, data, cfg.block_size)                                          # (n,)
    params = init_params(cfg, seed=o["seed"])                                                  # name -> param_shapes(cfg)
    opt = AdamW(params, list(param_shapes(cfg)), _adamw(opts, s["steps"]), decayed)
    rng = np.random.default_rng([o["seed"], 1])
    tok.save(rd / TOKENIZER_DIR)
    manifest = {"run_format_version": RUN_FORMAT_VERSION, "kind": "base", "gpt_config": cfg.to_dict(),
                "tokenizer_sha256": tok.sha256, "corpus_fingerprint": data.fingerprint,
                "corpus": _corpus_meta(opts["corpus"], opts.get("corpus_opts"), o["split"], data, tokens),
                "options": o, "target_steps": s["steps"]}
    return _fit(rd, "pretrain", params=params, opt=opt, loss_and_grads=_gpt_lag(params, cfg), tokens=tokens,
                B=o["batch_size"], T=cfg.block_size, rng=rng, target=s["steps"], manifest=manifest, history=[],
                ckpt_every=s["ckpt_every"], keep=s["keep"], progress=progress,
                info={"n_params": int(sum(a.size for a in params.values())), "gpt_config": cfg.to_dict()})


def _known(opts, identity, sources):
    """Reject option names a job does not take (a programming error: TypeError)."""
    unknown = set(opts) - set(identity) - set(sources) - set(OPTIM_DEFAULTS) - set(SESSION_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}")


def _gpt_lag(params, cfg):
    """loss_and_grads of the base GPT over every parameter."""
    return lambda x, y: gpt_loss_and_grads(params, cfg, x, y)


def _corpus_meta(corpus, corpus_opts, split, data, tokens):
    return {"name": corpus_key(corpus), "opts": corpus_opts or {}, "split": split,
            "n_documents": len(data.documents), "n_tokens": int(tokens.shape[0])}


def _session(opts, meta):
    """Steps/checkpointing of a resumed session: given options over the saved target and defaults."""
    s = _options(opts, SESSION_DEFAULTS)
    s["steps"] = opts["steps"] if opts.get("steps") is not None else meta["target_steps"]
    if s["steps"] < meta["step"]:
        raise InputError(f"--steps {s['steps']} is below the {meta['step']} steps this run has done; "
                         "expected the new total number of steps")
    return s


def _check_resumable(rd):
    if not list_checkpoints(rd):
        raise InputError(f"nothing to resume: {str(rd)!r} has no checkpoint; run without --resume to start it")


def _latest_for_resume(rd, tok_sha, kind):
    """Load the newest checkpoint of a run for resuming; a damaged one names the previous to fall back to."""
    ckpts = list_checkpoints(rd)
    try:
        return load_run_checkpoint(ckpts[-1][1], tok_sha, (kind,))
    except InputError as e:
        if len(ckpts) > 1:
            raise InputError(f"{e} (delete {str(ckpts[-1][1])!r} to resume from {str(ckpts[-2][1])!r})") from None
        raise


def _resume_data(opts, meta, tok, T):
    """Reload the training split of a resumed run and check it is the same text."""
    c = meta["corpus"]
    corpus = opts["corpus"] if opts.get("corpus") is not None else c["name"]
    copts = opts["corpus_opts"] if opts.get("corpus_opts") is not None else c["opts"]
    data = load_split(corpus, copts, c["split"])
    if data.fingerprint != meta["corpus_fingerprint"]:
        raise InputError(f"corpus mismatch: this run was trained on corpus fingerprint "
                         f"{meta['corpus_fingerprint'][:12]}…, {corpus!r} ({c['split']}) now has "
                         f"{data.fingerprint[:12]}…; restore the original text or start a new run")
    return stream_tokens(tok, data, T)


def _run_manifest(meta, target):
    """The run metadata of a loaded checkpoint, without what save_checkpoint / save_state add."""
    m = {k: v for k, v in meta.items() if k not in RESERVED_KEYS and k not in SAVE_KEYS}
    m["target_steps"] = target
    return m


def _resume_pretrain(rd, opts, progress):
    tok = find_tokenizer(opts.get("tokenizer") or rd)
    arrays, meta, cfg = _latest_for_resume(rd, tok.sha256, "base")
    o = _options(opts, PRETRAIN_IDENTITY, meta["options"])
    s = _session(opts, meta)
    tokens = _resume_data(opts, meta, tok, cfg.block_size)                                     # (n,)
    params = _base_params(arrays, cfg)
    opt = AdamW(params, list(param_shapes(cfg)), _adamw(opts, s["steps"], meta["adamw_config"]), decayed)
    rng = _restore(arrays, meta, params, opt)
    return _fit(rd, "pretrain", params=params, opt=opt, loss_and_grads=_gpt_lag(params, cfg), tokens=tokens,
                B=o["batch_size"], T=cfg.block_size, rng=rng, target=s["steps"],
                manifest=_run_manifest(meta, s["steps"]), history=read_history(rd, meta["step"]),
                ckpt_every=s["ckpt_every"], keep=s["keep"], progress=progress,
                info={"n_params": int(sum(a.size for a in params.values())), "gpt_config": cfg.to_dict(),
                      "resumed_from": int(meta["step"])})


# ----------------------------------------------------------------------------------------------
# adapt

def _alh_config(o):
    """ALHConfig from the adapt options (the family comes from the method name, in make_method)."""
    return ALHConfig(encoder=o["encoder"], site=o["site"], out_context=o["out_context"], D=o["D"],
                     n_layer=o["hyper_layers"], n_head=o["hyper_heads"], K=o["K"], R=o["R"])


def _check_method_options(method, opts):
    """Method must exist; hypernetwork options only for methods with a hypernetwork, lora_rank only for LoRA."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    has_alh = method.startswith(("alh-", "static-")) or method == "side"
    wrong = [k for k in ALH_OPTIONS if opts.get(k) is not None and not has_alh]
    if opts.get("lora_rank") is not None and method != "lora-embed":
        wrong.append("lora_rank")
    if wrong:
        raise InputError(f"--{wrong[0].replace('_', '-')} does not apply to method {method!r}; hypernetwork options "
                         "go with alh-*/static-*/side, --lora-rank with lora-embed")


def _base_ref(base_ckpt, bmeta, rd):
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
    return _base_params(arrays, cfg), cfg, found


def _method_from_manifest(meta, base, cfg):
    """Rebuild an adapted run's Method (freshly initialised) from its manifest."""
    acfg = _dataclass(ALHConfig, meta.get("alh_config"), "alh_config")
    o = meta["options"]
    return make_method(meta["method"], base, cfg, acfg, seed=o["seed"], lora_rank=o["lora_rank"])


def adapt(out="runs", name=None, *, resume=False, progress=False, **opts) -> dict:
    """Adapt a pretrained base to a new corpus with a method (alh-<family> or a baseline), or resume.

    Parameters
    ----------
    out, name : run root and run name (default ``adapt-<method>``)
    resume : bool   continue from the newest checkpoint of ``out/name`` (bit-for-bit)
    progress : bool   tqdm bar with loss and tokens/s
    **opts : None means "not given"
        base (a pretrain run name/folder or checkpoint; required for a new run), method (one of
        alh_ref.alh.methods.METHODS; required), corpus, corpus_opts, split (the new domain),
        tokenizer (defaults to the base run's; must be the same), encoder, site, out_context,
        D, hyper_layers, hyper_heads, K, R (the hypernetwork, ALHConfig), lora_rank,
        batch_size, seed, steps, ckpt_every, keep, lr, warmup_steps, decay_steps, weight_decay,
        grad_clip.

    Returns
    -------
    dict   summary as for :func:`pretrain`, plus method, n_trainable, base
    """
    _known(opts, ADAPT_IDENTITY, SOURCE_OPTIONS)
    if name is None:
        if opts.get("method") is None:
            raise InputError("adapt needs --method (or --name of the run to resume)")
        name = f"adapt-{opts['method']}"
    rd = run_path(out, name)
    if resume:
        _check_resumable(rd)
        return _resume_adapt(rd, out, opts, progress)
    if list_checkpoints(rd):
        raise InputError(f"run {str(rd)!r} already has checkpoints; pass --resume to continue it, "
                         "or choose another --name")
    for k, flag in (("base", "--base RUN_OR_CKPT"), ("method", "--method NAME"), ("corpus", "--corpus NAME|PATH")):
        if opts.get(k) is None:
            raise InputError(f"adapt needs {flag}")
    _check_method_options(opts["method"], opts)
    o = _options(opts, ADAPT_IDENTITY)
    s = _options(opts, SESSION_DEFAULTS)
    base_ckpt, base_rd = resolve_checkpoint(opts["base"], out)
    if opts.get("tokenizer") is None and base_rd is None:
        raise InputError(f"cannot find the tokenizer of {str(base_ckpt)!r} (not inside a run folder); pass --tokenizer")
    tok = find_tokenizer(opts.get("tokenizer") or base_rd)
    arrays, bmeta, cfg = load_run_checkpoint(base_ckpt, tok.sha256, ("base",))
    base = _base_params(arrays, cfg)
    data = load_split(opts["corpus"], opts.get("corpus_opts"), o["split"])
    tokens = stream_tokens(tok, data, cfg.block_size)                                          # (n,)
    acfg = _alh_config(o)
    method = make_method(o["method"], base, cfg, acfg, seed=o["seed"], lora_rank=o["lora_rank"])
    opt = AdamW(method.params, list(method.params), _adamw(opts, s["steps"]), method.decay)
    rng = np.random.default_rng([o["seed"], 2])
    tok.save(rd / TOKENIZER_DIR)
    manifest = {"run_format_version": RUN_FORMAT_VERSION, "kind": "adapt", "gpt_config": cfg.to_dict(),
                "tokenizer_sha256": tok.sha256, "corpus_fingerprint": data.fingerprint,
                "corpus": _corpus_meta(opts["corpus"], opts.get("corpus_opts"), o["split"], data, tokens),
                "options": o, "target_steps": s["steps"], "method": o["method"], "alh_config": acfg.to_dict(),
                "base": _base_ref(base_ckpt, bmeta, rd)}
    return _fit(rd, "adapt", params=method.params, opt=opt, loss_and_grads=method.loss_and_grads, tokens=tokens,
                B=o["batch_size"], T=cfg.block_size, rng=rng, target=s["steps"], manifest=manifest, history=[],
                ckpt_every=s["ckpt_every"], keep=s["keep"], progress=progress,
                info={"method": o["method"], "n_trainable": method.n_trainable, "base": manifest["base"]["path"]})


def _resume_adapt(rd, out, opts, progress):
    tok = find_tokenizer(opts.get("tokenizer") or rd)
    arrays, meta, cfg = _latest_for_resume(rd, tok.sha256, "adapt")
    o = _options(opts, ADAPT_IDENTITY, meta["options"])
    s = _session(opts, meta)
    override = None if opts.get("base") is None else resolve_checkpoint(opts["base"], out)[0]
    base, _, found = load_base(meta["base"], rd, tok.sha256, override)
    manifest = _run_manifest(meta, s["steps"])
    manifest["base"] = _base_ref(found, meta["base"], rd)                                     # --base: a moved base
    tokens = _resume_data(opts, meta, tok, cfg.block_size)                                     # (n,)
    method = _method_from_manifest(meta, base, cfg)
    opt = AdamW(method.params, list(method.params), _adamw(opts, s["steps"], meta["adamw_config"]), method.decay)
    rng = _restore(arrays, meta, method.params, opt)
    return _fit(rd, "adapt", params=method.params, opt=opt, loss_and_grads=method.loss_and_grads, tokens=tokens,
                B=o["batch_size"], T=cfg.block_size, rng=rng, target=s["steps"],
                manifest=manifest, history=read_history(rd, meta["step"]),
                ckpt_every=s["ckpt_every"], keep=s["keep"], progress=progress,
                info={"method": o["method"], "n_trainable": method.n_trainable, "base": manifest["base"]["path"],
                      "resumed_from": int(meta["step"])})


# ----------------------------------------------------------------------------------------------
# Loading a trained model; evaluate; sample

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
        method = make_method("none", _base_params(arrays, cfg), cfg)
    else:
        base, bcfg, _ = load_base(meta["base"], rd, tok.sha256)
        if bcfg != cfg:
            raise InputError(f"base checkpoint config {bcfg} differs from the adapted run's {cfg}; expected the same model")
        method = _method_from_manifest(meta, base, cfg)
        _check_shapes(arrays, {n: a.shape for n, a in method.params.items()})
        for n, a in method.params.items():
            a[...] = arrays[n]
    return {"method": method, "tokenizer": tok, "cfg": cfg, "manifest": meta, "checkpoint": ckpt, "run": rd}


def stream_loss(forward, tokens, T, B, max_tokens=None, progress=False):
    """Mean next-token loss over consecutive, non-overlapping windows of a token stream.

    Windows w = 0..W-1 read x = tokens[wT : wT+T], y = tokens[wT+1 : wT+T+1], W = (n-1) // T
    (capped at max_tokens // T); loss = (1 / (W T)) sum_{w,t} -log p(y_{w,t} | x_{w,<=t}).

    Parameters
    ----------
    forward : callable (x (b,T) int64, y (b,T) int64) -> (logits, mean loss, cache)
    tokens : ndarray (n,) int, n >= T + 1
    T, B : int   context length and windows per batch
    max_tokens : int or None;  progress : bool

    Returns
    -------
    loss : float (nats per token);  n_tokens : int (W T)
    """
    W = (tokens.shape[0] - 1) // T
    if max_tokens is not None:
        W = max(1, min(W, max_tokens // T))
    x = tokens[:W * T].reshape(W, T).astype(np.int64)                                          # (n,) -> (W,T)
    y = tokens[1:W * T + 1].reshape(W, T).astype(np.int64)                                     # (n,) -> (W,T)
    starts = range(0, W, B)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, total=-(-W // B), unit="batch", dynamic_ncols=True)
    total = 0.0
    for i in starts:
        _, loss, _ = forward(x[i:i + B], y[i:i + B])                                           # (b,T) -> scalar
        total += float(loss) * x[i:i + B].size
    return total / (W * T), W * T


def evaluate(ref, *, out="runs", corpus=None, corpus_opts=None, split="val", batch_size=16, max_tokens=None,
             tokenizer=None, progress=False) -> dict:
    """Loss and perplexity of a base or adapted run on a corpus split; saved in the run's eval/ folder.

    Parameters
    ----------
    ref : run name, run folder or checkpoint folder;  out : run root
    corpus, corpus_opts : what to evaluate on (default: the run's own training corpus)
    split : train | val | test | all   (default val: documents the run did not train on)
    batch_size : int windows per forward pass;  max_tokens : int or None (cap, first windows)
    tokenizer : path or None (for a checkpoint outside a run folder);  progress : bool

    Returns
    -------
    dict   job, run, checkpoint, step, kind, method, corpus, split, corpus_fingerprint, loss
        (nats/token), perplexity = exp(loss), n_tokens, T
    """
    from .metrics import perplexity
    m = load_model(ref, out, tokenizer)
    meta, cfg = m["manifest"], m["cfg"]
    if corpus is None:
        corpus, corpus_opts = meta["corpus"]["name"], meta["corpus"]["opts"]
    data = load_split(corpus, corpus_opts, split)
    tokens = stream_tokens(m["tokenizer"], data, cfg.block_size)                               # (n,)
    loss, n = stream_loss(m["method"].forward, tokens, cfg.block_size, batch_size, max_tokens, progress)
    res = {"job": "eval", "run": None if m["run"] is None else str(m["run"]), "checkpoint": str(m["checkpoint"]),
           "step": int(meta["step"]), "kind": meta["kind"], "method": meta.get("method", "base"),
           "corpus": corpus_key(corpus), "split": split, "corpus_fingerprint": data.fingerprint,
           "loss": loss, "perplexity": perplexity(loss), "n_tokens": n, "T": cfg.block_size}
    if m["run"] is not None:
        atomic_write_json(Path(m["run"]) / "eval" / f"{split}-{data.fingerprint[:12]}.json", res)
    return res


def next_token(logits, temperature, top_k, rng) -> int:
    """Draw one token id from the last position's logits.

    p_v proportional to exp(logits_v / temperature) over the top_k largest logits (all if None);
    temperature 0 is greedy (argmax). One ``rng.random()`` draw per call, inverted through the
    cumulative distribution, so a seed fixes the sample.

    Parameters
    ----------
    logits : ndarray (V,);  temperature : float >= 0;  top_k : int >= 1 or None
    rng : np.random.Generator

    Returns
    -------
    int   token id in [0, V)
    """
    z = logits.astype(np.float64)                                                              # (V,)
    if temperature == 0:
        return int(np.argmax(z))
    z = z / temperature                                                                        # (V,)
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= kth, z, -np.inf)                                                     # (V,)
    c = np.cumsum(np.exp(z - z.max()))                                                         # (V,)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), z.size - 1))


def generate(forward, ids, cfg, *, max_new_tokens=100, temperature=1.0, top_k=None, rng=None, stop_id=None):
    """Continue a token sequence autoregressively (each step sees the last block_size tokens).

    Parameters
    ----------
    forward : callable (x (1,t) int64) -> (logits (1,t,V), ...)
    ids : ndarray (t,) int, t >= 1, ids in [0, V)
    cfg : GPTConfig;  max_new_tokens : int >= 0;  temperature : float >= 0;  top_k : int >= 1 or None
    rng : np.random.Generator;  stop_id : int or None   stop (without emitting it) at this id

    Returns
    -------
    new : ndarray (m,) int64, m <= max_new_tokens   the generated ids
    """
    if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.size == 0:
        raise InputError(f"prompt ids must be a non-empty 1-D numpy integer array (t,); got "
                         f"{type(ids).__name__} {getattr(ids, 'shape', '')}")
    check_ids(ids[None, :], cfg.vocab_size, "prompt ids")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens={max_new_tokens!r}; expected an integer >= 0")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise InputError(f"temperature={temperature!r}; expected a finite number >= 0 (0 = greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise InputError(f"top_k={top_k!r}; expected an integer >= 1 or None")
    seq = ids.astype(np.int64)                                                                 # (t,)
    new = []
    for _ in range(max_new_tokens):
        logits = forward(seq[None, -cfg.block_size:])[0]                                       # (1,t',V)
        nxt = next_token(logits[0, -1], temperature, top_k, rng)
        if nxt == stop_id:
            break
        new.append(nxt)
        seq = np.append(seq, nxt)                                                              # (t+1,)
    return np.array(new, dtype=np.int64)                                                       # (m,)


def _prompt_array(prompt_ids):
    """Prompt ids from a list / array; InputError for anything but integers in a 1-D sequence."""
    try:
        arr = np.asarray(prompt_ids)                                                           # (t,)
    except (TypeError, ValueError):
        raise InputError(f"prompt ids {prompt_ids!r} are not a sequence of integers; expected e.g. [12, 7, 300]") from None
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"prompt ids have shape {arr.shape} and dtype {arr.dtype}; expected a non-empty 1-D "
                         "sequence of integer token ids")
    return arr


def sample(ref, *, out="runs", prompt="", prompt_ids=None, max_new_tokens=100, temperature=1.0, top_k=None,
           seed=0, tokenizer=None, stop_at_eot=True) -> dict:
    """Generate text from a base or adapted run; the same seed gives the same text.

    Parameters
    ----------
    ref : run name, run folder or checkpoint folder;  out : run root
    prompt : str   text to continue ("" starts from the end-of-text token)
    prompt_ids : sequence of int or None   token ids instead of ``prompt``
    max_new_tokens : int;  temperature : float (0 greedy);  top_k : int or None
    seed : int   the sampler's RNG seed;  tokenizer : path or None;  stop_at_eot : bool

    Returns
    -------
    dict   job, run, checkpoint, step, method, seed, prompt, completion (new text), text
        (prompt + completion), prompt_ids, new_ids
    """
    m = load_model(ref, out, tokenizer)
    tok, cfg = m["tokenizer"], m["cfg"]
    if prompt_ids is not None and prompt:
        raise InputError("give either a text prompt or prompt ids, not both")
    if prompt_ids is not None:
        ids = _prompt_array(prompt_ids)                                                        # (t,)
    else:
        ids = tok.encode(prompt) if prompt else np.array([tok.eot_id], dtype=np.int64)         # (t,)
    new = generate(m["method"].forward, ids, cfg, max_new_tokens=max_new_tokens,
                   temperature=temperature, top_k=top_k, rng=np.random.default_rng(seed),
                   stop_id=tok.eot_id if stop_at_eot else None)                                # (m,)
    if prompt_ids is not None:
        prompt = tok.decode(ids)
    completion = tok.decode(new)
    return {"job": "sample", "run": None if m["run"] is None else str(m["run"]), "checkpoint": str(m["checkpoint"]),
            "step": int(m["manifest"]["step"]), "method": m["manifest"].get("method", "base"), "seed": seed,
            "prompt": prompt, "completion": completion, "text": prompt + completion,
            "prompt_ids": [int(i) for i in ids], "new_ids": [int(i) for i in new]}


# ----------------------------------------------------------------------------------------------
# bench

def bench(config="tiny", steps=50, warmup=3, threads=2, seed=1234) -> dict:
    """Run benchmarks/bench_train.py (train-step throughput) in a fresh Python and collect its result.

    It runs in its own process because it pins the BLAS thread count before NumPy loads.

    Parameters
    ----------
    config : tiny | small | all;  steps, warmup, threads, seed : int (see the script's --help)

    Returns
    -------
    dict   job, lines (its human-readable output), result (its final JSON line)
    """
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"
    if not script.is_file():
        raise RunError(f"bench needs benchmarks/bench_train.py from a source checkout (not found at {str(script)!r}); "
                       "run alh-ref from a clone of the repository (pip install -e .)")
    cmd = [sys.executable, str(script), "--config", config, "--steps", str(steps), "--warmup", str(warmup),
           "--threads", str(threads), "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RunError(f"benchmarks/bench_train.py failed (exit {proc.returncode}): {err}")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise RunError(f"benchmarks/bench_train.py printed no JSON summary last (got {lines[-1][:80]!r})") from None
    return {"job": "bench", "lines": lines[:-1], "result": result}
