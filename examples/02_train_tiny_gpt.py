"""Example 2: train the tiny GPT on a built-in corpus and sample from it.

The pipeline, one stage per line of main(): corpus -> tokenizer -> token stream -> model ->
loss and gradients -> AdamW, then autoregressive sampling. The corpus is the Python reference
manual that ships with every Python (``pydoc``); the tokenizer is a byte-level BPE learned on it.
After a minute of training on 2 cores the samples are not English, but they are made of its words,
punctuation and layout (the loss drops from ln V ~ 6.2 to below 4).

Run:  python examples/02_train_tiny_gpt.py [STEPS]      (default 300 steps, well under a minute)
"""
import sys

import numpy as np

from alh_ref.corpora import encode_documents, load_corpus
from alh_ref.model import GPTConfig, decayed, gpt_forward, init_params, param_shapes
from alh_ref.optim import AdamW, AdamWConfig
from alh_ref.runs import generate
from alh_ref.tokenizer import train_bpe
from alh_ref.train import gpt_loss_and_grads, train

TEXT_CHARS = 200_000       # the first 200 kB of the corpus: enough text for a 2-layer model
VOCAB = 512                # BPE vocabulary: 256 bytes + 255 merges + end-of-text


def main(steps=300):
    corpus = load_corpus("pydoc")                                                   # list of documents (str)
    text = "\n".join(corpus.documents)[:TEXT_CHARS]
    tok = train_bpe(text, VOCAB)                                                    # byte-level BPE
    tokens = encode_documents(tok, [text])                                          # (n,) int64, eot-terminated
    print(f"corpus pydoc: {len(text):,} chars -> {tokens.size:,} tokens (vocab {tok.n_vocab})")

    cfg = GPTConfig(vocab_size=tok.n_vocab, block_size=64, n_layer=2, n_head=4, n_embd=64, tied=True)
    params = init_params(cfg, seed=0, dtype=np.float32)                             # name -> ndarray
    names = list(param_shapes(cfg))
    opt = AdamW(params, names, AdamWConfig(lr=3e-3, warmup_steps=steps // 10, total_steps=steps), decayed)
    rng = np.random.default_rng(0)
    history = train(params, opt, lambda x, y: gpt_loss_and_grads(params, cfg, x, y), tokens,
                    B=16, T=cfg.block_size, steps=steps, rng=rng)
    for rec in history[:: max(1, steps // 6)] + history[-1:]:
        print(f"step {rec['step']:4d}  loss {rec['loss']:.3f}  lr {rec['lr']:.2e}")

    prompt = np.array(tok.encode("The "), dtype=np.int64)                           # (t,)
    new = generate(lambda x: gpt_forward(params, cfg, x), prompt, cfg, max_new_tokens=60,
                   temperature=0.8, top_k=40, rng=np.random.default_rng(1), stop_id=tok.eot_id)
    print("sample: " + repr(tok.decode(np.concatenate([prompt, new]).tolist())))
    return 0 if history[-1]["loss"] < history[0]["loss"] - 1.0 else 1


if __name__ == "__main__":
    sys.exit(main(*map(int, sys.argv[1:2])))
