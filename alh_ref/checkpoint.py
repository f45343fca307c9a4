"""Safe checkpoints: a safetensors tensor file plus a JSON manifest. No pickle anywhere.

A checkpoint is a folder holding two files (format described in docs/checkpoints.md):

    model.safetensors   every tensor (parameters, and optimizer state if the caller adds it,
                        e.g. ``opt.m.<param>``, ``opt.v.<param>``), in the safetensors format
    manifest.json       the caller's metadata plus, per tensor, shape / dtype / sha256, and the
                        sha256 of the whole safetensors file

Both files are written atomically (temp file + fsync + rename, :mod:`alh_ref.io_utils`), tensor
file first and manifest last: the manifest is the commit point. :func:`load_checkpoint` checks
everything it can before returning anything and raises :class:`alh_ref.errors.InputError` with a
one-line message on the first problem it finds.

Random state (:func:`rng_state_to_json` / :func:`rng_from_json`) is stored in the manifest as
JSON, with its 128-bit integers written as decimal strings.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import safetensors.numpy as stnp

from .errors import DiskError, InputError
from .io_utils import atomic_write_bytes, atomic_write_json, ensure_writable_dir

CHECKPOINT_FORMAT = "alh_ref.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
TENSORS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"

# Keys save_checkpoint adds to the manifest; a caller's manifest may not use them.
RESERVED_KEYS = ("format", "format_version", "tensors", "safetensors_sha256")

# dtypes the safetensors NumPy binding can store and load back (numpy dtype names).
SUPPORTED_DTYPES = ("float64", "float32", "float16", "complex64", "int64", "uint64", "int32",
                    "uint32", "int16", "uint16", "int8", "uint8", "bool")

# Nicer wording for `expect` mismatches: key -> (what, label in the message).
_MISMATCH_PHRASES = {
    "tokenizer_sha256": ("tokenizer", "tokenizer sha256"),
    "corpus_fingerprint": ("corpus", "corpus fingerprint"),
    "corpus_sha256": ("corpus", "corpus sha256"),
}

_RNG_KINDS = ("PCG64", "PCG64DXSM")  # bit generators whose state is {state, inc} + uint32 buffer


# ----------------------------------------------------------------------------------- helpers


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``.

    Parameters
    ----------
    data : bytes

    Returns
    -------
    hex : str, 64 lowercase hex digits
    """
    return hashlib.sha256(data).hexdigest()


def tensor_sha256(arr: np.ndarray) -> str:
    """Hex sha256 of a tensor's little-endian, C-contiguous bytes (what safetensors stores).

    Parameters
    ----------
    arr : ndarray, any shape, any dtype in SUPPORTED_DTYPES

    Returns
    -------
    hex : str        sha256(bytes(ascontiguousarray(arr, little-endian)))
    """
    return sha256_hex(_canonical(arr).tobytes())


def _canonical(arr: np.ndarray) -> np.ndarray:
    """Little-endian, C-contiguous, aligned copy of ``arr`` (no copy when it already is one)."""
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    out = np.array(arr, dtype=dt, order="C", copy=None)        # (...) -> (...), C order; keeps 0-d as 0-d
    if not out.flags.aligned:
        out = out.copy()                                       # (...) -> (...), aligned
    return out


def to_jsonable(obj, where: str = "manifest"):
    """Convert ``obj`` to plain JSON types (numpy scalars and arrays included); InputError if impossible.

    Parameters
    ----------
    obj : dict / list / tuple / str / int / float / bool / None / numpy scalar / ndarray
        Dict keys must be str. Tuples and arrays become lists.
    where : str
        Where ``obj`` sits, for the error message (e.g. ``"manifest['cfg']"``).

    Returns
    -------
    plain : the same value built only from dict, list, str, int, float, bool and None
    """
    if obj is None or isinstance(obj, (bool, str, int, float)):
        return obj
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item(), where)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), where)
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise InputError(f"{where} has a non-string key {k!r}; expected JSON object keys to be str")
            out[k] = to_jsonable(v, f"{where}[{k!r}]")
        return out
    raise InputError(f"{where} holds a {type(obj).__name__}, which JSON cannot store; "
                     f"expected dict, list, str, int, float, bool, None or a numpy scalar/array")


# -------------------------------------------------------------------------------------- save


