"""Golden outputs for other implementations, and a checker that says exactly where a port diverges.

One job per module: :mod:`.cases` (what each case is and computes), :mod:`.bundle` (tolerances and
the bundle on disk), :mod:`.check` (comparing a port's bundle), :mod:`.command` (``alh-ref golden``).
docs/golden.md documents the bundle for port authors; tests/golden/check_bundle.py checks a port
with only numpy and safetensors installed.
"""
from .bundle import (FORMAT, FORMAT_VERSION, MANIFEST_FILE, TOLERANCES, load_bundle, read_manifest, tensor_kind,
                     tolerance, verify_bundle, write_bundle)
from .cases import CASES, case_meta, case_outputs, compute_case
from .check import check_bundle, compare_tensor, format_report
from .command import golden_command

__all__ = ["CASES", "FORMAT", "FORMAT_VERSION", "MANIFEST_FILE", "TOLERANCES", "case_meta", "case_outputs",
           "check_bundle", "compare_tensor", "compute_case", "format_report", "golden_command", "load_bundle",
           "read_manifest", "tensor_kind", "tolerance", "verify_bundle", "write_bundle"]
