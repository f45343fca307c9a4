"""The experiment end to end at the test-only micro size (seconds): files, structure, invariants."""
import json
import math

import numpy as np
import pytest

from alh_ref.errors import InputError
from alh_ref.study import STUDY_METHODS, resolve, rewrite_report, run_study
from alh_ref.study.report import report_markdown


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return run_study("micro", setting="synthetic", out_dir=out, seed=3, progress=False), out


def test_files_and_structure(micro):
    res, out = micro
    assert res["complete"] is True and res["seeds"] == [3, 4]
    on_disk = json.loads((out / "results.json").read_text())
    assert set(on_disk["protocols"]) == {"shift", "mix"}
    for f in ("results.json", "report.md"):
        assert f in res["files"]
    for f in res["files"]:
        assert (out / f).stat().st_size > 0
    methods = res["config"]["methods"]
    for p, P in on_disk["protocols"].items():
        assert set(P["methods"]) == set(methods)
        for name, r in P["methods"].items():
            assert len(r["per_seed"]) == 2
            for D in "ABC":
                e = on_disk["summary"][p][name]["test"][D]
                assert np.isfinite(e["mean"]) and e["ci"][0] <= e["ci"][1]
                assert len(e["by_position"]) == res["config"]["block_size"]


def test_report_ends_with_the_verdict(micro):
    _, out = micro
    md = (out / "report.md").read_text()
    tail = md.split("## Verdict", 1)[1].strip().splitlines()[-4:]
    assert [ln.split(":")[0] for ln in tail] == [f"Claim {i}" for i in range(1, 5)]
    for ln in tail:
        assert ln.split(":", 1)[1].split("—")[0].strip() in ("held", "did not hold", "mixed")


def test_none_is_the_frozen_base(micro):
    res, _ = micro
    for p, S in res["summary"].items():
        none = S["none"]["test"]
        for D in "ABC":
            assert none[D]["delta"]["mean"] == 0.0                              # the same per-document sums minus themselves
            assert abs(none[D]["kl"]["mean"]) < 1e-12
        assert S["none"]["geometry"]["B"]["raw"]["gram_drift"]["mean"] == 0.0   # wte against itself: exactly zero


def test_householder_keeps_geometry_raw_and_centred(micro):
    res, _ = micro
    for S in res["summary"].values():
        for name in ("alh-householder", "static-householder", "static-householder-matched"):
            for kind in ("raw", "centred"):
                assert S[name]["geometry"]["B"][kind]["gram_drift"]["mean"] < 1e-5   # orthogonal transforms
        assert S["embed-ft"]["geometry"]["C"]["raw"]["displacement"]["mean"] > 0


def test_counts_and_matched_sizes(micro):
    res, _ = micro
    P = res["protocols"]["shift"]["methods"]
    V, C = res["data"]["V"], res["config"]["n_embd"]
    assert P["embed-ft"]["n_trainable"] == P["embed-ft"]["n_effective"] == V * C
    K = res["matched"]["K"]
    assert P["static-householder-matched"]["n_effective"] == K * C and abs(K - V) <= 1
    assert P["none"]["n_trainable"] == 0


def test_synthetic_floors_are_below_the_base(micro):
    res, _ = micro
    fl, cnt = res["data"]["floors"], res["data"]["counts"]
    for D in "ABC":
        known = sum(fl[D]["known"]["doc_sum"]) / sum(cnt[D]["doc"])
        hist = sum(fl[D]["history"]["doc_sum"]) / sum(cnt[D]["doc"])
        assert 0 < known <= hist < res["summary"]["shift"]["none"]["test"][D]["mean"]


def test_rewrite_report_reproduces_the_report(micro):
    res, out = micro
    md = (out / "report.md").read_text()
    again = rewrite_report(out)
    assert again["verdict"]["lines"] == res["verdict"]["lines"]
    assert (out / "report.md").read_text() == md
    with pytest.raises(InputError):
        rewrite_report(out / "missing")


