"""Unit tests of the experiment's parts: windows, floors, tuning, bootstrap, envelope, verdict rules, methods."""
import math

from dataclasses import replace

import numpy as np
import pytest

from alh_ref.alh.adapted import ALHConfig
from alh_ref.alh.methods import make_method
from alh_ref.corpora.synthetic import bayes_entropies, synthetic_chains
from alh_ref.errors import InputError
from alh_ref.gradcheck import check_named
from alh_ref.model import GPTConfig, init_params
from alh_ref.study.data import doc_windows
from alh_ref.study.measure import position_bins
from alh_ref.study.protocol import next_value, sweep
from alh_ref.study.summary import boot_stat, envelope, interval, read_envelope
from alh_ref.study.units import next_size
from alh_ref.study.verdict import combine, spearman_perm


def test_next_value_continues_the_grid():
    assert [next_value(v, True) for v in (1e-2, 3e-2, 1e-1, 0.3)] == [3e-2, 0.1, 0.3, 1.0]
    assert [next_value(v, False) for v in (3e-3, 1e-3, 1e-2)] == [1e-3, 3e-4, 3e-3]


def test_doc_windows_start_at_the_document():
    x, y, valid = doc_windows([np.array([5, 6]), np.array([1, 2, 3, 4, 7])], eot=9, T=4)
    np.testing.assert_array_equal(x, [[9, 5, 6, 9], [9, 1, 2, 3]])
    np.testing.assert_array_equal(y, [[5, 6, 9, 9], [1, 2, 3, 4]])
    np.testing.assert_array_equal(valid, [[1, 1, 1, 0], [1, 1, 1, 1]])


def test_position_bins():
    assert position_bins(32) == [(0, 1), (1, 4), (4, 16), (16, 32)]
    assert position_bins(3) == [(0, 1), (1, 3)]


def test_bayes_entropies_exact_two_domain_example():
    # domain 0 always goes 0 -> 1 -> 0 ...; domain 1 from 0 goes to 0 or 1 with 1/2 each, from 1 always to 0
    P = np.array([[[0.0, 1.0], [1.0, 0.0]], [[0.5, 0.5], [1.0, 0.0]]])          # (2,2,2)
    x = np.array([0, 1, 0, 0])
    pi0, pi1 = np.array([0.5, 0.5]), np.array([2 / 3, 1 / 3])
    h = bayes_entropies(P, x, np.array([0.5, 0.5]))

    def H(p):
        p = np.asarray(p, dtype=float)
        return float(-(p[p > 0] * np.log(p[p > 0])).sum())
    p0 = 0.5 * pi0 + 0.5 * pi1                                                   # first symbol: the mixed stationary law
    w = np.array([0.5 * pi0[0], 0.5 * pi1[0]]); w /= w.sum()                     # posterior after x_0 = 0
    p1 = w[0] * P[0, 0] + w[1] * P[1, 0]
    w2 = w * np.array([P[0, 0, 1], P[1, 0, 1]]); w2 /= w2.sum()                  # after 0 -> 1
    p2 = w2[0] * P[0, 1] + w2[1] * P[1, 1]                                       # from 1: both go to 0, entropy 0
    w3 = w2 * np.array([P[0, 1, 0], P[1, 1, 0]]); w3 /= w3.sum()
    p3 = w3[0] * P[0, 0] + w3[1] * P[1, 0]
    np.testing.assert_allclose(h, [H(p0), H(p1), H(p2), H(p3)], rtol=0, atol=1e-12)
    np.testing.assert_allclose(bayes_entropies(P, x, np.array([0.0, 1.0]))[1:], [math.log(2), 0.0, math.log(2)],
                               rtol=0, atol=1e-12)                               # known domain 1


def test_shared_rows_are_shared_and_zero_keeps_the_old_chains():
    P = synthetic_chains(3, 20, 3, 1.0, 5, shared=0.5)
    same = [i for i in range(20) if np.array_equal(P[0, i], P[1, i]) and np.array_equal(P[0, i], P[2, i])]
    assert len(same) == 10
    np.testing.assert_array_equal(synthetic_chains(3, 20, 3, 1.0, 5, shared=0.0), synthetic_chains(3, 20, 3, 1.0, 5))
    with pytest.raises(InputError):
        synthetic_chains(3, 20, 3, 1.0, 5, shared=1.5)


