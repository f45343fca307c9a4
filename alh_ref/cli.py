"""The ``alh-ref`` command line (also ``python -m alh_ref``): parse arguments, call alh_ref.runs, print.

    alh-ref tokenizer   train a byte-level BPE on a corpus            -> runs/<name>/tokenizer/
    alh-ref pretrain    pretrain a base GPT (or --resume it)          -> runs/<name>/
    alh-ref adapt       adapt a base to new text with a method        -> runs/<name>/
    alh-ref eval        loss / perplexity of a run on a corpus split  -> runs/<name>/eval/
    alh-ref sample      generate text from a run (seeded)
    alh-ref golden      write / check golden outputs for ports
    alh-ref bench       train-step throughput (benchmarks/bench_train.py)
    alh-ref demo        the main job: the experiment on ALH's four claims (alh_ref.study)

Exit codes: 0 success; 2 usage errors and bad input (alh_ref.errors.InputError, argparse errors);
1 a run that failed (alh_ref.errors.RunError, e.g. a NaN loss) or an internal error; 130 Ctrl-C.
Errors print one line, ``error: <message>``, on stderr; a traceback only with ALH_REF_DEBUG=1.
Warnings (a small split, an unpinned base, an eval result not saved, ...) print as ``warning: ...``.
With ``--json`` the last stdout line is a JSON summary (``{"ok": false, "error": ...}`` on failure).
Usage walk-through: docs/usage.md.
"""
import argparse
import json
import math
import os
import sys
import traceback
import warnings

from . import __version__
from .demo import DEMO_DESCRIPTION, DEMO_HELP, add_demo_arguments, cmd_demo
from .errors import ALHRefError

EXIT_OK, EXIT_RUN, EXIT_USAGE, EXIT_INTERRUPT = 0, 1, 2, 130
DEBUG_ENV = "ALH_REF_DEBUG"


# ----------------------------------------------------------------------------------------------
# Argument types and shared options

def _int_at_least(lo):
    """argparse type: an int >= lo."""
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{v} is too small; expected an integer >= {lo}")
        return v
    return parse


def _float_at_least(lo, strict=False):
    """argparse type: a finite float >= lo (> lo if strict)."""
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
        if not math.isfinite(v) or v < lo or (strict and v == lo):
            raise argparse.ArgumentTypeError(f"{s} is out of range; expected a finite number {'>' if strict else '>='} {lo}")
        return v
    return parse