def test_methods_table_gives_each_protocol_its_own_alh_size(micro):
    """--full's size sweep may choose a different ALH size per protocol: the methods table must then show
    each protocol's size and counts, not the first protocol's for both (the micro run has one size, so
    the two entries are given two others here)."""
    import copy

    def methods_row(results, name):
        section = report_markdown(results).split("## Methods and tuning", 1)[1].split("\n## ", 1)[0]
        return next(x for x in section.splitlines() if x.startswith(f"| {name} ")).split(" | ")

    res = copy.deepcopy(micro[0])
    shift, mix = (res["protocols"][p]["methods"]["alh-householder"] for p in ("shift", "mix"))
    shift["detail"], mix["detail"] = {"D": 4, "K": 2}, {"D": 7, "K": 3}
    mix["n_trainable"], mix["n_effective"] = shift["n_trainable"] + 11, shift["n_effective"] + 5
    cells = methods_row(res, "alh-householder")
    assert cells[0] == "| alh-householder (shift: D=4 K=2; mix: D=7 K=3)"
    assert cells[1:3] == [f"{shift['n_trainable']:,} / {mix['n_trainable']:,}",
                          f"{shift['n_effective']:,} / {mix['n_effective']:,}"]
    same = methods_row(micro[0], "alh-householder")                            # one size for both: one count each
    e = micro[0]["protocols"]["shift"]["methods"]["alh-householder"]
    assert same[1:3] == [f"{e['n_trainable']:,}", f"{e['n_effective']:,}"]


def test_resolve_rejects_bad_input():
    for kw in ({"size": "nope"}, {"not_a_key": 1}, {"methods": ("none", "bogus")}, {"methods": ("alh-householder",)},
               {"methods": ("none", "embed-ft-l2")}, {"protocols": ("sideways",)}, {"lrs": (1e-2, 1e-3)},
               {"setting": "nowhere"}, {"batch_size": 1}):
        size = kw.pop("size", "micro")
        with pytest.raises(InputError):
            resolve(size, **kw)
    assert resolve("micro", adapt_steps=2)["adapt_steps"] == 2
    assert list(resolve("default")["methods"]) == list(STUDY_METHODS)
    full = resolve("full")
    assert full["adapt_steps"] >= 1500 and full["n_seeds"] >= 3 and full["n_embd"] >= 128 and full["n_layer"] >= 4


def test_default_size_is_the_text_setting_with_every_method():
    cfg = resolve("default")
    assert cfg["setting"] == "text" and cfg["n_seeds"] == 3 and set(cfg["protocols"]) == {"shift", "mix"}
    assert (cfg["corpus_a"], cfg["corpus_b"], cfg["corpus_c"]) == ("pydoc", "pycode", "docstrings")
    assert not math.isnan(cfg["pretrain_lr"]) and np.all(np.diff(cfg["lrs"]) > 0)


def test_alh_sizes_are_tuned_on_the_same_footing_and_missing_controls_leave_claims_undecided(tmp_path):
    res = run_study("micro", setting="synthetic", out_dir=None, progress=False, n_seeds=1, protocols=("shift",),
                    methods=("none", "embed-ft", "alh-householder"), alh_sweep=({"K": 2}, {"K": 4}))
    e = res["protocols"]["shift"]["methods"]["alh-householder"]
    assert [v["alh"] for v in e["variants"]] == [{"K": 2}, {"K": 4}]
    best = min(e["variants"], key=lambda v: v["val"])
    assert e["alh_overrides"] == best["alh"] and e["detail"]["K"] == best["alh"]["K"]
    md = report_markdown(res)                                  # the report lists every size's val objective
    line = next(x for x in md.splitlines() if x.startswith("- alh-householder under shift, val objective per size"))
    assert all(f"K={v['alh']['K']}: {v['val']:.3f}" in line for v in e["variants"])
    assert res["verdict"]["claims"][4]["verdict"] == "not decided"
    assert res["verdict"]["lines"][3].startswith("Claim 4: not decided")


