"""The ALH study: does a context-conditioned hypernetwork over the latents beat fair baselines?

Protocol (docs/study.md):

    1. data      domain A (in-distribution) and a shifted domain B, one shared vocabulary;
                 train / val / test splits by document hash (corpora.split_documents)
    2. pretrain  a tiny base GPT on A's train split (seed s)
    3. adapt     each method on B's train split: same batches (same sampler seed), batch size,
                 step budget and AdamW settings; learning rate picked per method from a common
                 grid by B's *validation* loss (sweep on the first seed, reused for the others)
    4. measure   (a) B test loss, (b) A test loss after adaptation, (c) geometry of the effective
                 input dictionary (alh_ref.metrics), (d) trainable parameters, (e) train-step time
                 relative to one pretraining step of the base model
    5. repeat    for every seed (new base, new method init, new batch order); mean +- std

The primary setting is the synthetic corpus (K Markov-chain domains over one word vocabulary,
tokenised one id per word + an end-of-text id), whose exact conditional entropies give the loss
floor. The ``text`` preset runs the same protocol on natural text (pydoc -> pycode, local BPE).
Entry point: :func:`run_study`; outputs results.json, results.md and PNG plots in ``out_dir``.
"""
import math
import sys
import time

import numpy as np

from .alh.adapted import ALHConfig
from .alh.methods import METHODS, make_method
from .corpora import encode_documents, load_corpus, markov_entropy_rate, split_documents, synthetic_chains
from .errors import InputError, RunError
from .io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text, ensure_writable_dir
from .metrics import METRIC_NAMES, eval_loss, eval_windows, method_dictionary_metrics
from .model import GPTConfig, decayed, init_params, param_shapes
from .optim import AdamW, AdamWConfig
from .train import gpt_loss_and_grads, train

STUDY_METHODS = ("none", "embed-ft", "lora-embed", "full-ft", "static-householder", "alh-householder",
                 "alh-lowrank", "alh-film", "side", "alh-shuffled")

_COMMON = {
    "setting": "synthetic",
    # synthetic corpus: K domains, A = domain_a, B = domain_b (see corpora.synthetic_corpus)
    "synthetic": {"K": 2, "n_docs": 400, "doc_len": 256, "n_symbols": 64, "n_successors": 4, "alpha": 1.0, "seed": 0},
    "domain_a": 0, "domain_b": 1,
    # natural-text setting (preset "text"): corpus names and the BPE size (trained on A's train split)
    "corpus_a": "pydoc", "corpus_b": "pycode", "bpe_vocab": 512,
    "fractions": (0.8, 0.1, 0.1),
    # base model (GPTConfig) and the hypernetwork (ALHConfig defaults: D=32, 1 block, 2 heads, K=4, R=4)
    "n_embd": 64, "n_layer": 2, "n_head": 4, "block_size": 64,
    "alh": {"D": 32, "n_layer": 1, "n_head": 2, "K": 4, "R": 4},
    "lora_rank": 4,
    # optimisation (AdamWConfig defaults otherwise: betas 0.9/0.95, wd 0.1 on 2-D weights, clip 1.0)
    "batch_size": 16, "pretrain_steps": 600, "pretrain_lr": 3e-3,
    "adapt_steps": 300, "lrs": (3e-3, 1e-2, 3e-2, 1e-1), "warmup_frac": 0.1,
    # evaluation
    "eval_batches": 8, "eval_seed": 1234, "n_positions": 32, "timing_rounds": 10,
    "track_points": 20, "track_batches": 2,
    "n_seeds": 3, "methods": STUDY_METHODS,
}

PRESETS = {
    # seconds: for tests only (tiny everything, one learning rate)
    "micro": dict(_COMMON, synthetic=dict(_COMMON["synthetic"], n_docs=120, doc_len=64, n_symbols=16),
                  n_embd=16, n_layer=1, n_head=2, block_size=16, alh={"D": 8, "n_layer": 1, "n_head": 2, "K": 2, "R": 2},
                  batch_size=4, pretrain_steps=30, adapt_steps=6, lrs=(3e-3,), eval_batches=2, n_positions=2,
                  timing_rounds=2, track_points=3, track_batches=1, n_seeds=2),
    # the `alh-ref demo` job, budget under 3 minutes on 2 cores (41 s measured): smaller model, context, batch and runs
    "quick": dict(_COMMON, n_embd=32, n_head=4, block_size=32, alh={"D": 16, "n_layer": 1, "n_head": 2, "K": 4, "R": 4},
                  synthetic=dict(_COMMON["synthetic"], n_docs=200),
                  batch_size=8, pretrain_steps=400, adapt_steps=100, lrs=(1e-2, 3e-2, 1e-1), eval_batches=4,
                  n_positions=16, timing_rounds=5, track_points=8, track_batches=1, n_seeds=3),
    # the real study on the synthetic corpus
    "full": dict(_COMMON, n_seeds=5),
    # the same protocol on natural text: pretrain on pydoc, adapt on pycode
    "text": dict(_COMMON, setting="text", pretrain_steps=800),
}


