"""pretrain / adapt / eval with the torch port, on the run folders and checkpoints of alh_ref.runs.

A run written here is a run of ``alh-ref``: the same folder layout (tokenizer/, checkpoints/step-N/,
history.jsonl, summary.json), the same checkpoint files (``alh_ref.runs.save_state`` writes them,
through alh_ref.checkpoint: safetensors + manifest, validated, atomic), the same manifest keys, the
same seeded initialisation (from the NumPy methods) and the same batch sampler
(``alh_ref.train.sample_batch`` on ``default_rng([seed, 1])`` / ``[seed, 2]``). So
``alh-ref eval`` reads what this module trains, and the other way round.

Data parallel: under ``torchrun --nproc_per_node N`` (environment WORLD_SIZE > 1) every rank draws
the same global batch of B sequences from the same RNG and takes its own slice of B/N of them;
DistributedDataParallel averages the gradients, which equals the gradient of the global mean loss,
so N processes follow the 1-process run to rounding. Only rank 0 writes files.
"""
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..alh.adapted import ALHConfig
from ..corpora import BUILTIN_CORPORA
from ..errors import InputError, RunError
from ..io_utils import atomic_write_json, atomic_write_text
from ..model import CONFIGS, init_params
from ..optim import AdamWConfig
from ..runs import (find_tokenizer, list_checkpoints, load_model, load_split, model_config, run_path, save_state,
                    stream_tokens)
from ..tokenizer import train_bpe
from ..train import sample_batch
from .methods import load_trainable, make_method, trainable_numpy
from .optim import AdamW

DTYPES = {"float32": torch.float32, "float64": torch.float64}
RUN_FORMAT_VERSION = 1
# The options that fix a run, with the defaults of ``alh-ref pretrain`` / ``alh-ref adapt``.
PRETRAIN_OPTIONS = {"split": "train", "vocab_size": None, "config": "tiny", "block_size": None, "n_layer": None,
                    "n_head": None, "n_embd": None, "batch_size": 16, "seed": 0}
_A = ALHConfig()
ADAPT_OPTIONS = {"method": None, "split": "train", "batch_size": 16, "seed": 0, "encoder": _A.encoder,
                 "site": _A.site, "out_context": _A.out_context, "D": _A.D, "hyper_layers": _A.n_layer,
                 "hyper_heads": _A.n_head, "K": _A.K, "R": _A.R, "lora_rank": 4}
SESSION = {"steps": 200, "ckpt_every": 50, "keep": 3}


def setup(device="cpu", dtype="float32"):
    """(rank, world, torch.device, torch dtype); starts the process group under torchrun (gloo on CPU, nccl on CUDA)."""
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}; expected float32 or float64")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch finds no CUDA device here; use --device cpu")
        torch.backends.cuda.matmul.allow_tf32 = False
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0)
        torch.cuda.set_device(dev)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise InputError(f"--device {device!r}; expected cpu or cuda")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev, DTYPES[dtype]


def _resolve(given, defaults):
    return {k: (d if given.get(k) is None else given[k]) for k, d in defaults.items()}


def _adamw(opts, steps):
    d = AdamWConfig()
    pick = lambda k, v: v if opts.get(k) is None else opts[k]  # noqa: E731
    return AdamWConfig(lr=pick("lr", d.lr), warmup_steps=pick("warmup_steps", d.warmup_steps),
                       weight_decay=pick("weight_decay", d.weight_decay), grad_clip=pick("grad_clip", d.grad_clip),
                       total_steps=pick("decay_steps", steps))


def _corpus_meta(opts, split, data, tokens):
    name = str(opts["corpus"])
    return {"name": name if name in BUILTIN_CORPORA else str(Path(name).resolve()), "opts": opts.get("corpus_opts") or {},
            "split": split, "n_documents": len(data.documents), "n_tokens": int(tokens.shape[0])}


def _new_run(out, name, opts):
    rd = run_path(out, name)
    if opts.get("resume"):
        raise InputError("the torch backend does not resume runs; resume with alh-ref (same folder), or start a new --name")
    if list_checkpoints(rd):
        raise InputError(f"run {str(rd)!r} already has checkpoints; choose another --name")
    if opts.get("corpus") is None:
        raise InputError("this job needs a corpus: --corpus NAME|PATH")
    return rd


def pretrain(out="runs", name="base", *, progress=False, device="cpu", dtype="float32", **opts):
    """Pretrain a base GPT with the torch port into ``out/name`` (options as alh_ref.runs.pretrain).

    Returns the summary dict (as ``alh-ref pretrain --json``), plus device, dtype, world_size.
    """
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
                "corpus": _corpus_meta(opts, o["split"], data, tokens), "options": o, "target_steps": s["steps"]}
    if rank == 0:
        tok.save(rd / "tokenizer")
    info = {"n_params": int(sum(a.size for a in base.values())), "gpt_config": cfg.to_dict()}
    return fit(rd, "pretrain", method, tokens, o, s, _adamw(opts, s["steps"]), np.random.default_rng([o["seed"], 1]),
               manifest, info, progress, rank, world, dev)


