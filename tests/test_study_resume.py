"""A resumable study: a run interrupted after any unit and resumed writes the results of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from alh_ref.errors import InputError
from alh_ref.study import resume as cache_mod
from alh_ref.study import run as run_mod
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
    monkeypatch.setattr(run_mod, "pretrain_base", boom)
    monkeypatch.setattr(run_mod, "_run_method", boom)
    before = _numbers(straight)
    res = run_study("micro", out_dir=straight, resume=True, **KW)
    assert res["cached_units"] == 14
    assert _numbers(straight) == before         # bit-equal: the same JSON records summarised by the same code


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
