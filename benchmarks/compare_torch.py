#!/usr/bin/env python3
"""alh_ref vs the PyTorch CPU anchor, interleaved: A B A B ... in separate subprocesses.

Each round runs, per config, ``bench_train.py`` (A, this Python) and then
``../shared/bench/torch_anchor.py`` (B, the torch venv's Python), each as a fresh process with the
same --steps and --threads, and reads the JSON line each prints last. The machines are noisy
(+-30% between runs), so the two are compared inside one run and the figure quoted is the ratio of
medians over the rounds: ratio = median(alh_ref tok/s) / median(torch tok/s)  (> 1: alh_ref faster).
Each round also runs ``bench_alh.py`` (the ALH train step against the base step, in one process),
unless --no-alh: alh_ratio = median over rounds of (ALH ms / base ms) per ALH method (< 1.3: goal).
Each run also records the CPU steal time while it ran (Linux /proc/stat: the share of the machine's
CPU time the hypervisor gave to other guests), printed per round and listed per config in the JSON:
on a virtual machine a busy host is invisible to --wait-idle, and a round with a few percent of
steal is a noisy round. --retry-steal PCT runs such a timing again (the same rule for both sides).

Usage:
  python benchmarks/compare_torch.py [--config tiny|small|all] [--rounds 3] [--steps 30] [--threads 2]
                                     [--torch-python PATH] [--anchor PATH] [--wait-idle SECONDS] [--no-alh]
                                     [--retry-steal PCT]

The torch Python is --torch-python, else $ALH_TORCH_PYTHON, else $HOME/torch-venv/bin/python
(set it up with: python3 -m venv $HOME/torch-venv && $HOME/torch-venv/bin/pip install torch==2.13.0 numpy).
If it is missing, this says so and times alh_ref alone (ratio null). Prints a table and, last, one
JSON line ``{"bench": "alh_ref_vs_torch", "results": {config: {...}}, ...}``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_ANCHOR = REPO.parent / "shared" / "bench" / "torch_anchor.py"
DEFAULT_TORCH_PY = Path.home() / "torch-venv" / "bin" / "python"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=["tiny", "small", "all"], default="all")
    p.add_argument("--rounds", type=int, default=3, help="A B rounds per config")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run (median of these)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--torch-python", default=os.environ.get("ALH_TORCH_PYTHON", str(DEFAULT_TORCH_PY)),
                   help="Python of the torch venv (default $ALH_TORCH_PYTHON or ~/torch-venv/bin/python)")
    p.add_argument("--anchor", default=str(DEFAULT_ANCHOR), help="path of torch_anchor.py")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per benchmark process")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="before each run, wait up to SECONDS for the CPUs to be >= 90%% idle (Linux /proc/stat); "
                        "each run records whether it started on an idle machine")
    p.add_argument("--split", choices=["on", "off"], default="on",
                   help="passed to bench_train.py: on = --threads micro-batches at once (default), off = one call")
    p.add_argument("--workers", choices=["threads", "processes"], default=None,
                   help="passed to bench_train.py and bench_alh.py: what runs the micro-batches after the first "
                        "(default: as training, processes on Linux)")
    p.add_argument("--no-alh", action="store_true", help="skip bench_alh.py (the ALH step vs the base step)")
    p.add_argument("--retry-steal", type=float, default=None, metavar="PCT",
                   help="run a timing again (at most twice) when more than PCT%% of the CPU time was stolen "
                        "while it ran (Linux); the last try counts, and the JSON counts the retries")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1 or args.threads < 1:
        p.error("--rounds, --steps and --threads must be >= 1")
    if args.retry_steal is not None and not 0 <= args.retry_steal < 100:
        p.error(f"--retry-steal {args.retry_steal}: expected a percentage in [0, 100)")
    return args


def cpu_jiffies():
    """The first line of /proc/stat: user nice system idle iowait irq softirq steal ... (Linux; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def steal_pct(before, after):
    """Percent of the CPU time between two cpu_jiffies() snapshots that the hypervisor gave to other guests."""
    if before is None or after is None or len(before) < 8:
        return None
    d = [b - a for a, b in zip(before[:8], after[:8])]     # the first 8 fields; guest time is inside user
    return round(100.0 * d[7] / max(1, sum(d)), 1)


def run_json(cmd, timeout):
    """Run ``cmd``; return the JSON object on its last stdout line (RuntimeError with stderr if none).

    Adds ``steal_pct``: the share of the machine's CPU time that was stolen (given by the hypervisor to
    other guests) while it ran, None where /proc/stat is missing. A virtual machine whose host is busy
    looks idle from inside, and ``--wait-idle`` cannot see it; its rounds show up as steal instead.
    """
    j0 = cpu_jiffies()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    j1 = cpu_jiffies()
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    out = json.loads(lines[-1])
    out["steal_pct"] = steal_pct(j0, j1)
    return out


def timed_run(cmd, args):
    """run_json(cmd) after wait_idle; again, at most twice, while its steal_pct exceeds --retry-steal.

    The same rule for every run of both sides, set before any result is seen; the result carries
    ``started_idle`` and ``steal_retries`` (how many earlier tries were dropped for steal).
    """
    for tries in range(3 if args.retry_steal is not None else 1):
        idle = wait_idle(args.wait_idle)
        out = run_json(cmd, args.timeout)
        out["started_idle"], out["steal_retries"] = idle, tries
        if args.retry_steal is None or out["steal_pct"] is None or out["steal_pct"] <= args.retry_steal:
            break
    return out


def idle_fraction(seconds=1.0):
    """Fraction of CPU time all cores spent idle over the next ``seconds`` (Linux /proc/stat; None elsewhere)."""
    v0 = cpu_jiffies()
    time.sleep(seconds)
    v1 = cpu_jiffies()
    if v0 is None or v1 is None:
        return None
    d = [b - a for a, b in zip(v0, v1)]
    return (d[3] + d[4]) / max(1, sum(d))                  # idle + iowait over all jiffies


def wait_idle(max_wait):
    """Wait up to ``max_wait`` s for two consecutive seconds >= 90% idle; True if found (or not waiting)."""
    if max_wait <= 0:
        return True
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        f = idle_fraction()
        if f is None:
            return False
        if f >= 0.9 and idle_fraction() >= 0.9:
            return True
    return False


def torch_available(python, anchor):
    """(ok, why not) for the torch side: the anchor script exists and its Python imports torch."""
    if not Path(anchor).is_file():
        return False, f"torch anchor {anchor} not found (expected ../shared/bench/torch_anchor.py beside the repo)"
    if not Path(python).is_file():
        return False, (f"torch Python {python} not found; set it up with `python3 -m venv $HOME/torch-venv && "
                       "$HOME/torch-venv/bin/pip install torch==2.13.0 numpy`, or pass --torch-python / $ALH_TORCH_PYTHON")
    proc = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    if proc.returncode != 0:
        return False, f"{python} cannot import torch: {proc.stderr.strip().splitlines()[-1:]}"
    return True, proc.stdout.strip()


def cpu_info():
    """CPU model name and whether it has AVX-512 (Linux /proc/cpuinfo; None elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": None, "avx512f": None}
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), None)
    return {"model": model, "avx512f": " avx512f" in text}


def main():
    args = parse_args()
    configs = ["tiny", "small"] if args.config == "all" else [args.config]
    have_torch, torch_info = torch_available(args.torch_python, args.anchor)
    if not have_torch:
        print(f"TORCH SKIPPED: {torch_info}", flush=True)
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    workers = [] if args.workers is None else ["--workers", args.workers]
    load_before = os.getloadavg()
    runs = {c: {"alh_ref": [], "torch": [], "alh": []} for c in configs}
    for r in range(args.rounds):
        for c in configs:
            a = timed_run([sys.executable, str(HERE / "bench_train.py"), "--config", c, *common, "--split", args.split, *workers],
                          args)
            runs[c]["alh_ref"].append(a)
            line = f"round {r + 1}/{args.rounds} {c:5s}  alh_ref {a['train_tok_s']:>9.1f} tok/s ({a['train_ms_median']:.2f} ms)"
            if have_torch:
                b = timed_run([args.torch_python, args.anchor, "--config", c, *common], args)
                runs[c]["torch"].append(b)
                line += (f"  torch {b['train_tok_s']:>9.1f} tok/s ({b['train_ms_median']:.2f} ms)"
                         f"  ratio {a['train_tok_s'] / b['train_tok_s']:.2f}")
            if not args.no_alh:
                h = timed_run([sys.executable, str(HERE / "bench_alh.py"), "--config", c, "--steps", str(args.steps),
                               "--threads", str(args.threads), *workers], args)
                runs[c]["alh"].append(h)
                line += "  ALH/base " + " ".join(f"{k.removeprefix('alh-')} {v:.2f}" for k, v in h["ratio_vs_base"].items())
            if args.wait_idle > 0:
                line += "  [started idle: " + " ".join(str(x[-1]["started_idle"])
                                                       for k, x in runs[c].items() if x and k != "alh") + "]"
            line += "  [steal %: " + " ".join(str(x[-1]["steal_pct"]) for k, x in runs[c].items() if x and k != "alh") + "]"
            retried = sum(x[-1]["steal_retries"] for x in runs[c].values() if x)
            if retried:
                line += f"  [{retried} tries dropped for steal]"
            print(line, flush=True)

    results = {}
    for c in configs:
        a_tok = [x["train_tok_s"] for x in runs[c]["alh_ref"]]
        b_tok = [x["train_tok_s"] for x in runs[c]["torch"]]
        a_med = statistics.median(a_tok)
        b_med = statistics.median(b_tok) if b_tok else None
        results[c] = dict(
            alh_ref_tok_s=round(a_med, 1),
            alh_ref_ms_median=round(statistics.median(x["train_ms_median"] for x in runs[c]["alh_ref"]), 3),
            alh_ref_peak_rss_mb=max(x["peak_rss_mb"] for x in runs[c]["alh_ref"]),
            alh_ref_peak_rss_mb_worker=max((x.get("peak_rss_mb_worker") or 0) for x in runs[c]["alh_ref"]) or None,
            alh_ref_workers=runs[c]["alh_ref"][0].get("workers"),
            torch_tok_s=None if b_med is None else round(b_med, 1),
            torch_ms_median=None if not b_tok else round(statistics.median(x["train_ms_median"] for x in runs[c]["torch"]), 3),
            ratio=None if b_med is None else round(a_med / b_med, 3),
            alh_ref_tok_s_rounds=a_tok, torch_tok_s_rounds=b_tok,
            alh_ratio=({k: round(statistics.median(h["ratio_vs_base"][k] for h in runs[c]["alh"]), 3)
                        for k in runs[c]["alh"][0]["ratio_vs_base"]} if runs[c]["alh"] else None),
            alh_ratio_rounds=({k: [h["ratio_vs_base"][k] for h in runs[c]["alh"]] for k in runs[c]["alh"][0]["ratio_vs_base"]}
                              if runs[c]["alh"] else None),
            runs_started_idle=(sum(x["started_idle"] for x in runs[c]["alh_ref"] + runs[c]["torch"])
                               if args.wait_idle > 0 else None),
            alh_ref_steal_pct_rounds=[x["steal_pct"] for x in runs[c]["alh_ref"]],
            torch_steal_pct_rounds=[x["steal_pct"] for x in runs[c]["torch"]],
            runs_retried_for_steal=sum(x["steal_retries"] for k in ("alh_ref", "torch", "alh") for x in runs[c][k]),
        )
    load_after = os.getloadavg()

    print(f"\nthreads={args.threads} steps={args.steps} rounds={args.rounds} torch={torch_info if have_torch else 'skipped'}"
          f"  load average before/after {load_before[0]:.2f}/{load_after[0]:.2f} on {os.cpu_count()} CPUs")
    print("| config | alh_ref tok/s | torch tok/s | ratio alh_ref/torch (per round) | ALH/base (householder) |")
    print("|---|---:|---:|---:|---:|")
    for c, v in results.items():
        t = "skipped" if v["torch_tok_s"] is None else f"{v['torch_tok_s']:.0f}"
        q = "-" if v["ratio"] is None else f"{v['ratio']:.2f} (" + ", ".join(
            f"{a / b:.2f}" for a, b in zip(v["alh_ref_tok_s_rounds"], v["torch_tok_s_rounds"])) + ")"
        h = "-" if not v["alh_ratio"] else f"{v['alh_ratio'].get('alh-householder', float('nan')):.2f}"
        print(f"| {c} | {v['alh_ref_tok_s']:.0f} | {t} | {q} | {h} |")
    print(json.dumps({"bench": "alh_ref_vs_torch", "threads": args.threads, "split": args.split, "steps": args.steps,
                      "rounds": args.rounds, "retry_steal_pct": args.retry_steal,
                      "torch": torch_info if have_torch else None,
                      "torch_skipped_reason": None if have_torch else torch_info,
                      "cpu": cpu_info(), "blas": runs[configs[0]]["alh_ref"][0].get("blas"),
                      "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
                      "results": results}))


if __name__ == "__main__":
    main()
