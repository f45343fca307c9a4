"""Training jobs: pretrain a base GPT, or adapt a frozen base with a method; each started or resumed on one path.

A job locks its run folder, builds a :class:`alh_ref.runs.driver.Setup` (fresh, or from the newest
checkpoint on resume), checks the memory estimate, and calls the training driver
:func:`alh_ref.runs.driver.fit` once. What is trained, and how a step runs, is the job's backend's
(:class:`NumpyBackend` here; alh_ref.torch.runs passes its own to the same functions). Resuming
restores parameters, AdamW moments and step count, and the batch sampler's RNG, so the run
continues bit-for-bit (tests/test_runs.py). Seeds: parameters from ``seed``, batches from
``default_rng([seed, 1])`` (pretrain) or ``default_rng([seed, 2])`` (adapt).
"""
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np

from ..alh.adapted import ALHConfig
from ..alh.methods import METHODS, make_method
from ..checkpoint import RESERVED_KEYS
from ..errors import InputError
from ..model import CONFIGS, GPTConfig, decayed, init_params, param_shapes
from ..optim import AdamW
from ..parallel import DataParallel, resolve_threads, resolve_workers
from ..tokenizer import META_FILE, train_bpe
from ..train import gpt_loss_and_grads
from .data import (
    corpus_key,
    find_tokenizer,
    load_split,
    load_splits,
    pick_split,
    small_split_warnings,
    split_sizes,
    stream_tokens,
)
from .driver import Setup, fit
from .folders import (
    TOKENIZER_DIR,
    RunLock,
    list_checkpoints,
    pin_checkpoint,
    read_history,
    resolve_checkpoint,
    run_path,
)
from .loading import (
    RUN_FORMAT_VERSION,
    base_params,
    base_ref,
    load_base,
    load_run_checkpoint,
    method_from_manifest,
    restore,
)
from .memory import available_memory, estimate_step_memory, gib
from .options import (
    ALH_OPTIONS,
    AdaptSpec,
    PretrainSpec,
    Schedule,
    adamw_config,
    as_dict,
    check_known,
    new_options,
    resumed_schedule,
    resumed_spec,
)

SAVE_KEYS = ("step", "opt_t", "rng", "adamw_config")          # manifest keys written at every save


def pretrain(out="runs", name="base", *, resume=False, progress=False, warn=None, threads=None, workers=None,
             backend=None, **given) -> dict:
    """Pretrain a base GPT on a corpus (or resume it), with periodic checkpoints in ``out/name``.

    Parameters
    ----------
    out, name : run root and run name
    resume : bool   continue from the newest checkpoint of ``out/name`` (bit-for-bit)
    progress : bool   tqdm bar with loss and tokens/s
    warn : callable(str) or None   called with each warning as it arises (they are also in the summary)
    threads : int or None   cores the train step uses (None: all): the batch is split into that many
        micro-batches run at once (alh_ref.parallel); 1 is the serial step. Not part of the run's
        identity (a resumed session may use another count; the sums then round differently).
    workers : "threads", "processes" or None (processes where they can be forked: Linux; else threads)
        what runs the micro-batches after the first (alh_ref.parallel); the same maths either way
    backend : None (``NumpyBackend(threads, workers)``) or another backend with the same members (alh_ref.torch.runs)
    **given : the options given (alh_ref.runs.options; left out or None: not given)
        corpus (required for a new run), corpus_opts, errors, tokenizer, the PretrainSpec fields
        (split, vocab_size, config, block_size, n_layer, n_head, n_embd, batch_size, seed), the
        Schedule fields (steps, ckpt_every, keep) and the Optim fields (lr, warmup_steps,
        decay_steps, weight_decay, grad_clip).

    Returns
    -------
    dict   summary: job, run, status, step, target_steps, checkpoint, loss_first, loss_last,
        tokens_per_s, n_params, memory, warnings, kept, tokenizer_sha256, corpus_fingerprint, ...
    """
    check_known(given, PretrainSpec)
    return _job("pretrain", run_path(out, name), out, resume, progress, warn, given,
                backend or NumpyBackend(threads, workers))


