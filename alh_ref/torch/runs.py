"""pretrain / adapt / eval with the torch port, on the run folders and checkpoints of alh_ref.runs.

``pretrain`` and ``adapt`` are ``alh_ref.runs.pretrain`` / ``adapt`` with :class:`TorchBackend`:
the one job path of alh_ref.runs.jobs (the run-folder lock, the options and how --resume resolves
them, corpus and tokenizer, the manifest, pins, the memory check) and its training driver (the
divergence check before each save, history, pruning, summary, failure messages). Only the model,
the optimiser and the step are torch's (alh_ref.torch.methods, .optim, .train). So a run written
here is a run of ``alh-ref``: ``alh-ref eval`` reads what this module trains, either backend
resumes the other's runs, and the same command gives the same run on both to float32 rounding.
``evaluate`` is ``alh_ref.runs.evaluate`` with the torch forward pass.
"""
import numpy as np
import torch

from .. import runs
from ..checkpoint import _check_shapes, rng_from_json
from ..errors import InputError
from ..runs.driver import fit
from ..runs.jobs import Trainable
from ..runs.loading import method_from_manifest
from .methods import TrainedArrays, load_trainable, make_method
from .optim import AdamW
from .train import setup, step_fn


class TorchBackend:
    """How alh_ref.runs.jobs trains with torch (the members of alh_ref.runs.jobs.NumpyBackend).

    device : "cpu" | "cuda";  dtype : "float32" | "float64".  Under torchrun only rank 0 is the
    ``writer`` (it holds the run-folder lock and writes the tokenizer, pins and checkpoints).
    """

    init_dtype = np.float64                     # a new base: the NumPy init in float64, then cast to ``dtype``

    def __init__(self, device="cpu", dtype="float32"):
        self.rank, self.world, self.dev, self.dt = setup(device, dtype)
        self.dtype, self.writer = dtype, self.rank == 0

    def make_method(self, name, base, cfg, acfg=None, seed=0, lora_rank=4):
        """A TorchMethod on this backend's device and dtype (alh_ref.torch.methods.make_method)."""
        return make_method(name, base, cfg, acfg, seed=seed, lora_rank=lora_rank, dtype=self.dt, device=self.dev)

    def base(self, params, cfg, acfg, spec):
        """Pretraining: every base tensor trained ("full-ft" of the base)."""
        return self.adapter(self.make_method("full-ft", params, cfg), params, acfg, spec)

    def adapter(self, method, base, acfg, spec):
        if spec.batch_size % self.world:
            raise InputError(f"--batch-size {spec.batch_size} is not divisible by the {self.world} processes; "
                             f"expected a multiple of {self.world}")
        trained = method.train().trainable()
        opt = AdamW(trained, acfg, method.decay)
        return Trainable(TrainedArrays(method), opt, step_fn(method, opt, self.rank, self.world, self.dev),
                         int(sum(p.numel() for p in trained.values())), int(sum(p.numel() for p in method.parameters())),
                         torch.empty((), dtype=self.dt).element_size())

    def restore(self, arrays, meta, tr):
        """Saved trainable tensors and AdamW state into the method and optimiser; returns the sampler RNG."""
        shapes = {n: tuple(p.shape) for n, p in tr.params.method.trainable().items()}
        shapes.update({"opt." + k: a.shape for k, a in tr.opt.state_tensors().items()})
        _check_shapes(arrays, shapes)
        load_trainable(tr.params.method, arrays)
        tr.opt.load_state({k[4:]: a for k, a in arrays.items() if k.startswith("opt.")}, meta["opt_t"])
        return rng_from_json(meta["rng"])

    def run(self, rd, job, setup, progress, notes):
        setup.info.update(backend="torch", device=str(self.dev), dtype=self.dtype, world_size=self.world)
        s = fit(rd, job, setup, progress and self.writer, notes, self.writer)
        return dict(s, history=[r["loss"] for r in setup.history])


def pretrain(out="runs", name="base", *, resume=False, progress=False, warn=None, device="cpu", dtype="float32",
             **given):
    """Pretrain a base GPT with the torch port into ``out/name``, or resume it (as alh_ref.runs.pretrain).

    Returns the summary dict of ``alh-ref pretrain``, plus backend, device, dtype, world_size and
    history (the loss of every step of the run).
    """
    return runs.pretrain(out, name, resume=resume, progress=progress, warn=warn,
                         backend=TorchBackend(device, dtype), **given)


def adapt(out="runs", name=None, *, resume=False, progress=False, warn=None, device="cpu", dtype="float32", **given):
    """Adapt a pretrained base (a run of either backend) with the torch port, or resume (as alh_ref.runs.adapt)."""
    return runs.adapt(out, name, resume=resume, progress=progress, warn=warn, backend=TorchBackend(device, dtype),
                      **given)


def to_torch(m, backend):
    """The method of a loaded run (the dict of alh_ref.runs.load_model) as a TorchMethod in eval mode on
    ``backend``'s device and dtype: a base run the frozen "none" method, an adapted run its method
    (alh_ref.runs.loading.method_from_manifest) with its trained tensors."""
    meta, npm, cfg = m["manifest"], m["method"], m["cfg"]
    if meta["kind"] == "base":
        tm = backend.make_method("none", npm.base, cfg)
    else:
        tm = method_from_manifest(meta, npm.base, cfg, backend.make_method)
    load_trainable(tm, npm.params)
    return tm.eval()


def evaluate(ref, *, out="runs", corpus=None, corpus_opts=None, split="val", batch_size=16, max_tokens=None,
             tokenizer=None, progress=False, errors=None, device="cpu", dtype="float32"):
    """Mean next-token loss of a run (either backend's) with the torch port: ``alh_ref.runs.evaluate``
    (the same windows, options and result, saved in the run's eval/ folder) with the torch forward
    pass, plus backend, device and dtype."""
    backend = TorchBackend(device, dtype)

    def forward(m):
        tm = to_torch(m, backend)

        @torch.no_grad()
        def f(x, y):                                                                       # (b,T), (b,T) int64
            logits, loss = tm(torch.as_tensor(x, device=backend.dev), torch.as_tensor(y, device=backend.dev))
            return logits, float(loss), None
        return f
    s = runs.evaluate(ref, out=out, corpus=corpus, corpus_opts=corpus_opts, split=split, batch_size=batch_size,
                      max_tokens=max_tokens, tokenizer=tokenizer, progress=progress, errors=errors, forward=forward)
    return dict(s, backend="torch", device=str(backend.dev), dtype=dtype)
