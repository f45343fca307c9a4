"""Tests of alh_ref.metrics: dictionary geometry, ALH effective dictionaries, held-out loss."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from builders import perturb

from alh_ref.alh.adapted import ALHConfig
from alh_ref.alh.methods import make_method
from alh_ref.alh.transforms import dense_matrix
from alh_ref.errors import InputError
from alh_ref.alh.methods import transformed_dictionary
from alh_ref.metrics import (dictionary_metrics, displacement, effective_rank, eval_loss, eval_windows, gram_drift,
                             hyperspherical_energy, mean_abs_cos, method_dictionary_metrics, perplexity)
from alh_ref.model import GPTConfig, gpt_forward, init_params

BCFG = GPTConfig(vocab_size=24, block_size=8, n_layer=1, n_head=2, n_embd=8)
ACFG = ALHConfig(D=8, n_layer=1, n_head=2, K=4, R=2)


def random_orthogonal(C, rng):
    """A random (C,C) orthogonal matrix (QR of a Gaussian, signs fixed)."""
    Q, R = np.linalg.qr(rng.standard_normal((C, C)))                       # (C,C), (C,C)
    return Q * np.sign(np.diag(R))[None, :]                                 # (C,C)


# ----------------------------------------------------------------------------------------------
# Hand-checkable examples

def test_orthonormal_pair():
    E = np.array([[1.0, 0.0], [0.0, 1.0]])                                  # (2,2)
    assert mean_abs_cos(E) == pytest.approx(0.0)
    assert hyperspherical_energy(E) == pytest.approx(1 / math.sqrt(2))     # distance sqrt(2)
    assert effective_rank(E) == pytest.approx(2.0)                          # equal singular values


def test_45_degree_pair_and_scale_invariance():
    E = np.array([[1.0, 0.0], [3.0, 3.0]])                                  # (2,2) rows at 45 degrees
    assert mean_abs_cos(E) == pytest.approx(1 / math.sqrt(2))
    d = math.sqrt(2 - 2 / math.sqrt(2))                                     # chord of 45 degrees
    assert hyperspherical_energy(E) == pytest.approx(1 / d)


def test_effective_rank_of_known_spectrum():
    E = np.zeros((4, 3))                                                    # (4,3)
    E[0, 0], E[1, 1] = 3.0, 1.0                                             # singular values 3, 1, 0
    p = np.array([0.75, 0.25])
    assert effective_rank(E) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_scaling_gives_known_drift_and_displacement():
    E = np.random.default_rng(0).standard_normal((5, 3))                    # (5,3)
    assert gram_drift(2 * E, E) == pytest.approx(3.0)                       # G' = 4 G
    assert displacement(2 * E, E) == pytest.approx(1.0)
    assert mean_abs_cos(2 * E) == pytest.approx(mean_abs_cos(E))            # cos is scale-free


def test_identity_gives_zero_change():
    E = np.random.default_rng(1).standard_normal((10, 4))                   # (10,4)
    m = dictionary_metrics(E.copy(), E)
    assert m["gram_drift"] == 0.0 and m["displacement"] == 0.0
    assert m["mean_abs_cos"] == pytest.approx(m["mean_abs_cos_ref"])
    assert m["eff_rank"] == pytest.approx(m["eff_rank_ref"])
    assert m["energy"] == pytest.approx(m["energy_ref"])


def test_identical_rows_are_guarded():
    E = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])                      # (3,2) rows 0 and 1 identical
    en = hyperspherical_energy(E, eps=1e-3)
    assert np.isfinite(en)
    assert en == pytest.approx((1e3 + 2 / math.sqrt(2)) / 3)               # pairs: (0,1) floored, two at sqrt 2


@given(st.integers(0, 10_000))
def test_orthogonal_map_keeps_geometry_but_moves_rows(seed):
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((12, 6))                                        # (12,6)
    Q = random_orthogonal(6, rng)                                           # (6,6)
    m = dictionary_metrics(E @ Q.T, E)                                      # rows e -> Q e
    assert m["gram_drift"] < 1e-10
    assert m["mean_abs_cos"] == pytest.approx(m["mean_abs_cos_ref"], rel=1e-9)
    assert m["eff_rank"] == pytest.approx(m["eff_rank_ref"], rel=1e-9)
    assert m["energy"] == pytest.approx(m["energy_ref"], rel=1e-9)
    assert m["displacement"] == pytest.approx(np.linalg.norm(E @ Q.T - E) / np.linalg.norm(E))
    assert m["displacement"] > 1e-3


def test_nonorthogonal_map_changes_geometry():
    rng = np.random.default_rng(2)
    E = rng.standard_normal((12, 6))                                        # (12,6)
    M = np.eye(6) + 0.5 * rng.standard_normal((6, 6))                       # (6,6)
    m = dictionary_metrics(E @ M.T, E)
    assert m["gram_drift"] > 0.05
    assert abs(m["mean_abs_cos"] - m["mean_abs_cos_ref"]) > 1e-4


def test_bad_input_raises():
    with pytest.raises(InputError):
        mean_abs_cos(np.ones(3))
    with pytest.raises(InputError):
        displacement(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(InputError):
        dictionary_metrics(np.full((3, 2), np.nan), np.ones((3, 2)))


# ----------------------------------------------------------------------------------------------
# Effective dictionaries of the methods

def _perturbed(name, seed=0):
    """A method whose hypernetwork head is moved off the identity (so its transforms are non-trivial)."""
    base = init_params(BCFG, seed=0, dtype=np.float64)
    m = make_method(name, base, BCFG, ACFG, seed=seed)
    perturb(m.params, 0.3, np.random.default_rng(seed + 7), names=("alh.head.w", "alh.head.b"))
    return m, base


@pytest.mark.parametrize("family", ["householder", "lowrank", "film"])
def test_transformed_dictionary_matches_dense_matrix(family):
    m, base = _perturbed(f"alh-{family}")
    x = np.random.default_rng(3).integers(0, BCFG.vocab_size, (2, 5))       # (B,T)
    theta = m.forward(x)[2].theta
    b, slot = 1, 3
    E_t = transformed_dictionary(family, theta, slot, b, base["wte"])       # (V,C)
    th = {k: (v if k == "a" else v[b, slot]) for k, v in theta.items()}
    A, off = dense_matrix(family, th, BCFG.n_embd)                          # (C,C), (C,)
    np.testing.assert_allclose(E_t, base["wte"] @ A.T + off, atol=1e-10)
    # the input latents the model actually used at (b, slot) are row x[b, slot] of that dictionary
    np.testing.assert_allclose(m.forward(x)[2].tok[b, slot], E_t[x[b, slot]], atol=1e-10)


def test_householder_alh_is_orthogonal_per_position():
    m, base = _perturbed("alh-householder")
    x = np.random.default_rng(4).integers(0, BCFG.vocab_size, (2, 6))       # (B,T)
    r = method_dictionary_metrics(m, base["wte"], x, n_positions=6)
    assert r["gram_drift"] < 1e-10                                          # orthogonal: Gram kept
    assert r["displacement"] > 1e-3                                        # but the rows moved
    assert r["n_positions"] == 6


def test_lowrank_alh_changes_gram():
    m, base = _perturbed("alh-lowrank")
    x = np.random.default_rng(5).integers(0, BCFG.vocab_size, (2, 6))       # (B,T)
    assert method_dictionary_metrics(m, base["wte"], x, n_positions=4)["gram_drift"] > 1e-3


@pytest.mark.parametrize("name", ["alh-householder", "alh-film", "static-lowrank", "none", "embed-ft", "lora-embed"])
def test_untrained_methods_leave_dictionary_unchanged(name):
    base = init_params(BCFG, seed=0, dtype=np.float64)
    m = make_method(name, base, BCFG, ACFG, seed=0)
    x = np.random.default_rng(6).integers(0, BCFG.vocab_size, (2, 6))       # (B,T)
    r = method_dictionary_metrics(m, base["wte"], x, n_positions=4)
    assert r["gram_drift"] < 1e-12 and r["displacement"] < 1e-12


def test_embed_ft_metrics_use_the_trained_copy():
    base = init_params(BCFG, seed=0, dtype=np.float64)
    m = make_method("embed-ft", base, BCFG, seed=0)
    m.params["wte"] += 0.01                                                 # the method's own copy
    r = method_dictionary_metrics(m, base["wte"])
    assert r["displacement"] == pytest.approx(np.linalg.norm(np.full_like(base["wte"], 0.01)) / np.linalg.norm(base["wte"]))


def test_alh_metrics_need_context():
    base = init_params(BCFG, seed=0, dtype=np.float64)
    m = make_method("alh-film", base, BCFG, ACFG, seed=0)
    with pytest.raises(InputError):
        method_dictionary_metrics(m, base["wte"])


# ----------------------------------------------------------------------------------------------
# Held-out loss

def test_eval_loss_is_deterministic_and_matches_direct_forward():
    base = init_params(BCFG, seed=0, dtype=np.float64)
    m = make_method("none", base, BCFG)
    tokens = np.random.default_rng(7).integers(0, BCFG.vocab_size, 300)     # (n,)
    a = eval_loss(m, tokens, 4, 8, 3, seed=11)
    assert a == eval_loss(m, tokens, 4, 8, 3, seed=11)    # exact: determinism is the property; same call, same inputs
    direct = np.mean([float(gpt_forward(base, BCFG, x, y)[1]) for x, y, _ in eval_windows(tokens, 4, 8, 3, 11)])
    assert a == pytest.approx(direct)
    assert a == pytest.approx(math.log(BCFG.vocab_size), abs=0.05)          # untrained model ~ uniform
    assert a != eval_loss(m, tokens, 4, 8, 3, seed=12)


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(7)) == pytest.approx(7.0)
    assert perplexity(1e6) == math.inf