def test_sweep_extends_past_an_edge_and_says_so():
    calls = []

    def run(v):
        calls.append(v)
        return abs(math.log10(v) + 3), v                                        # best at 1e-3, below the grid
    best, tried, _, extended, edge = sweep(run, [1e-2, 3e-2, 1e-1], max_extend=3)
    assert best == 1e-3 and edge is False
    assert extended == [3e-3, 1e-3, 3e-4]                                        # the 1-3-10 grid continued down
    best, _, _, extended, edge = sweep(run, [1e-2, 1e-1], max_extend=1)
    assert best == 3e-3 and edge is True and extended == [3e-3]
    best, tried, _, extended, _ = sweep(lambda v: (math.inf if v > 0.05 else -v, None), [1e-2, 3e-2, 1e-1], 2)
    assert best == 3e-2 and tried["0.1"] is None and extended == []              # diverged neighbour: interior choice


def test_sweep_extends_an_edge_the_curve_still_falls_toward_past_an_interior_dip():
    # a val curve met in a real run (static-householder-matched, default size, shift): a dip at 3e-2
    # inside the grid, the minimum four steps below it; choosing "the best is not on an edge" stops at 3e-2
    curve = {1e-5: 5.30, 3e-5: 5.212, 1e-4: 5.210, 3e-4: 5.257, 1e-3: 5.375, 3e-3: 5.438, 1e-2: 5.492,
             3e-2: 5.394, 1e-1: 5.744}
    best, tried, _, extended, edge = sweep(lambda v: (curve[v], None), [3e-3, 1e-2, 3e-2, 1e-1], max_extend=6)
    assert best == 1e-4 and edge is False
    assert extended == [1e-3, 3e-4, 1e-4, 3e-5]                                  # stops once 3e-5 is worse than 1e-4
    best, _, _, extended, edge = sweep(lambda v: (curve[v], None), [3e-3, 1e-2, 3e-2, 1e-1], max_extend=1)
    assert best == 1e-3 and extended == [1e-3] and edge is True                  # out of extensions, the best on an edge
    two = {3e-4: 2.5, 1e-3: 2.0, 3e-3: 2.2, 1e-2: 1.0, 3e-2: 2.4, 1e-1: 2.1, 3e-1: 2.6}   # both edges fall outward
    best, _, _, extended, edge = sweep(lambda v: (two[v], None), [1e-3, 3e-3, 1e-2, 3e-2, 1e-1], max_extend=6)
    assert best == 1e-2 and extended == [3e-4, 3e-1] and edge is False           # the lower edge (2.0 < 2.1) first


def test_next_size_steps_past_the_edge_the_best_size_sits_on():
    full = [{"K": 4, "D": 32}, {"K": 8, "D": 64}, {"K": 16, "D": 64}, {"K": 8, "D": 128}]    # --full's sizes
    assert next_size(full, {"K": 16, "D": 64}, 2) == {"K": 32, "D": 64}                   # largest K
    assert next_size(full, {"K": 8, "D": 128}, 2) == {"K": 8, "D": 256}                   # largest D
    assert next_size(full, {"K": 4, "D": 32}, 2) == {"K": 2, "D": 16}                     # smallest of both
    assert next_size(full, {"K": 8, "D": 64}, 2) is None                                  # inside on both axes
    tried = full + [{"K": 32, "D": 64}]
    assert next_size(tried, {"K": 16, "D": 64}, 2) is None                                # bracketed by the extension
    assert next_size([{"K": 2}, {"K": 4}], {"K": 4}, 2) == {"K": 8}                       # only K swept
    assert next_size([{"K": 2, "D": 8}, {"K": 4, "D": 8}], {"K": 4, "D": 8}, 4) == {"K": 8, "D": 8}   # D not swept
    assert next_size([{"D": 4}, {"D": 8}], {"D": 4}, 4) is None                           # D = 2 not a multiple of n_head 4
    assert next_size([{"K": 1}, {"K": 2}], {"K": 1}, 2) is None                           # nothing below K = 1


def test_best_size_extends_until_the_edge_closes_the_cap_binds_or_max_extend(monkeypatch):
    """best_size's rule alone: a fake sweep whose val falls with K, a fake count of 100 K and a cap of
    1000. From K = 2, 4 it extends to K = 8 (800 trainable); K = 16 (1600) is over the cap and not tried."""
    from alh_ref.study import units
    from alh_ref.study.resume import StudyCache
    monkeypatch.setattr(units, "tune_size", lambda p, s, size, ctx: {"alh": size, "val": 10 / size["K"], "rec": {}})
    monkeypatch.setattr(units, "size_count", lambda size, ctx: 100 * size["K"])
    monkeypatch.setattr(units, "size_cap", lambda ctx: 1000)

    def run(max_extend, val=lambda K: 10 / K):
        cache = StudyCache(None, {}, resume=False)
        for K in (2, 4):
            cache.put(units.size_unit("shift", 0, {"K": K}), {"alh": {"K": K}, "val": val(K), "rec": {}})
        ctx = {"cfg": {"alh_sweep": [{"K": 2}, {"K": 4}], "alh": {"n_head": 2}, "max_extend": max_extend},
               "cache": cache, "say": lambda msg: None}
        best, parts, edge = units.best_size("shift", 0, ctx)
        return best["alh"], [q["alh"]["K"] for q in parts], edge, cache

    best, tried, edge, cache = run(6)
    assert best == {"K": 8} and tried == [2, 4, 8] and cache.has("shift-alh-householder-0-K8")
    assert edge == {"alh": {"K": 16}, "n_trainable": 1600, "reason": "cap"}
    assert run(0)[1:3] == ([2, 4], {"alh": {"K": 8}, "n_trainable": 800, "reason": "max_extend"})
    best, tried, edge, _ = run(6, val=lambda K: abs(K - 4))          # K = 4 best: K = 8 (val 1.25) brackets it
    assert best == {"K": 4} and tried == [2, 4, 8] and edge is None


def test_bootstrap_with_unit_weights_is_the_ratio_of_sums():
    sums = np.array([[1.0, 2.0], [3.0, 6.0]])                                    # (N=2, S=2)
    cnt = np.array([2.0, 2.0])
    W = np.ones((1, 2))
    assert boot_stat(W, sums, cnt)[0] == pytest.approx(0.5 * (4 / 4 + 8 / 4))
    assert interval(np.arange(101.0)) == [2.5, 97.5]


def test_envelope_is_a_lower_envelope():
    pts = [{"B": 3.0, "A": 1.0}, {"B": 2.0, "A": 2.0}, {"B": 1.5, "A": 1.5}, {"B": 1.0, "A": 4.0}]
    env = envelope(pts, "A")
    assert env == [(1.0, 4.0), (1.5, 1.5), (3.0, 1.0)]
    assert read_envelope(env, 2.5) == 1.5 and read_envelope(env, 0.5) is None and read_envelope(env, 9) == 1.0


def test_verdict_combination_and_spearman():
    assert combine([True, True]) == "held" and combine([False, False]) == "did not hold"
    assert combine([True, False]) == "mixed" and combine([True, None]) is None
    rho, p = spearman_perm(np.arange(8.0), np.arange(8.0) ** 2, n_perm=2000)
    assert rho == pytest.approx(1.0) and p < 0.01
    rho, p = spearman_perm(np.arange(8.0), -np.arange(8.0), n_perm=2000)
    assert rho == pytest.approx(-1.0) and p > 0.9


BCFG = GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=6)


def _noisy(p, rng, scale=0.3):
    for a in p.values():
        a += scale * rng.standard_normal(a.shape)


@pytest.mark.parametrize("encoder", ["transformer", "mean", "static"])
def test_side_prev_gradients(encoder):
    rng = np.random.default_rng(7)
    base = init_params(BCFG, seed=1, dtype=np.float64)
    _noisy(base, rng, 0.2)
    acfg = ALHConfig(D=4, n_layer=1, n_head=2, K=4, R=2, head="side", out_context="prev", encoder=encoder)
    m = make_method("side", base, BCFG, acfg, seed=2)
    m.params.update({k: v.astype(np.float64) + 0.3 * rng.standard_normal(v.shape) for k, v in m.params.items()})
    x, y = rng.integers(0, 11, (3, 5)), rng.integers(0, 11, (3, 5))
    if encoder != "static":
        assert "alh.c0" in m.params                                             # c_{-1}: what t = 0 reads
    _, g = m.loss_and_grads(x, y)
    errs = check_named(lambda: float(m.forward(x, y)[1]), m.params, g, list(m.params), n_samples=8)
    assert max(errs.values()) < 1e-5


