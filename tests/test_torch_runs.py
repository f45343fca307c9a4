"""The torch backend on alh_ref run folders: checkpoints both ways, training curves, data parallel.

Toy sizes (T = 16, L = 1, C = 32, B = 4, a few steps). Skipped when torch is not installed.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (optional extra: pip install -e '.[torch]')")

from alh_ref import runs  # noqa: E402
from alh_ref.checkpoint import load_checkpoint  # noqa: E402
from alh_ref.errors import InputError  # noqa: E402
from alh_ref.torch import runs as truns  # noqa: E402

DIMS = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32, "batch_size": 4}
ALH = {"D": 8, "hyper_heads": 2, "K": 2, "R": 2, "batch_size": 4}
REPO = Path(__file__).resolve().parents[1]


def _write_docs(path, words, n_docs, seed):
    rng = np.random.default_rng(seed)
    path.write_text("\n\n\n".join(" ".join(rng.choice(words, 50)) + "." for _ in range(n_docs)), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("texts")
    return {"a": _write_docs(d / "a.txt", "the cat sat on a mat and dog ran far from home while birds sang".split(), 60, 0),
            "b": _write_docs(d / "b.txt", "def return import class self value none true for while if else".split(), 60, 1)}


@pytest.fixture(scope="module")
def out(tmp_path_factory, texts):
    """A run root holding 'np_base' (pretrained by alh_ref) and 'torch_base' (by the torch backend)."""
    o = tmp_path_factory.mktemp("runs")
    runs.pretrain(o, "np_base", corpus=texts["a"], vocab_size=300, steps=6, ckpt_every=3, **DIMS)
    truns.pretrain(o, "torch_base", corpus=texts["a"], vocab_size=300, steps=6, ckpt_every=3, **DIMS)
    return o


def _history(rd):
    return [json.loads(line) for line in (Path(rd) / "history.jsonl").read_text().splitlines()]


def _final(summary):
    return load_checkpoint(summary["checkpoint"])[0]


def _assert_same_tensors(got, want):
    """Same names, and every tensor equal to float32 rounding after a few AdamW steps."""
    assert set(got) == set(want)
    for n in want:
        np.testing.assert_allclose(got[n], want[n], rtol=1e-4, atol=1e-6, err_msg=n)


def test_torch_pretrain_follows_numpy_pretrain(out):
    """Same seed, data and schedule: the same loss curve and final parameters, to float32 rounding."""
    a, b = _history(out / "np_base"), _history(out / "torch_base")
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in b], [r["grad_norm"] for r in a], rtol=1e-4)
    pa = load_checkpoint(out / "np_base" / "checkpoints" / "step-000006")[0]
    pb = load_checkpoint(out / "torch_base" / "checkpoints" / "step-000006")[0]
    _assert_same_tensors(pb, pa)


@pytest.mark.parametrize("method", ["alh-householder", "lora-embed"])
def test_numpy_base_adapts_with_torch_and_evals_agree(out, texts, method):
    opts = dict(base="np_base", method=method, corpus=texts["b"], steps=4, **(ALH if method != "lora-embed" else {"batch_size": 4}))
    s_t = truns.adapt(out, f"t-{method}", **opts)
    s_n = runs.adapt(out, f"n-{method}", **opts)
    np.testing.assert_allclose(s_t["history"], [r["loss"] for r in _history(out / f"n-{method}")], rtol=1e-5)
    _assert_same_tensors(_final(s_t), _final(s_n))
    ev_n = runs.evaluate(f"t-{method}", out=out, corpus=texts["b"])                  # alh-ref eval of the torch run
    ev_t = truns.evaluate(f"t-{method}", out=out, corpus=texts["b"])
    assert ev_n["n_tokens"] == ev_t["n_tokens"]
    assert abs(ev_n["loss"] - ev_t["loss"]) <= 1e-5 * ev_n["loss"]
    # alh-ref resumes the torch run (AdamW moments, step count and sampler RNG from its checkpoint)
    for name in (f"t-{method}", f"n-{method}"):
        runs.adapt(out, name, resume=True, steps=6)
    h_t, h_n = _history(out / f"t-{method}"), _history(out / f"n-{method}")
    assert [r["step"] for r in h_t] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r["loss"] for r in h_t], [r["loss"] for r in h_n], rtol=1e-5)


def test_torch_base_adapts_with_numpy_and_evals_agree(out, texts):
    runs.adapt(out, "n-side", base="torch_base", method="side", corpus=texts["b"], steps=3, **ALH)
    ev_n = runs.evaluate("n-side", out=out, corpus=texts["b"])
    ev_t = truns.evaluate("n-side", out=out, corpus=texts["b"], dtype="float64")
    assert abs(ev_n["loss"] - ev_t["loss"]) <= 1e-5 * ev_n["loss"]
    ev_base = truns.evaluate("torch_base", out=out, corpus=texts["b"])
    assert abs(runs.evaluate("torch_base", out=out, corpus=texts["b"])["loss"] - ev_base["loss"]) <= 1e-5 * ev_base["loss"]


def test_two_gloo_processes_equal_one(out, texts, tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo, loopback) against one process with the same global batch."""
    args = ["adapt", "--base", str(out / "np_base" / "checkpoints" / "step-000006"), "--tokenizer",
            str(out / "np_base"), "--method", "alh-shuffled", "--corpus", texts["b"], "--steps", "4", "--D", "8",
            "--K", "2", "--R", "2", "--batch-size", "4", "--out", str(tmp_path), "--progress", "off"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "alh_ref.torch", *args, "--name", "ddp"], env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 process(es)" in r.stdout
    from alh_ref.torch.cli import main
    assert main([*args, "--name", "one"]) == 0
    h2, h1 = _history(tmp_path / "ddp"), _history(tmp_path / "one")
    np.testing.assert_allclose([r["loss"] for r in h2], [r["loss"] for r in h1], rtol=1e-5)
    p2 = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "step-000004")[0]
    p1 = load_checkpoint(tmp_path / "one" / "checkpoints" / "step-000004")[0]
    _assert_same_tensors(p2, p1)


