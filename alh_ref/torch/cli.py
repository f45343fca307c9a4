"""``python -m alh_ref.torch golden-check | pretrain | adapt | eval``: the torch backend's command line.

The training and eval options are those of ``alh-ref`` (docs/usage.md), plus ``--device cpu|cuda``
and ``--dtype float32|float64``. Data parallel: ``torchrun --nproc_per_node N -m alh_ref.torch adapt ...``.
Exit codes as ``alh-ref``: 0 ok, 1 a check failed or a run failed, 2 bad input (one line, no traceback).
"""
import argparse
import json
import os
import sys

from ..cli import DEBUG_ENV, _train_lines
from ..errors import ALHRefError


def _pos(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s} is not a positive integer")
    return v


def _nonneg(s):
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{s} is not a non-negative integer")
    return v


def _nonneg_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not (v >= 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"{s} is not a finite number >= 0")
    return v


def _kv(s):
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"{s!r} is not KEY=VALUE")
    k, v = s.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def _backend(p, run=True):
    g = p.add_argument_group("backend")
    g.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")
    g.add_argument("--json", action="store_true", help="print a machine-readable JSON summary as the last line")
    if run:
        g.add_argument("--out", default="runs", metavar="DIR", help="root folder of all runs (default runs)")
        g.add_argument("--progress", choices=("auto", "on", "off"), default="auto", help="progress bar (default auto)")


def _data(p, split_help="train"):
    p.add_argument("--corpus", metavar="NAME|PATH", help="built-in corpus or your text file / folder")
    p.add_argument("--corpus-opt", action="append", type=_kv, metavar="KEY=VALUE", help="option of the corpus")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default=None, help=f"default {split_help}")


def _training(p, name):
    p.add_argument("--name", default=name, help=f"run name (default {name or 'adapt-<method>'})")
    p.add_argument("--tokenizer", metavar="PATH", help="tokenizer (a run folder or its tokenizer/ folder)")
    p.add_argument("--seed", type=_nonneg, metavar="N", help="seed of the new parameters and of the batch order")
    for k, t in (("steps", _pos), ("batch-size", _pos), ("warmup-steps", _nonneg), ("decay-steps", _pos),
                 ("ckpt-every", _pos), ("keep", _nonneg)):
        p.add_argument("--" + k, type=t, metavar="N")
    for k in ("lr", "weight-decay", "grad-clip"):
        p.add_argument("--" + k, type=_nonneg_float, metavar="X")
    p.add_argument("--resume", action="store_true",
                   help="continue the run --name from its newest checkpoint (written by either backend)")