def test_side_prev_never_reads_the_current_token():
    rng = np.random.default_rng(3)
    base = init_params(BCFG, seed=1, dtype=np.float64)
    m = make_method("side", base, BCFG, ALHConfig(D=4, n_head=2, head="side", out_context="prev"), seed=2)
    for v in m.params.values():
        v += 0.3 * rng.standard_normal(v.shape)
    x = rng.integers(0, 11, (1, 5))
    x2 = x.copy()
    x2[0, 4] = (x[0, 4] + 1) % 11
    side = lambda ids: m.forward(ids)[0] - make_method("none", base, BCFG).forward(ids)[0]  # noqa: E731
    np.testing.assert_allclose(side(x)[0, 4], side(x2)[0, 4], rtol=0, atol=1e-12)  # the added vector at t=4 reads x_<4


def test_embed_ft_l2_penalty_gradient():
    rng = np.random.default_rng(4)
    base = init_params(BCFG, seed=1, dtype=np.float64)
    m = make_method("embed-ft-l2", base, BCFG, l2=0.7)
    m.params["wte"] += 0.1 * rng.standard_normal(m.params["wte"].shape)
    x, y = rng.integers(0, 11, (2, 5)), rng.integers(0, 11, (2, 5))
    loss, g = m.loss_and_grads(x, y)
    d = m.params["wte"] - base["wte"]
    assert loss == pytest.approx(float(m.forward(x, y)[1]) + 0.35 * float((d ** 2).sum()), rel=1e-12)
    errs = check_named(lambda: m.loss_and_grads(x, y)[0], m.params, g, ["wte"], n_samples=8)
    assert max(errs.values()) < 1e-5
    with pytest.raises(InputError):
        make_method("embed-ft-l2", base, BCFG, l2=0.0)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("family,site", [("householder", "both"), ("householder", "input"), ("householder", "output"),
                                         ("lowrank", "both")])
def test_static_matrix_path_equals_the_per_position_path(family, site, tied):
    from alh_ref.alh.methods import _alh_method
    rng = np.random.default_rng(11)
    bcfg = replace(BCFG, tied=tied)                                                 # untied: the output site moves lm_head.w
    base = init_params(bcfg, seed=1, dtype=np.float64)
    _noisy(base, rng, 0.2)
    acfg = ALHConfig(D=4, n_head=2, K=6, R=2, family=family, site=site, encoder="static")
    fast = make_method(f"static-{family}", base, bcfg, acfg, seed=5)
    slow = _alh_method("ref", base, bcfg, acfg, seed=5)
    for n in fast.params:
        fast.params[n] += 0.3 * rng.standard_normal(fast.params[n].shape)
        slow.params[n][...] = fast.params[n]
    x, y = rng.integers(0, 11, (3, 5)), rng.integers(0, 11, (3, 5))
    lf, gf = fast.loss_and_grads(x, y)
    ls, gs = slow.loss_and_grads(x, y)
    assert lf == pytest.approx(ls, rel=1e-12) and set(gf) == set(gs)
    for n in gs:
        np.testing.assert_allclose(gf[n], gs[n], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.dictionaries()[0], slow.dictionaries(x, 1)[0], rtol=1e-10, atol=1e-12)


def test_plots_are_skipped_with_one_line_without_matplotlib(monkeypatch, tmp_path, capsys):
    from alh_ref.study.plots import write_plots
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)          # import matplotlib -> ImportError
    assert write_plots({}, tmp_path) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matplotlib" in err[0] and not list(tmp_path.iterdir())


def test_spearman_gives_ties_one_rank_whatever_their_order():
    """Tied x values (e.g. several methods with exactly preserved geometry) get their average rank,
    so reordering the tied entries cannot change rho (argsort ranks would)."""
    x, y = np.array([0.0, 0.0, 0.0, 1.0, 2.0]), np.array([3.0, 1.0, 2.0, 4.0, 5.0])
    rho, _ = spearman_perm(x, y, n_perm=200)
    rho2, _ = spearman_perm(x, y[[2, 0, 1, 3, 4]], n_perm=200)               # the tied entries' y reordered
    assert rho == pytest.approx(rho2, abs=1e-12)
    assert rho == pytest.approx(np.corrcoef([2, 2, 2, 4, 5], [3, 1, 2, 4, 5])[0, 1], abs=1e-12)