def _check_tensors(tensors) -> dict:
    """Validate the tensors dict and return canonical (little-endian, C-contiguous) arrays."""
    if not isinstance(tensors, dict):
        raise InputError(f"tensors must be a dict of name -> numpy array; got {type(tensors).__name__}")
    out = {}
    for name, arr in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise InputError(f"tensor name {name!r} is not allowed; expected a non-empty str other than '__metadata__'")
        if not isinstance(arr, np.ndarray):
            raise InputError(f"tensor {name!r} is a {type(arr).__name__}; expected a numpy ndarray")
        if arr.dtype.name not in SUPPORTED_DTYPES:
            raise InputError(f"tensor {name!r} has dtype {arr.dtype.name}, which safetensors cannot store; "
                             f"expected one of {', '.join(SUPPORTED_DTYPES)}")
        out[name] = _canonical(arr)                             # (...) -> (...), same values
    return out


def save_checkpoint(folder, tensors: dict, manifest: dict) -> None:
    """Write ``tensors`` and ``manifest`` to the checkpoint ``folder`` (created if needed).

    Writes ``folder/model.safetensors`` then ``folder/manifest.json``, each atomically; the
    manifest goes last and is the commit point. Both payloads are built and validated before
    either file is touched, so bad input never changes an existing checkpoint.

    Parameters
    ----------
    folder : str or Path
        Checkpoint folder; created with parents if missing.
    tensors : dict[str, ndarray]
        Name -> array, any shape, dtype in SUPPORTED_DTYPES (e.g. float32 parameters, float32
        ``opt.m.<param>`` / ``opt.v.<param>`` moments, int64 counters). Stored bit-for-bit.
    manifest : dict
        Caller metadata (config, step, tokenizer_sha256, rng state, ...). JSON-able after
        :func:`to_jsonable`; may not use the keys in RESERVED_KEYS.

    Returns
    -------
    None
        manifest.json = manifest + {format, format_version, tensors: {name: {shape, dtype,
        sha256}}, safetensors_sha256}

    Raises
    ------
    InputError
        Bad tensors or manifest, or a folder that cannot be created / written.
    DiskError
        The operating system failed while writing (disk full, I/O error); a RunError.
    """
    if not isinstance(manifest, dict):
        raise InputError(f"manifest must be a dict; got {type(manifest).__name__}")
    clash = [k for k in RESERVED_KEYS if k in manifest]
    if clash:
        raise InputError(f"manifest uses reserved key(s) {', '.join(clash)}; "
                         f"expected save_checkpoint to fill {', '.join(RESERVED_KEYS)} itself")
    arrays = _check_tensors(tensors)
    meta = to_jsonable(manifest)
    json.dumps(meta)  # cannot fail after to_jsonable; here so nothing below is written on a bug
    try:
        folder = ensure_writable_dir(folder)
    except InputError as e:
        p = Path(folder)
        if (p.is_dir() or p.parent.is_dir()) and not (p.exists() and not p.is_dir()):
            # an existing folder that cannot be written (made read-only, full): a disk fault, so a run's
            # failure path (history kept, resume hint) runs; a file in the way stays the caller's InputError
            raise DiskError(f"could not write checkpoint: {e}") from None
        raise

    blob = stnp.save(arrays)                                   # bytes of the whole file
    meta["format"] = CHECKPOINT_FORMAT
    meta["format_version"] = CHECKPOINT_FORMAT_VERSION
    meta["tensors"] = {name: {"shape": list(a.shape), "dtype": a.dtype.name, "sha256": tensor_sha256(a)}
                       for name, a in arrays.items()}
    meta["safetensors_sha256"] = sha256_hex(blob)
    try:
        atomic_write_bytes(folder / TENSORS_FILE, blob)
        atomic_write_json(folder / MANIFEST_FILE, meta)
    except OSError as e:
        raise DiskError(f"could not write checkpoint to {str(folder)!r}: {e.strerror or e}; "
                        f"expected a folder with free space that stays writable") from None


# -------------------------------------------------------------------------------------- load