def resolve_preset(preset, **overrides):
    """The study configuration: a preset with some keys replaced.

    Parameters
    ----------
    preset : str, one of PRESETS
    **overrides : keys of the preset (e.g. adapt_steps=50, methods=("none", "alh-householder"))

    Returns
    -------
    dict   the configuration (plain JSON-serialisable values)
    """
    if preset not in PRESETS:
        raise InputError(f"unknown study preset {preset!r}; expected one of {', '.join(PRESETS)}")
    cfg = dict(PRESETS[preset])
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise InputError(f"unknown study option(s) {unknown}; expected some of {sorted(cfg)}")
    cfg.update(overrides)
    cfg["preset"] = preset
    bad = [m for m in cfg["methods"] if m not in METHODS]
    if bad:
        raise InputError(f"unknown method(s) {bad}; expected names from {', '.join(METHODS)}")
    if "none" not in cfg["methods"]:
        raise InputError("methods must include 'none' (the frozen base is the reference of every delta)")
    for k in ("n_seeds", "batch_size", "pretrain_steps", "adapt_steps", "eval_batches", "n_positions", "timing_rounds",
              "track_points", "track_batches"):
        if not isinstance(cfg[k], int) or cfg[k] < 1:
            raise InputError(f"study option {k}={cfg[k]!r}; expected a positive integer")
    if cfg["batch_size"] < 2:
        raise InputError("study option batch_size must be >= 2 (alh-shuffled takes contexts from other batch items)")
    if not cfg["lrs"] or min(cfg["lrs"]) <= 0:
        raise InputError(f"study option lrs={cfg['lrs']!r}; expected one or more positive learning rates")
    cfg["methods"], cfg["lrs"], cfg["fractions"] = list(cfg["methods"]), list(cfg["lrs"]), list(cfg["fractions"])
    return cfg


def _log(progress, t0, msg):
    if progress:
        print(f"[study {time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Data

def _cond_entropy(P, pi, stream, eot):
    """Entropy of the true next-token distribution at every position of a one-domain synthetic stream.

    Parameters
    ----------
    P : ndarray (Vs,Vs) the domain's transition matrix;  pi : ndarray (Vs,) its stationary distribution
    stream : ndarray (n,) int   documents of symbol ids, each followed by ``eot``

    Returns
    -------
    ndarray (n,) float64   h[i] = H(x_i | full history): H(P[x_{i-1}]) inside a document, H(pi) for a
        document's first symbol, 0 for the end-of-text id (document length is fixed, so it is certain)
    """
    row_h = -np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0).sum(1)                 # (Vs,)
    h_pi = float(-(pi[pi > 0] * np.log(pi[pi > 0])).sum())
    prev = np.concatenate([[eot], stream[:-1]])                                                 # (n,)
    h = np.where(prev == eot, h_pi, row_h[np.minimum(prev, len(row_h) - 1)])                   # (n,)
    return np.where(stream == eot, 0.0, h)                                                      # (n,)


def synthetic_data(cfg):
    """Token streams of the synthetic setting: one id per word, end-of-text id V-1 after each document.

    Returns
    -------
    dict  V, eot, describe, A/B: {train, val, test: ndarray (n,) int64}, cond_entropy A/B test (n,),
          entropy_rate {A, B} (nats/symbol), corpus fingerprint
    """
    opts = dict(cfg["synthetic"])
    corpus = load_corpus("synthetic", **opts)
    words = {w: i for i, w in enumerate(corpus.meta["words"])}
    eot = len(words)
    splits = split_documents(corpus, tuple(cfg["fractions"]))
    P = synthetic_chains(opts["K"], opts["n_symbols"], opts["n_successors"], float(opts["alpha"]), opts["seed"])  # (K,Vs,Vs)
    out = {"V": eot + 1, "eot": eot, "fingerprint": corpus.fingerprint, "entropy_rate": {}, "cond_entropy": {}}
    for tag, dom in (("A", cfg["domain_a"]), ("B", cfg["domain_b"])):
        if not 0 <= dom < opts["K"]:
            raise InputError(f"domain_{tag.lower()}={dom}; expected a domain in [0, {opts['K']})")
        out[tag] = {}
        for s, c in splits.items():
            docs = [d for d, k in zip(c.documents, c.meta["domains"]) if k == dom]
            ids = [np.array([words[w] for w in d.split(" ")] + [eot], dtype=np.int64) for d in docs]
            if not ids:
                raise InputError(f"domain {dom} has no documents in the {s} split; use more synthetic documents (n_docs)")
            out[tag][s] = np.concatenate(ids)                                                   # (n,)
        out["entropy_rate"][tag] = float(corpus.meta["entropy_rate_nats"][dom])
        _, pi = markov_entropy_rate(P[dom])
        out["cond_entropy"][tag] = _cond_entropy(P[dom], pi, out[tag]["test"], eot)            # (n_test,)
    out["describe"] = (f"synthetic corpus {opts}: A = domain {cfg['domain_a']}, B = domain {cfg['domain_b']}; "
                       f"V = {eot + 1} (one id per word + end-of-text)")
    return out


