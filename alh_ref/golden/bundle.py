"""Golden bundles on disk: the tolerance of every tensor, writing a bundle, reading and verifying one.

A bundle is a folder (format described, key by key, in docs/golden.md section 1):

    manifest.json          format version, alh_ref / numpy versions, and per case: its full config,
                           dtype, seeds, recipes, the ordered tensor keys and, per tensor, shape,
                           dtype, sha256 and the tolerance (rtol, atol) to check it with
    <case>.safetensors     one file per case: every tensor under its documented name

Nothing is found by offset: every tensor is named, and the manifest says what it is.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import safetensors.numpy as stnp

from .. import __version__
from ..checkpoint import tensor_sha256, to_jsonable
from ..errors import InputError
from ..io_utils import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from .cases import CASES, compute_case

FORMAT = "alh_ref.golden"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"

# ----------------------------------------------------------------------------------------------
# Tolerances: (rtol, atol) per tensor kind and dtype.  Measured, see docs/golden.md "Tolerances".

TOLERANCES = {
    "float64": {"exact": (0.0, 0.0), "forward": (1e-10, 1e-12), "grad": (1e-9, 1e-12),
                "train": (1e-7, 5e-8)},
    "float32": {"exact": (0.0, 0.0), "forward": (1e-4, 1e-5), "grad": (1e-3, 1e-5),
                "train": (1e-3, 1e-4)},
}


def tensor_kind(key):
    """The tolerance class of a tensor key.

    Parameters
    ----------
    key : str   e.g. "param.wte", "output.logits", "grad.h.0.ln_1.w", "train.final.wte"

    Returns
    -------
    kind : str  "exact" (param.*, input.*, train.x, train.y: must be bit-identical),
                "forward" (act.*, alh.*, output.*), "grad" (dlogits, grad.*, train.step0.grad.*)
                or "train" (the other train.* results)
    """
    if key.startswith(("param.", "input.")) or key in ("train.x", "train.y"):
        return "exact"
    if key.startswith(("act.", "alh.", "output.")):
        return "forward"
    if key == "dlogits" or key.startswith(("grad.", "train.step0.grad.")):
        return "grad"
    if key.startswith("train."):
        return "train"
    raise InputError(f"golden key {key!r} has no known prefix; expected param., input., act., alh., output., "
                     "dlogits, grad. or train.")


def tolerance(key, dtype):
    """(rtol, atol) to check tensor ``key`` of ``dtype`` with.

    Parameters
    ----------
    key : str;  dtype : numpy dtype or name (integer tensors are always exact)

    Returns
    -------
    (rtol, atol) : floats;  a passes against reference b iff |a - b| <= atol + rtol |b| elementwise
    """
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        return (0.0, 0.0)
    return TOLERANCES[dt.name][tensor_kind(key)]



# ----------------------------------------------------------------------------------------------
# Writing and reading bundles

def _tensor_entry(key, a):
    rtol, atol = tolerance(key, a.dtype)
    return {"key": key, "kind": tensor_kind(key) if np.issubdtype(a.dtype, np.floating) else "exact",
            "dtype": a.dtype.name, "shape": list(a.shape), "rtol": rtol, "atol": atol, "sha256": tensor_sha256(a)}


def _json_text(obj, indent=0):
    """Deterministic JSON: dict keys sorted, one line per tensor entry and per list of scalars.

    One line per tensor keeps the manifest small and makes a regenerated bundle's diff read as
    "these tensors changed".
    """
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, dict) and "sha256" in obj:
        return json.dumps(obj)                                                                  # tensor entry, own order
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_json_text(obj[k], indent + 2)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _json_text(v, indent + 2) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def write_bundle(out_dir, cases=None):
    """Compute the cases and write the bundle: one <case>.safetensors each, then manifest.json.

    Parameters
    ----------
    out_dir : str or Path   created if needed; existing files of the same names are replaced atomically
    cases : list of case names or None (all of CASES, in order)

    Returns
    -------
    manifest : dict   what was written to manifest.json
    """
    names = list(CASES) if cases is None else [n for n in CASES if n in set(cases)]
    unknown = [n for n in (cases or ()) if n not in CASES]
    if unknown:
        raise InputError(f"unknown golden case(s) {', '.join(unknown)}; expected names from {', '.join(CASES)}")
    folder = ensure_writable_dir(out_dir)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "alh_ref_version": __version__,
                "numpy_version": np.__version__, "case_order": names, "cases": {}}
    for name in names:
        tensors, meta = compute_case(name)                                                      # C order (see _c_order)
        # one metadata key: safetensors writes a multi-key header map in no fixed order
        blob = stnp.save(tensors, metadata={FORMAT: json.dumps({"case": name, "format_version": FORMAT_VERSION})})
        atomic_write_bytes(folder / f"{name}.safetensors", blob)
        meta.update(file=f"{name}.safetensors", file_sha256=hashlib.sha256(blob).hexdigest(),
                    tensors=[_tensor_entry(k, a) for k, a in tensors.items()])             # in check order
        manifest["cases"][name] = meta
    manifest = to_jsonable(manifest)
    atomic_write_text(folder / MANIFEST_FILE, _json_text(manifest) + "\n")                     # commit point, last
    return manifest


def _load_safetensors(path, blob=None):
    """Read one safetensors file (or its bytes ``blob``); InputError with one line if it cannot be parsed."""
    try:
        return stnp.load(path.read_bytes() if blob is None else blob)
    except Exception as e:  # SafetensorError and friends -> one line
        msg = " ".join(str(e).split())
        raise InputError(f"{str(path)!r} is not a valid safetensors file ({type(e).__name__}: {msg}); "
                         "expected a file written by safetensors save/save_file") from None


def read_manifest(folder):
    """Read and check a bundle's manifest.json (format, version, cases table).

    Parameters
    ----------
    folder : str or Path, a bundle folder

    Returns
    -------
    manifest : dict   as in docs/golden.md; InputError if missing, not JSON, or another format/version
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise InputError(f"{str(folder)!r} has no {MANIFEST_FILE}; expected a golden bundle written by write_bundle")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{str(path)!r} is not valid JSON ({e}); expected the manifest write_bundle wrote") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise InputError(f"{str(path)!r} is not a golden manifest (format {m.get('format') if isinstance(m, dict) else None!r}); "
                         f"expected format {FORMAT!r}")
    if m.get("format_version") != FORMAT_VERSION:
        raise InputError(f"golden format_version {m.get('format_version')!r} is not supported; "
                         f"this alh_ref reads format_version {FORMAT_VERSION}")
    if not isinstance(m.get("cases"), dict) or not isinstance(m.get("case_order"), list):
        raise InputError(f"{str(path)!r} has no cases table; expected 'cases' and 'case_order'")
    return m


def _tensor_table(meta):
    """{key: entry} from a case's manifest "tensors" list (check order kept)."""
    return {e["key"]: e for e in meta["tensors"]}


def _read_verified(folder):
    """(manifest, {case: tensors}, problems): every file read once and checked against the manifest."""
    folder = Path(folder)
    m = read_manifest(folder)
    problems, cases = [], {}
    listed = {m["cases"][n].get("file") for n in m["case_order"] if n in m["cases"]}
    for p in sorted(folder.glob("*.safetensors")):
        if p.name not in listed:
            problems.append(f"{p.name}: not listed in {MANIFEST_FILE}")
    for name in m["case_order"]:
        meta = m["cases"].get(name)
        if meta is None:
            problems.append(f"{name}: in case_order but not in cases")
            continue
        path = folder / meta["file"]
        if not path.is_file():
            problems.append(f"{name}: file {meta['file']} is missing")
            continue
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta["file_sha256"]:
            problems.append(f"{name}: {meta['file']} sha256 differs from the manifest's file_sha256")
        try:
            arrays = cases[name] = _load_safetensors(path, blob)
        except InputError as e:
            problems.append(f"{name}: {e}")
            continue
        table = _tensor_table(meta)
        if set(arrays) != set(table) or len(table) != len(meta["tensors"]):
            problems.append(f"{name}: file and manifest list different tensors "
                            f"(only in file: {sorted(set(arrays) - set(table))}, "
                            f"only in manifest: {sorted(set(table) - set(arrays))})")
        for key, ent in table.items():
            a = arrays.get(key)
            if a is None:
                continue
            if list(a.shape) != ent["shape"] or a.dtype.name != ent["dtype"]:
                problems.append(f"{name}/{key}: file has {a.dtype.name} {a.shape}, "
                                f"manifest says {ent['dtype']} {tuple(ent['shape'])}")
            elif tensor_sha256(a) != ent["sha256"]:
                problems.append(f"{name}/{key}: sha256 differs from the manifest")
    return m, cases, problems


def verify_bundle(folder):
    """Check that a bundle describes itself exactly: files, keys, shapes, dtypes and sha256s.

    Parameters
    ----------
    folder : str or Path, a bundle written by :func:`write_bundle`

    Returns
    -------
    problems : list of str, one line each (empty when the bundle is consistent); files in the folder
        that the manifest does not list are problems too
    """
    return _read_verified(folder)[2]


def load_bundle(folder):
    """Load a verified bundle written by :func:`write_bundle`.

    Parameters
    ----------
    folder : str or Path

    Returns
    -------
    manifest : dict
    cases : dict case name -> dict key -> ndarray

    Raises
    ------
    InputError  if :func:`verify_bundle` finds any problem (the first is named)
    """
    m, cases, problems = _read_verified(folder)
    if problems:
        raise InputError(f"golden bundle {str(folder)!r} is inconsistent: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return m, cases


