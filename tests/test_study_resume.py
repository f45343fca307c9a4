"""A resumable study: a run interrupted after any unit and resumed writes the results of an uninterrupted run."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from alh_ref.errors import InputError
from alh_ref.study import resume as cache_mod
from alh_ref.study import run as run_mod
from alh_ref.study import units as units_mod
from alh_ref.study import run_study

KW = dict(setting="synthetic", seed=3, progress=False, protocols=("shift", "mix"),
          methods=("none", "embed-ft", "embed-ft-l2", "alh-householder"))
TIMING = {"runtime_s", "cached_units", "train_seconds", "ms_per_step"}


def _numbers(out):
    """results.json without its wall-clock timings (the only values that may differ between runs)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in TIMING}
        return [strip(v) for v in x] if isinstance(x, list) else x
    return strip(json.loads((out / "results.json").read_text()))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    run_study("micro", out_dir=out, **KW)
    return out


def _interrupt_after(monkeypatch, k):
    done = []

    def hook(unit):
        done.append(unit)
        if len(done) >= k:
            raise KeyboardInterrupt(f"simulated kill after {unit}")
    monkeypatch.setattr(cache_mod, "unit_done", hook)


def test_interrupted_twice_and_resumed_equals_an_uninterrupted_run(straight, tmp_path, monkeypatch):
    # 2 seeds x (base + 2 protocols x 3 methods) = 14 units; stop in seed 3's sweep units, then in seed 4's
    for k in (3, 6):
        _interrupt_after(monkeypatch, k)
        with pytest.raises(KeyboardInterrupt):
            run_study("micro", out_dir=tmp_path, resume=True, **KW)
    monkeypatch.setattr(cache_mod, "unit_done", lambda unit: None)
    res = run_study("micro", out_dir=tmp_path, resume=True, **KW)
    assert res["complete"] and res["cached_units"] == 9 and len(list((tmp_path / "cache").glob("*.json"))) == 15
    # bit-equal: the same code path runs on the same inputs (bases re-pretrained from their seed, records read
    # back from the same JSON in both runs), so every number must match exactly, not within a tolerance
    assert _numbers(tmp_path) == _numbers(straight)
    assert (tmp_path / "report.md").read_text().split("- wall time")[0] == \
        (straight / "report.md").read_text().split("- wall time")[0]


def test_a_complete_cache_resumes_without_training(straight, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("pretrained although every unit is cached")
    monkeypatch.setattr(units_mod, "pretrain_base", boom)
    monkeypatch.setattr(units_mod, "run_method", boom)
    before = _numbers(straight)
    res = run_study("micro", out_dir=straight, resume=True, **KW)
    assert res["cached_units"] == 14
    assert _numbers(straight) == before         # bit-equal: the same JSON records summarised by the same code


def test_the_study_and_each_worker_keep_freed_memory(straight, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(straight, out)                                            # a worker's resume rewrites the manifest
    calls = []
    monkeypatch.setattr(units_mod, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(units_mod, "run_method", lambda *a, **k: calls.append("trained"))
    run_study("micro", out_dir=out, resume=True, **KW)                       # the parent (complete cache: no training)
    overrides = {k: KW[k] for k in ("protocols", "methods")}
    run_mod._worker("micro", KW["setting"], str(out), KW["seed"], False, overrides, 1)    # a worker, called in-process
    assert calls == ["keep", "keep"]


def test_resume_refuses_another_configuration(straight):
    with pytest.raises(InputError, match=r"adapt_steps: 3 vs 2.*drop --resume"):
        run_study("micro", out_dir=straight, resume=True, adapt_steps=2, **KW)
    with pytest.raises(InputError, match="seeds"):
        run_study("micro", out_dir=straight, resume=True, **dict(KW, seed=0))


def test_a_real_kill_9_then_resume(straight, tmp_path):
    code = (f"from alh_ref.study import run_study; run_study('micro', out_dir={str(tmp_path)!r}, resume=True, "
            f"**{KW!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    t_end = time.monotonic() + 120
    while len(list((tmp_path / "cache").glob("*.json"))) < 4 and proc.poll() is None and time.monotonic() < t_end:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "results.json").exists() or not json.loads((tmp_path / "results.json").read_text())["complete"]
    res = run_study("micro", out_dir=tmp_path, resume=True, **KW)
    assert res["complete"] and res["cached_units"] >= 3
    assert _numbers(tmp_path) == _numbers(straight)        # bit-equal: same code path, same inputs (see above)


def test_a_fresh_run_never_deletes_an_unfinished_cache(tmp_path, monkeypatch):
    """Without --resume, an unfinished run's units (possibly hours of training) are refused, not deleted."""
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_study("micro", out_dir=tmp_path, **KW)
    monkeypatch.setattr(cache_mod, "unit_done", lambda unit: None)
    kept = sorted(p.name for p in (tmp_path / "cache").glob("*.json"))
    with pytest.raises(InputError, match=r"2 finished unit\(s\) of an unfinished run; continue it with --resume"):
        run_study("micro", out_dir=tmp_path, **KW)
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.json")) == kept


def test_a_fresh_run_may_replace_a_complete_cache(straight, monkeypatch):
    """A finished run is reproducible, so running the same command again without --resume recomputes it."""
    assert json.loads((straight / "cache" / "manifest.json").read_text())["complete"] is True
    before = _numbers(straight)
    res = run_study("micro", out_dir=straight, **KW)
    assert res["cached_units"] == 0 and _numbers(straight) == before    # bit-equal: same code, same inputs


def _close(a, b, path="results"):
    """Nested results equal in structure, strings and ints, floats within 1e-6 relative (rounding)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, path


def test_two_workers_compute_each_unit_once_and_match_one(straight, tmp_path, capfd):
    res = run_study("micro", out_dir=tmp_path / "run", jobs=2, **dict(KW, progress=True))
    err = capfd.readouterr().err
    assert res["complete"] and res["cached_units"] == 0
    computed = [ln.split("] ", 1)[1].split(" test ")[0] for ln in err.splitlines() if " worker " in ln and " test " in ln]
    assert len(computed) == 14 and len(set(computed)) == 14, computed       # every unit once, by one worker
    # not bit-equal: the workers run BLAS on one thread, the straight run on every core (another summation order)
    _close(_numbers(tmp_path / "run"), _numbers(straight))


def test_a_held_unit_and_its_dependants_wait_for_its_holder(straight, tmp_path):
    """While another process holds shift-embed-ft-3, every other unit is computed; the held one and the units
    that need its tuning entry wait, and are computed once it is released."""
    import threading
    from alh_ref.study.resume import StudyCache
    from alh_ref.study.run import _assemble
    from alh_ref.study.settings import resolve
    from alh_ref.study.data import load_data
    from alh_ref.study.protocol import base_config, resolve_matched
    cfg = resolve("micro", KW["setting"], protocols=KW["protocols"], methods=KW["methods"])
    data = load_data(cfg)
    gcfg = base_config(cfg, data["V"])
    setup = {"gcfg": gcfg, "cfg": cfg, "data": data, "matched": resolve_matched(cfg, gcfg), "seeds": [3, 4]}
    man = cache_mod.manifest(cfg, setup["seeds"], data)
    mine, other = StudyCache(tmp_path, man, resume=False), StudyCache(tmp_path, man, resume=True)
    held = "shift-embed-ft-3"
    waits = {held, "shift-embed-ft-l2-3", "shift-embed-ft-4", "shift-embed-ft-l2-4"}
    every = {u[0] for u in units_mod.schedule(cfg, setup["seeds"])}
    with other.claim(held) as got:
        assert got
        t = threading.Thread(target=units_mod.compute_missing, args=(mine, setup), kwargs={"poll": 0.05})
        t.start()
        t_end = time.monotonic() + 120
        while {u for u in every if mine.has(u)} != every - waits and time.monotonic() < t_end:
            time.sleep(0.05)
        assert {u for u in every if mine.has(u)} == every - waits
        time.sleep(0.3)                                                   # several polls: still waiting
        assert not any(mine.has(u) for u in waits) and t.is_alive()
    t.join(120)
    assert not t.is_alive() and all(mine.has(u) for u in every)
    assert _assemble(mine, setup, data)["protocols"]["shift"]["methods"]["embed-ft"]["per_seed"][1]["seed"] == 4


def test_a_unit_held_by_another_process_is_skipped(tmp_path):
    from alh_ref.study.resume import StudyCache
    man = {"config": {}, "seeds": [0], "data_sha256": "x", "hash": "h"}
    one, two = StudyCache(tmp_path, man, resume=True), StudyCache(tmp_path, man, resume=True)
    with one.claim("shift-embed-ft-0") as mine:
        assert mine
        with two.claim("shift-embed-ft-0") as theirs:
            assert not theirs                           # flock on another open file description: refused
        with two.claim("mix-embed-ft-0") as other:
            assert other
    with two.claim("shift-embed-ft-0") as now:
        assert now                                      # released when the holder's block ended


def test_jobs_needs_an_output_folder():
    with pytest.raises(InputError, match="jobs must be a whole number >= 1"):
        run_study("micro", jobs=2, **KW)


def test_resuming_with_other_code_warns_and_keeps_the_units(straight, monkeypatch, capsys):
    real = json.loads((straight / "cache" / "manifest.json").read_text())["code_sha256"]
    assert real == cache_mod.code_fingerprint()
    monkeypatch.setattr(cache_mod, "code_fingerprint", lambda: "f" * 64)
    res = run_study("micro", out_dir=straight, resume=True, **KW)
    assert res["cached_units"] == 14
    assert "were computed by other alh_ref code" in capsys.readouterr().err
    kept = json.loads((straight / "cache" / "manifest.json").read_text())
    assert kept["code_sha256"] == real and kept["resumed_with"] == "f" * 64