def adapt(out="runs", name=None, *, resume=False, progress=False, warn=None, threads=None, workers=None,
          backend=None, **given) -> dict:
    """Adapt a pretrained base to a new corpus with a method (alh-<family> or a baseline), or resume.

    Parameters
    ----------
    out, name : run root and run name (default ``adapt-<method>``)
    resume, progress, warn, threads, workers, backend : as for :func:`pretrain`
    **given : base (a pretrain run name/folder or checkpoint; required for a new run), method
        (alh_ref.alh.methods.METHODS; required), corpus, corpus_opts, errors, tokenizer (default:
        the base run's; must be the same), the AdaptSpec fields, Schedule and Optim fields.

    Returns
    -------
    dict   summary as for :func:`pretrain`, plus method, n_trainable, base
    """
    check_known(given, AdaptSpec)
    if name is None:
        if given.get("method") is None:
            raise InputError("adapt needs --method (or --name of the run to resume)")
        name = f"adapt-{given['method']}"
    return _job("adapt", run_path(out, name), out, resume, progress, warn, given,
                backend or NumpyBackend(threads, workers))


@dataclass
class Trainable:
    """What a backend trains: the tensors a checkpoint holds, their optimiser, and one step's loss and gradients."""

    params: object           # mapping name -> ndarray: the trained tensors as save_state writes them
    opt: object              # .t, .cfg, .step(params, grads) -> (norm, lr), .state_tensors(), .load_state(tensors, t)
    loss_and_grads: object   # (x (B,T) int64, y (B,T) int64) -> (loss float, grads for opt.step)
    n_trainable: int
    n_held: int              # parameters in memory: the base and the method's own tensors
    itemsize: int            # bytes per parameter element


class NumpyBackend:
    """How a job trains with NumPy: alh_ref.alh.methods, alh_ref.optim.AdamW, the step on ``threads`` cores
    (its micro-batches after the first on ``workers``: threads or forked processes, alh_ref.parallel).

    A backend has: ``writer`` (this process writes the run folder), ``init_dtype`` (of a new base's
    init_params), ``make_method`` (as alh_ref.alh.methods.make_method), ``base(params, cfg, acfg,
    spec)`` and ``adapter(method, base, acfg, spec)`` -> :class:`Trainable`, ``restore(arrays, meta,
    trainable)`` -> the sampler RNG, and ``run(rd, job, setup, progress, notes)`` -> the summary.
    """

    writer, init_dtype = True, np.float32
    make_method = staticmethod(make_method)

    def __init__(self, threads=None, workers=None):
        self.threads = resolve_threads(threads)
        self.workers = resolve_workers(workers)

    def base(self, params, cfg, acfg, spec):
        n = int(sum(a.size for a in params.values()))
        return Trainable(params, AdamW(params, list(param_shapes(cfg)), acfg, decayed),
                         lambda x, y: gpt_loss_and_grads(params, cfg, x, y), n, n, params["wte"].itemsize)

    def adapter(self, method, base, acfg, spec):
        n_own = sum(a.size for k, a in method.params.items() if base.get(k) is not a)       # not a base tensor itself
        return Trainable(method.params, AdamW(method.params, list(method.params), acfg, method.decay),
                         method.loss_and_grads, method.n_trainable,
                         int(sum(a.size for a in base.values())) + int(n_own), base["wte"].itemsize)

    def restore(self, arrays, meta, tr):
        return restore(arrays, meta, tr.params, tr.opt)

    def run(self, rd, job, setup, progress, notes):
        split = setup.info.get("method") != "alh-shuffled"          # its contexts come from other sequences of the batch
        setup.info["threads"] = self.threads
        setup.info["workers"] = self.workers if self.threads > 1 and split else None   # None: one call, no workers
        with DataParallel(setup.loss_and_grads, self.threads, split, self.workers, setup.params) as step:
            setup.loss_and_grads = step
            return fit(rd, job, setup, progress, notes)


def _job(job, rd, out, resume, progress, warn, given, backend):
    """The one start-or-resume path: lock (the writing process), set up, check memory, train (backend.run)."""
    notes = []

    def note(msg):
        notes.append(msg)
        if warn is not None:
            warn(msg)

    with RunLock(rd) if backend.writer else nullcontext() as lock:
        if lock is not None and lock.stale_pid is not None:
            note(f"took over the lock of {str(rd)!r} left by pid {lock.stale_pid}, which is no longer running")
        saved = _saved(rd, job, given, resume)
        setup = (_pretrain_setup if job == "pretrain" else _adapt_setup)(rd, out, given, saved, note, backend)
        _check_memory(setup)
        if setup.new_tokenizer is not None and backend.writer:
            setup.new_tokenizer.save(rd / TOKENIZER_DIR)
        return backend.run(rd, job, setup, progress, notes)


