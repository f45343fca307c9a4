"""Runs: the library behind the command line — tokenizer, pretrain, adapt, evaluate, sample.

Every function here does work and returns a JSON-able summary dict; printing is the CLI's job
(alh_ref.cli). Bad input raises :class:`alh_ref.errors.InputError`, failed runs
:class:`alh_ref.errors.RunError`, each with a one-line message. The modules, one job each:

    folders    run folders: layout, the one-writer lock, checkpoint lists, pins, pruning, history
    options    run options as frozen dataclasses, and how --resume resolves them
    data       corpus splits and their sizes, token streams, tokenizers
    memory     the memory estimate checked before training
    loading    loading run checkpoints, an adapted run's base, a model
    jobs       pretrain and adapt (one start-or-resume path, one call of the training driver)
    inference  loss / perplexity on a split, and sampling text from a run
    benchmark  the benchmark launcher

The run folder and checkpoint manifest are described in docs/usage.md and docs/checkpoints.md.
"""
from ..sampling import generate, next_token
from .benchmark import bench
from .data import corpus_key, find_tokenizer, load_split, stream_tokens, train_tokenizer
from .folders import (
                      CKPT_DIR,
                      CKPT_PREFIX,
                      HISTORY_FILE,
                      LOCK_FILE,
                      PINS_DIR,
                      SUMMARY_FILE,
                      TOKENIZER_DIR,
                      RunLock,
                      checkpoint_path,
                      list_checkpoints,
                      read_history,
                      read_pins,
                      resolve_checkpoint,
                      run_dir,
                      run_path,
)
from .inference import evaluate, sample, stream_loss
from .jobs import adapt, model_config, pretrain
from .loading import RUN_FORMAT_VERSION, load_base, load_model, load_run_checkpoint, save_state
from .options import SPLIT_CHOICES

__all__ = ["CKPT_DIR", "CKPT_PREFIX", "HISTORY_FILE", "LOCK_FILE", "PINS_DIR", "RUN_FORMAT_VERSION", "SPLIT_CHOICES",
           "SUMMARY_FILE", "TOKENIZER_DIR", "RunLock", "adapt", "bench", "checkpoint_path", "corpus_key", "evaluate",
           "find_tokenizer", "generate", "list_checkpoints", "load_base", "load_model", "load_run_checkpoint",
           "load_split", "model_config", "next_token", "pretrain", "read_history", "read_pins", "resolve_checkpoint",
           "run_dir", "run_path", "sample", "save_state", "stream_loss", "stream_tokens", "train_tokenizer"]