def test_torch_resumes_runs_of_either_backend(out, texts):
    """Resuming continues the curve: torch resumes its own base and an alh-ref adapted run, alh-ref resumes its own."""
    runs.adapt(out, "n-film", base="np_base", method="alh-film", corpus=texts["b"], steps=2, **ALH)
    runs.adapt(out, "n-film-ref", base="np_base", method="alh-film", corpus=texts["b"], steps=4, **ALH)
    s = truns.adapt(out, "n-film", resume=True, steps=4)
    assert s["resumed_from"] == 2 and s["steps_this_session"] == 2
    np.testing.assert_allclose(s["history"], [r["loss"] for r in _history(out / "n-film-ref")], rtol=1e-5)
    _assert_same_tensors(_final(s), load_checkpoint(out / "n-film-ref" / "checkpoints" / "step-000004")[0])
    truns.pretrain(out, "torch_base2", corpus=texts["a"], vocab_size=300, steps=3, ckpt_every=3, **DIMS)
    truns.pretrain(out, "torch_base2", resume=True, steps=6)
    np.testing.assert_allclose([r["loss"] for r in _history(out / "torch_base2")],
                               [r["loss"] for r in _history(out / "torch_base")], rtol=1e-6)
    with pytest.raises(InputError, match="differs from this run"):
        truns.pretrain(out, "torch_base2", resume=True, steps=8, seed=5)


def test_torch_resume_keeps_the_runs_keep_and_spares_pinned_checkpoints(out, texts):
    """--resume keeps the run's own --keep 0 (every checkpoint), and pruning spares a pinned base checkpoint."""
    truns.pretrain(out, "keep_all", corpus=texts["a"], vocab_size=300, steps=2, ckpt_every=1, keep=0, **DIMS)
    truns.pretrain(out, "keep_all", resume=True, steps=4)
    assert [p.name for _, p in runs.list_checkpoints(out / "keep_all")] == [f"step-{s:06d}" for s in (1, 2, 3, 4)]
    truns.pretrain(out, "pinned", corpus=texts["a"], vocab_size=300, steps=2, ckpt_every=1, keep=1, **DIMS)
    runs.adapt(out, "on_pinned", base=str(out / "pinned"), corpus=texts["b"], method="embed-ft", steps=1,
               batch_size=DIMS["batch_size"])
    truns.pretrain(out, "pinned", resume=True, steps=4)
    names = [p.name for _, p in runs.list_checkpoints(out / "pinned")]
    assert "step-000002" in names and names[-1] == "step-000004"          # the adapted run's base survives