def _read_manifest(folder: Path) -> dict:
    """Read and check manifest.json: JSON object, format, version, tensors table."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise InputError(f"checkpoint folder {str(folder)!r} has no {MANIFEST_FILE}; "
                         f"expected a folder written by save_checkpoint")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{str(path)!r} is not valid JSON ({e}); expected the manifest save_checkpoint wrote") from None
    if not isinstance(meta, dict):
        raise InputError(f"{str(path)!r} holds a JSON {type(meta).__name__}; expected a JSON object")
    fmt, ver = meta.get("format"), meta.get("format_version")
    if fmt != CHECKPOINT_FORMAT:
        raise InputError(f"{str(path)!r} has format {fmt!r}; expected {CHECKPOINT_FORMAT!r}")
    if ver != CHECKPOINT_FORMAT_VERSION or isinstance(ver, bool):
        raise InputError(f"checkpoint format_version {ver!r} is not supported; "
                         f"this alh_ref reads format_version {CHECKPOINT_FORMAT_VERSION}")
    table = meta.get("tensors")
    if not isinstance(table, dict):
        raise InputError(f"{str(path)!r} has no 'tensors' table; expected {{name: {{shape, dtype, sha256}}}}")
    for name, ent in table.items():
        ok = (isinstance(ent, dict) and isinstance(ent.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in ent["shape"])
              and ent.get("dtype") in SUPPORTED_DTYPES and isinstance(ent.get("sha256"), str))
        if not ok:
            raise InputError(f"{str(path)!r} entry for tensor {name!r} is malformed ({ent!r}); "
                             f"expected {{shape: [non-negative ints], dtype: numpy dtype name, sha256: hex}}")
    if not isinstance(meta.get("safetensors_sha256"), str):
        raise InputError(f"{str(path)!r} has no 'safetensors_sha256'; expected the hex sha256 of {TENSORS_FILE}")
    return meta


def _mismatch_message(key: str, have, want) -> str:
    """One line saying the checkpoint's ``key`` is ``have`` but this run expects ``want``."""
    if key in _MISMATCH_PHRASES and isinstance(have, str) and isinstance(want, str):
        what, label = _MISMATCH_PHRASES[key]
        return (f"{what} mismatch: checkpoint was made with {label} {have}, this run uses {want}; "
                f"resume with the same {what} or start a new run")
    return f"{key} mismatch: checkpoint has {have!r}, expected {want!r}"


def _check_expect(meta: dict, expect: dict) -> None:
    """Each ``expect`` key must be in the manifest with an equal (JSON-normalised) value."""
    for key, want in expect.items():
        want = to_jsonable(want, f"expect[{key!r}]")
        if key not in meta:
            raise InputError(f"{key} mismatch: checkpoint manifest has no {key!r}, expected {want!r}")
        if meta[key] != want:
            raise InputError(_mismatch_message(key, meta[key], want))


def _read_tensors(folder: Path, meta: dict) -> dict:
    """Read model.safetensors, check it against the manifest, and return its arrays."""
    path = folder / TENSORS_FILE
    if not path.is_file():
        raise InputError(f"checkpoint folder {str(folder)!r} has no {TENSORS_FILE}; "
                         f"expected it beside {MANIFEST_FILE}")
    blob = path.read_bytes()
    found, want = sha256_hex(blob), meta["safetensors_sha256"]
    if found != want:
        raise InputError(f"{str(path)!r} is corrupted or truncated ({len(blob)} bytes, sha256 {found[:16]}…); "
                         f"expected sha256 {want[:16]}… from {MANIFEST_FILE} (or a save was interrupted between the two files)")
    try:
        arrays = stnp.load(blob)
    except Exception as e:  # SafetensorError and friends: turn into one line
        msg = " ".join(str(e).split())
        raise InputError(f"{str(path)!r} is not a valid safetensors file ({type(e).__name__}: {msg}); "
                         f"expected the file save_checkpoint wrote") from None
    table = meta["tensors"]
    missing = sorted(set(table) - set(arrays))
    extra = sorted(set(arrays) - set(table))
    if missing:
        raise InputError(f"{str(path)!r} lacks tensor(s) {', '.join(missing)} listed in {MANIFEST_FILE}; "
                         f"expected every manifest tensor in the file")
    if extra:
        raise InputError(f"{str(path)!r} has tensor(s) {', '.join(extra)} not listed in {MANIFEST_FILE}; "
                         f"expected file and manifest to list the same tensors")
    out = {}
    for name, ent in table.items():
        arr = _canonical(arrays[name])                         # (...) -> (...), aligned, own order
        if list(arr.shape) != ent["shape"] or arr.dtype.name != ent["dtype"]:
            raise InputError(f"tensor {name!r} in {TENSORS_FILE} is {arr.dtype.name} {tuple(arr.shape)}; "
                             f"expected {ent['dtype']} {tuple(ent['shape'])} as {MANIFEST_FILE} says")
        if tensor_sha256(arr) != ent["sha256"]:
            raise InputError(f"tensor {name!r} in {TENSORS_FILE} has sha256 {tensor_sha256(arr)[:16]}…; "
                             f"expected {ent['sha256'][:16]}… as {MANIFEST_FILE} says")
        out[name] = arr if arr.flags.writeable else arr.copy()  # (...) -> (...), writable
    return out


def _check_shapes(arrays: dict, expect_shapes: dict) -> None:
    """Every name in ``expect_shapes`` must be present with exactly that shape."""
    for name, shape in expect_shapes.items():
        want = tuple(int(d) for d in shape)
        if name not in arrays:
            raise InputError(f"checkpoint has no tensor {name!r}; expected one of shape {want}")
        if arrays[name].shape != want:
            raise InputError(f"tensor {name!r} has shape {arrays[name].shape} in the checkpoint; expected {want}")


def load_checkpoint(folder, *, expect_shapes: dict | None = None, expect: dict | None = None):
    """Load and fully validate a checkpoint written by :func:`save_checkpoint`.

    Validation order: folder -> manifest.json (exists, JSON object, format, format_version,
    tensors table) -> ``expect`` values -> model.safetensors (exists, whole-file sha256, parses,
    same tensor names, per-tensor shape / dtype / sha256) -> ``expect_shapes``.

    Parameters
    ----------
    folder : str or Path
        The checkpoint folder.
    expect_shapes : dict[str, tuple[int, ...]] or None
        Tensors that must be present with exactly these shapes (e.g. ``{"wte": (V, C)}``).
    expect : dict or None
        Manifest keys that must equal these values (e.g. ``{"tokenizer_sha256": sha}``).

    Returns
    -------
    tensors : dict[str, ndarray]
        Name -> array, each bit-for-bit what was saved (same shape and dtype), writable.
    manifest : dict
        The full manifest, including the keys save_checkpoint added.

    Raises
    ------
    InputError
        On the first problem found, with a one-line message naming it and what was expected.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"checkpoint folder {str(folder)!r} does not exist; expected a folder written by save_checkpoint")
    if not folder.is_dir():
        raise InputError(f"checkpoint path {str(folder)!r} is not a folder; expected a folder written by save_checkpoint")
    meta = _read_manifest(folder)
    if expect:
        _check_expect(meta, expect)
    arrays = _read_tensors(folder, meta)
    if expect_shapes:
        _check_shapes(arrays, expect_shapes)
    return arrays, meta


# --------------------------------------------------------------------------------- RNG state


def rng_state_to_json(rng: np.random.Generator) -> dict:
    """JSON-safe snapshot of a numpy Generator's bit-generator state (ints as decimal strings).

    Parameters
    ----------
    rng : np.random.Generator backed by PCG64 or PCG64DXSM

    Returns
    -------
    state : dict
        ``{"bit_generator": "PCG64", "state": {"state": "<dec>", "inc": "<dec>"},
        "has_uint32": "<dec>", "uinteger": "<dec>"}`` (numpy's layout, every int as a str,
        since the 128-bit state does not fit a JSON double).
    """
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng must be a numpy Generator; got {type(rng).__name__}")
    st = rng.bit_generator.state
    if st.get("bit_generator") not in _RNG_KINDS:
        raise InputError(f"rng uses bit generator {st.get('bit_generator')!r}; expected one of {', '.join(_RNG_KINDS)}")
    return {"bit_generator": st["bit_generator"],
            "state": {"state": str(int(st["state"]["state"])), "inc": str(int(st["state"]["inc"]))},
            "has_uint32": str(int(st["has_uint32"])), "uinteger": str(int(st["uinteger"]))}


def _dec(value, what: str) -> int:
    """Decimal string -> non-negative int; InputError otherwise."""
    if not isinstance(value, str) or not value.isdecimal() or not value.isascii():
        raise InputError(f"rng state field {what} is {value!r}; expected a decimal integer string")
    return int(value)


def rng_from_json(d: dict) -> np.random.Generator:
    """Rebuild the Generator saved by :func:`rng_state_to_json`; its draws continue bit-for-bit.

    Parameters
    ----------
    d : dict
        Output of :func:`rng_state_to_json` (possibly after a JSON round trip).

    Returns
    -------
    rng : np.random.Generator   with rng.bit_generator.state equal to the saved state
    """
    if not isinstance(d, dict) or not isinstance(d.get("state"), dict):
        raise InputError(f"rng state is {d!r}; expected the dict rng_state_to_json returned")
    kind = d.get("bit_generator")
    if kind not in _RNG_KINDS:
        raise InputError(f"rng state names bit generator {kind!r}; expected one of {', '.join(_RNG_KINDS)}")
    state = {"bit_generator": kind,
             "state": {"state": _dec(d["state"].get("state"), "state.state"),
                       "inc": _dec(d["state"].get("inc"), "state.inc")},
             "has_uint32": _dec(d.get("has_uint32"), "has_uint32"),
             "uinteger": _dec(d.get("uinteger"), "uinteger")}
    if state["state"]["state"] >= 2**128 or state["state"]["inc"] >= 2**128 or state["has_uint32"] > 1 \
            or state["uinteger"] >= 2**32:
        raise InputError(f"rng state {d!r} is out of range; expected 128-bit state/inc, has_uint32 0 or 1, 32-bit uinteger")
    bitgen = getattr(np.random, kind)()
    bitgen.state = state
    return np.random.Generator(bitgen)