def text_data(cfg):
    """Token streams of the natural-text setting: BPE trained on A's train split, shared by A and B.

    Returns
    -------
    dict  V, eot, describe, A/B: {train, val, test: ndarray (n,) int64} (no loss floor is known)
    """
    from .tokenizer import train_bpe
    sa = split_documents(load_corpus(cfg["corpus_a"]), tuple(cfg["fractions"]))
    sb = split_documents(load_corpus(cfg["corpus_b"]), tuple(cfg["fractions"]))
    tok = train_bpe(sa["train"].documents, cfg["bpe_vocab"])
    out = {"V": tok.n_vocab, "eot": tok.eot_id, "tokenizer_sha256": tok.sha256, "entropy_rate": {}, "cond_entropy": {}}
    for tag, splits in (("A", sa), ("B", sb)):
        out[tag] = {s: encode_documents(tok, c.documents).astype(np.int64) for s, c in splits.items()}  # (n,) each
        for s, ids in out[tag].items():
            if ids.shape[0] < cfg["block_size"] + 1:
                raise InputError(f"{tag} {s} split has only {ids.shape[0]} tokens; expected more than block_size")
    out["describe"] = (f"natural text: A = {cfg['corpus_a']!r}, B = {cfg['corpus_b']!r}; "
                       f"byte-level BPE (V = {tok.n_vocab}) trained on A's train split")
    return out


def window_floor(cond_entropy, B, T, n_batches, seed):
    """Loss floor on the evaluation windows: mean true conditional entropy at their target positions.

    Parameters
    ----------
    cond_entropy : ndarray (n,) float   from :func:`_cond_entropy`
    B, T, n_batches, seed : as in metrics.eval_loss (the same windows)

    Returns
    -------
    float   mean over windows w and t of h[start_w + 1 + t]  (a lower bound on the expected loss)
    """
    fake = np.zeros(cond_entropy.shape[0], dtype=np.int64)                                      # (n,) windows only
    starts = np.concatenate([s for _, _, s in eval_windows(fake, B, T, n_batches, seed)])        # (n_batches*B,)
    idx = starts[:, None] + 1 + np.arange(T)[None, :]                                          # (W,T) target positions
    return float(cond_entropy[idx].mean())


# ----------------------------------------------------------------------------------------------
# Training and measurement

def _adamw(cfg, lr, steps):
    return AdamWConfig(lr=lr, warmup_steps=max(1, int(cfg["warmup_frac"] * steps)), total_steps=steps)


def pretrain_base(data, gcfg, cfg, seed):
    """Pretrain the base GPT on A's train split.

    Returns
    -------
    base : dict of parameters;  history : list of per-step records (see train.train)
    """
    base = init_params(gcfg, seed=seed)
    names = list(param_shapes(gcfg))
    opt = AdamW(base, names, _adamw(cfg, cfg["pretrain_lr"], cfg["pretrain_steps"]), decayed)
    hist = train(base, opt, lambda x, y: gpt_loss_and_grads(base, gcfg, x, y), data["A"]["train"],
                 cfg["batch_size"], gcfg.block_size, cfg["pretrain_steps"], np.random.default_rng([seed, 1]))
    return base, hist


def adapt(name, base, gcfg, acfg, data, cfg, lr, seed):
    """Build a method on the frozen base and train it on B's train split.

    Every method sees the same batches for a given seed (sampler rng (seed, 2)); 'none' is not
    trained. Along the way, at ``track_points`` log-spaced steps (1 .. adapt_steps), the B and A
    *validation* losses are recorded (a few fixed windows) to trace how adaptation trades the new
    domain against the old one.

    Returns
    -------
    method : Method
    history : list of per-step records (train.train)
    track : list of {"step", "B_val", "A_val"} (step 0 = before training)
    seconds : float   training time, tracking evaluations excluded
    """
    m = make_method(name, base, gcfg, acfg, seed=seed, lora_rank=cfg["lora_rank"])
    steps = cfg["adapt_steps"]

    def point(step):
        ev = [eval_loss(m, data[t]["val"], cfg["batch_size"], gcfg.block_size, cfg["track_batches"], cfg["eval_seed"] + 1)
              for t in ("B", "A")]
        return {"step": step, "B_val": ev[0], "A_val": ev[1]}

    track = [point(0)]
    if m.n_trainable == 0:
        return m, [], track, 0.0
    marks = set(np.unique(np.geomspace(1, steps, cfg["track_points"]).round().astype(int)).tolist())  # log-spaced
    t_track = [0.0]

    def on_step(step, rec):
        if step in marks:
            t = time.perf_counter()
            track.append(point(step))
            t_track[0] += time.perf_counter() - t

    opt = AdamW(m.params, list(m.params), _adamw(cfg, lr, steps), m.decay)
    tokens = data["B"]["train"]
    labels = np.full(tokens.shape[0], cfg["domain_b"], dtype=np.int64)                         # (n,) one domain
    t0 = time.perf_counter()
    hist = train(m.params, opt, m.loss_and_grads, tokens, cfg["batch_size"], gcfg.block_size, steps,
                 np.random.default_rng([seed, 2]), domains=labels, on_step=on_step)
    return m, hist, track, time.perf_counter() - t0 - t_track[0]


