#!/usr/bin/env python3
"""The model's matmuls on one thread: this NumPy's BLAS against PyTorch's, shape by shape, interleaved.

The figures of docs/performance.md, "How much of the gap is the BLAS". One micro-batch of the train
step (N = B/2 * T rows, as each DataParallel thread sees it at --threads 2) makes these float32
matmuls, with the transposes passed as views (no copies), as alh_ref.ops.linear and the tied head do:

* each linear layer (Cin, Cout) of every block, L times: forward x @ W (N,Cin)@(Cin,Cout), dx = dy @ W^T
  and dW = x^T @ dy;
* the tied head once: z @ wte^T (N,C)@(C,V), dz = dlogits @ wte and dwte = dlogits^T @ z.

Each round runs this script twice as a worker, ``--backend numpy`` under this Python and ``--backend
torch`` under --torch-python (``torch.matmul(a, b, out=o)`` on the same shapes, 1 thread), in
alternating order; each worker gets the shape list (from alh_ref.model.CONFIGS) as JSON, so the torch
venv needs no alh_ref, and prints the median time of every shape. The figure is, per shape and for
the sum over the micro-batch, median over rounds of the NumPy time / the torch time (> 1: torch's BLAS
faster). Read it on an idle machine.

    python benchmarks/gemm_shapes.py --config tiny --rounds 5 --torch-python ~/torch-venv/bin/python

Prints one line per round and, last, one JSON line ``{"bench": "gemm_shapes", ...}``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

B = 16                     # bench_train.py's batch; a micro-batch at --threads 2 is B / 2 sequences


def shapes(config):
    """[(label, M, K, N, transpose_a, transpose_b, count)]: out (M,N) = op(a) @ op(b), `count` times a micro-batch."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from alh_ref.model import CONFIGS
    cfg = CONFIGS[config]
    rows, C, V, L = B // 2 * cfg.block_size, cfg.n_embd, cfg.vocab_size, cfg.n_layer
    out = []
    for name, cin, cout in (("c_attn", C, 3 * C), ("attn.c_proj", C, C), ("c_fc", C, 4 * C), ("mlp.c_proj", 4 * C, C)):
        out += [(f"{name} forward", rows, cin, cout, False, False, L),
                (f"{name} dx", rows, cout, cin, False, True, L),
                (f"{name} dW", cin, rows, cout, True, False, L)]
    out += [("head forward", rows, C, V, False, True, 1), ("head dz", rows, V, C, False, False, 1),
            ("head dwte", V, rows, C, True, False, 1)]
    return out


def worker(backend, shape_list, reps):
    """Time every shape (median of 7 batches of `reps` calls, after a warm-up); print {label: us} as JSON."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import numpy as np
    rng = np.random.default_rng(0)
    if backend == "torch":
        import torch
        torch.set_num_threads(1)
    res = {}
    for label, M, K, N, ta, tb, _ in shape_list:
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)       # stored (K,M) when passed as a^T
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)       # stored (N,K) when passed as b^T
        o = np.empty((M, N), dtype=np.float32)                                    # (M,N)
        if backend == "torch":
            a, b, o = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(o)
            av, bv = (a.T if ta else a), (b.T if tb else b)

            def call():
                torch.matmul(av, bv, out=o)
        else:
            av, bv = (a.T if ta else a), (b.T if tb else b)

            def call():
                np.matmul(av, bv, out=o)
        for _ in range(10):
            call()
        batches = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(reps):
                call()
            batches.append((time.perf_counter() - t0) / reps * 1e6)
        res[label] = statistics.median(batches)
    print(json.dumps(res))


def run_worker(python, backend, args, shape_list):
    cmd = [python, __file__, "--worker", backend, "--shapes", json.dumps(shape_list), "--reps", str(args.reps)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        sys.exit(f"error: the {backend} worker ({python}) failed: {p.stderr.strip().splitlines()[-1:] or p.returncode}")
    return json.loads(lines[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=["tiny", "small"], default="tiny")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds, each one NumPy and one torch worker, in alternating order")
    ap.add_argument("--reps", type=int, default=100, help="calls per timed batch in a worker")
    ap.add_argument("--torch-python",
                    default=os.environ.get("ALH_TORCH_PYTHON", str(Path.home() / "torch-venv" / "bin" / "python")),
                    help="Python of the torch venv (default $ALH_TORCH_PYTHON or ~/torch-venv/bin/python)")
    ap.add_argument("--worker", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--shapes", help=argparse.SUPPRESS)    # a worker's shape list, JSON (it may lack alh_ref)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.reps < 1:
        ap.error(f"--rounds {args.rounds} and --reps {args.reps}: expected positive integers")
    if args.worker:
        return worker(args.worker, json.loads(args.shapes) if args.shapes else shapes(args.config), args.reps)
    if not Path(args.torch_python).exists():
        ap.error(f"--torch-python {args.torch_python}: no such file (expected the Python of a venv with torch)")
    shape_list = shapes(args.config)
    counts = {s[0]: s[6] for s in shape_list}
    per = {"numpy": [], "torch": []}
    for r in range(args.rounds):
        order = [("numpy", sys.executable), ("torch", args.torch_python)]
        for backend, py in order if r % 2 == 0 else order[::-1]:
            per[backend].append(run_worker(py, backend, args, shape_list))
        tot = {b: sum(per[b][-1][k] * c for k, c in counts.items()) / 1e3 for b in per}   # ms per micro-batch
        print(f"round {r}: numpy {tot['numpy']:.3f} ms, torch {tot['torch']:.3f} ms per micro-batch, "
              f"ratio {tot['numpy'] / tot['torch']:.3f}", flush=True)
    totals = {b: [sum(run[k] * c for k, c in counts.items()) / 1e3 for run in per[b]] for b in per}
    ratio_rounds = [a / b for a, b in zip(totals["numpy"], totals["torch"])]
    by_shape = {k: round(statistics.median(a[k] / b[k] for a, b in zip(per["numpy"], per["torch"])), 3) for k in counts}
    for k, v in by_shape.items():
        print(f"  {k:22s} numpy/torch {v:.3f}")
    print(json.dumps({
        "bench": "gemm_shapes", "config": args.config, "rounds": args.rounds,
        "numpy_ms_per_micro_batch": round(statistics.median(totals["numpy"]), 3),
        "torch_ms_per_micro_batch": round(statistics.median(totals["torch"]), 3),
        "numpy_over_torch": round(statistics.median(ratio_rounds), 3),
        "per_round": [round(x, 3) for x in ratio_rounds], "by_shape": by_shape,
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
