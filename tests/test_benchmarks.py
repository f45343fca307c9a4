"""benchmarks/gemm_shapes.py (the model's matmul shapes under NumPy and torch), compare_torch.py's steal share and kernels.py."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gemm_shapes.py"


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def test_gemm_shapes_worker_times_every_shape_of_the_micro_batch():
    """A NumPy worker prints one positive time per shape: 4 linear layers x 3 products, and the head's 3."""
    out = _run("--worker", "numpy", "--config", "tiny", "--reps", "2")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(res) == 15 and all(v > 0 for v in res.values())
    assert {"c_attn forward", "mlp.c_proj dW", "head dwte"} <= set(res)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed (the torch extra)")
def test_gemm_shapes_compares_numpy_with_torch():
    """With torch in this Python, the rounds run both workers and the JSON's ratio is the median of the rounds'."""
    out = _run("--config", "tiny", "--rounds", "2", "--reps", "2", "--torch-python", sys.executable)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["bench"] == "gemm_shapes" and len(res["per_round"]) == 2 and len(res["by_shape"]) == 15
    assert res["numpy_over_torch"] == pytest.approx(sum(res["per_round"]) / 2, abs=2e-3)   # median of two = mean; 3 decimals


def test_gemm_shapes_bad_arguments_are_one_line_errors():
    for args, msg in ((["--rounds", "0"], "expected positive integers"),
                      (["--torch-python", "/nonexistent/python"], "no such file")):
        bad = _run(*args, timeout=60)
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr


def _compare_torch():
    spec = importlib.util.spec_from_file_location("compare_torch", SCRIPT.parent / "compare_torch.py")
    ct = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ct)
    return ct


def test_compare_torch_steal_pct_reads_the_eighth_field_of_proc_stat():
    """benchmarks/compare_torch.py's steal share: stolen jiffies over all jiffies of the first 8 fields
    (guest time, fields 9-10, is already inside user time), None without two snapshots."""
    ct = _compare_torch()
    before = [100, 0, 10, 500, 0, 0, 0, 5, 40, 0]
    after = [160, 0, 20, 520, 0, 0, 0, 15, 70, 0]           # +60 user, +10 system, +20 idle, +10 steal
    assert ct.steal_pct(before, after) == 10.0              # 10 of 100
    assert ct.steal_pct(None, after) is None and ct.steal_pct(before[:4], after[:4]) is None
    snap = ct.cpu_jiffies()
    assert snap is None or (len(snap) >= 8 and all(v >= 0 for v in snap))


@pytest.mark.parametrize("retry, steals, used, retries", [
    (None, [9.0, 0.0], 9.0, 0),          # no --retry-steal: the first try counts, whatever its steal
    (3.0, [9.0, 2.0, 0.0], 2.0, 1),      # the first try at or under 3% counts
    (3.0, [9.0, 8.0, 7.0, 0.0], 7.0, 2), # at most three tries: the third counts even when noisy
    (3.0, [None, 0.0], None, 0),         # no /proc/stat: nothing to judge, no retry
])
def test_compare_torch_retries_a_run_only_for_steal_over_the_limit(monkeypatch, retry, steals, used, retries):
    import argparse
    ct = _compare_torch()
    it = iter(steals)
    monkeypatch.setattr(ct, "run_json", lambda cmd, timeout: {"steal_pct": next(it)})
    out = ct.timed_run(["x"], argparse.Namespace(retry_steal=retry, wait_idle=0, timeout=1))
    assert (out["steal_pct"], out["steal_retries"], out["started_idle"]) == (used, retries, True)


def test_kernels_benchmark_times_every_kernel_of_this_checkout():
    """benchmarks/kernels.py prints one positive best time per kernel and names the alh_ref it imported
    (this checkout by default); a bad count or checkout is a one-line usage error with exit 2."""
    script = SCRIPT.parent / "kernels.py"
    out = subprocess.run([sys.executable, str(script), "--repeat", "1", "--calls", "1"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["bench"] == "kernels" and len(res["us"]) == 10 and all(v > 0 for v in res["us"].values())
    assert {"softmax_ce_forward", "adamw_update (all parameters as one array)"} <= set(res["us"])
    assert Path(res["alh_ref"]) == SCRIPT.parents[1] / "alh_ref"
    for args, msg in ((["--calls", "0"], "expected positive integers"), (["--checkout", "/nonexistent"], "expected a checkout")):
        bad = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr
