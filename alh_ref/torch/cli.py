"""``python -m alh_ref.torch golden-check | pretrain | adapt | eval``: the torch backend's command line.

The training and eval options are those of ``alh-ref`` (docs/usage.md), plus ``--device cpu|cuda``
and ``--dtype float32|float64``. Data parallel: ``torchrun --nproc_per_node N -m alh_ref.torch adapt ...``.
Exit codes as ``alh-ref``: 0 ok, 1 a check failed or a run failed, 2 bad input (one line, no traceback).
"""
import argparse
import os
import sys

from ..cli import (ADAPT_KEYS, DEBUG_ENV, POS, PRETRAIN_KEYS, _corpus_opts, _fail, _given, _print_json, _progress,
                   _train_lines, _warn)
from ..cli import build_parser as alh_ref_parser
from ..errors import ALHRefError, InputError


def _backend(p):
    g = p.add_argument_group("backend")
    g.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")


def _alh_ref_commands():
    """alh-ref's subcommand parsers {name: ArgumentParser}: the torch commands take their options over."""
    return next(a for a in alh_ref_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def build_parser():
    """The argparse parser of ``python -m alh_ref.torch``: pretrain, adapt and eval take alh-ref's options, plus
    --device and --dtype."""
    top = argparse.ArgumentParser(prog="python -m alh_ref.torch", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command")
    p = sub.add_parser("golden-check", help="recompute a golden bundle with the torch port and compare")
    p.add_argument("bundle", nargs="?", default="tests/golden", help="bundle folder (default tests/golden)")
    p.add_argument("--case", action="append", help="check only this case (repeatable)")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON summary as the last line")
    _backend(p)
    p = sub.add_parser("bench", help="train-step tokens/s, NumPy vs torch on CPU, interleaved")
    p.add_argument("--config", choices=("tiny", "small"), default="tiny")
    p.add_argument("--rounds", type=POS, default=5, metavar="N")
    p.add_argument("--steps", type=POS, default=5, metavar="N", help="steps per pair and round")
    p.add_argument("--threads", type=POS, default=1, metavar="N", help="torch threads (set OPENBLAS_NUM_THREADS alike)")
    p.add_argument("--json", action="store_true")
    alh_ref = _alh_ref_commands()
    for name, what in (("pretrain", "pretrain a base GPT (torch backend)"),
                       ("adapt", "adapt a pretrained base with a method (torch backend, DDP under torchrun)"),
                       ("eval", "loss and perplexity of a run (either backend's) with the torch port")):
        p = sub.add_parser(name, parents=[alh_ref[name]], conflict_handler="resolve", help=what,
                           description=alh_ref[name].description)
        for a in p._actions:
            if a.dest == "threads":
                a.help = "torch threads (torch.set_num_threads; default: torch's own)"
            elif a.dest == "workers":
                a.help = "(the NumPy backend's; refused here: torch runs its processes under torchrun)"
        _backend(p)
    return top


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
    if getattr(args, "workers", None) is not None:
        raise InputError("--workers is an option of the NumPy backend (alh-ref); the torch backend runs "
                         "several processes under torchrun instead")
    from . import runs
    backend = f"(torch, {args.device}, {args.dtype}"
    if args.command == "eval":
        s = runs.evaluate(args.run, out=args.out, corpus=args.corpus, corpus_opts=_corpus_opts(args),
                          split=args.split or "val", batch_size=args.batch_size, max_tokens=args.max_tokens,
                          tokenizer=args.tokenizer, progress=_progress(args), errors=args.errors, device=args.device,
                          dtype=args.dtype)
        for w in s["warnings"]:
            _warn(w)
        return 0, s, [f"{s['run'] or s['checkpoint']} (step {s['step']}, {s['method']}) on {s['corpus']} [{s['split']}]: "
                      f"loss {s['loss']:.4f} nats/token, perplexity {s['perplexity']:.2f} over {s['n_tokens']:,} tokens "
                      f"{backend})"]
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    pre = args.command == "pretrain"
    fn = runs.pretrain if pre else runs.adapt
    s = fn(args.out, args.name, resume=args.resume, progress=_progress(args), warn=_warn, device=args.device,
           dtype=args.dtype, **_given(args, PRETRAIN_KEYS if pre else ADAPT_KEYS))
    lines = _train_lines(s, "pretrained" if pre else f"adapted ({s['method']}, {s['n_trainable']:,} trainable)")
    lines[0] += f" {backend}, {s['world_size']} process(es))"
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
    who = None if quiet else args                                                   # _fail's JSON line: rank 0 only
    try:
        code, summary, lines = _run(args)
    except ALHRefError as e:
        return _fail(who, f"error: {e}", e.exit_code)
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        return _fail(who, f"error: {e.strerror or e}{where}", 1)
    except KeyboardInterrupt:
        return _fail(who, "interrupted (checkpoints already written are kept; continue with --resume)", 130)
    except Exception as e:  # noqa: BLE001 — the last line of defence, as in alh-ref: no traceback for users
        return _fail(who, f"internal error: {type(e).__name__}: {e} (please report; rerun with {DEBUG_ENV}=1 for a "
                          "traceback)", 1)
    if not quiet:
        for line in lines:
            print(line, flush=True)
        if args.json:
            _print_json(dict(summary, ok=code == 0))
    return code