def _saved(rd, job, given, resume):
    """(arrays, manifest, cfg, tokenizer) of the newest checkpoint to resume, or None for a new run."""
    ckpts = list_checkpoints(rd)
    if not resume:
        if ckpts:
            raise InputError(f"run {str(rd)!r} already has checkpoints; pass --resume to continue it, "
                             "or choose another --name")
        return None
    if not ckpts:
        raise InputError(f"nothing to resume: {str(rd)!r} has no checkpoint; run without --resume to start it")
    tok = find_tokenizer(given.get("tokenizer") or rd)
    try:
        arrays, meta, cfg = load_run_checkpoint(ckpts[-1][1], tok.sha256, ("base" if job == "pretrain" else "adapt",))
    except InputError as e:
        if len(ckpts) > 1:
            raise InputError(f"{e} (delete {str(ckpts[-1][1])!r} to resume from {str(ckpts[-2][1])!r})") from None
        raise
    return arrays, meta, cfg, tok


# ----------------------------------------------------------------------------------------------
# Set-ups

def model_config(vocab_size, config="tiny", block_size=None, n_layer=None, n_head=None, n_embd=None) -> GPTConfig:
    """A GPTConfig from a preset (alh_ref.model.CONFIGS) with some dimensions replaced (None: the preset's)."""
    if config not in CONFIGS:
        raise InputError(f"model config {config!r} is unknown; expected one of {', '.join(CONFIGS)}")
    p = CONFIGS[config]
    pick = lambda v, d: d if v is None else v  # noqa: E731
    return GPTConfig(vocab_size=vocab_size, block_size=pick(block_size, p.block_size), n_layer=pick(n_layer, p.n_layer),
                     n_head=pick(n_head, p.n_head), n_embd=pick(n_embd, p.n_embd))


def _new_data(given, split, note):
    """The training split of a new run, and a function giving the manifest's corpus entry for a tokenizer."""
    corpus, copts, errors = given["corpus"], given.get("corpus_opts"), given.get("errors") or "strict"
    whole, parts = load_splits(corpus, copts, errors)
    data = pick_split(whole, parts, split, corpus)

    def corpus_meta(tok, tokens, T):
        sizes = split_sizes(tok, parts)
        for w in small_split_warnings(sizes, T, split):
            note(w)
        return {"name": corpus_key(corpus), "opts": copts or {}, "errors": errors, "split": split,
                "n_documents": len(data.documents), "n_tokens": int(tokens.shape[0]), "splits": sizes}
    return data, corpus_meta


def _resume_tokens(given, meta, tok, T):
    """Reload the training split of a resumed run and check it is the same text."""
    c = meta["corpus"]
    corpus = given["corpus"] if given.get("corpus") is not None else c["name"]
    copts = given["corpus_opts"] if given.get("corpus_opts") is not None else c["opts"]
    data = load_split(corpus, copts, c["split"], given.get("errors") or c.get("errors", "strict"))
    if data.fingerprint != meta["corpus_fingerprint"]:
        raise InputError(f"corpus mismatch: this run was trained on corpus fingerprint "
                         f"{meta['corpus_fingerprint'][:12]}…, {corpus!r} ({c['split']}) now has "
                         f"{data.fingerprint[:12]}…; restore the original text or start a new run")
    return stream_tokens(tok, data, T)


def _warmup_note(cfg, given, note):
    if given.get("warmup_steps") is None and cfg.warmup_steps >= cfg.total_steps:
        note(f"the default warmup of {cfg.warmup_steps} steps is not below the schedule's {cfg.total_steps} steps: "
             f"the learning rate peaks at {cfg.total_steps}/{cfg.warmup_steps} of --lr; pass --warmup-steps to change it")


