"""Smoke test of the ALH study (micro preset, seconds) and unit tests of its helpers."""
import json

import numpy as np
import pytest

from alh_ref.errors import InputError
from alh_ref.study import (STUDY_METHODS, _cond_entropy, a_at_b_level, mean_std, resolve_preset, rewrite_report,
                           run_study, window_floor)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return run_study("micro", out_dir=out, seed=3, progress=False), out


def test_results_structure_and_files(micro):
    res, out = micro
    assert res["complete"] is True
    assert res["seeds"] == [3, 4]
    assert list(res["methods"]) == list(STUDY_METHODS)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["methods"].keys() == res["methods"].keys()
    assert (out / "results.md").read_text().startswith("# ALH study")
    for name in ("results.json", "results.md"):
        assert name in res["files"]
    for f in res["files"]:
        assert (out / f).stat().st_size > 0
    for name, r in res["methods"].items():
        assert len(r["per_seed"]) == 2
        for p in r["per_seed"]:
            for k in ("loss_B_test", "loss_A_test", "loss_B_val"):
                assert np.isfinite(p[k]) and p[k] > 0
            for tag in ("A", "B"):
                assert set(p[f"metrics_{tag}"]) >= {"mean_abs_cos", "gram_drift", "eff_rank", "energy", "displacement"}
            assert p["track"][0]["step"] == 0
        assert set(r["summary"]) >= {"loss_B_test", "loss_A_test", "delta_B_test", "delta_A_test", "gram_drift_B"}
        assert name in res["timing"]
    floor = res["data"]["floor"]
    assert 0 < floor["B_test"] < res["base"]["summary"]["loss_B_test"]["mean"]


def test_every_method_reports_trainable_params(micro):
    res, _ = micro
    for name, r in res["methods"].items():
        assert isinstance(r["n_trainable"], int)
        assert (r["n_trainable"] == 0) == (name == "none"), name
    assert res["methods"]["full-ft"]["n_trainable"] > res["methods"]["embed-ft"]["n_trainable"]


def test_none_equals_the_frozen_base(micro):
    res, _ = micro
    none = res["methods"]["none"]
    for p, b in zip(none["per_seed"], res["base"]["per_seed"]):
        assert p["loss_A_test"] == b["loss_A_test"]
        assert p["loss_B_test"] == b["loss_B_test"]
        assert p["metrics_B"]["gram_drift"] == 0.0 and p["metrics_B"]["displacement"] == 0.0
        assert p["train_loss"] == []
    assert none["summary"]["delta_B_test"]["mean"] == 0.0


def test_context_free_geometry_of_householder_is_kept(micro):
    res, _ = micro
    for name in ("alh-householder", "static-householder"):
        assert res["methods"][name]["summary"]["gram_drift_B"]["mean"] < 1e-5      # orthogonal transforms
    assert res["methods"]["embed-ft"]["summary"]["displacement_B"]["mean"] > 0


def test_resolve_preset_rejects_bad_input():
    with pytest.raises(InputError):
        resolve_preset("nope")
    with pytest.raises(InputError):
        resolve_preset("micro", not_a_key=1)
    with pytest.raises(InputError):
        resolve_preset("micro", methods=("none", "bogus"))
    with pytest.raises(InputError):
        resolve_preset("micro", methods=("alh-householder",))                       # the base reference is needed
    assert resolve_preset("micro", adapt_steps=2)["adapt_steps"] == 2


def test_cond_entropy_and_window_floor():
    P = np.array([[0.5, 0.5], [1.0, 0.0]])                                           # (2,2)
    pi = np.array([2 / 3, 1 / 3])
    eot = 2
    stream = np.array([0, 1, 0, 0, eot, 1, 0, eot])                                  # two documents
    h = _cond_entropy(P, pi, stream, eot)
    hp = -(pi * np.log(pi)).sum()
    np.testing.assert_allclose(h, [hp, np.log(2), 0.0, np.log(2), 0.0, hp, 0.0, 0.0])
    f = window_floor(h, 2, 3, 1, seed=0)
    assert 0.0 <= f <= max(hp, np.log(2))


def test_a_at_b_level_interpolates():
    tr = [{"step": 0, "B_val": 5.0, "A_val": 1.0}, {"step": 1, "B_val": 3.0, "A_val": 2.0},
          {"step": 2, "B_val": 1.0, "A_val": 4.0}]
    assert a_at_b_level(tr, 6.0) == 1.0
    assert a_at_b_level(tr, 2.0) == pytest.approx(3.0)
    assert a_at_b_level(tr, 0.5) is None


def test_mean_std():
    s = mean_std([1.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(np.sqrt(2.0)) and s["n"] == 2
    assert mean_std([4.0])["std"] == 0.0


def test_rewrite_report_reproduces_the_summary(micro):
    res, out = micro
    md = (out / "results.md").read_text()
    again = rewrite_report(out)
    assert list(again["methods"]) == list(res["methods"])
    assert again["methods"]["alh-householder"]["summary"]["loss_B_test"] == res["methods"]["alh-householder"]["summary"]["loss_B_test"]
    assert (out / "results.md").read_text() == md
    with pytest.raises(InputError):
        rewrite_report(out / "missing")
