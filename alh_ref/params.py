"""The base model's shape and its named parameters: GPTConfig, the one ordered name list, the init.

Parameters are a plain ``dict`` from GPT-2-style names to arrays. :func:`param_shapes` is the one
ordered name list that init, the optimizer, gradient checks, checkpoints and golden bundles all
walk; :func:`decayed` says which of them AdamW decays. The computation is alh_ref/model.py (which
re-exports these names). Table and init rule: docs/model.md, "Parameters and init".
"""
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the base model.

    vocab_size V, block_size (max T), n_layer L, n_head NH, n_embd C (C % NH == 0),
    tied: logits use wte^T (True) or a separate lm_head.w of shape (C, V) (False).
    """

    vocab_size: int = 512
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    tied: bool = True

    def __post_init__(self):
        for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise InputError(f"GPTConfig.{k} = {getattr(self, k)!r}; expected a positive integer")
        if self.n_embd % self.n_head:
            raise InputError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}; expected C % NH == 0")

    def to_dict(self):
        return asdict(self)


# Configs of the benchmarks and of the tests.
CONFIGS = {
    "tiny": GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=64),
    "small": GPTConfig(vocab_size=2048, block_size=128, n_layer=4, n_head=4, n_embd=128),
}


# ----------------------------------------------------------------------------------------------
# Parameters: one ordered name list

def param_shapes(cfg):
    """Ordered ``{name: shape}`` of every parameter (GPT-2 names, weights oriented (in, out)).

    Parameters
    ----------
    cfg : GPTConfig

    Returns
    -------
    dict[str, tuple]  wte (V,C), wpe (T,C), h.{l}.ln_1.{w,b} (C,), h.{l}.attn.c_attn.w (C,3C),
        .b (3C,), h.{l}.attn.c_proj.w (C,C), .b (C,), h.{l}.ln_2.{w,b} (C,), h.{l}.mlp.c_fc.w (C,4C),
        .b (4C,), h.{l}.mlp.c_proj.w (4C,C), .b (C,), ln_f.{w,b} (C,), [lm_head.w (C,V) if untied]
    """
    V, T, C = cfg.vocab_size, cfg.block_size, cfg.n_embd
    s = {"wte": (V, C), "wpe": (T, C)}
    for l in range(cfg.n_layer):
        p = f"h.{l}."
        s.update({
            p + "ln_1.w": (C,), p + "ln_1.b": (C,),
            p + "attn.c_attn.w": (C, 3 * C), p + "attn.c_attn.b": (3 * C,),
            p + "attn.c_proj.w": (C, C), p + "attn.c_proj.b": (C,),
            p + "ln_2.w": (C,), p + "ln_2.b": (C,),
            p + "mlp.c_fc.w": (C, 4 * C), p + "mlp.c_fc.b": (4 * C,),
            p + "mlp.c_proj.w": (4 * C, C), p + "mlp.c_proj.b": (C,),
        })
    s.update({"ln_f.w": (C,), "ln_f.b": (C,)})
    if not cfg.tied:
        s["lm_head.w"] = (C, V)
    return s


def init_params(cfg, seed=0, dtype=np.float32):
    """GPT-2 initialisation, reproducible across machines.

    One ``np.random.default_rng(seed)`` (PCG64) draws standard normals in float64, tensor by tensor
    in :func:`param_shapes` order (LayerNorms and biases draw nothing), then scales and casts:
    weights N(0, 0.02^2); the two c_proj weights N(0, (0.02/sqrt(2L))^2); biases 0; LayerNorm w 1, b 0.

    Returns
    -------
    dict[str, ndarray]   every tensor C-contiguous, of ``dtype``
    """
    rng = np.random.default_rng(seed)
    proj_std = 0.02 / np.sqrt(2 * cfg.n_layer)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith(("ln_1.w", "ln_2.w", "ln_f.w")):
            params[name] = np.ones(shape, dtype=dtype)                      # (C,)
        elif name.endswith((".b",)):
            params[name] = np.zeros(shape, dtype=dtype)                     # (C,) / (3C,) / (4C,)
        else:
            std = proj_std if name.endswith("c_proj.w") else 0.02
            params[name] = (std * rng.standard_normal(shape)).astype(dtype)  # shape
    return params


def decayed(name):
    """True for the parameters AdamW decays: the weight matrices and embedding tables.

    As in nanoGPT: linear weights (``*.w`` but not LayerNorm gains), wte, wpe and lm_head.w (also
    under a prefix, e.g. ``alh.enc.wte``); never biases, LayerNorm parameters, context vectors
    (``alh.c0``, ``alh.enc.c``) or the Householder directions ``alh.head.a`` (scale-free).
    """
    last = name.rsplit(".", 1)[-1]
    if name.endswith(("ln_1.w", "ln_2.w", "ln_f.w")):
        return False
    return last in ("w", "wte", "wpe")


def count_params(params, names=None):
    """Number of scalars in ``params`` (restricted to ``names`` if given)."""
    return int(sum(params[n].size for n in (params if names is None else names)))
