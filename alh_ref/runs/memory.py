"""Memory check before training: estimate what one step needs and compare it with the machine's free memory.

The estimate (its terms are explained in docs/usage.md, "Memory check") is

    total = parameters + optimizer + B * activations per sequence
    parameters = n_params * itemsize;   optimizer = 3 * n_trainable * itemsize (gradient, m, v)
    activations per sequence = L (BLOCK_TC T C + BLOCK_TT NH T^2) + HEAD_TV T V   [+ the hypernetwork's]

tests/test_runs.py checks the activation count against the bytes the forward pass really caches.
"""
import os

BLOCK_TC, BLOCK_TT, HEAD_TV = 20, 2, 3          # the per-sequence activation counts above
MEMINFO = "/proc/meminfo"


def block_activations(T, C, NH, L):
    """Activation elements one sequence of T tokens caches in L transformer blocks of width C, NH heads."""
    return L * (BLOCK_TC * T * C + BLOCK_TT * NH * T * T)


def estimate_step_memory(cfg, B, n_params, n_trainable, itemsize=4, alh=None, sites=0):
    """Bytes one training step needs at its peak (module docstring).

    Parameters
    ----------
    cfg : GPTConfig   the model (T = block_size, C, NH, L, V)
    B : int   batch size;  n_params, n_trainable : int   all tensors' and trainable tensors' element counts
    itemsize : int   bytes per element (4 for float32)
    alh : ALHConfig or None   the hypernetwork of an adapted run;  sites : int   transformed sites (0, 1, 2)

    Returns
    -------
    dict   parameters, optimizer, activations, total (bytes, int)
    """
    T, C = cfg.block_size, cfg.n_embd
    per_seq = block_activations(T, C, cfg.n_head, cfg.n_layer) + HEAD_TV * T * cfg.vocab_size
    if alh is not None:
        per_seq += block_activations(T, alh.D, alh.n_head, alh.n_layer) + 2 * T * C * max(alh.K, alh.R, 2) * sites
    parts = {"parameters": n_params * itemsize, "optimizer": 3 * n_trainable * itemsize,
             "activations": B * per_seq * itemsize}
    parts["total"] = sum(parts.values())
    return parts


def available_memory():
    """Bytes of memory available to a new process, and where the figure came from.

    Returns
    -------
    (int, str) or (None, str)   MemAvailable of /proc/meminfo; else free physical pages
        (os.sysconf); else (None, "unknown")
    """
    try:
        with open(MEMINFO, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical pages"
    except (AttributeError, ValueError, OSError):
        return None, "unknown"


def gib(n) -> str:
    """Bytes as e.g. '1.25 GB' (GiB), or '3.4 MB' (MiB) below 1 GiB."""
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"
