"""What process_split.py and parallel_tail.py share (a helper, not a benchmark): two variants of a
train step, first checked to train the same parameters, then timed A B / B A.

Both run in one process: ``rounds`` rounds of ``steps`` timed steps each, in the order A B on even
rounds and B A on odd ones, so a slow stretch of the machine falls on both.
"""
import argparse
import statistics
import time


def parse_round_args(description, argv=None):
    """(parser, args) of --config tiny|small, --rounds (default 8), --steps (default 30), both checked >= 1.

    Imports nothing heavy, so a script can call it before it sets its BLAS threads and loads NumPy.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", choices=["tiny", "small"], default="tiny")
    p.add_argument("--rounds", type=int, default=8, help="rounds of the two variants, interleaved")
    p.add_argument("--steps", type=int, default=30, help="timed train steps per variant per round")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        p.error(f"--rounds {args.rounds} and --steps {args.steps}: expected positive integers")
    return p, args


def same_training(variants, params, names, config, steps=3):
    """Run ``steps`` steps of each variant from the same start; print the losses, return max |param difference|.

    variants : two (key, label, step) tuples;  params : the two variants' parameter dicts, in that order
    """
    import numpy as np
    losses = [(variants[0][2](i), variants[1][2](i)) for i in range(steps)]
    diff = max(float(np.max(np.abs(params[0][n] - params[1][n]))) for n in names)
    print(f"{config}: losses of {steps} steps {[round(a, 6) for a, _ in losses]} ({variants[0][1]}), "
          f"{[round(b, 6) for _, b in losses]} ({variants[1][1]}); max |param difference| {diff}", flush=True)
    return diff


def interleaved_rounds(variants, rounds, steps, first_step=0):
    """Median ms per step of each variant in each round; prints one line per round.

    Parameters
    ----------
    variants : two (key, label, step) tuples; ``step(i)`` runs train step i of that variant
    rounds, steps : int   rounds, and timed steps per variant per round
    first_step : int      the step index of the first timed step (steps count on across rounds)

    Returns
    -------
    dict key -> list of float, the median ms per step of each round, in round order
    """
    (ka, la, _), (kb, lb, _) = variants
    meds = {ka: [], kb: []}
    k = first_step
    for r in range(rounds):
        for key, _, step in variants if r % 2 == 0 else variants[::-1]:
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                step(k)
                times.append(time.perf_counter() - t0)
                k += 1
            meds[key].append(statistics.median(times) * 1e3)
        print(f"round {r}: {la} {meds[ka][-1]:.2f} ms, {lb} {meds[kb][-1]:.2f} ms, "
              f"ratio {meds[ka][-1] / meds[kb][-1]:.3f}", flush=True)
    return meds