def _eval(m, tokens, gcfg, cfg):
    return eval_loss(m, tokens, cfg["batch_size"], gcfg.block_size, cfg["eval_batches"], cfg["eval_seed"])


def measure(m, E_ref, data, gcfg, cfg):
    """Held-out losses and dictionary geometry of an adapted method.

    Returns
    -------
    dict  loss_B_val, loss_B_test, loss_A_test, metrics_B / metrics_A (effective input dictionary on
          B / A test contexts; equal for context-free methods)
    """
    out = {"loss_B_val": _eval(m, data["B"]["val"], gcfg, cfg), "loss_B_test": _eval(m, data["B"]["test"], gcfg, cfg),
           "loss_A_test": _eval(m, data["A"]["test"], gcfg, cfg)}
    for tag in ("B", "A"):
        x, _, _ = eval_windows(data[tag]["test"], cfg["batch_size"], gcfg.block_size, 1, cfg["eval_seed"])[0]  # (B,T)
        out[f"metrics_{tag}"] = method_dictionary_metrics(m, E_ref, x, cfg["n_positions"], seed=cfg["eval_seed"])
    return out


def time_steps(base, gcfg, acfg, data, cfg, methods):
    """Median wall time of one training step of each method and of the base model's own pretraining step.

    Fresh methods on a copy of ``base``, one fixed batch of B's train split; rounds interleave the
    methods (rotating the order) so machine noise hits all of them alike.

    Returns
    -------
    dict  name -> {"ms": median milliseconds, "ratio": ms / base pretraining step ms}; key "base-train"
    """
    x, y = eval_windows(data["B"]["train"], cfg["batch_size"], gcfg.block_size, 1, 0)[0][:2]   # (B,T), (B,T)
    dom = np.full(x.shape[0], cfg["domain_b"])                                                  # (B,)
    pb = {k: v.copy() for k, v in base.items()}
    steps = {"base-train": (lambda: gpt_loss_and_grads(pb, gcfg, x, y),
                            AdamW(pb, list(param_shapes(gcfg)), _adamw(cfg, 1e-4, 10**6), decayed), pb)}
    for name in methods:
        m = make_method(name, base, gcfg, acfg, seed=0, lora_rank=cfg["lora_rank"])
        steps[name] = ((lambda m=m: m.loss_and_grads(x, y, dom)),
                       AdamW(m.params, list(m.params), _adamw(cfg, 1e-4, 10**6), m.decay), m.params)
    names = list(steps)
    ms = {n: [] for n in names}
    for r in range(cfg["timing_rounds"] + 1):                                                   # round 0 warms up
        for n in names[r % len(names):] + names[:r % len(names)]:
            fn, opt, params = steps[n]
            t0 = time.perf_counter()
            _, g = fn()
            opt.step(params, g)
            if r:
                ms[n].append(1e3 * (time.perf_counter() - t0))
    med = {n: float(np.median(v)) for n, v in ms.items()}
    return {n: {"ms": med[n], "ratio": med[n] / med["base-train"]} for n in names}


# ----------------------------------------------------------------------------------------------
# Summaries

def mean_std(values):
    """{"mean", "std" (sample std, 0 for one value), "n", "values"} of a list of floats."""
    v = np.asarray(values, dtype=np.float64)                                                    # (n,)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size),
            "values": [float(a) for a in v]}


def summarize(results):
    """Add per-method summaries (mean +- std over seeds, paired deltas against the frozen base) in place."""
    base = results["base"]["per_seed"]
    for name, r in results["methods"].items():
        ps = r["per_seed"]
        s = {k: mean_std([p[k] for p in ps]) for k in ("loss_B_test", "loss_A_test", "loss_B_val")}
        s["delta_B_test"] = mean_std([p["loss_B_test"] - b["loss_B_test"] for p, b in zip(ps, base)])
        s["delta_A_test"] = mean_std([p["loss_A_test"] - b["loss_A_test"] for p, b in zip(ps, base)])
        for tag in ("B", "A"):
            for k in METRIC_NAMES:
                s[f"{k}_{tag}"] = mean_std([p[f"metrics_{tag}"][k] for p in ps])
        r["summary"] = s
    results["matched"] = matched_tradeoff(results)
    if "alh-householder" in results["methods"]:
        d = results["methods"]["alh-householder"]["summary"]["delta_B_test"]
        results["headline"] = {
            "claim": "alh-householder lowers held-out B loss below the frozen base",
            "delta_B_test_mean": d["mean"], "delta_B_test_std": d["std"],
            "lower_on_every_seed": bool(all(v < 0 for v in d["values"])),
            "base_B_test": mean_std([b["loss_B_test"] for b in base])["mean"],
            "alh_householder_B_test": results["methods"]["alh-householder"]["summary"]["loss_B_test"]["mean"],
        }
    return results