def _key_value(s):
    """argparse type for --corpus-opt: KEY=VALUE, VALUE parsed as JSON when it is JSON (2, 0.5, true)."""
    key, sep, value = s.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{s!r} is not KEY=VALUE (e.g. n_docs=50)")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _ids(s):
    """argparse type for --prompt-ids: comma-separated integers (range is checked against the model)."""
    try:
        return [int(t) for t in s.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a comma-separated list of integer token ids") from None


POS, NONNEG = _int_at_least(1), _int_at_least(0)


def _common(p, *, run=False, runs_root=True, seed_help="random seed"):
    """Options every subcommand shares: --json, --seed, --progress; --out/--name where runs are written."""
    g = p.add_argument_group("common options")
    if runs_root:
        g.add_argument("--out", default="runs", metavar="DIR",
                       help="root folder of runs (default: runs); run names are resolved under it")
    if run:
        g.add_argument("--name", default=None if run == "adapt-<method>" else run,
                       help=f"run name: output goes to <out>/<name>/ (default: {run})")
    g.add_argument("--seed", type=NONNEG, default=None, metavar="N", help=seed_help)
    g.add_argument("--json", action="store_true", help="print a machine-readable JSON summary as the last line")
    g.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress bar with loss and tokens/s on stderr (auto: only on a terminal)")


def _corpus_options(p, required=False, split="train", what="text to train on"):
    g = p.add_argument_group("data")
    g.add_argument("--corpus", required=required, metavar="NAME|PATH",
                   help=f"{what}: a built-in (pydoc, docstrings, pycode, synthetic) or a UTF-8 text file / "
                        "folder of .txt/.md files (documents are separated by two blank lines)")
    g.add_argument("--corpus-opt", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="option of the synthetic corpus, repeatable (e.g. --corpus-opt n_docs=50)")
    g.add_argument("--split", choices=("train", "val", "test", "all"), default=None,
                   help=f"which documents to use (split by a hash of each document; default: {split})")
    g.add_argument("--errors", choices=("strict", "replace"), default=None,
                   help="undecodable bytes in a text file: strict = stop with an error (default), "
                        "replace = read them as U+FFFD")


THREADS_HELP = ("cores the train step uses (default: all): the batch runs as that many micro-batches at once, "
                "BLAS at one thread each; 1 = the serial step")
WORKERS = ("threads", "processes")   # alh_ref.parallel.WORKERS, not imported: the CLI starts without NumPy (a test checks)
WORKERS_HELP = ("what runs the micro-batches after the first: processes (forked, each with its own Python; the "
                "default on Linux) or threads (the default elsewhere); the same result either way")


def _training_options(p):
    g = p.add_argument_group("training (AdamW with warmup + cosine decay)")
    g.add_argument("--steps", type=POS, metavar="N",
                   help="total optimisation steps of the run (default 200; on --resume: the saved target)")
    g.add_argument("--batch-size", type=POS, metavar="N", help="sequences per batch B (default 16)")
    g.add_argument("--lr", type=_float_at_least(0, strict=True), metavar="X", help="peak learning rate (default 1e-3)")
    g.add_argument("--warmup-steps", type=NONNEG, metavar="N", help="linear warmup steps (default 20)")
    g.add_argument("--decay-steps", type=POS, metavar="N", help="cosine decay length (default: --steps)")
    g.add_argument("--weight-decay", type=_float_at_least(0), metavar="X",
                   help="decoupled weight decay on 2-D weights (default 0.1)")
    g.add_argument("--grad-clip", type=_float_at_least(0), metavar="X",
                   help="global grad-norm clip, 0 = off (default 1.0)")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--ckpt-every", type=POS, metavar="N",
                   help="save a checkpoint every N steps (default 50; always at the end; on --resume: the run's own)")
    g.add_argument("--keep", type=NONNEG, metavar="N",
                   help="keep the newest N checkpoints, 0 = all (default 3; on --resume: the run's own); "
                        "checkpoints an adapted run uses are always kept")
    g.add_argument("--resume", action="store_true",
                   help="continue <out>/<name> from its newest checkpoint, bit-for-bit; data, model and seed "
                        "stay as saved, optimiser options, --steps, --ckpt-every and --keep may change")
    p.add_argument("--threads", type=POS, default=None, metavar="N", help=THREADS_HELP)
    p.add_argument("--workers", choices=WORKERS, default=None, help=WORKERS_HELP)