def _manifest(kind, cfg, tok, data, corpus_meta, spec):
    return {"run_format_version": RUN_FORMAT_VERSION, "kind": kind, "gpt_config": cfg.to_dict(),
            "tokenizer_sha256": tok.sha256, "corpus_fingerprint": data.fingerprint, "corpus": corpus_meta,
            "options": as_dict(spec)}


def _saved_manifest(meta):
    """The run metadata of a loaded checkpoint, without what save_checkpoint / save_state add."""
    return {k: v for k, v in meta.items() if k not in RESERVED_KEYS and k not in SAVE_KEYS}


def _pretrain_tokenizer(rd, tokenizer, vocab_size, data, preset):
    """A new base run's tokenizer: --tokenizer; else a BPE of --vocab-size; else rd/tokenizer if there; else the preset's V."""
    own = rd / TOKENIZER_DIR
    if tokenizer is not None:
        if vocab_size is not None:
            raise InputError("give either --tokenizer (use an existing tokenizer) or --vocab-size (train one), not both")
        return find_tokenizer(tokenizer)
    if vocab_size is None and (own / META_FILE).is_file():
        return find_tokenizer(own)
    return train_bpe(data.documents, CONFIGS[preset].vocab_size if vocab_size is None else vocab_size)


def _pretrain_setup(rd, out, given, saved, note, backend) -> Setup:
    if saved is None:
        if given.get("corpus") is None:
            raise InputError("pretrain needs a corpus: --corpus NAME|PATH (a built-in name or your text file)")
        spec, schedule = new_options(PretrainSpec, given), new_options(Schedule, given)
        data, corpus_meta = _new_data(given, spec.split, note)
        tok = _pretrain_tokenizer(rd, given.get("tokenizer"), spec.vocab_size, data, spec.config)
        cfg = model_config(tok.n_vocab, spec.config, spec.block_size, spec.n_layer, spec.n_head, spec.n_embd)
        spec = replace(spec, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd)
        tokens = stream_tokens(tok, data, cfg.block_size)                                      # (n,)
        acfg = adamw_config(given, schedule.steps)
        _warmup_note(acfg, given, note)
        manifest = _manifest("base", cfg, tok, data, corpus_meta(tok, tokens, cfg.block_size), spec)
        params = init_params(cfg, seed=spec.seed, dtype=backend.init_dtype)                    # name -> param_shapes(cfg)
        rng, history = np.random.default_rng([spec.seed, 1]), []
    else:
        arrays, meta, cfg, tok = saved
        spec = resumed_spec(PretrainSpec, given, meta["options"])
        schedule = resumed_schedule(given, meta)
        tokens = _resume_tokens(given, meta, tok, cfg.block_size)                              # (n,)
        acfg = adamw_config(given, schedule.steps, meta["adamw_config"])
        manifest, params, history = _saved_manifest(meta), base_params(arrays, cfg), read_history(rd, meta["step"])
    tr = backend.base(params, cfg, acfg, spec)
    if saved is not None:
        rng = backend.restore(saved[0], saved[1], tr)
    info = {"n_params": tr.n_trainable, "gpt_config": cfg.to_dict(), **_resumed(saved)}
    return Setup(tr.params, tr.opt, tr.loss_and_grads, tokens, spec.batch_size, cfg.block_size, rng, schedule,
                 manifest, history, info, estimate_step_memory(cfg, spec.batch_size, tr.n_held, tr.n_trainable,
                                                               tr.itemsize), tok if saved is None else None)