def a_at_b_level(track, level):
    """A validation loss at the first point where B validation loss reaches ``level`` (linear interpolation).

    Parameters
    ----------
    track : list of {"step", "B_val", "A_val"} in step order
    level : float

    Returns
    -------
    float or None   None if B val never gets down to ``level``
    """
    for k, q in enumerate(track):
        if q["B_val"] <= level:
            if k == 0:
                return q["A_val"]
            p = track[k - 1]
            w = (p["B_val"] - level) / (p["B_val"] - q["B_val"])                                # in (0, 1]
            return p["A_val"] + w * (q["A_val"] - p["A_val"])
    return None


def matched_tradeoff(results, ref="alh-householder", fracs=(0.5, 0.9, 1.0)):
    """A val loss of every method when its B val loss reaches fixed fractions of the reference method's gain.

    Level for seed s and fraction f:  L = b0 - f (b0 - b_ref),  b0 the base's B val loss (track step 0),
    b_ref the reference method's final B val loss on that seed. Each method's A val loss at its
    first crossing of L is interpolated from its tracked points (:func:`a_at_b_level`).

    Returns
    -------
    dict or None  {"ref", "fracs", "levels": [mean_std per fraction],
                   "methods": {name: [{"A_val": mean_std or None, "reached": "k/n"} per fraction]}}
    """
    if ref not in results["methods"]:
        return None
    ref_runs = results["methods"][ref]["per_seed"]
    levels = [[r["track"][0]["B_val"] - f * (r["track"][0]["B_val"] - r["track"][-1]["B_val"]) for r in ref_runs]
              for f in fracs]                                                                  # [F][n_seeds]
    out = {"ref": ref, "fracs": list(fracs), "levels": [mean_std(lv) for lv in levels], "methods": {}}
    for name, r in results["methods"].items():
        row = []
        for lv in levels:
            vals = [a_at_b_level(p["track"], x) for p, x in zip(r["per_seed"], lv)]
            got = [v for v in vals if v is not None]
            row.append({"A_val": mean_std(got) if got else None, "reached": f"{len(got)}/{len(vals)}"})
        out["methods"][name] = row
    return out


def _pm(s, nd=3):
    return f"{s['mean']:.{nd}f} ± {s['std']:.{nd}f}"