def build_parser():
    """The argparse parser of ``alh-ref`` and its subcommands."""
    top = argparse.ArgumentParser(prog="alh-ref", description="Adaptive Latent Hypersurfaces, reference implementation: "
                                  "train a tokenizer, pretrain a tiny GPT, adapt it to new text, evaluate, sample.",
                                  epilog="Run 'alh-ref <command> --help' for a command's options; see docs/usage.md.")
    top.add_argument("--version", action="version", version=f"alh_ref {__version__}")
    sub = top.add_subparsers(dest="command", metavar="<command>")

    def add(name, help, description=None):
        return sub.add_parser(name, help=help, description=description or help)

    p = add("tokenizer", "train a byte-level BPE tokenizer on a corpus",
            "Train a byte-level BPE on a corpus split and save it to <out>/<name>/tokenizer/. A later "
            "'pretrain --name <name>' (or --tokenizer <out>/<name>) uses it.")
    _corpus_options(p, required=True, what="text to train the tokenizer on")
    p.add_argument("--vocab-size", type=POS, default=512, metavar="N",
                   help="V = 256 bytes + merges + 1 special (>= 257; default 512)")
    _common(p, run="tokenizer", seed_help="accepted for uniformity; has no effect (BPE training is deterministic)")

    p = add("pretrain", "pretrain a base GPT on a corpus (or --resume it)",
            "Pretrain a base GPT on a corpus, writing <out>/<name>/ (tokenizer/, checkpoints/, history.jsonl, "
            "summary.json). Trains a BPE tokenizer first unless --tokenizer is given or <out>/<name>/tokenizer exists.")
    _corpus_options(p)
    g = p.add_argument_group("tokenizer and model")
    g.add_argument("--tokenizer", metavar="PATH", help="use this tokenizer (a run folder or its tokenizer/ folder)")
    g.add_argument("--vocab-size", type=POS, metavar="N",
                   help="train a BPE of this size (default: the --config's, tiny 512)")
    g.add_argument("--config", choices=("tiny", "small"), help="model preset (default tiny: L=2, NH=4, C=64, T=64)")
    g.add_argument("--block-size", type=POS, metavar="N", help="context length T (overrides the preset)")
    g.add_argument("--n-layer", type=POS, metavar="N", help="transformer blocks L")
    g.add_argument("--n-head", type=POS, metavar="N", help="attention heads NH (must divide C)")
    g.add_argument("--n-embd", type=POS, metavar="N", help="width C")
    _training_options(p)
    _common(p, run="base", seed_help="seed of the initialisation and of the batch order (default 0)")

    p = add("adapt", "adapt a pretrained base to new text with ALH or a baseline",
            "Adapt a frozen pretrained base to a new corpus with --method alh-<family> (householder, lowrank, film) "
            "or a baseline (none, embed-ft, lora-embed, full-ft, side, alh-shuffled, static-<family>). Writes "
            "the method's trainable tensors to <out>/<name>/checkpoints/ with a checked reference to the base.")
    g = p.add_argument_group("what to adapt")
    g.add_argument("--base", metavar="RUN_OR_CKPT", help="the pretrain run (name or folder) or one of its checkpoints")
    g.add_argument("--method", metavar="NAME", help="alh-householder | alh-lowrank | alh-film | a baseline (see above)")
    g.add_argument("--tokenizer", metavar="PATH", help="tokenizer (default: the base run's; must be the same one)")
    _corpus_options(p, what="the new domain's text")
    g = p.add_argument_group("hypernetwork (alh-*, static-*, side)")
    g.add_argument("--encoder", choices=("transformer", "mean", "static"), help="context encoder (default transformer)")
    g.add_argument("--site", choices=("input", "output", "both"), help="where latents are transformed (default both)")
    g.add_argument("--out-context", choices=("current", "prev"), help="output-site context (default current)")
    g.add_argument("--D", type=POS, metavar="N", help="encoder width D (default 32)")
    g.add_argument("--hyper-layers", type=POS, metavar="N", help="encoder blocks (default 1)")
    g.add_argument("--hyper-heads", type=POS, metavar="N", help="encoder heads (must divide D; default 2)")
    g.add_argument("--K", type=POS, metavar="N", help="Householder reflectors, even (default 4)")
    g.add_argument("--R", type=POS, metavar="N", help="low-rank rank (default 4)")
    g.add_argument("--lora-rank", type=POS, metavar="N", help="rank of lora-embed (default 4)")
    _training_options(p)
    _common(p, run="adapt-<method>", seed_help="seed of the new parameters and of the batch order (default 0)")

    p = add("eval", "loss and perplexity of a run on a corpus split",
            "Mean next-token loss (nats/token) and perplexity of a base or adapted run over consecutive "
            "windows of a corpus split; saved to <run>/eval/.")
    p.add_argument("--run", required=True, metavar="RUN_OR_CKPT", help="run name or folder, or a checkpoint folder")
    p.add_argument("--tokenizer", metavar="PATH", help="tokenizer for a checkpoint outside a run folder")
    _corpus_options(p, split="val", what="text to evaluate on (default: the run's own corpus)")
    p.add_argument("--batch-size", type=POS, default=16, metavar="N", help="windows per forward pass (default 16)")
    p.add_argument("--max-tokens", type=POS, metavar="N",
                   help="evaluate at most this many tokens: the first N // T whole windows (N >= T)")
    _common(p, seed_help="accepted for uniformity; has no effect (evaluation is deterministic)")

    p = add("sample", "generate text from a run (deterministic given --seed)")
    p.add_argument("--run", required=True, metavar="RUN_OR_CKPT", help="run name or folder, or a checkpoint folder")
    p.add_argument("--tokenizer", metavar="PATH", help="tokenizer for a checkpoint outside a run folder")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    p.add_argument("--prompt-ids", type=_ids, metavar="ID,ID,...", help="token ids to continue instead of --prompt")
    p.add_argument("--max-new-tokens", type=NONNEG, default=100, metavar="N", help="tokens to generate (default 100)")
    p.add_argument("--temperature", type=_float_at_least(0), default=1.0, metavar="X",
                   help="softmax temperature, 0 = greedy (default 1)")
    p.add_argument("--top-k", type=POS, metavar="N", help="sample only among the k most likely tokens")
    p.add_argument("--no-stop", action="store_true", help="do not stop at the end-of-text token")
    _common(p, seed_help="seed of the sampler (default 0)")

    p = add("golden", "write or check golden outputs (for a PyTorch/JAX port)",
            "Write a golden bundle (--out DIR) or check one (--check DIR, optionally against --reference DIR). "
            "The bundle's seeds are part of its specification (docs/golden.md), so there is no --seed.")
    x = p.add_mutually_exclusive_group(required=True)
    x.add_argument("--out", metavar="DIR", help="write a bundle to DIR")
    x.add_argument("--check", metavar="DIR", help="check the bundle in DIR")
    p.add_argument("--reference", metavar="DIR",
                   help="with --check: compare against this bundle instead of recomputing")
    p.add_argument("--impl", choices=("fast", "ref"), default="fast",
                   help="compute the cases on the Numba kernels (fast, default) or the NumPy twins alone (ref)")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON summary as the last line")

    p = add("bench", "train-step throughput (runs benchmarks/bench_train.py)")
    p.add_argument("--config", choices=("tiny", "small", "all"), default="tiny", help="model config (default tiny)")
    p.add_argument("--steps", type=POS, default=50, metavar="N", help="timed steps (default 50)")
    p.add_argument("--warmup", type=POS, default=3, metavar="N", help="untimed steps first (default 3)")
    p.add_argument("--threads", type=POS, default=None, metavar="N", help=THREADS_HELP)
    _common(p, runs_root=False, seed_help="seed of the parameters and batches (default 1234)")

    p = add("demo", DEMO_HELP, DEMO_DESCRIPTION)
    add_demo_arguments(p)
    _common(p, run="demo", seed_help="first seed of the study (default 0)")
    return top


