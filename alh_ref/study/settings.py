"""The study's settings: sizes (quick / default / full), data settings, the method table, validation.

A configuration is a plain JSON-serialisable dict: :func:`resolve` builds it from a size preset,
a data setting and overrides, and refuses anything it cannot run with a one-line InputError.
"""
from ..errors import InputError

PROTOCOLS = ("shift", "mix")
SETTINGS = ("text", "synthetic", "paths")

# name -> (make_method kind, ALHConfig overrides); "match" values are resolved at run time so the
# method's size matches embed-ft's (protocol.resolve_matched)
METHOD_SPECS = {
    "none": ("none", {}),
    "embed-ft": ("embed-ft", {}),
    "embed-ft-l2": ("embed-ft-l2", {}),
    "lora-embed": ("lora-embed", {}),
    "full-ft": ("full-ft", {}),
    "static-householder": ("static-householder", {}),
    "static-householder-matched": ("static-householder", {"K": "match"}),
    "static-lowrank": ("static-lowrank", {}),
    "alh-householder": ("alh-householder", {}),
    "alh-householder-matched": ("alh-householder", {"D": "match"}),
    "alh-lowrank": ("alh-lowrank", {}),
    "alh-film": ("alh-film", {}),
    "alh-householder-prev": ("alh-householder", {"out_context": "prev"}),
    "alh-householder-mean": ("alh-householder", {"encoder": "mean"}),
    "side": ("side", {}),
    "side-prev": ("side", {"out_context": "prev"}),
    "alh-shuffled": ("alh-shuffled", {}),
}
STUDY_METHODS = tuple(METHOD_SPECS)
# alh-householder with one input changed (Claim 4's controls): on the first seed they take the ALH size
# alh-householder was tuned to (alh_sweep, --full), so that only that input differs
ALH_CONTROLS = ("alh-householder-prev", "alh-householder-mean", "alh-shuffled")
SIZE_KEYS = ("K", "D", "R", "n_layer", "n_head")                     # the ALHConfig sizes alh_sweep may set


def size_text(size):
    """An ALH size as a progress line and the report write it: e.g. ``K=16 D=64``."""
    return " ".join(f"{k}={size[k]}" for k in SIZE_KEYS if k in size)


_DEFAULT = {
    "setting": "text",
    # text: three corpora (A pretrains the base, B is the new domain, C is never trained on)
    "corpus_a": "pydoc", "corpus_b": "pycode", "corpus_c": "docstrings", "bpe_vocab": 512,
    "fractions": (0.7, 0.15, 0.15), "min_docs": 10,
    # synthetic: three chains (A, B, C = domains 0, 1, 2) sharing part of their rows
    "synthetic": {"K": 3, "n_docs": 600, "doc_len": 64, "n_symbols": 64, "n_successors": 4, "alpha": 1.0,
                  "shared": 0.5, "seed": 0},
    # base model and hypernetwork (ALHConfig defaults otherwise: transformer encoder, site both, out_context current)
    "n_embd": 32, "n_layer": 2, "n_head": 4, "block_size": 32,
    "alh": {"D": 32, "n_layer": 1, "n_head": 2, "K": 4, "R": 4},
    "lora_rank": 4,
    # optimisation: AdamW (betas 0.9/0.95, wd 0.1 on 2-D weights, clip 1.0), warmup then cosine
    "batch_size": 8, "pretrain_steps": 500, "pretrain_lr": 3e-3, "adapt_steps": 120, "warmup_frac": 0.1,
    # the base is pretrained for at most pretrain_steps, with early stopping on A val loss (evaluated every
    # pretrain_eval_every steps; stopped after pretrain_patience evaluations without improvement; the best kept)
    "pretrain_eval_every": 25, "pretrain_patience": 3,
    # fair tuning: one log grid for every trained method, extended past an open edge at most max_extend times
    "lrs": (3e-3, 1e-2, 3e-2, 1e-1), "l2s": (1e-3, 1e-2, 1e-1), "max_extend": 6,
    # ALH's own sizes tuned on the same footing (each with the lr grid; the best on val is kept): --full only
    "alh_sweep": (),
    # measurement
    "max_test_docs": 64, "max_val_docs": 24, "track_points": 5, "n_positions": 8, "n_boot": 1000,
    "boot_seed": 2024, "n_seeds": 3, "protocols": PROTOCOLS, "methods": STUDY_METHODS,
}

