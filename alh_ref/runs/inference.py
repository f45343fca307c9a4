"""Using a trained run: its loss and perplexity on a corpus split, and text sampled from it.

Both load a base or adapted run (or one checkpoint) with :func:`alh_ref.runs.loading.load_model`.
Evaluation results are saved to the run's ``eval/`` folder when it can be written; when it cannot,
the result is still returned, with a warning.
"""
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io_utils import atomic_write_json
from ..sampling import generate
from .data import corpus_key, load_split, stream_tokens
from .loading import load_model


def stream_loss(forward, tokens, T, B, max_tokens=None, progress=False):
    """Mean next-token loss over consecutive, non-overlapping windows of a token stream.

    Windows w = 0..W-1 read x = tokens[wT : wT+T], y = tokens[wT+1 : wT+T+1], W = (n-1) // T
    (capped at max_tokens // T); loss = (1 / (W T)) sum_{w,t} -log p(y_{w,t} | x_{w,<=t}).

    Parameters
    ----------
    forward : callable (x (b,T) int64, y (b,T) int64) -> (logits, mean loss, cache)
    tokens : ndarray (n,) int, n >= T + 1
    T, B : int   context length and windows per batch
    max_tokens : int or None   at most this many tokens: the first max_tokens // T windows (>= T)
    progress : bool

    Returns
    -------
    loss : float (nats per token);  n_tokens : int (W T)
    """
    W = (tokens.shape[0] - 1) // T
    if max_tokens is not None:
        if max_tokens < T:
            raise InputError(f"--max-tokens {max_tokens} is less than one window of T = {T} tokens; expected "
                             f"at least {T} (the loss is taken over whole windows)")
        W = min(W, max_tokens // T)
    x = tokens[:W * T].reshape(W, T).astype(np.int64)                                          # (n,) -> (W,T)
    y = tokens[1:W * T + 1].reshape(W, T).astype(np.int64)                                     # (n,) -> (W,T)
    starts = range(0, W, B)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, total=-(-W // B), unit="batch", dynamic_ncols=True)
    total = 0.0
    for i in starts:
        _, loss, _ = forward(x[i:i + B], y[i:i + B])                                           # (b,T) -> scalar
        total += float(loss) * x[i:i + B].size
    return total / (W * T), W * T


def evaluate(ref, *, out="runs", corpus=None, corpus_opts=None, split="val", batch_size=16, max_tokens=None,
             tokenizer=None, progress=False, errors=None, forward=None) -> dict:
    """Loss and perplexity of a base or adapted run on a corpus split; saved in the run's eval/ folder.

    Parameters
    ----------
    ref : run name, run folder or checkpoint folder;  out : run root
    corpus, corpus_opts : what to evaluate on (default: the run's own training corpus)
    errors : strict | replace | None (undecodable bytes; None: strict, or the run's own for its corpus)
    split : train | val | test | all   (default val: documents the run did not train on)
    batch_size : int windows per forward pass;  max_tokens : int or None (cap, first windows)
    tokenizer : path or None (for a checkpoint outside a run folder);  progress : bool
    forward : callable(loaded) -> forward, or None (the NumPy method's); ``loaded`` is the dict of
        :func:`alh_ref.runs.load_model` (alh_ref.torch.runs evaluates with the torch port this way)

    Returns
    -------
    dict   job, run, checkpoint, step, kind, method, corpus, split, corpus_fingerprint, loss
        (nats/token), perplexity = exp(loss), n_tokens (whole windows: at most max_tokens), T,
        saved (the eval/ file, or None), warnings
    """
    from ..metrics import perplexity
    m = load_model(ref, out, tokenizer)
    meta, cfg = m["manifest"], m["cfg"]
    if corpus is None:
        corpus, corpus_opts = meta["corpus"]["name"], meta["corpus"]["opts"]
        errors = errors or meta["corpus"].get("errors")
    data = load_split(corpus, corpus_opts, split, errors or "strict")
    tokens = stream_tokens(m["tokenizer"], data, cfg.block_size)                               # (n,)
    fwd = m["method"].forward if forward is None else forward(m)
    loss, n = stream_loss(fwd, tokens, cfg.block_size, batch_size, max_tokens, progress)
    res = {"job": "eval", "run": None if m["run"] is None else str(m["run"]), "checkpoint": str(m["checkpoint"]),
           "step": int(meta["step"]), "kind": meta["kind"], "method": meta.get("method", "base"),
           "corpus": corpus_key(corpus), "split": split, "corpus_fingerprint": data.fingerprint,
           "loss": loss, "perplexity": perplexity(loss), "n_tokens": n, "T": cfg.block_size,
           "saved": None, "warnings": []}
    if m["run"] is not None:
        path = Path(m["run"]) / "eval" / f"{split}-{data.fingerprint[:12]}.json"
        try:
            atomic_write_json(path, res)
            res["saved"] = str(path)
        except (OSError, InputError) as e:
            res["warnings"].append(f"could not save the result to {str(path)!r} ({getattr(e, 'strerror', None) or e}); "
                                   "the loss is reported but not recorded in the run folder")
    return res


def _prompt_array(prompt_ids):
    """Prompt ids from a list / array; InputError for anything but integers in a 1-D sequence."""
    try:
        arr = np.asarray(prompt_ids)                                                           # (t,)
    except (TypeError, ValueError):
        raise InputError(f"prompt ids {prompt_ids!r} are not a sequence of integers; expected e.g. [12, 7, 300]") from None
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"prompt ids have shape {arr.shape} and dtype {arr.dtype}; expected a non-empty 1-D "
                         "sequence of integer token ids")
    return arr


def sample(ref, *, out="runs", prompt="", prompt_ids=None, max_new_tokens=100, temperature=1.0, top_k=None,
           seed=0, tokenizer=None, stop_at_eot=True) -> dict:
    """Generate text from a base or adapted run; the same seed gives the same text.

    Parameters
    ----------
    ref : run name, run folder or checkpoint folder;  out : run root
    prompt : str   text to continue ("" starts from the end-of-text token)
    prompt_ids : sequence of int or None   token ids instead of ``prompt``
    max_new_tokens : int;  temperature : float (0 greedy);  top_k : int or None
    seed : int   the sampler's RNG seed;  tokenizer : path or None;  stop_at_eot : bool

    Returns
    -------
    dict   job, run, checkpoint, step, method, seed, prompt, completion (new text), text
        (prompt + completion), prompt_ids, new_ids
    """
    m = load_model(ref, out, tokenizer)
    tok, cfg = m["tokenizer"], m["cfg"]
    if prompt_ids is not None and prompt:
        raise InputError("give either a text prompt or prompt ids, not both")
    if prompt_ids is not None:
        ids = _prompt_array(prompt_ids)                                                        # (t,)
    else:
        ids = tok.encode(prompt) if prompt else np.array([tok.eot_id], dtype=np.int64)         # (t,)
    new = generate(m["method"].forward, ids, cfg, max_new_tokens=max_new_tokens,
                   temperature=temperature, top_k=top_k, rng=np.random.default_rng(seed),
                   stop_id=tok.eot_id if stop_at_eot else None)                                # (m,)
    if prompt_ids is not None:
        prompt = tok.decode(ids)
    completion = tok.decode(new)
    return {"job": "sample", "run": None if m["run"] is None else str(m["run"]), "checkpoint": str(m["checkpoint"]),
            "step": int(m["manifest"]["step"]), "method": m["manifest"].get("method", "base"), "seed": seed,
            "prompt": prompt, "completion": completion, "text": prompt + completion,
            "prompt_ids": [int(i) for i in ids], "new_ids": [int(i) for i in new]}


