"""The torch backend's training loop: one process or data parallel (DDP), rank 0 writes the run folder.

    for each step:  x, y = sample_batch(tokens, B, T, rng)          the global batch, the same on every rank
                    loss = mean CE on rows [rank B/N, (rank+1) B/N)   this rank's disjoint slice
                    backward (DDP averages the gradients over the N ranks = the gradient of the global mean)
                    AdamW step (clip, schedule, update: alh_ref.torch.optim)
                    rank 0: history.jsonl and a checkpoint every ckpt_every steps (alh_ref.runs.save_state)

Under ``torchrun`` (environment WORLD_SIZE > 1) :func:`setup` starts the process group: gloo on CPU,
nccl on CUDA (one device per process, LOCAL_RANK).
"""
import json
import math
import os
import time
from pathlib import Path

import torch

from ..errors import InputError, RunError
from ..io_utils import atomic_write_json, atomic_write_text
from ..runs import list_checkpoints, save_state
from ..runs.folders import prune
from ..train import sample_batch
from .methods import trainable_numpy

DTYPES = {"float32": torch.float32, "float64": torch.float64}


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


def fit(rd, job, method, opt, tokens, o, s, rng, manifest, info, progress, rank, world, dev, history=()):
    """Train from step ``opt.t`` to ``s["steps"]`` (global batch o["batch_size"] over ``world`` ranks); rank 0 writes.

    method : TorchMethod;  opt : alh_ref.torch.optim.AdamW over method.trainable();  tokens : ndarray (n,)
    int;  o, s : the run's and the session's options;  rng : the batch sampler;  manifest : run metadata
    saved with every checkpoint;  info : extra summary fields;  rank, world, dev : from :func:`setup`;
    history : records of the steps already done (a resumed run).

    Returns the summary dict, written to rd/summary.json on rank 0.
    """
    B, T = o["batch_size"], method.bcfg.block_size
    if B % world:
        raise InputError(f"--batch-size {B} is not divisible by the {world} processes; expected a multiple of {world}")
    b = B // world
    model = method
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(method, device_ids=[dev.index] if dev.type == "cuda" else None)
    history, start, t0 = list(history), opt.t, time.perf_counter()
    ckpts = list_checkpoints(rd)
    last = ckpts[-1][1] if ckpts else None
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=s["steps"] - start, unit="step", dynamic_ncols=True)
    try:
        for _ in range(s["steps"] - start):
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
                prune(rd, s["keep"])                       # spares checkpoints other runs pin (runs/folders.py)
    finally:
        if bar is not None:
            bar.close()
    sec = time.perf_counter() - t0
    out = dict(info, job=job, run=str(rd), status="done", step=opt.t, target_steps=s["steps"],
               checkpoint=None if last is None else str(last), steps_this_session=opt.t - start,
               loss_first=history[0]["loss"] if history else None, loss_last=history[-1]["loss"] if history else None,
               elapsed_s=round(sec, 3), tokens_per_s=round((opt.t - start) * B * T / sec, 1) if opt.t > start else None,
               tokenizer_sha256=manifest["tokenizer_sha256"], corpus_fingerprint=manifest["corpus_fingerprint"],
               backend="torch", device=str(dev), dtype=str(next(iter(opt.params.values())).dtype).replace("torch.", ""),
               world_size=world, history=[r["loss"] for r in history])
    if rank == 0:
        atomic_write_json(Path(rd) / "summary.json", {k: v for k, v in out.items() if k != "history"})
    return out


