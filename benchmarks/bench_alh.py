"""ALH train step vs base train step, interleaved in one process; prints one JSON line last.

    base step:  forward + backward (all parameter gradients) + AdamW over every base parameter
    ALH step:   forward + backward through the frozen base (activation gradients only) and the
                hypernetwork + AdamW over the hypernetwork

Both float32, same batch, same config, and the same --threads and --workers (alh_ref.parallel: the
batch as that many micro-batches at once, as ``alh-ref pretrain/adapt --threads N`` run it). The steps are timed
alternately (A B A B ...) so machine noise hits both alike; the figure to quote is the ratio of
medians (goal: ALH <= 1.3x base).

    python benchmarks/bench_alh.py --config tiny --steps 20 --threads 2
"""
import argparse
import os
import sys
from pathlib import Path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", choices=("tiny", "small"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per method (after 3 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2, help="cores the steps use (set before numpy loads)")
    ap.add_argument("--methods", default="alh-householder,alh-lowrank,alh-film",
                    help="comma-separated ALH methods to compare with the base step")
    ap.add_argument("--encoder", default="transformer", choices=("transformer", "mean"))
    ap.add_argument("--workers", choices=("threads", "processes"), default=None,
                    help="what runs the micro-batches after the first (default: as training, processes on Linux)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.threads < 1 or args.batch_size < 1:
        ap.error("--steps, --threads and --batch-size must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    import json
    import resource
    import time

    import numpy as np

    from alh_ref.alh import ALHConfig
    from alh_ref.alh.methods import make_method
    from alh_ref.model import CONFIGS, init_params
    from alh_ref.optim import AdamW, AdamWConfig
    from alh_ref.parallel import DataParallel, resolve_workers
    from alh_ref.train import sample_batch

    def stepper(method):
        opt = AdamW(method.params, list(method.params), AdamWConfig(), method.decay)
        loss_and_grads = DataParallel(method.loss_and_grads, args.threads, workers=workers, state=method.params)

        def step(x, y):
            _, grads = loss_and_grads(x, y)
            opt.step(method.params, grads)
        return step

    workers = resolve_workers(args.workers)
    cfg = CONFIGS[args.config]
    base = init_params(cfg, seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, 100_000)
    x, y = sample_batch(tokens, args.batch_size, cfg.block_size, rng)                 # (B,T), (B,T)
    steppers = {"base": stepper(make_method("full-ft", base, cfg))}
    acfg = ALHConfig(encoder=args.encoder)
    for name in args.methods.split(","):
        steppers[name] = stepper(make_method(name, base, cfg, acfg, seed=1))
    for s in steppers.values():                                                       # warm-up (and Numba compile)
        for _ in range(3):
            s(x, y)
    times = {k: [] for k in steppers}
    for _ in range(args.steps):                                                       # interleaved A B C A B C ...
        for k, s in steppers.items():
            t0 = time.perf_counter()
            s(x, y)
            times[k].append(time.perf_counter() - t0)
    ntok = args.batch_size * cfg.block_size
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {"bench": "alh_vs_base", "config": args.config, "batch_size": args.batch_size, "steps": args.steps,
           "threads": args.threads, "workers": workers, "encoder": args.encoder, "alh": acfg.to_dict(),
           "ms_median": {k: round(1e3 * v, 2) for k, v in med.items()},
           "tok_s": {k: round(ntok / v, 1) for k, v in med.items()},
           "ratio_vs_base": {k: round(v / med["base"], 3) for k, v in med.items() if k != "base"},
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "loadavg_1min": round(os.getloadavg()[0], 2)}
    for k in med:
        print(f"{k:>18s}: {1e3 * med[k]:8.2f} ms/step  {ntok / med[k]:10.0f} tok/s"
              + ("" if k == "base" else f"  ratio {med[k] / med['base']:.3f}x"))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