def test_two_torch_writers_to_one_run_the_second_exits_2_naming_the_first(tmp_path, texts, capsys):
    """A second torch writer is refused (exit 2, the holder's pid); once the first dies, its lock is taken over."""
    from alh_ref.torch.cli import main
    args = ["pretrain", "--corpus", texts["a"], "--vocab-size", "300", "--block-size", "16", "--n-layer", "1",
            "--n-head", "2", "--n-embd", "32", "--batch-size", "4", "--out", str(tmp_path), "--name", "dup",
            "--progress", "off"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-m", "alh_ref.torch", *args, "--steps", "100000",
                              "--ckpt-every", "100000"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lock = tmp_path / "dup" / runs.LOCK_FILE
    try:
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first writer never took the lock"
            time.sleep(0.2)
        assert main([*args, "--steps", "2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"being written by another process (pid {first.pid})" in err[0]
    finally:
        first.kill()                                      # killed mid-run: its pid stays in the lock file
        first.wait()
    s = truns.pretrain(tmp_path, "dup", corpus=texts["a"], vocab_size=300, steps=2, **DIMS)
    assert any(f"left by pid {first.pid}" in w for w in s["warnings"])
    assert [st for st, _ in runs.list_checkpoints(tmp_path / "dup")] == [2]


def test_torch_runs_honour_errors_for_undecodable_bytes(tmp_path, texts):
    """--errors strict (default) refuses a Latin-1 file; replace trains, is saved, and resume and eval reuse it."""
    p = tmp_path / "latin1.txt"
    p.write_bytes(Path(texts["a"]).read_text(encoding="utf-8").replace(".", " caf\xe9.").encode("latin-1"))
    with pytest.raises(InputError, match="--errors replace|decode|UTF-8"):
        truns.pretrain(tmp_path, "strict", corpus=str(p), vocab_size=300, steps=1, **DIMS)
    s = truns.pretrain(tmp_path, "lat", corpus=str(p), errors="replace", vocab_size=300, steps=2, **DIMS)
    assert load_checkpoint(s["checkpoint"])[1]["corpus"]["errors"] == "replace"
    assert truns.pretrain(tmp_path, "lat", resume=True, steps=3)["step"] == 3          # reloaded the same way
    ev = truns.evaluate("lat", out=tmp_path, split="train")                             # the run's own corpus and errors
    assert ev["n_tokens"] > 0
    with pytest.raises(InputError):
        truns.evaluate("lat", out=tmp_path, corpus=str(p), split="train", errors="strict")


def test_torch_blow_up_is_caught_before_its_checkpoint_is_saved(tmp_path, texts, monkeypatch):
    """The driver's divergence check runs on the torch loss: the parameters that blew up are never saved."""
    from alh_ref.errors import RunError
    real = truns.step_fn

    def blows_up_at_call_6(*a):
        f, calls = real(*a), []

        def g(x, y):
            loss, grads = f(x, y)
            calls.append(1)
            return (loss * 1e4 if len(calls) >= 6 else loss), grads
        return g
    monkeypatch.setattr(truns, "step_fn", blows_up_at_call_6)
    with pytest.raises(RunError, match="is above 3 x the median") as e:
        truns.pretrain(tmp_path, "div", corpus=texts["a"], vocab_size=300, steps=10, ckpt_every=1, keep=0, **DIMS)
    # step 6 computes the loss of the parameters after step 5: checkpoint 5 is never written
    assert [s for s, _ in runs.list_checkpoints(tmp_path / "div")] == [1, 2, 3, 4]
    assert f"the last good checkpoint is {str(runs.checkpoint_path(tmp_path / 'div', 4))!r}" in str(e.value)
