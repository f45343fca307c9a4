"""alh_ref.parallel: the micro-batched step equals the one-call step (loss and every gradient)."""
import json

import numpy as np
import pytest

from alh_ref.alh import ALHConfig
from alh_ref.alh.methods import make_method
from alh_ref.errors import InputError
from alh_ref.model import GPTConfig, gpt_backward, gpt_forward, init_params
from alh_ref.parallel import DataParallel, blas_limit, counted_targets, reduce_weighted, resolve_threads, split_sizes

from tolerances import assert_ulp_close

CFG = GPTConfig(vocab_size=37, block_size=8, n_layer=2, n_head=2, n_embd=16)

# The micro-batched step computes the same sums grouped by micro-batch: each gradient is a sum over
# B*T positions split into M partial sums, and the loss a weighted mean of M partial means. A
# regrouped float64 sum moves by a few ulps of its largest entry (up to 7.5 ulps seen on these
# cases); 64 ulps (~1.4e-14 relative, tolerances.ULPS) leaves room for other CPUs, while a wrong
# weight or a lost micro-batch changes entries by O(1/M) of their size.
ULPS = 64


def _gpt_loss_and_grads(params):
    def f(x, y, ignore=None):
        _, loss, cache = gpt_forward(params, CFG, x, y, ignore)
        grads, _ = gpt_backward(1.0, cache)
        return float(loss), grads
    return f


def _batch(B, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, CFG.vocab_size, size=(B, CFG.block_size))                 # (B,T)
    y = rng.integers(0, CFG.vocab_size, size=(B, CFG.block_size))                 # (B,T)
    return x, y


def _assert_same(par, ser):
    (lp, gp), (ls, gs) = par, ser
    assert_ulp_close(np.float64(lp), np.float64(ls), ULPS, "loss")
    assert sorted(gp) == sorted(gs)
    for name in gs:
        assert_ulp_close(gp[name], gs[name], ULPS, name)


@pytest.mark.parametrize("B,threads", [(4, 2), (5, 2), (7, 3), (3, 8)])
def test_parallel_equals_serial(B, threads):
    params = init_params(CFG, seed=1, dtype=np.float64)
    f = _gpt_loss_and_grads(params)
    x, y = _batch(B)
    with DataParallel(f, threads) as step:
        _assert_same(step(x, y), f(x, y))