SIZES = {
    # toy size for the CI smoke test: every method, both protocols, seconds per run
    "quick": dict(_DEFAULT, n_embd=16, n_layer=1, n_head=2, block_size=16, bpe_vocab=300,
                  alh={"D": 8, "n_layer": 1, "n_head": 2, "K": 2, "R": 2}, lora_rank=2, batch_size=4,
                  pretrain_steps=30, pretrain_eval_every=5, adapt_steps=6, lrs=(1e-2, 3e-2), l2s=(1e-2,), max_extend=0,
                  max_test_docs=12, max_val_docs=8, track_points=2, n_positions=2, n_boot=50, n_seeds=2,
                  synthetic=dict(_DEFAULT["synthetic"], n_docs=330, doc_len=20, n_symbols=16)),
    # `alh-ref demo`: the text setting at reduced size (under 15 minutes on 2 cores)
    "default": dict(_DEFAULT),
    # documented strength: C=128, L=4, 1500 adaptation steps, 3 seeds
    "full": dict(_DEFAULT, n_embd=128, n_layer=4, n_head=4, block_size=64, bpe_vocab=1024,
                 alh={"D": 64, "n_layer": 1, "n_head": 2, "K": 8, "R": 8}, lora_rank=8, batch_size=16,
                 pretrain_steps=3000, pretrain_eval_every=100, adapt_steps=1500, lrs=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1), l2s=(1e-3, 1e-2, 1e-1, 1.0),
                 max_test_docs=160, max_val_docs=64, track_points=10, n_positions=16, n_boot=2000,
                 alh_sweep=({"K": 4, "D": 32}, {"K": 8, "D": 64}, {"K": 16, "D": 64}, {"K": 8, "D": 128}),
                 synthetic=dict(_DEFAULT["synthetic"], n_docs=1500, doc_len=128)),
}
# test-only size: the smallest run that exercises every code path (used by tests/test_study*.py)
SIZES["micro"] = dict(SIZES["quick"], pretrain_steps=10, adapt_steps=3, lrs=(3e-2,), max_test_docs=10,
                      max_val_docs=4, n_boot=20, methods=("none", "embed-ft", "embed-ft-l2", "static-householder",
                                                          "static-householder-matched", "alh-householder",
                                                          "alh-householder-prev", "side-prev", "alh-film",
                                                          "alh-shuffled"))

_POSITIVE_INTS = ("n_seeds", "batch_size", "pretrain_steps", "pretrain_eval_every", "pretrain_patience", "adapt_steps", "max_test_docs", "max_val_docs",
                  "track_points", "n_positions", "n_boot", "min_docs", "bpe_vocab")


def resolve(size="default", setting=None, **overrides):
    """The study configuration: a size preset, a data setting and some keys replaced.

    Parameters
    ----------
    size : "quick" | "default" | "full" (or "micro", for tests)
    setting : "text" | "synthetic" | "paths" or None (the preset's: text)
    **overrides : keys of the preset (e.g. adapt_steps=50, methods=("none", "alh-householder"),
        corpus_a="notes/", ...)

    Returns
    -------
    dict   the configuration, with "size" and "setting" set
    """
    if size not in SIZES:
        raise InputError(f"unknown study size {size!r}; expected one of {', '.join(SIZES)}")
    cfg = dict(SIZES[size])
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise InputError(f"unknown study option(s) {unknown}; expected some of {sorted(cfg)}")
    cfg.update(overrides)
    if setting is not None:
        cfg["setting"] = setting
    cfg["size"] = size
    if cfg["setting"] not in SETTINGS:
        raise InputError(f"unknown setting {cfg['setting']!r}; expected one of {', '.join(SETTINGS)}")
    bad = [m for m in cfg["methods"] if m not in METHOD_SPECS]
    if bad:
        raise InputError(f"unknown method(s) {bad}; expected names from {', '.join(METHOD_SPECS)}")
    if "none" not in cfg["methods"]:
        raise InputError("methods must include 'none' (the frozen base is the reference of every delta)")
    if "embed-ft-l2" in cfg["methods"] and "embed-ft" not in cfg["methods"]:
        raise InputError("embed-ft-l2 needs embed-ft in methods (it is tuned at embed-ft's learning rate)")
    bad = [p for p in cfg["protocols"] if p not in PROTOCOLS]
    if bad or not cfg["protocols"]:
        raise InputError(f"protocols={list(cfg['protocols'])}; expected some of {', '.join(PROTOCOLS)}")
    for k in _POSITIVE_INTS:
        if isinstance(cfg[k], bool) or not isinstance(cfg[k], int) or cfg[k] < 1:
            raise InputError(f"study option {k}={cfg[k]!r}; expected a positive integer")
    if cfg["batch_size"] < 2:
        raise InputError("study option batch_size must be >= 2 (mix takes half of each batch from A and half from B)")
    for k in ("lrs", "l2s"):
        if not cfg[k] or min(cfg[k]) <= 0 or list(cfg[k]) != sorted(cfg[k]):
            raise InputError(f"study option {k}={cfg[k]!r}; expected one or more increasing positive values")
    for v in cfg["alh_sweep"]:
        if not isinstance(v, dict) or not set(v) <= set(SIZE_KEYS):
            raise InputError(f"study option alh_sweep entry {v!r}; expected a dict of ALHConfig sizes "
                             f"({', '.join(SIZE_KEYS)})")
    for k in ("methods", "protocols", "alh_sweep"):
        cfg[k] = list(cfg[k])
    cfg["lrs"], cfg["l2s"], cfg["fractions"] = list(cfg["lrs"]), list(cfg["l2s"]), list(cfg["fractions"])
    return cfg