def adapt(out="runs", name=None, *, progress=False, device="cpu", dtype="float32", **opts):
    """Adapt a pretrained base (a run of either backend) with the torch port (options as alh_ref.runs.adapt)."""
    rank, world, dev, dt = setup(device, dtype)
    if opts.get("method") is None:
        raise InputError("adapt needs --method NAME")
    name = name or f"adapt-{opts['method']}"
    rd = _new_run(out, name, opts)
    if opts.get("base") is None:
        raise InputError("adapt needs --base RUN_OR_CKPT")
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
                "method": o["method"], "alh_config": acfg.to_dict(),
                "base": {"path": str(p), "relpath": os.path.relpath(p, Path(rd).resolve()), "step": int(bmeta["step"]),
                         "safetensors_sha256": bmeta["safetensors_sha256"]}}
    if rank == 0:
        tok.save(rd / "tokenizer")
    info = {"method": o["method"], "n_trainable": int(sum(p.numel() for p in method.trainable().values())),
            "base": str(p)}
    return fit(rd, "adapt", method, tokens, o, s, _adamw(opts, s["steps"]), np.random.default_rng([o["seed"], 2]),
               manifest, info, progress, rank, world, dev)


def fit(rd, job, method, tokens, o, s, ocfg, rng, manifest, info, progress, rank, world, dev):
    """Train ``s["steps"]`` steps (global batch o["batch_size"], split over ``world`` ranks); rank 0 writes.

    method : TorchMethod;  tokens : ndarray (n,) int;  o, s : the run's and the session's options;
    ocfg : AdamWConfig;  rng : the batch sampler;  manifest : run metadata saved with every checkpoint;
    info : extra summary fields;  rank, world, dev : from :func:`setup`.

    Returns the summary dict, written to rd/summary.json on rank 0.
    """
    B, T = o["batch_size"], method.bcfg.block_size
    if B % world:
        raise InputError(f"--batch-size {B} is not divisible by the {world} processes; expected a multiple of {world}")
    b = B // world
    model = method
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(method, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = AdamW(method.trainable(), ocfg, method.decay)
    history, last, t0 = [], None, time.perf_counter()
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=s["steps"], unit="step", dynamic_ncols=True)
    try:
        for _ in range(s["steps"]):
            ts = time.perf_counter()
            x, y = sample_batch(tokens, B, T, rng)                                             # (B,T) global batch
            x, y = torch.as_tensor(x, device=dev), torch.as_tensor(y, device=dev)
            ctx = method.context(x)                                                            # alh-shuffled: of the global batch
            sl = slice(rank * b, (rank + 1) * b)
            opt.zero_grad()
            _, loss = model(x[sl], y[sl], None if ctx is None else ctx[sl])                    # mean over the rank's slice
            loss.backward()                                                                    # DDP: gradients averaged
            loss = loss.detach()
            if world > 1:
                torch.distributed.all_reduce(loss)
                loss = loss / world                                                            # mean over the global batch
            loss = float(loss)
            if not math.isfinite(loss):
                raise RunError(f"loss became {loss} at step {opt.t}; stopping (lower the learning rate)")
            norm, lr = opt.step()
            rec = {"step": opt.t, "loss": loss, "grad_norm": norm, "lr": lr, "dt": time.perf_counter() - ts}
            history.append(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{B * T / rec['dt']:,.0f}")
            if rank == 0 and (opt.t % s["ckpt_every"] == 0 or opt.t == s["steps"]):
                atomic_write_text(Path(rd) / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))
                last = save_state(rd, opt.t, trainable_numpy(method), opt, rng, manifest)
                if s["keep"]:
                    for _, old in list_checkpoints(rd)[:-s["keep"]]:
                        shutil.rmtree(old, ignore_errors=True)
    finally:
        if bar is not None:
            bar.close()
    sec = time.perf_counter() - t0
    out = dict(info, job=job, run=str(rd), status="done", step=opt.t, target_steps=s["steps"],
               checkpoint=None if last is None else str(last), steps_this_session=len(history),
               loss_first=history[0]["loss"] if history else None, loss_last=history[-1]["loss"] if history else None,
               elapsed_s=round(sec, 3), tokens_per_s=round(len(history) * B * T / sec, 1) if history else None,
               tokenizer_sha256=manifest["tokenizer_sha256"], corpus_fingerprint=manifest["corpus_fingerprint"],
               backend="torch", device=str(dev), dtype=str(next(iter(opt.params.values())).dtype).replace("torch.", ""),
               world_size=world, history=[r["loss"] for r in history])
    if rank == 0:
        atomic_write_json(Path(rd) / "summary.json", {k: v for k, v in out.items() if k != "history"})
    return out


def load_method(ref, out="runs", tokenizer=None, device="cpu", dtype="float32"):
    """A run of either backend (base or adapted) as a TorchMethod, with alh_ref.runs.load_model's checks.

    Returns the dict of ``load_model`` with "method" replaced by the TorchMethod (eval mode).
    """
    _, _, dev, dt = setup(device, dtype)
    m = load_model(ref, out, tokenizer)
    meta, cfg, npm = m["manifest"], m["cfg"], m["method"]
    name = meta.get("method", "none")
    acfg = ALHConfig(**meta["alh_config"]) if meta.get("alh_config") else None
    o = meta.get("options", {})
    tm = make_method(name, npm.base, cfg, acfg, seed=o.get("seed", 0), lora_rank=o.get("lora_rank", 4), dtype=dt, device=dev)
    load_trainable(tm, npm.params)
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
