"""Builders for the tests: perturbed (non-degenerate) parameters and random batches.

Gradient checks and parity tests need parameters away from their init (LayerNorm gains not 1,
biases not 0, hypernetworks off the identity) and batches with an ignore mask that drops some but
not all positions. Every test file builds them here, from a ``np.random.Generator`` (or a seed), so
one recipe means one thing everywhere. The hypothesis strategies for shapes are in strategies.py.
"""
import numpy as np

from alh_ref.alh.adapted import ALHConfig, alh_init
from alh_ref.model import GPTConfig, init_params

LN_GAINS = ("ln_1.w", "ln_2.w", "ln_f.w")


def noisy(params, scale, rng, dtype=np.float64):
    """Copies of ``params`` plus ``scale * N(0, 1)`` on every tensor, drawn in ``params`` order.

    Parameters
    ----------
    params : dict name -> ndarray;  scale : float;  rng : np.random.Generator;  dtype : of the copies

    Returns
    -------
    dict name -> ndarray ``dtype``   p + scale * N(0, 1), same shapes
    """
    return {n: (p + scale * rng.standard_normal(p.shape)).astype(dtype) for n, p in params.items()}


def perturb(params, scale, rng, names=None):
    """In place: ``p += scale * N(0, 1)`` for every tensor (or those in ``names``), in ``params`` order.

    For a Method's parameters, which its closures read: moves a hypernetwork off the identity or a
    zero-initialised LoRA factor off zero.
    """
    for n, p in params.items():
        if names is None or n in names:
            p += scale * rng.standard_normal(p.shape)                 # shape of p
    return params


def noisy_params(cfg, seed, dtype=np.float64):
    """init_params plus noise on every tensor, so no gradient is degenerate or tiny.

    LayerNorm gains 1 + 0.3 N, biases 0.1 N, weight matrices init + 0.3 N (std ~0.3); the noise is
    drawn from ``default_rng(seed + 1000)``.
    """
    params = init_params(cfg, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1000)
    for name, p in params.items():
        noise = rng.standard_normal(p.shape)                          # shape
        if name.endswith(LN_GAINS):
            params[name] = (1.0 + 0.3 * noise).astype(dtype)          # (C,)
        elif name.endswith(".b"):
            params[name] = (0.1 * noise).astype(dtype)                # (C,) / (3C,) / (4C,)
        else:
            params[name] = (p + 0.3 * noise).astype(dtype)            # shape
    return params


def noisy_alh(bcfg, acfg, rng, base_scale=0.2, hyp_scale=0.3):
    """A noisy float64 base model and hypernetwork (so no transform is the identity).

    The init seeds are drawn from ``rng``: base seed, base noise, hypernetwork seed, its noise.

    Returns
    -------
    base : dict float64 (init_params + base_scale N(0,1));  hyp : dict float64 (alh_init + hyp_scale N(0,1))
    """
    base = noisy(init_params(bcfg, seed=int(rng.integers(2**31)), dtype=np.float64), base_scale, rng)
    hyp = noisy(alh_init(bcfg, acfg, seed=int(rng.integers(2**31)), dtype=np.float64), hyp_scale, rng)
    return base, hyp


def alh_model(seed, d, hyp_noise=0.0, **acfg_kw):
    """The configs and noisy float64 parameters of a model of the shape ``d`` (strategies.alh_dims).

    Parameters
    ----------
    seed : int;  d : dict from strategies.alh_dims
    hyp_noise : float   scale of N(0,1) noise added to every hypernetwork tensor ("trained-like")
    acfg_kw : ALHConfig fields (family, site, out_context, encoder, head)

    Returns
    -------
    bcfg : GPTConfig;  acfg : ALHConfig;  base : dict float64 (init + 0.2 N(0,1));  hyp : dict float64
    rng : np.random.Generator for further draws
    """
    rng = np.random.default_rng(seed)
    bcfg = GPTConfig(vocab_size=d["V"], block_size=d["block"], n_layer=d["L"], n_head=2, n_embd=d["C"])
    acfg = ALHConfig(D=d["D"], n_layer=1, n_head=2, K=d["K"], R=d["R"], **acfg_kw)
    base, hyp = noisy_alh(bcfg, acfg, rng, 0.2, hyp_noise)
    return bcfg, acfg, base, hyp, rng


def random_ids(rng, V, B, T):
    """Random token ids (B,T) int64 in [0, V)."""
    return rng.integers(0, V, size=(B, T))                            # (B,T)


def token_batch(rng, V, B, T, ignore_frac=0.0):
    """A random batch: ids, targets and an ignore mask.

    Returns
    -------
    ids, targets : ndarray (B,T) int64 in [0, V)
    ignore : ndarray (B,T) bool, or None when ``ignore_frac`` is 0 (then nothing more is drawn):
        max(1, int(ignore_frac B T)) positions set, at random, but never all of them (a loss always
        counts at least one position)
    """
    ids, targets = random_ids(rng, V, B, T), random_ids(rng, V, B, T)         # (B,T), (B,T)
    if not ignore_frac:
        return ids, targets, None
    N = B * T
    ignore = np.zeros((B, T), dtype=bool)                             # (B,T)
    ignore.flat[rng.choice(N, size=min(max(1, int(N * ignore_frac + 1e-9)), N - 1), replace=False)] = True
    return ids, targets, ignore