def build_parser():
    """The argparse parser of ``python -m alh_ref.torch``."""
    top = argparse.ArgumentParser(prog="python -m alh_ref.torch", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command")
    p = sub.add_parser("golden-check", help="recompute a golden bundle with the torch port and compare")
    p.add_argument("bundle", nargs="?", default="tests/golden", help="bundle folder (default tests/golden)")
    p.add_argument("--case", action="append", help="check only this case (repeatable)")
    _backend(p, run=False)
    p = sub.add_parser("bench", help="train-step tokens/s, NumPy vs torch on CPU, interleaved")
    p.add_argument("--config", choices=("tiny", "small"), default="tiny")
    p.add_argument("--rounds", type=_pos, default=5, metavar="N")
    p.add_argument("--steps", type=_pos, default=5, metavar="N", help="steps per pair and round")
    p.add_argument("--threads", type=_pos, default=1, metavar="N", help="torch threads (set OPENBLAS_NUM_THREADS alike)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("pretrain", help="pretrain a base GPT (torch backend)")
    _data(p)
    _training(p, "base")
    p.add_argument("--vocab-size", type=_pos, metavar="N")
    p.add_argument("--config", choices=("tiny", "small"))
    for k in ("block-size", "n-layer", "n-head", "n-embd"):
        p.add_argument("--" + k, type=_pos, metavar="N")
    _backend(p)
    p = sub.add_parser("adapt", help="adapt a pretrained base with a method (torch backend, DDP under torchrun)")
    _data(p)
    _training(p, None)
    p.add_argument("--base", metavar="RUN_OR_CKPT")
    p.add_argument("--method", metavar="NAME")
    p.add_argument("--encoder", choices=("transformer", "mean", "static"))
    p.add_argument("--site", choices=("input", "output", "both"))
    p.add_argument("--out-context", choices=("current", "prev"))
    for k in ("D", "hyper-layers", "hyper-heads", "K", "R", "lora-rank"):
        p.add_argument("--" + k, type=_pos, metavar="N")
    _backend(p)
    p = sub.add_parser("eval", help="loss and perplexity of a run (either backend's) with the torch port")
    p.add_argument("--run", required=True, metavar="RUN_OR_CKPT")
    p.add_argument("--tokenizer", metavar="PATH")
    _data(p, "val")
    p.add_argument("--batch-size", type=_pos, default=16, metavar="N")
    p.add_argument("--max-tokens", type=_pos, metavar="N")
    _backend(p)
    return top


_SKIP = {"command", "json", "out", "progress", "device", "dtype", "name", "corpus_opt"}


def _run(args):
    """Dispatch one parsed command; returns (exit code, summary, lines)."""
    if args.command == "golden-check":
        from .golden import format_report, golden_check
        r = golden_check(args.bundle, args.device, args.case)
        return (0 if r["ok"] else 1), {k: r[k] for k in ("ok", "first_failure", "device")}, [format_report(r)]
    if args.command == "bench":
        from .bench import bench
        med, lines = bench(args.config, args.rounds, args.steps, args.threads)
        return 0, {f"{b}/{n}": v for (b, n), v in med.items()}, lines
    from . import runs
    progress = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
    copts = None if not args.corpus_opt else dict(args.corpus_opt)
    if args.command == "eval":
        s = runs.evaluate(args.run, out=args.out, corpus=args.corpus, corpus_opts=copts, split=args.split or "val",
                          batch_size=args.batch_size, max_tokens=args.max_tokens, tokenizer=args.tokenizer,
                          device=args.device, dtype=args.dtype)
        return 0, s, [f"{s['run'] or s['checkpoint']} (step {s['step']}, {s['method']}) on {s['corpus']} [{s['split']}]: "
                      f"loss {s['loss']:.4f} nats/token, perplexity {s['perplexity']:.2f} over {s['n_tokens']:,} tokens "
                      f"(torch, {s['device']}, {s['dtype']})"]
    opts = {k: v for k, v in vars(args).items() if k not in _SKIP}
    fn = runs.pretrain if args.command == "pretrain" else runs.adapt
    s = fn(args.out, args.name, progress=progress, device=args.device, dtype=args.dtype, corpus_opts=copts, **opts)
    what = "pretrained" if args.command == "pretrain" else f"adapted ({s['method']}, {s['n_trainable']:,} trainable)"
    lines = _train_lines(s, what)                                  # the alh-ref wording (None-safe: a resume may add no step)
    lines[0] += f" (torch, {s['device']}, {s['dtype']}, {s['world_size']} process(es))"
    return 0, s, lines


def main(argv=None):
    """Run the command line; returns the exit code (never raises for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    quiet = int(os.environ.get("RANK", "0")) != 0                                   # under torchrun only rank 0 prints
    try:
        code, summary, lines = _run(args)
    except ALHRefError as e:
        msg = " ".join(f"error: {e}".split())
        print(msg, file=sys.stderr, flush=True)
        if args.json and not quiet:
            print(json.dumps({"ok": False, "error": msg, "exit_code": e.exit_code}), flush=True)
        return e.exit_code
    except OSError as e:
        print(" ".join(f"error: {e.strerror or e} ({e.filename})".split()), file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted (checkpoints already written are kept)", file=sys.stderr, flush=True)
        return 130
    except Exception as e:  # noqa: BLE001 — the last line of defence, as in alh-ref: no traceback for users
        print(f"internal error: {type(e).__name__}: {e} (please report; rerun with {DEBUG_ENV}=1 for a traceback)",
              file=sys.stderr, flush=True)
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        return 1
    if not quiet:
        for line in lines:
            print(line, flush=True)
        if args.json:
            print(json.dumps(dict(summary, ok=code == 0), sort_keys=True, default=str), flush=True)
    return code