# ----------------------------------------------------------------------------------------------
# Subcommands: each returns (summary dict, human-readable lines). Library modules are imported
# inside them, so `alh-ref --help` and usage errors answer without loading NumPy and Numba; the
# defaults stated in the help texts are pinned to the library's tables by tests/test_runs.py.

def _progress(args):
    mode = getattr(args, "progress", "off")
    return mode == "on" or (mode == "auto" and sys.stderr.isatty())


def _corpus_opts(args):
    return None if not args.corpus_opt else dict(args.corpus_opt)


def _warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _given(args, keys):
    """The options the user gave, as library keyword arguments (argparse's None: not given)."""
    opts = {k: getattr(args, k) for k in keys}
    opts.update(corpus=args.corpus, corpus_opts=_corpus_opts(args), split=args.split, seed=args.seed,
                errors=args.errors)
    return {k: v for k, v in opts.items() if v is not None}


_TRAIN_KEYS = ("tokenizer", "steps", "batch_size", "lr", "warmup_steps", "decay_steps", "weight_decay", "grad_clip",
               "ckpt_every", "keep")
PRETRAIN_KEYS = _TRAIN_KEYS + ("vocab_size", "config", "block_size", "n_layer", "n_head", "n_embd")
ADAPT_KEYS = _TRAIN_KEYS + ("base", "method", "encoder", "site", "out_context", "D", "hyper_layers", "hyper_heads",
                            "K", "R", "lora_rank")


def _fmt_loss(v):
    return "n/a" if v is None else f"{v:.4f}"


def _train_lines(s, what):
    lines = [f"{what} {s['run']}: {s['status']} at step {s['step']}/{s['target_steps']}, "
             f"loss {_fmt_loss(s['loss_first'])} -> {_fmt_loss(s['loss_last'])}"
             + (f", {s['tokens_per_s']:,.0f} tokens/s" if s.get("tokens_per_s") else "")]
    lines.append(f"checkpoint: {s['checkpoint']}")
    lines += s.get("kept", [])
    return lines


def cmd_tokenizer(args):
    """``alh-ref tokenizer``: runs.train_tokenizer -> (summary, lines)."""
    from .runs import train_tokenizer
    s = train_tokenizer(args.out, args.name, corpus=args.corpus, corpus_opts=_corpus_opts(args),
                        split=args.split or "train", vocab_size=args.vocab_size, errors=args.errors or "strict")
    return s, [f"trained a BPE tokenizer on {s['corpus']}: V={s['n_vocab']} (asked {s['vocab_size']}), "
               f"sha256 {s['sha256'][:12]}… -> {s['tokenizer']}"]


def cmd_pretrain(args):
    """``alh-ref pretrain``: runs.pretrain -> (summary, lines)."""
    from .runs import pretrain
    s = pretrain(args.out, args.name, resume=args.resume, progress=_progress(args), warn=_warn, threads=args.threads,
                 workers=args.workers, **_given(args, PRETRAIN_KEYS))
    return s, _train_lines(s, "pretrained")