def test_each_alh_size_is_a_unit_and_an_open_size_edge_is_extended(tmp_path):
    """--full's way at micro size: each size's sweep is a unit of its own; with two sizes of K the best is on
    an edge either way, so with max_extend=1 the size past it (K halved or doubled) is swept and stored as a
    unit too, the choice is the best of all three, and the report marks the extension."""
    from alh_ref.study.settings import resolve
    from alh_ref.study.units import next_size, schedule, size_unit
    kw = dict(setting="synthetic", n_seeds=1, protocols=("shift",), methods=("none", "alh-householder"),
              alh_sweep=({"K": 2}, {"K": 4}), max_extend=1)
    res = run_study("micro", out_dir=tmp_path, progress=False, **kw)
    units = [u[0] for u in schedule(resolve("micro", **kw), [0])]
    assert units == ["base-0", "shift-alh-householder-0-K2", "shift-alh-householder-0-K4", "shift-alh-householder-0"]
    e = res["protocols"]["shift"]["methods"]["alh-householder"]
    assert [v["alh"] for v in e["variants"][:2]] == [{"K": 2}, {"K": 4}]
    first = min(e["variants"][:2], key=lambda v: v["val"])["alh"]
    assert e["variants"][2] == dict(e["variants"][2], alh={"K": 1 if first["K"] == 2 else 8}, extended=True)
    assert (tmp_path / "cache" / f"{size_unit('shift', 0, e['variants'][2]['alh'])}.json").exists()
    best = min(e["variants"], key=lambda v: v["val"])
    assert e["alh_overrides"] == best["alh"] and e["detail"]["K"] == best["alh"]["K"]
    assert e["size_on_edge"] == (next_size([v["alh"] for v in e["variants"]], best["alh"], 2) is not None)
    stored = [json.loads((tmp_path / "cache" / f"{size_unit('shift', 0, v['alh'])}.json").read_text())
              for v in e["variants"]]
    assert res["protocols"]["shift"]["frontier"]["alh-householder"] == [q for u in stored for q in u["frontier"]]
    assert [u["val"] for u in stored] == [v["val"] for v in e["variants"]]
    line = next(x for x in report_markdown(res).splitlines() if x.startswith("- alh-householder under shift"))
    assert f"K={e['variants'][2]['alh']['K']}: {e['variants'][2]['val']:.3f} (extended)" in line


def test_alh_controls_take_the_size_alh_was_tuned_to():
    """Claim 4's controls are alh-householder with one input changed: with alh_sweep they are built at the
    size alh-householder chose (neither size of the sweep is the preset's K = 2, so a control left at the
    preset would show K = 2), on every seed."""
    res = run_study("micro", setting="synthetic", out_dir=None, progress=False, n_seeds=2, protocols=("shift",),
                    methods=("none", "embed-ft", "alh-householder", "alh-householder-prev", "alh-shuffled"),
                    alh_sweep=({"K": 4}, {"K": 6}))
    M = res["protocols"]["shift"]["methods"]
    chosen = M["alh-householder"]["alh_overrides"]
    assert chosen in ({"K": 4}, {"K": 6})
    for name in ("alh-householder-prev", "alh-shuffled"):
        assert M[name]["alh_overrides"] == chosen and M[name]["detail"]["K"] == chosen["K"]
        assert M[name]["n_effective"] == M["alh-householder"]["n_effective"]       # K reflections of C each
        assert len(M[name]["per_seed"]) == 2


def test_alh_controls_wait_for_alh_householder_only_when_it_is_in_the_study():
    from alh_ref.study.units import needs
    methods = ["none", "alh-householder", "alh-householder-prev"]
    assert needs(0, "mix", "alh-householder-prev", [7, 8], methods) == [("mix-alh-householder-7", "alh-householder")]
    assert needs(0, "mix", "alh-householder-prev", [7, 8], ["none", "alh-householder-prev"]) == []
    assert needs(1, "mix", "alh-householder-prev", [7, 8], methods) == [("mix-alh-householder-prev-7", "alh-householder-prev")]
    assert needs(0, "mix", "side", [7, 8], methods) == []
    sizes = [{"K": 2}, {"K": 4, "D": 8}]                                                   # alh-householder reads its sizes' units
    assert needs(0, "mix", "alh-householder", [7, 8], methods, sizes) == [("mix-alh-householder-7-K2", None),
                                                                           ("mix-alh-householder-7-K4-D8", None)]
    assert needs(0, "mix", "alh-householder", [7, 8], methods, sizes, size={"K": 2}) == []   # a size unit reads nothing