def results_markdown(results):
    """The results as Markdown: setting, base and floor, the main table and the learning-rate sweep."""
    c = results["config"]
    lines = [f"# ALH study — preset `{c['preset']}`", "",
             f"- setting: {results['data']['describe']}",
             f"- base: C={c['n_embd']}, L={c['n_layer']}, NH={c['n_head']}, T={c['block_size']}, "
             f"V={results['data']['V']}; pretrained {c['pretrain_steps']} steps on A (lr {c['pretrain_lr']})",
             f"- adaptation: {c['adapt_steps']} steps on B, batch {c['batch_size']}, AdamW (wd 0.1, clip 1.0, "
             f"{int(100 * c['warmup_frac'])}% warmup, cosine); lr grid {c['lrs']} picked on B val (seed {results['seeds'][0]})",
             "- hypernetwork: " + ", ".join(f"{k}={v}" for k, v in sorted(c["alh"].items())) +
             f" (ALHConfig defaults otherwise: transformer encoder, site both, out_context current); lora rank {c['lora_rank']}",
             f"- seeds: {results['seeds']} (mean ± sample std); eval: {c['eval_batches']}x{c['batch_size']} fixed windows per split",
             f"- runtime: {results['runtime_s']:.0f} s", ""]
    b = results["base"]["summary"]
    lines += ["| reference | B test loss | A test loss |", "|---|---|---|",
              f"| frozen base (none) | {_pm(b['loss_B_test'])} | {_pm(b['loss_A_test'])} |"]
    fl = results["data"].get("floor")
    if fl:
        lines.append(f"| loss floor on these windows (true conditional entropy) | {fl['B_test']:.3f} | {fl['A_test']:.3f} |")
        lines.append(f"| entropy rate of the domain (nats/symbol) | {fl['rate_B']:.3f} | {fl['rate_A']:.3f} |")
    lines += ["", "Main table (Δ = paired difference against the frozen base on the same seed; geometry of the "
              "effective input dictionary on B test contexts, relative to the pretrained wte; step time relative "
              "to one pretraining step of the base):", "",
              "| method | trainable | lr | B test loss | ΔB | A test loss (after) | ΔA | mean abs cos | Gram drift "
              "| eff. rank | energy | displacement | step time × base |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["methods"].items():
        s = r["summary"]
        t = results["timing"].get(name, {}).get("ratio", 0.0)
        lr = "—" if r["n_trainable"] == 0 else f"{r['lr']:g}"
        lines.append(f"| {name} | {r['n_trainable']:,} | {lr} | {_pm(s['loss_B_test'])} | {_pm(s['delta_B_test'])} | "
                     f"{_pm(s['loss_A_test'])} | {_pm(s['delta_A_test'])} | {_pm(s['mean_abs_cos_B'])} | "
                     f"{_pm(s['gram_drift_B'])} | {_pm(s['eff_rank_B'], 2)} | {_pm(s['energy_B'])} | "
                     f"{_pm(s['displacement_B'])} | {'—' if r['n_trainable'] == 0 else f'{t:.2f}'} |")
    ref = results["methods"]["none"]["summary"]
    lines += ["", f"Pretrained wte: mean abs cos {ref['mean_abs_cos_B']['mean']:.3f}, eff. rank "
              f"{ref['eff_rank_B']['mean']:.2f}, energy {ref['energy_B']['mean']:.3f}.", "",
              "Geometry on A test contexts (ALH dictionaries depend on context; context-free methods repeat):", "",
              "| method | mean abs cos | Gram drift | eff. rank | energy | displacement |", "|---|---|---|---|---|---|"]
    for name, r in results["methods"].items():
        s = r["summary"]
        lines.append(f"| {name} | {_pm(s['mean_abs_cos_A'])} | {_pm(s['gram_drift_A'])} | {_pm(s['eff_rank_A'], 2)} | "
                     f"{_pm(s['energy_A'])} | {_pm(s['displacement_A'])} |")
    mt = results.get("matched")
    if mt:
        lines += ["", f"Matched adaptation: A val loss at the moment each method's B val loss first reaches a level "
                  f"L = b0 - f (b0 - b_ref), a fraction f of the B val gain {mt['ref']} ends with (b0 the base's B val; "
                  f"per seed; linear interpolation between {c['track_points']} log-spaced tracked points; "
                  f"base A val {_pm(results['base']['summary']['loss_A_val'])}; (k/n) = seeds reaching L):", "",
                  "| method | " + " | ".join(f"f = {f:g} (L = {lv['mean']:.2f})" for f, lv in zip(mt["fracs"], mt["levels"])) + " |",
                  "|---|" + "---|" * len(mt["fracs"])]
        for name, row in mt["methods"].items():
            cells = ["not reached" if v["A_val"] is None else f"{_pm(v['A_val'])} ({v['reached']})" for v in row]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if results["lr_sweep"]:
        lines += ["", f"Learning-rate sweep (B val loss after adaptation, seed {results['seeds'][0]}; chosen = lowest; "
                  "the chosen lr is reused for the other seeds):", "",
                  "| method | " + " | ".join(f"lr {lr:g}" for lr in c["lrs"]) + " | chosen |",
                  "|---|" + "---|" * (len(c["lrs"]) + 1)]
        for name, sw in results["lr_sweep"].items():
            cells = ["diverged" if sw[f"{lr:g}"] is None else f"{sw[f'{lr:g}']:.3f}" for lr in c["lrs"]]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {results['methods'][name]['lr']:g} |")
    h = results.get("headline")
    if h:
        lines += ["", f"Headline: alh-householder B test loss {h['alh_householder_B_test']:.3f} vs frozen base "
                  f"{h['base_B_test']:.3f} (Δ {h['delta_B_test_mean']:+.3f} ± {h['delta_B_test_std']:.3f}; "
                  f"lower on every seed: {h['lower_on_every_seed']})."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Plots

def _smooth(v, k):
    v = np.asarray(v, dtype=np.float64)                                                         # (S,)
    if v.size < k or k < 2:
        return v
    return np.convolve(v, np.ones(k) / k, mode="valid")                                        # (S-k+1,)


def _save_png(fig, out_dir, name):
    """Render ``fig`` to PNG bytes, close it, write ``out_dir/name`` atomically; return ``name``."""
    import io

    import matplotlib.pyplot as plt
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(f"{out_dir}/{name}", buf.getvalue())
    return name


def write_plots(results, out_dir):
    """loss_curves.png (adaptation training loss), id_vs_ood.png (A vs B test loss after adaptation) and
    tradeoff.png (A vs B validation loss along adaptation, mean of seeds); nothing without matplotlib.

    Returns
    -------
    list of str   the files written (empty if matplotlib is missing)
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; skipping plots (pip install matplotlib)", file=sys.stderr)
        return []
    files = []
    fl = results["data"].get("floor")
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    k = max(1, results["config"]["adapt_steps"] // 20)
    for i, (name, r) in enumerate(results["methods"].items()):
        curves = [p["train_loss"] for p in r["per_seed"] if p["train_loss"]]
        if not curves:
            ax.axhline(r["summary"]["loss_B_val"]["mean"], color=colors(i % 10), ls=":", lw=1, label=f"{name} (B val)")
            continue
        mean = _smooth(np.mean(curves, axis=0), k)                                              # (S',)
        ax.plot(np.arange(mean.size) + k, mean, color=colors(i % 10), lw=1.4,
                ls="--" if name in ("alh-shuffled", "static-householder", "side") else "-", label=name)
    if fl:
        ax.axhline(fl["B_test"], color="k", ls="-.", lw=1, label="floor (B)")
    ax.set_xlabel("adaptation step")
    ax.set_ylabel(f"training loss on B (nats, mean of seeds, moving avg {k})")
    ax.set_ylim(top=min(ax.get_ylim()[1], results["base"]["summary"]["loss_B_test"]["mean"] + 0.5))
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Adaptation to domain B")
    files.append(_save_png(fig, out_dir, "loss_curves.png"))

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for i, (name, r) in enumerate(results["methods"].items()):
        s = r["summary"]
        ax.errorbar(s["loss_B_test"]["mean"], s["loss_A_test"]["mean"], xerr=s["loss_B_test"]["std"],
                    yerr=s["loss_A_test"]["std"], fmt="o", color=colors(i % 10), capsize=3, label=name)
    if fl:
        ax.axvline(fl["B_test"], color="k", ls="-.", lw=1)
        ax.axhline(fl["A_test"], color="k", ls="-.", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("B test loss after adaptation (target domain, nats)")
    ax.set_ylabel("A test loss after adaptation (original domain, nats)")
    ax.set_title("Adapted domain vs original domain (lower-left is better)")
    ax.legend(fontsize=7)
    files.append(_save_png(fig, out_dir, "id_vs_ood.png"))

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for i, (name, r) in enumerate(results["methods"].items()):
        tr = [p["track"] for p in r["per_seed"]]
        bv = np.mean([[q["B_val"] for q in t] for t in tr], axis=0)                             # (P,)
        av = np.mean([[q["A_val"] for q in t] for t in tr], axis=0)                             # (P,)
        ax.plot(bv, av, marker="o", ms=2.5, lw=1.2, color=colors(i % 10), label=name,
                ls="--" if name in ("alh-shuffled", "static-householder", "side") else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("B val loss (target domain, nats)")
    ax.set_ylabel("A val loss (original domain, nats)")
    ax.set_title("Trade-off during adaptation (start: upper right = base)")
    ax.legend(fontsize=7)
    files.append(_save_png(fig, out_dir, "tradeoff.png"))
    return files


# ----------------------------------------------------------------------------------------------
# The study

def run_study(preset="quick", out_dir=None, seed=0, progress=True, **overrides):
    """Run the whole study and write its results.

    Parameters
    ----------
    preset : "micro" | "quick" | "full" | "text"   (see :data:`PRESETS`)
    out_dir : str or Path or None   folder for results.json, results.md and the PNGs (None: write nothing)
    seed : int   first seed; the study uses seed, seed+1, ..., seed+n_seeds-1
    progress : bool   print one line per finished run to stderr
    **overrides : preset keys to replace (see :func:`resolve_preset`)

    Returns
    -------
    dict  config, data (setting, V, floors), seeds, base (per-seed losses), lr_sweep, methods
          (per method: n_trainable, lr, per_seed runs, summary), timing, headline, runtime_s, files
    """
    t_start = time.perf_counter()
    cfg = resolve_preset(preset, **overrides)
    if out_dir is not None:
        ensure_writable_dir(out_dir)
    data = synthetic_data(cfg) if cfg["setting"] == "synthetic" else text_data(cfg)
    gcfg = GPTConfig(vocab_size=data["V"], block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                     n_head=cfg["n_head"], n_embd=cfg["n_embd"])
    acfg = ALHConfig(**cfg["alh"])
    seeds = [int(seed) + i for i in range(cfg["n_seeds"])]
    info = {"setting": cfg["setting"], "describe": data["describe"], "V": data["V"],
            "tokens": {t: {s: int(a.shape[0]) for s, a in data[t].items()} for t in ("A", "B")}}
    if data["cond_entropy"]:
        wf = {t: window_floor(data["cond_entropy"][t], cfg["batch_size"], cfg["block_size"], cfg["eval_batches"],
                              cfg["eval_seed"]) for t in ("A", "B")}
        info["floor"] = {"B_test": wf["B"], "A_test": wf["A"], "rate_A": data["entropy_rate"]["A"],
                         "rate_B": data["entropy_rate"]["B"]}
    _log(progress, t_start, info["describe"])
    results = {"config": cfg, "data": info, "seeds": seeds, "base": {"per_seed": []}, "lr_sweep": {},
               "methods": {}, "timing": {}}
    for si, s in enumerate(seeds):
        base, phist = pretrain_base(data, gcfg, cfg, s)
        bm = make_method("none", base, gcfg)
        b = {"seed": s, "loss_A_test": _eval(bm, data["A"]["test"], gcfg, cfg),
             "loss_B_test": _eval(bm, data["B"]["test"], gcfg, cfg), "loss_B_val": _eval(bm, data["B"]["val"], gcfg, cfg),
             "loss_A_val": eval_loss(bm, data["A"]["val"], cfg["batch_size"], gcfg.block_size, cfg["track_batches"],
                                     cfg["eval_seed"] + 1),
             "pretrain_final_loss": float(np.mean([h["loss"] for h in phist[-10:]]))}
        results["base"]["per_seed"].append(b)
        _log(progress, t_start, f"seed {s}: pretrained base, A test {b['loss_A_test']:.3f}, B test {b['loss_B_test']:.3f}")
        E_ref = base["wte"].copy()                                                              # (V,C) pretrained dictionary
        for name in cfg["methods"]:
            lrs = cfg["lrs"] if si == 0 else [results["methods"][name]["lr"]]
            runs = []
            for lr in lrs:
                try:
                    m, hist, track, sec = adapt(name, base, gcfg, acfg, data, cfg, lr, s)
                except RunError as e:                                                           # diverged at this lr
                    _log(progress, t_start, f"seed {s}: {name} lr {lr:g} diverged ({e})")
                    runs.append((lr, None, None, None, None, math.inf))
                    continue
                runs.append((lr, m, hist, track, sec, _eval(m, data["B"]["val"], gcfg, cfg)))
                if m.n_trainable == 0:
                    break                                                                       # nothing to sweep
            if si == 0 and len(runs) > 1:
                results["lr_sweep"][name] = {f"{lr:g}": (v if math.isfinite(v) else None) for lr, *_, v in runs}
            lr, m, hist, track, sec, _ = min(runs, key=lambda r: r[-1])
            if m is None:
                raise RunError(f"method {name!r} diverged at every learning rate {lrs}; expected at least one stable run")
            rec = {"seed": s, "lr": lr, "train_seconds": sec, "train_loss": [round(h["loss"], 5) for h in hist],
                   "track": track}
            rec.update(measure(m, E_ref, data, gcfg, cfg))
            r = results["methods"].setdefault(name, {"n_trainable": m.n_trainable, "lr": lr, "per_seed": []})
            r["per_seed"].append(rec)
            if not np.array_equal(base["wte"], E_ref):
                raise RunError(f"method {name!r} wrote the frozen base's wte; expected methods to leave the base untouched")
            _log(progress, t_start, f"seed {s}: {name:18s} lr {lr:g}  B test {rec['loss_B_test']:.3f}  "
                 f"A test {rec['loss_A_test']:.3f}  ({sec:.1f}s)")
        if si == len(seeds) - 1:
            results["timing"] = time_steps(base, gcfg, acfg, data, cfg, [n for n in cfg["methods"] if n != "none"])
            results["timing"]["none"] = {"ms": 0.0, "ratio": 0.0}
        if out_dir is not None and si < len(seeds) - 1:
            atomic_write_json(f"{out_dir}/results.json", dict(results, complete=False))            # per-seed records so far
    results["base"]["summary"] = {k: mean_std([b[k] for b in results["base"]["per_seed"]])
                                  for k in ("loss_A_test", "loss_B_test", "loss_B_val", "loss_A_val")}
    summarize(results)
    results["runtime_s"] = time.perf_counter() - t_start
    results["complete"] = True
    results["files"] = []
    if out_dir is not None:
        atomic_write_text(f"{out_dir}/results.md", results_markdown(results))
        results["files"] = ["results.json", "results.md"] + write_plots(results, out_dir)
        atomic_write_json(f"{out_dir}/results.json", results)
        _log(progress, t_start, f"wrote {', '.join(results['files'])} to {out_dir}")
    return results


def rewrite_report(out_dir):
    """Re-summarise a finished study's results.json and rewrite results.md and the plots (no training).

    Parameters
    ----------
    out_dir : str or Path   a folder written by :func:`run_study`

    Returns
    -------
    dict   the re-summarised results (methods back in the configured order)
    """
    import json
    from pathlib import Path
    path = Path(out_dir) / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read study results {str(path)!r}: {e}; expected a folder written by run_study") from None
    if not results.get("complete"):
        raise InputError(f"{str(path)!r} is from an unfinished study; expected a complete run")
    order = results["config"]["methods"]
    results["methods"] = {n: results["methods"][n] for n in order if n in results["methods"]}
    results["lr_sweep"] = {n: results["lr_sweep"][n] for n in order if n in results["lr_sweep"]}
    summarize(results)
    atomic_write_text(f"{out_dir}/results.md", results_markdown(results))
    results["files"] = ["results.json", "results.md"] + write_plots(results, out_dir)
    atomic_write_json(f"{out_dir}/results.json", results)
    return results