def cmd_adapt(args):
    """``alh-ref adapt``: runs.adapt -> (summary, lines)."""
    from .runs import adapt
    s = adapt(args.out, args.name, resume=args.resume, progress=_progress(args), warn=_warn, threads=args.threads,
              workers=args.workers, **_given(args, ADAPT_KEYS))
    return s, _train_lines(s, f"adapted ({s['method']}, {s['n_trainable']:,} trainable)")


def cmd_eval(args):
    """``alh-ref eval``: runs.evaluate -> (summary, lines); a result that could not be saved is a warning."""
    from .runs import evaluate
    s = evaluate(args.run, out=args.out, corpus=args.corpus, corpus_opts=_corpus_opts(args), split=args.split or "val",
                 batch_size=args.batch_size, max_tokens=args.max_tokens, tokenizer=args.tokenizer,
                 progress=_progress(args), errors=args.errors)
    for w in s["warnings"]:
        _warn(w)
    return s, [f"{s['run'] or s['checkpoint']} (step {s['step']}, {s['method']}) on {s['corpus']} [{s['split']}]: "
               f"loss {s['loss']:.4f} nats/token, perplexity {s['perplexity']:.2f} over {s['n_tokens']:,} tokens"]


def cmd_sample(args):
    """``alh-ref sample``: runs.sample -> (summary, [the text])."""
    from .runs import sample
    s = sample(args.run, out=args.out, prompt=args.prompt, prompt_ids=args.prompt_ids,
               max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
               seed=0 if args.seed is None else args.seed, tokenizer=args.tokenizer, stop_at_eot=not args.no_stop)
    return s, [s["text"]]


def cmd_golden(args):
    """``alh-ref golden``: alh_ref.golden.golden_command -> (summary, its report lines)."""
    from .golden import golden_command
    rc, lines = golden_command(out=args.out, check=args.check, reference=args.reference, impl=args.impl)
    return {"job": "golden", "ok": rc == 0, "exit_code": rc, "out": args.out, "check": args.check,
            "reference": args.reference, "impl": args.impl}, lines


def cmd_bench(args):
    """``alh-ref bench``: runs.bench (benchmarks/bench_train.py in a subprocess) -> (summary, its lines)."""
    from .runs import bench
    s = bench(args.config, args.steps, args.warmup, args.threads, 1234 if args.seed is None else args.seed)
    return s, s["lines"]


COMMANDS = {"tokenizer": cmd_tokenizer, "pretrain": cmd_pretrain, "adapt": cmd_adapt, "eval": cmd_eval,
            "sample": cmd_sample, "golden": cmd_golden, "bench": cmd_bench, "demo": cmd_demo}


# ----------------------------------------------------------------------------------------------
# main

def _print_json(obj):
    print(json.dumps(obj, sort_keys=True, default=str), flush=True)


def _fail(args, message, code):
    """Print ``message`` (one line) to stderr, and the JSON error line if --json; return ``code``."""
    line = " ".join(str(message).split())
    if os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exc()
    print(line, file=sys.stderr, flush=True)
    if getattr(args, "json", False):
        _print_json({"ok": False, "error": line, "exit_code": code})
    return code


def main(argv=None) -> int:
    """Run ``alh-ref`` with ``argv`` (default sys.argv[1:]); return the exit code (never raises).

    Parameters
    ----------
    argv : list of str or None

    Returns
    -------
    int   0 ok, 1 run failure / internal error, 2 usage error / bad input, 130 interrupted
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:                      # --help / --version (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        with warnings.catch_warnings():
            if os.environ.get(DEBUG_ENV) != "1":     # overflow warnings before a NaN stop are noise here
                warnings.simplefilter("ignore", RuntimeWarning)
            summary, lines = COMMANDS[args.command](args)
    except ALHRefError as e:
        return _fail(args, f"error: {e}", e.exit_code)
    except KeyboardInterrupt:
        return _fail(args, "interrupted (checkpoints already written are kept; continue with --resume)", EXIT_INTERRUPT)
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        return _fail(args, f"error: {e.strerror or e}{where}", EXIT_RUN)
    except Exception as e:  # noqa: BLE001 — the last line of defence: no traceback for users
        return _fail(args, f"internal error: {type(e).__name__}: {e} (please report; rerun with {DEBUG_ENV}=1 "
                           "for a traceback)", EXIT_RUN)
    for line in lines:
        print(line, flush=True)
    code = summary.get("exit_code", EXIT_OK) if args.command == "golden" else EXIT_OK
    if args.json:
        _print_json(dict(summary, ok=code == EXIT_OK))
    return code