@pytest.mark.parametrize("B,threads", [(4, 2), (6, 3)])
def test_parallel_equals_serial_with_ignore_mask(B, threads):
    """Micro-batches with different numbers of counted targets (one with none) are weighted by them."""
    params = init_params(CFG, seed=2, dtype=np.float64)
    f = _gpt_loss_and_grads(params)
    x, y = _batch(B, seed=3)
    ignore = np.random.default_rng(4).random((B, CFG.block_size)) < 0.4             # (B,T)
    ignore[0, :] = True                                                            # micro-batch 0: row 0 ignored
    ignore[B - 1, : CFG.block_size // 2] = True
    with DataParallel(f, threads) as step:
        _assert_same(step(x, y, ignore=ignore), f(x, y, ignore=ignore))


def test_micro_batch_with_no_counted_target():
    params = init_params(CFG, seed=5, dtype=np.float64)
    f = _gpt_loss_and_grads(params)
    x, y = _batch(4, seed=6)
    ignore = np.zeros((4, CFG.block_size), dtype=bool)                             # (B,T)
    ignore[:2] = True                                                              # the whole first micro-batch
    with DataParallel(f, 2) as step:
        _assert_same(step(x, y, ignore=ignore), f(x, y, ignore=ignore))


def _alh_method():
    """alh-householder (both sites, transformer encoder) on a float64 base, off its identity-at-init point."""
    base = init_params(CFG, seed=7, dtype=np.float64)
    m = make_method("alh-householder", base, CFG, ALHConfig(D=8, n_head=2), seed=8)
    rng = np.random.default_rng(14)
    for a in m.params.values():                   # every gradient non-zero
        a += 0.1 * rng.standard_normal(a.shape)
    return m


def test_alh_method_parallel_equals_serial():
    """The ALH step (householder, both sites, transformer encoder) splits like the base one."""
    m = _alh_method()
    x, y = _batch(6, seed=9)
    with DataParallel(m.loss_and_grads, 2) as step:
        _assert_same(step(x, y), m.loss_and_grads(x, y))


def test_extra_batch_arguments_are_split():
    seen = []

    def f(x, y, dom, scale):
        seen.append((x.shape[0], dom.tolist(), scale))
        return 0.0, {"g": np.zeros(1)}
    x, y = _batch(4)
    with DataParallel(f, 2) as step:
        step(x, y, np.arange(4), 3.0)
    assert sorted(seen) == [(2, [0, 1], 3.0), (2, [2, 3], 3.0)]


def test_one_thread_is_the_serial_path():
    params = init_params(CFG, seed=10, dtype=np.float64)
    f = _gpt_loss_and_grads(params)
    x, y = _batch(4, seed=11)
    lp, gp = DataParallel(f, 1)(x, y)
    ls, gs = f(x, y)
    assert lp == ls                               # exact: threads=1 calls f itself on the same inputs
    for name in gs:
        np.testing.assert_array_equal(gp[name], gs[name])   # exact: the same call, same allocation history


def test_parallel_is_reproducible():
    params = init_params(CFG, seed=12, dtype=np.float32)
    f = _gpt_loss_and_grads(params)
    x, y = _batch(6, seed=13)
    with DataParallel(f, 2) as step:
        a, b = step(x, y), step(x, y)
    assert a[0] == b[0]                           # exact: same micro-batches, summed in the same fixed order
    for name in a[1]:
        np.testing.assert_array_equal(a[1][name], b[1][name])


def test_micro_batch_gradients_are_read_never_written():
    """The micro-batch gradients are read, never written: what the wrapped function returned stays as it was."""
    returned = []

    def f(x, y):
        g = {"g": np.full(3, float(x.shape[0])), "h": np.arange(2.0) + x[0, 0]}
        returned.append((g, {n: a.copy() for n, a in g.items()}))
        return 1.0, g
    x, y = _batch(5)
    with DataParallel(f, 2) as step:
        loss, grads = step(x, y)
    assert len(returned) == 2
    for g, before in returned:
        for n in g:
            np.testing.assert_array_equal(g[n], before[n])   # exact: nothing may have written these arrays
            assert not np.shares_memory(g[n], grads[n])


def test_reduce_weighted_is_the_weighted_sum():
    """reduce_weighted against the float64 formula sum_k w_k x_k, for the loss and every gradient."""
    rng = np.random.default_rng(15)
    results = [(float(rng.random()), {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(4)}) for _ in range(3)]
    weights = [0.2, 0.5, 0.3]
    loss, grads = reduce_weighted(results, weights)
    assert_ulp_close(np.float64(loss), np.float64(sum(w * lk for w, (lk, _) in zip(weights, results))), 4, "loss")
    for n in ("a", "b"):
        assert_ulp_close(grads[n], sum(w * gk[n] for w, (_, gk) in zip(weights, results)), 4, n)


def test_blas_limit_sets_and_restores_the_thread_count(monkeypatch):
    """Every BLAS library loaded runs on 1 thread inside blas_limit(1) and on its own count again after it."""
    from threadpoolctl import threadpool_info

    import alh_ref.parallel as parallel
    monkeypatch.setattr(parallel, "_controller", None)   # found afresh: every library loaded by now

    def counts():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    before = counts()
    assert before, "NumPy's BLAS should be among the loaded libraries"
    with blas_limit(1):
        assert counts() == [1] * len(before)
    assert counts() == before


def test_helpers():
    assert split_sizes(16, 2) == [8, 8] and split_sizes(7, 3) == [3, 2, 2] and split_sizes(2, 5) == [1, 1]
    y = np.zeros((2, 3), dtype=np.int64)
    assert counted_targets(y) == 6 and counted_targets(y, np.array([[True, False, True], [False] * 3])) == 4
    assert resolve_threads(None) >= 1 and resolve_threads(3) == 3
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(InputError):
            resolve_threads(bad)


def test_cli_threads_runs_the_same_training(capsys, tmp_path):
    """--threads 2 trains the same run as --threads 1 (to rounding), says so in the summary, and rejects 0."""
    from run_helpers import DIMS, WORDS_A, last_json, run, write_docs
    write_docs(tmp_path / "a.txt", WORDS_A, 30, 0)
    hist = {}
    for n in (1, 2):
        code, out, err = run(capsys, "pretrain", "--corpus", tmp_path / "a.txt", "--vocab-size", "270", *DIMS,
                             "--steps", "3", "--out", tmp_path, "--name", f"t{n}", "--threads", str(n), "--json")
        assert code == 0, err
        assert last_json(out)["threads"] == n
        hist[n] = [json.loads(line)["loss"] for line in (tmp_path / f"t{n}" / "history.jsonl").read_text().splitlines()]
    # float32 training: the same batches and maths, the sums grouped by micro-batch (rounding only)
    np.testing.assert_allclose(hist[2], hist[1], rtol=1e-5)
    code, out, err = run(capsys, "pretrain", "--corpus", tmp_path / "a.txt", "--threads", "0", "--out", tmp_path)
    assert code == 2 and "argument --threads: 0 is too small" in err and "Traceback" not in err   # argparse usage error


def test_keep_freed_memory_leaves_a_user_setting_alone():
    """With MALLOC_TRIM_THRESHOLD_ in the environment, malloc is not reconfigured (the user's setting wins)."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="131072")
    code = "from alh_ref.parallel import keep_freed_memory as k; print(k(), k())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _bench(script, *args, timeout=300):
    """Run benchmarks/<script> with this Python; the finished process (stdout, stderr, returncode)."""
    import subprocess
    import sys
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=timeout)


def _bench_json(script, *args):
    """The JSON line a benchmark prints last, after checking that it exited 0."""
    out = _bench(script, *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _assert_usage_error(script, *args, msg="expected positive integers"):
    bad = _bench(script, *args, timeout=60)
    assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr


def test_page_faults_benchmark_runs_both_malloc_modes():
    """benchmarks/page_faults.py runs one process per mode: mallopt is set only in the "kept" one, and the
    two train the same model to the same loss (the same maths; malloc's settings move no number)."""
    import ctypes
    try:
        ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        pytest.skip("this C library has no mallopt: keep_freed_memory changes nothing here")
    res = _bench_json("page_faults.py", "--config", "study", "--steps", "4", "--warmup", "2", "--rounds", "1")
    assert res["bench"] == "page_faults" and set(res["median"]) == {"default", "kept"}
    default, kept = res["runs"]["default"][0], res["runs"]["kept"][0]
    assert (default["kept"], kept["kept"]) == (False, True)
    # same inputs and code, but another allocation history (buffer addresses and alignment): rounding at most
    assert abs(default["loss_last"] - kept["loss_last"]) <= 1e-3
    assert all(r[k] >= 0 for r in (default, kept) for k in ("faults_per_step", "cpu_ms_per_step", "wall_ms_per_step"))
    _assert_usage_error("page_faults.py", "--config", "study", "--threads", "2", msg="use --threads 1")


def test_contention_benchmark_reports_the_three_settings():
    """benchmarks/contention.py times one micro-batch in its three settings and ends with one JSON line whose
    ratios are those of its medians; a bad count is a one-line usage error with exit 2."""
    res = _bench_json("contention.py", "--config", "tiny", "--rounds", "1", "--calls", "2")
    med = res["ms_median"]
    assert res["bench"] == "contention" and set(med) == {"alone", "beside_blas", "beside_micro_batch"}
    assert all(v > 0 for v in med.values())
    assert res["sharing_ratio"] == pytest.approx(med["beside_blas"] / med["alone"], rel=2e-3, abs=1e-3)   # both rounded to 3 decimals
    assert res["gil_ratio"] == pytest.approx(med["beside_micro_batch"] / med["beside_blas"], rel=2e-3, abs=1e-3)   # both rounded to 3 decimals
    _assert_usage_error("contention.py", "--rounds", "0")


def test_process_split_benchmark_matches_the_thread_split():
    """benchmarks/process_split.py (DataParallel on worker processes against worker threads) trains the
    same parameters both ways; a bad count is a one-line usage error with exit 2."""
    import sys
    if not sys.platform.startswith("linux"):
        pytest.skip("worker processes need os.fork on Linux")
    res = _bench_json("process_split.py", "--config", "tiny", "--rounds", "2", "--steps", "1")
    assert res["bench"] == "process_split" and len(res["per_round"]) == 2
    assert res["threads_ms_median"] > 0 and res["processes_ms_median"] > 0
    # Same kernels on the same inputs, summed in the same order (exact on the machines measured); a
    # worker's arrays sit at other addresses, so allow rounding of 3 AdamW steps rather than demand 0.
    assert res["max_param_diff"] <= 1e-5
    _assert_usage_error("process_split.py", "--steps", "0")


def test_parallel_tail_benchmark_trains_what_the_serial_tail_trains():
    """benchmarks/parallel_tail.py (the gradient sum, norm and AdamW split over the two threads) trains the
    same parameters as the serial tail; a bad count is a one-line usage error with exit 2."""
    res = _bench_json("parallel_tail.py", "--config", "tiny", "--rounds", "2", "--steps", "1")
    assert res["bench"] == "parallel_tail" and len(res["per_round"]) == 2
    assert res["serial_ms_median"] > 0 and res["split_ms_median"] > 0
    # The same kernels on the same inputs, every sum in the same order (the norm's per-tensor sums of
    # squares added in name order, as AdamW.step adds them): 0.0 on the machines measured. The two
    # variants allocate differently, and a vector loop's split may follow an array's alignment, so allow
    # the rounding of 3 AdamW steps rather than demand 0; a tensor summed or updated wrongly moves by ~1e-3.
    assert res["max_param_diff"] <= 1e-5
    _assert_usage_error("parallel_tail.py", "--rounds", "0")
