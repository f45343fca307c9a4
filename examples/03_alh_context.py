"""Example 3: train an ALH hypernetwork on a frozen base, and see which tokens its context helps.

The data are synthetic Markov chains (corpus ``synthetic``): every document is a walk of one of
three chains over the same 64 words. A tiny GPT is pretrained on chain 0 and frozen. Two
hypernetworks (Householder family, both sites, docs/alh.md) are then trained on a mix of chains 1
and 2 on top of it:

- ALH: a causal encoder reads the context x_0..x_t and generates a transform per position;
- the static control: the same transforms, but one learned set for every position (encoder
  "static"), so it cannot tell which chain a text comes from.

For a held-out chain-1 text we print, token by token, how much lower the loss is with the context
(ALH) than without it (static control), and list the tokens the context helped most and least.

Run:  python examples/03_alh_context.py          (about 30 s on 2 cores; exit code 0 if the context helped on average)
"""
import dataclasses
import sys

import numpy as np

from alh_ref.alh import ALHConfig, alh_forward, alh_init, alh_loss_and_grads, alh_param_shapes
from alh_ref.corpora import load_corpus
from alh_ref.model import GPTConfig, decayed, init_params, param_shapes
from alh_ref.optim import AdamW, AdamWConfig
from alh_ref.train import gpt_loss_and_grads, train

T = 32          # context length (block_size)
STEPS = 300     # optimisation steps of the base and of each hypernetwork


def streams(corpus, words, domains, n_held_out=6):
    """Word ids (+ end-of-text) of the documents of ``domains`` as one stream, and the last documents held out."""
    eot = len(words)
    ids = [np.array([words[w] for w in d.split(" ")] + [eot], dtype=np.int64) for d in corpus.documents]
    dom = corpus.meta["domains"]
    kept = [a for a, k in zip(ids[:-n_held_out], dom[:-n_held_out]) if k in domains]
    return np.concatenate(kept), list(zip(ids[-n_held_out:], dom[-n_held_out:]))          # (n,), [(ids, domain)]


def token_losses(logits, y):
    """Per-position cross-entropy (T,) of one window's logits (T,V) against targets y (T,)."""
    m = logits.max(-1)                                                                    # (T,)
    lse = np.log(np.exp(logits - m[:, None]).sum(-1)) + m                                 # (T,)
    return lse - logits[np.arange(len(y)), y]                                             # (T,)


def adapt(base, cfg, acfg, tokens, rng, label):
    """Train a hypernetwork of config ``acfg`` on the frozen base; returns its parameters."""
    hyp = alh_init(cfg, acfg, seed=0, dtype=np.float64)                                   # the adapted model = base here

    def loss_and_grads(x, y):                                                             # base frozen: grads of hyp only
        return alh_loss_and_grads(base, hyp, cfg, acfg, x, y)
    opt = AdamW(hyp, list(alh_param_shapes(cfg, acfg)),
                AdamWConfig(lr=1e-2, warmup_steps=STEPS // 10, total_steps=STEPS), decayed)
    h = train(hyp, opt, loss_and_grads, tokens, 16, T, STEPS, rng)
    print(f"{label}: {sum(a.size for a in hyp.values())} parameters, loss on chains 1+2 "
          f"{h[0]['loss']:.2f} -> {h[-1]['loss']:.2f}")
    return hyp


def main():
    corpus = load_corpus("synthetic", K=3, n_docs=300, doc_len=128, n_symbols=64, seed=0)
    vocab = corpus.meta["words"]
    words = {w: i for i, w in enumerate(vocab)}
    names = vocab + ["<eot>"]
    cfg = GPTConfig(vocab_size=len(words) + 1, block_size=T, n_layer=2, n_head=4, n_embd=32, tied=True)
    rng = np.random.default_rng(0)

    base_tokens, held_out = streams(corpus, words, {0})
    base = init_params(cfg, seed=0, dtype=np.float64)
    opt = AdamW(base, list(param_shapes(cfg)), AdamWConfig(lr=3e-3, warmup_steps=STEPS // 10, total_steps=STEPS),
                decayed)
    h = train(base, opt, lambda x, y: gpt_loss_and_grads(base, cfg, x, y), base_tokens, 16, T, STEPS, rng)
    print(f"base GPT, pretrained on chain 0 and then frozen: loss {h[0]['loss']:.2f} -> {h[-1]['loss']:.2f}")

    adapt_tokens, _ = streams(corpus, words, {1, 2})
    alh_cfg = ALHConfig(family="householder", site="both", D=16, n_layer=1, n_head=2, K=4)
    static_cfg = dataclasses.replace(alh_cfg, encoder="static")                          # one transform for every position
    alh = adapt(base, cfg, alh_cfg, adapt_tokens, rng, "ALH (reads the context)")
    static = adapt(base, cfg, static_cfg, adapt_tokens, rng, "static control (no context)")

    text = next(a for a, k in held_out if k == 1)                                         # (n,) a held-out chain-1 text
    x, y = text[:T], text[1:T + 1]                                                        # (T,), (T,)
    with_ctx = token_losses(alh_forward(base, alh, cfg, alh_cfg, x[None])[0][0], y)       # (T,)
    without = token_losses(alh_forward(base, static, cfg, static_cfg, x[None])[0][0], y)  # (T,)
    gain = without - with_ctx                                                             # (T,) > 0: the context helped
    print(f"held-out chain-1 text, {T} positions: mean loss {with_ctx.mean():.3f} with the context (ALH), "
          f"{without.mean():.3f} without (static control)")
    order = np.argsort(gain)                                                              # (T,) ascending gain
    for title, idx in (("helped most", order[::-1][:5]), ("helped least", order[:5])):
        print(f"tokens the context {title}:")
        for t in idx:
            before = " ".join(names[i] for i in x[max(0, t - 3):t + 1])
            print(f"  position {t:2d}  ... {before:<22} -> {names[y[t]]:<5}  loss {with_ctx[t]:.2f} "
                  f"(static {without[t]:.2f}, gain {gain[t]:+.2f})")
    return 0 if with_ctx.mean() < without.mean() else 1


if __name__ == "__main__":
    sys.exit(main())
