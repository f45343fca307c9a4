"""The torch backend's train step: one process or data parallel (DDP); the loop is alh_ref.train.train's.

    for each step (alh_ref.train.train, driven by alh_ref.runs.driver.fit):
        x, y = sample_batch(tokens, B, T, rng)            the global batch, the same on every rank
        loss = mean CE on rows [rank B/N, (rank+1) B/N)   this rank's disjoint slice   (:func:`step_fn`)
        backward (DDP averages the gradients over the N ranks = the gradient of the global mean)
        divergence check of the loss (mean over the ranks), then the AdamW step (alh_ref.torch.optim)
        rank 0: history.jsonl and a checkpoint every ckpt_every steps (alh_ref.runs.save_state)

Under ``torchrun`` (environment WORLD_SIZE > 1) :func:`setup` starts the process group: gloo on CPU,
nccl on CUDA (one device per process, LOCAL_RANK).
"""
import os

import torch

from ..errors import InputError

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


def step_fn(method, opt, rank, world, dev):
    """The ``loss_and_grads`` of alh_ref.train.train for a TorchMethod, on this rank's slice of the batch.

    method : TorchMethod;  opt : alh_ref.torch.optim.AdamW over method.trainable();  rank, world,
    dev : from :func:`setup`.  Returns ``f(x (B,T) int64, y (B,T) int64) -> (loss, None)``: loss is
    the mean over the global batch (float); the gradients are left in ``p.grad`` for ``opt.step``.
    """
    model = method
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(method, device_ids=[dev.index] if dev.type == "cuda" else None)

    def loss_and_grads(x, y):
        x, y = torch.as_tensor(x, device=dev), torch.as_tensor(y, device=dev)                  # (B,T) global batch
        b = x.shape[0] // world
        ctx = method.context(x)                                                                # alh-shuffled: of the global batch
        sl = slice(rank * b, (rank + 1) * b)
        opt.zero_grad()
        _, loss = model(x[sl], y[sl], None if ctx is None else ctx[sl])                        # mean over the rank's slice
        loss.backward()                                                                        # DDP: gradients averaged
        loss = loss.detach()
        if world > 1:
            torch.distributed.all_reduce(loss)
            loss = loss / world                                                                # mean over the global batch
        return float(loss), None
    return loss_and_grads
