"""Run options as frozen dataclasses: what fixes a run, how it is optimised, how it is checkpointed.

A job's keyword arguments are split three ways, and each kind is resolved differently on ``--resume``:

    PretrainSpec / AdaptSpec   identity: data split, model, method, batch size, seed. A resumed run
                               keeps the saved values; giving a different one is an InputError.
    Optim                      AdamW and its schedule; the saved values, with the given ones replacing them.
    Schedule                   steps (total), ckpt_every, keep; the saved values (a run remembers its
                               own --ckpt-every and --keep), with the given ones replacing them.

Keyword arguments left out (or passed as None) are "not given". The defaults are the dataclass
field defaults; the CLI states them in its help texts and choices, and tests/test_runs.py pins
those to these tables.
"""
from dataclasses import asdict, dataclass, fields, replace

from ..alh.adapted import ALHConfig
from ..corpora import SPLITS
from ..errors import InputError
from ..optim import AdamWConfig

SPLIT_CHOICES = SPLITS + ("all",)
ERRORS_CHOICES = ("strict", "replace")
SOURCES = ("corpus", "corpus_opts", "errors", "tokenizer", "base")   # checked by fingerprint / sha256, not value
_A = ALHConfig()


@dataclass(frozen=True)
class Schedule:
    """Steps and checkpointing: total steps, a checkpoint every ``ckpt_every``, the newest ``keep`` kept (0: all)."""

    steps: int = 200
    ckpt_every: int = 50
    keep: int = 3


@dataclass(frozen=True)
class Optim:
    """AdamW with linear warmup and cosine decay over ``decay_steps`` (None: the run's ``steps``)."""

    lr: float = AdamWConfig.lr
    warmup_steps: int = AdamWConfig.warmup_steps
    decay_steps: int | None = None
    weight_decay: float = AdamWConfig.weight_decay
    grad_clip: float = AdamWConfig.grad_clip


@dataclass(frozen=True)
class PretrainSpec:
    """What a base run is (None dimensions: the preset's)."""

    split: str = "train"
    vocab_size: int | None = None
    config: str = "tiny"
    block_size: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    batch_size: int = 16
    seed: int = 0


@dataclass(frozen=True)
class AdaptSpec:
    """What an adapted run is: the method and its hypernetwork (alh_ref.alh.adapted.ALHConfig)."""

    method: str | None = None
    split: str = "train"
    batch_size: int = 16
    seed: int = 0
    encoder: str = _A.encoder
    site: str = _A.site
    out_context: str = _A.out_context
    D: int = _A.D
    hyper_layers: int = _A.n_layer
    hyper_heads: int = _A.n_head
    K: int = _A.K
    R: int = _A.R
    lora_rank: int = 4

    def alh_config(self) -> ALHConfig:
        """The ALHConfig of these options (the family comes from the method name, in make_method)."""
        return ALHConfig(encoder=self.encoder, site=self.site, out_context=self.out_context, D=self.D,
                         n_layer=self.hyper_layers, n_head=self.hyper_heads, K=self.K, R=self.R)


ALH_OPTIONS = ("encoder", "site", "out_context", "D", "hyper_layers", "hyper_heads", "K", "R")


def names(cls) -> tuple:
    return tuple(f.name for f in fields(cls))


def check_known(given, spec):
    """Reject option names a job does not take (a programming error: TypeError)."""
    unknown = set(given) - set(names(spec)) - set(names(Optim)) - set(names(Schedule)) - set(SOURCES)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}")


def _given(given, cls):
    return {k: given[k] for k in names(cls) if given.get(k) is not None}


def new_options(cls, given):
    """A fresh run's options of one kind: the given values over the defaults."""
    return cls(**_given(given, cls))


def resumed_spec(cls, given, saved: dict):
    """A resumed run's identity: the saved values; a given value that differs is an InputError."""
    for k, v in _given(given, cls).items():
        if v != saved.get(k):
            raise InputError(f"--{k.replace('_', '-')} {v} differs from this run's {saved.get(k)}; a resumed run keeps "
                             "its data, model, method and seed (drop the option, or start a new run with another --name)")
    return cls(**{k: saved[k] for k in names(cls) if k in saved})


def resumed_schedule(given, meta) -> Schedule:
    """Steps/checkpointing of a resumed session: given options over the saved ones (target, period, keep)."""
    saved = dict(meta.get("schedule") or {}, steps=meta["target_steps"])
    s = replace(Schedule(**{k: v for k, v in saved.items() if k in names(Schedule)}), **_given(given, Schedule))
    if s.steps < meta["step"]:
        raise InputError(f"--steps {s.steps} is below the {meta['step']} steps this run has done; "
                         "expected the new total number of steps")
    return s


def adamw_config(given, steps, saved=None) -> AdamWConfig:
    """AdamWConfig from the optimiser options: defaults, or the saved config, with the given ones replacing them.

    An explicit --warmup-steps that is not below the schedule's length is refused: the learning rate
    would never reach --lr.
    """
    if saved is None:
        o = new_options(Optim, given)
        cfg = AdamWConfig(lr=o.lr, warmup_steps=o.warmup_steps, weight_decay=o.weight_decay, grad_clip=o.grad_clip,
                          total_steps=o.decay_steps or steps)
    else:
        names_ = {f.name for f in fields(AdamWConfig)}
        if not isinstance(saved, dict) or set(saved) - names_:
            raise InputError(f"checkpoint manifest has a malformed adamw_config ({saved!r}); "
                             f"expected the fields {sorted(names_)}")
        new = {k: given[k] for k in ("lr", "warmup_steps", "weight_decay", "grad_clip") if given.get(k) is not None}
        if given.get("decay_steps") is not None:
            new["total_steps"] = given["decay_steps"]
        cfg = replace(AdamWConfig(**saved), **new)
    if given.get("warmup_steps") is not None and cfg.warmup_steps >= cfg.total_steps:
        raise InputError(f"--warmup-steps {cfg.warmup_steps} is not below the schedule's {cfg.total_steps} steps "
                         f"(--decay-steps, default --steps), so the learning rate would never reach --lr; "
                         f"expected fewer warmup steps, e.g. --warmup-steps {max(0, cfg.total_steps // 10)}")
    return cfg


def as_dict(options) -> dict:
    return asdict(options)