def _check_method_options(method, given):
    """Method must exist; hypernetwork options only for methods with a hypernetwork, lora_rank only for LoRA."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    wrong = [k for k in ALH_OPTIONS if given.get(k) is not None and not _has_hypernetwork(method)]
    if given.get("lora_rank") is not None and method != "lora-embed":
        wrong.append("lora_rank")
    if wrong:
        raise InputError(f"--{wrong[0].replace('_', '-')} does not apply to method {method!r}; hypernetwork options "
                         "go with alh-*/static-*/side, --lora-rank with lora-embed")


def _has_hypernetwork(method):
    return method.startswith(("alh-", "static-")) or method == "side"


def _pin(base_ckpt, rd, note):
    """Pin the base checkpoint in its run folder, so pruning that run never deletes it."""
    try:
        pin_checkpoint(base_ckpt, rd)
    except (OSError, InputError) as e:
        note(f"could not pin the base checkpoint {str(base_ckpt)!r} ({getattr(e, 'strerror', None) or e}): "
             "continuing its pretraining with a small --keep may delete it")


def _adapt_setup(rd, out, given, saved, note, backend) -> Setup:
    if saved is None:
        for k, flag in (("base", "--base RUN_OR_CKPT"), ("method", "--method NAME"), ("corpus", "--corpus NAME|PATH")):
            if given.get(k) is None:
                raise InputError(f"adapt needs {flag}")
        _check_method_options(given["method"], given)
        spec, schedule = new_options(AdaptSpec, given), new_options(Schedule, given)
        base_ckpt, base_rd = resolve_checkpoint(given["base"], out)
        if given.get("tokenizer") is None and base_rd is None:
            raise InputError(f"cannot find the tokenizer of {str(base_ckpt)!r} (not inside a run folder); pass --tokenizer")
        tok = find_tokenizer(given.get("tokenizer") or base_rd)
        if backend.writer:
            _pin(base_ckpt, rd, note)              # before reading it: a prune of the base run now spares it
        arrays, bmeta, cfg = load_run_checkpoint(base_ckpt, tok.sha256, ("base",))
        base = base_params(arrays, cfg)
        data, corpus_meta = _new_data(given, spec.split, note)
        tokens = stream_tokens(tok, data, cfg.block_size)                                      # (n,)
        alh = spec.alh_config()
        method = backend.make_method(spec.method, base, cfg, alh, seed=spec.seed, lora_rank=spec.lora_rank)
        acfg = adamw_config(given, schedule.steps)
        _warmup_note(acfg, given, note)
        manifest = _manifest("adapt", cfg, tok, data, corpus_meta(tok, tokens, cfg.block_size), spec)
        manifest.update(method=spec.method, alh_config=alh.to_dict(), base=base_ref(base_ckpt, bmeta, rd))
        rng, history = np.random.default_rng([spec.seed, 2]), []
    else:
        arrays, meta, cfg, tok = saved
        spec = resumed_spec(AdaptSpec, given, meta["options"])
        schedule = resumed_schedule(given, meta)
        override = None if given.get("base") is None else resolve_checkpoint(given["base"], out)[0]
        base, _, found = load_base(meta["base"], rd, tok.sha256, override)
        manifest = _saved_manifest(meta)
        manifest["base"] = base_ref(found, meta["base"], rd)                                   # --base: a moved base
        if backend.writer:
            _pin(found, rd, note)
        tokens = _resume_tokens(given, meta, tok, cfg.block_size)                              # (n,)
        method = method_from_manifest(meta, base, cfg, backend.make_method)
        alh = ALHConfig(**meta["alh_config"])
        acfg = adamw_config(given, schedule.steps, meta["adamw_config"])
        history = read_history(rd, meta["step"])
    tr = backend.adapter(method, base, acfg, spec)
    if saved is not None:
        rng = backend.restore(saved[0], saved[1], tr)
    info = {"method": spec.method, "n_trainable": tr.n_trainable, "base": manifest["base"]["path"], **_resumed(saved)}
    hyper = alh if _has_hypernetwork(spec.method) else None
    memory = estimate_step_memory(cfg, spec.batch_size, tr.n_held, tr.n_trainable, tr.itemsize, hyper,
                                  2 if alh.site == "both" else 1)
    return Setup(tr.params, tr.opt, tr.loss_and_grads, tokens, spec.batch_size, cfg.block_size, rng, schedule,
                 manifest, history, info, memory, tok if saved is None else None)


def _resumed(saved):
    return {} if saved is None else {"resumed_from": int(saved[1]["step"])}


def _check_memory(setup):
    """Refuse a run whose step would not fit in the machine's available memory (alh_ref.runs.memory)."""
    avail, source = available_memory()
    est = setup.memory
    setup.info["memory"] = dict(est, available=avail, available_source=source)
    if avail is not None and est["total"] > avail:
        raise InputError(f"this run needs an estimated {gib(est['total'])} per training step (activations "
                         f"{gib(est['activations'])}, parameters {gib(est['parameters'])}, optimizer "
                         f"{gib(est['optimizer'])}) but the machine has {gib(avail)} available ({source}); "
                         "use a smaller --batch-size or --block-size")
