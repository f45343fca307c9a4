"""Tests for alh_ref.golden: the committed bundle does not drift, the checker finds and locates every
kind of divergence, the bundle describes itself, and the tolerances have measured headroom."""
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stnp

import alh_ref.ops as ops
from alh_ref import golden as g
from alh_ref import model
from alh_ref.alh import adapted, encoders
from alh_ref.errors import InputError
from alh_ref.ops import gelu as gelu_module

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"


def _failures(report):
    return [e for e in report["entries"] if not e["ok"]]


def _entry(report, case, key):
    return next(e for e in report["entries"] if e["case"] == case and e["key"] == key)


@pytest.fixture
def copy_of(tmp_path):
    """Copy the named cases of the committed bundle into a temp folder (files only: what a port writes)."""
    def make(*cases):
        out = tmp_path / "port"
        out.mkdir()
        for c in cases:
            shutil.copy(GOLDEN / f"{c}.safetensors", out / f"{c}.safetensors")
        return out
    return make


def _set(t, key, index, value):
    t[key][index] = value


def _edit(folder, case, fn):
    """Load folder/case.safetensors, let fn change the dict in place, save it back."""
    path = folder / f"{case}.safetensors"
    t = {k: v.copy() for k, v in stnp.load_file(str(path)).items()}
    fn(t)
    stnp.save_file(t, str(path))


# ----------------------------------------------------------------------------------------------
# Drift: the committed bundle equals a fresh computation within tolerance

def test_committed_bundle_has_not_drifted():
    report = g.check_bundle(GOLDEN, require_all_cases=True)
    assert report["ok"], g.format_report(report, only_failures=True)
    manifest = g.read_manifest(GOLDEN)
    assert manifest["case_order"] == list(g.CASES)
    assert len(report["entries"]) == sum(len(c["tensors"]) for c in manifest["cases"].values())
    assert not report["skipped"]


def test_gelu_constant_change_is_caught(monkeypatch):
    # the NumPy twins read GELU_CUBE at call time: route the model through them with a changed constant
    monkeypatch.setattr(gelu_module, "GELU_CUBE", 0.0447)
    for mod in (model, encoders):
        monkeypatch.setattr(mod, "gelu_forward", ops.gelu_forward_ref)
        monkeypatch.setattr(mod, "gelu_backward", ops.gelu_backward_ref)
    report = g.check_bundle(GOLDEN, cases=["gpt_f64", "alh_film_both_mean"])
    assert not report["ok"]
    assert report["first_failure"] == "gpt_f64/output.logits"      # parameters and inputs still match
    assert _entry(report, "gpt_f64", "output.logits")["share"] > 100
    assert not _entry(report, "alh_film_both_mean", "alh.context")["ok"]   # the mean encoder's MLP too


def test_adam_epsilon_change_is_caught(monkeypatch):
    """The training tolerance is loose enough for rounding (see the headroom tests below) but still
    sees AdamW's eps moved by 10%."""
    monkeypatch.setattr(g, "TRAIN_OPT", dataclasses.replace(g.TRAIN_OPT, eps=1.1e-8))
    report = g.check_bundle(GOLDEN, cases=["train_gpt_f64", "train_alh_householder_f64"])
    failed = {(e["case"], e["key"]) for e in _failures(report)}
    assert report["first_failure"].startswith("train_gpt_f64/train.")
    assert ("train_gpt_f64", "train.final.wte") in failed
    assert ("train_alh_householder_f64", "train.final.alh.enc.wte") in failed
    losses = _entry(report, "train_gpt_f64", "train.losses")
    assert losses["max_abs"] > 0 and losses["worst_index"] != (0,)   # step 0 runs before any update


def test_perturbed_parameter_is_first_failure_at_its_index(copy_of):
    port = copy_of("gpt_f64", "alh_lowrank_both_transformer")
    _edit(port, "alh_lowrank_both_transformer",
          lambda t: _set(t, "param.h.1.mlp.c_fc.w", (3, 5), t["param.h.1.mlp.c_fc.w"][3, 5] * (1 + 1e-12)))
    report = g.check_bundle(port, reference=GOLDEN)
    assert report["first_failure"] == "alh_lowrank_both_transformer/param.h.1.mlp.c_fc.w"
    e = _entry(report, "alh_lowrank_both_transformer", "param.h.1.mlp.c_fc.w")
    assert e["worst_index"] == (3, 5) and e["share"] == np.inf   # parameters must come back bit for bit
    assert len(_failures(report)) == 1


def test_corrupted_value_reported_with_index_and_share(copy_of):
    port = copy_of("gpt_f64")
    ref = stnp.load_file(str(GOLDEN / "gpt_f64.safetensors"))
    man = {e["key"]: e for e in g.read_manifest(GOLDEN)["cases"]["gpt_f64"]["tensors"]}
    rtol, atol = man["output.logits"]["rtol"], man["output.logits"]["atol"]
    b = ref["output.logits"][1, 6, 40]
    delta = 5.0 * (atol + rtol * abs(b))
    _edit(port, "gpt_f64", lambda t: _set(t, "output.logits", (1, 6, 40), b + delta))
    report = g.check_bundle(port, reference=GOLDEN)
    assert report["first_failure"] == "gpt_f64/output.logits"
    e = _entry(report, "gpt_f64", "output.logits")
    assert e["worst_index"] == (1, 6, 40)
    assert e["share"] == pytest.approx(5.0, rel=1e-6)
    assert e["max_abs"] == pytest.approx(delta, rel=1e-6)
    assert e["max_rel"] == pytest.approx(delta / abs(b), rel=1e-6)
    assert "share 5 at (1, 6, 40)" in e["message"]
    assert "first failing tensor: gpt_f64/output.logits" in g.format_report(report)


# ----------------------------------------------------------------------------------------------
# Checker: every kind of mismatch is a failure with a clear message

def test_missing_key_fails_and_allow_missing_lists_it(copy_of):
    port = copy_of("gpt_f64")
    _edit(port, "gpt_f64", lambda t: t.pop("grad.h.0.ln_2.b"))
    report = g.check_bundle(port, reference=GOLDEN)
    assert report["first_failure"] == "gpt_f64/grad.h.0.ln_2.b"
    assert "missing" in _entry(report, "gpt_f64", "grad.h.0.ln_2.b")["message"]
    loose = g.check_bundle(port, reference=GOLDEN, allow_missing=True)
    assert loose["ok"] and "not checked" in _entry(loose, "gpt_f64", "grad.h.0.ln_2.b")["message"]


def test_shape_dtype_extra_and_nan_fail(copy_of):
    port = copy_of("gpt_f64")

    def corrupt(t):
        t["output.logits"] = t["output.logits"][:, :, :-1].copy()          # (2,8,63)
        t["grad.wte"] = t["grad.wte"].astype(np.float32)
        t["grad.wpe"][2, 3] = np.nan
        t["output.probs"] = np.zeros(3)
    _edit(port, "gpt_f64", corrupt)
    report = g.check_bundle(port, reference=GOLDEN)
    msgs = {e["key"]: e["message"] for e in _failures(report)}
    assert set(msgs) == {"output.logits", "grad.wte", "grad.wpe", "output.probs"}
    assert "shape mismatch: got (2, 8, 63), expected (2, 8, 64)" in msgs["output.logits"]
    assert "dtype mismatch: got float32, expected float64" in msgs["grad.wte"]
    assert _entry(report, "gpt_f64", "grad.wpe")["worst_index"] == (2, 3)
    assert "extra key" in msgs["output.probs"]
    assert report["first_failure"] == "gpt_f64/output.logits"


def test_case_files_unknown_missing_and_skipped(copy_of):
    port = copy_of("gpt_f32")
    (port / "gpt_f16.safetensors").write_bytes((port / "gpt_f32.safetensors").read_bytes())
    report = g.check_bundle(port, reference=GOLDEN)
    assert report["first_failure"] == "gpt_f16/<file>"
    assert "gpt_f64" in report["skipped"]
    strict = g.check_bundle(port, reference=GOLDEN, cases=["gpt_f64", "gpt_f32"], require_all_cases=True)
    assert strict["first_failure"] == "gpt_f64/<file>"
    assert _entry(strict, "gpt_f32", "output.logits")["ok"]
    (port / "gpt_f32.safetensors").write_bytes(b"not a safetensors file")
    broken = g.check_bundle(port, reference=GOLDEN, cases=["gpt_f32"])
    assert broken["first_failure"] == "gpt_f32/<file>"


def test_candidate_manifest_cannot_loosen_tolerances(copy_of):
    port = copy_of("gpt_f64")
    man = g.read_manifest(GOLDEN)
    for e in man["cases"]["gpt_f64"]["tensors"]:
        e["rtol"] = e["atol"] = 1e9
    (port / "manifest.json").write_text(json.dumps(man))
    _edit(port, "gpt_f64", lambda t: _set(t, "output.loss", (), t["output.loss"] + 1e-6))
    assert g.check_bundle(port, reference=GOLDEN)["first_failure"] == "gpt_f64/output.loss"


def test_compare_tensor_edge_cases():
    r = g.compare_tensor(np.array(2.0), np.array(2.0), 1e-10, 1e-12)
    assert r == {"max_abs": 0.0, "max_rel": 0.0, "share": 0.0, "worst_index": (), "ok": True}
    r = g.compare_tensor(np.array([0.0, 1.0, 3.0]), np.array([1e-13, 1.0, 3.0 + 3e-10]), 1e-10, 1e-12)
    # element 0: 1e-13 / 1e-12 = 0.1;  element 2: 3e-10 / (1e-12 + 3e-10) ~ 0.997
    assert r["worst_index"] == (2,) and r["ok"] and r["share"] == pytest.approx(3e-10 / (1e-12 + 3e-10 * (1 + 1e-10)), rel=1e-4)
    assert r["max_rel"] == pytest.approx(1.0)                                 # element 0: 1e-13 / 1e-13
    r = g.compare_tensor(np.array([np.nan, 1.0]), np.array([0.0, 1.0]), 1.0, 1.0)
    assert not r["ok"] and r["worst_index"] == (0,) and r["share"] == np.inf
    r = g.compare_tensor(np.array([1, 2], dtype=np.int64), np.array([1, 3], dtype=np.int64), 0.0, 0.0)
    assert not r["ok"] and r["worst_index"] == (1,)


def test_bad_folders_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        g.check_bundle(tmp_path / "nope")
    with pytest.raises(InputError, match="no <case>.safetensors"):
        g.check_bundle(tmp_path)
    with pytest.raises(InputError, match="no manifest.json"):
        g.load_bundle(tmp_path)
    with pytest.raises(InputError, match="unknown golden case"):
        g.check_bundle(GOLDEN, cases=["gpt_f16"])


# ----------------------------------------------------------------------------------------------
# The bundle describes itself

def test_manifest_lists_every_tensor_with_matching_sha256():
    man = json.loads((GOLDEN / "manifest.json").read_text())
    assert man["format"] == "alh_ref.golden" and man["format_version"] == g.FORMAT_VERSION
    assert {"alh_ref_version", "numpy_version"} <= set(man)
    assert sorted(p.name for p in GOLDEN.glob("*.safetensors")) == sorted(c["file"] for c in man["cases"].values())
    for name, case in man["cases"].items():
        blob = (GOLDEN / case["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == case["file_sha256"]
        tensors = stnp.load(blob)
        assert [e["key"] for e in case["tensors"]] == list(g.compute_case(name)[0])   # keys and check order
        assert set(tensors) == {e["key"] for e in case["tensors"]}
        for e in case["tensors"]:
            a = tensors[e["key"]]
            assert list(a.shape) == e["shape"] and a.dtype.name == e["dtype"], (name, e["key"])
            assert hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() == e["sha256"], (name, e["key"])
            assert (e["rtol"], e["atol"]) == g.tolerance(e["key"], a.dtype)
        assert case["dtype"] in ("float64", "float32") and case["seeds"] and case["config"]["gpt"]["vocab_size"] == 64
        x, y = (tensors["input.x"], tensors["input.y"]) if "input.x" in tensors else (tensors["train.x"], tensors["train.y"])
        assert (y[..., :-1] == x[..., 1:]).all()                  # next-token windows, stored in the right order
    assert g.verify_bundle(GOLDEN) == []


def test_verify_bundle_finds_tampering(tmp_path):
    b = tmp_path / "b"
    shutil.copytree(GOLDEN, b)
    _edit(b, "gpt_f32", lambda t: _set(t, "output.loss", (), t["output.loss"] + np.float32(1)))
    (b / "stray.safetensors").write_bytes((b / "gpt_f32.safetensors").read_bytes())
    problems = g.verify_bundle(b)
    assert any(p.startswith("stray.safetensors") for p in problems)
    assert any(p.startswith("gpt_f32/output.loss: sha256") for p in problems)
    with pytest.raises(InputError, match="inconsistent"):
        g.check_bundle(GOLDEN, reference=b, cases=["gpt_f32"])


def test_alh_cases_are_not_the_base_model():
    """At init ALH equals the base model; the bundle's hypernetworks are perturbed so a port that
    ignores the transform fails."""
    base = stnp.load_file(str(GOLDEN / "gpt_f64.safetensors"))["output.logits"]
    for name, spec in g.CASES.items():
        if spec["kind"] == "alh":
            t = stnp.load_file(str(GOLDEN / f"{name}.safetensors"))
            assert np.abs(t["output.logits"] - base).max() > 0.5, name
            assert t["alh.theta." + ("v" if "householder" in name else "U" if "lowrank" in name else "gamma")].std() > 0.1


# ----------------------------------------------------------------------------------------------
# Writing, the command, the example

def test_write_bundle_and_golden_command(tmp_path, capsys):
    out = tmp_path / "b"
    g.write_bundle(out, cases=["gpt_f32"])
    assert g.verify_bundle(out) == []
    # exact: the writer's determinism (same process, same code path, same inputs; each case allocates
    # the same fresh arrays in the same order whatever ran before)
    g.write_bundle(tmp_path / "again", cases=["gpt_f32"])                                        # deterministic writer
    assert (out / "gpt_f32.safetensors").read_bytes() == (tmp_path / "again" / "gpt_f32.safetensors").read_bytes()
    assert g.golden_command(check=str(out)) == 0
    assert "PASS" in capsys.readouterr().out
    _edit(out, "gpt_f32", lambda t: _set(t, "grad.ln_f.w", slice(None), t["grad.ln_f.w"] * np.float32(1.01)))
    assert g.golden_command(check=str(out), reference=str(GOLDEN)) == 1
    assert "first failing tensor: gpt_f32/grad.ln_f.w" in capsys.readouterr().out
    assert g.golden_command() == 2
    assert "error: golden needs exactly one of" in capsys.readouterr().err


def test_port_check_example_runs():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "port_check.py"), str(GOLDEN)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gpt_f64                                  output.logits" in r.stdout and "PASS" in r.stdout


# ----------------------------------------------------------------------------------------------
# Tolerance headroom: what a correct port's rounding differences use of the tolerance

_TWINS = {"attention_forward": ops.attention_forward_ref, "attention_backward": ops.attention_backward_ref,
          "gelu_forward": ops.gelu_forward_ref, "gelu_backward": ops.gelu_backward_ref,
          "layernorm_forward": ops.layernorm_forward_ref, "layernorm_backward": ops.layernorm_backward_ref,
          "softmax_cross_entropy_forward": ops.softmax_cross_entropy_forward_ref,
          "softmax_cross_entropy_backward": lambda d, c, inplace=False: ops.softmax_cross_entropy_backward_ref(d, c),
          "embedding_backward": ops.embedding_backward_ref}


def _max_share(report, prefixes=("output.", "alh.", "grad.", "train.")):
    return max(e["share"] for e in report["entries"] if e["key"].startswith(prefixes))


def test_reordered_reductions_use_little_of_the_tolerance(monkeypatch):
    """The NumPy twins sum in other orders (pairwise sums, batched-matmul attention) than the Numba
    kernels, like another implementation would: they must stay far inside the tolerance."""
    for mod in (model, adapted, encoders):
        for name, fn in _TWINS.items():
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, fn)
    cases = ["gpt_f64", "gpt_f32", "alh_householder_both_transformer", "alh_lowrank_both_mean", "train_gpt_f64"]
    report = g.check_bundle(GOLDEN, cases=cases)
    assert report["ok"]
    assert _max_share(report) < 0.1                                # measured: 0.034 (gpt_f32 logits)
    f64 = [e["share"] for e in report["entries"] if e["case"] != "gpt_f32" and "share" in e]
    assert max(f64) < 0.01                                         # measured: 1.4e-3


def test_parameter_perturbation_at_rounding_level_stays_inside(tmp_path):
    """Parameters * (1 + 1e-15 N(0,1)) (float32: 1e-7) -- several ulps, more than rounding -- move
    every output, gradient and 5-step training result by well under the tolerance."""
    rng = np.random.default_rng(0)
    cases = ["gpt_f64", "gpt_f32", "alh_householder_both_transformer", "train_gpt_f64", "train_alh_householder_f64"]
    for name in cases:
        ref = stnp.load_file(str(GOLDEN / f"{name}.safetensors"))
        p = {k: v for k, v in ref.items() if k.startswith("param.")}
        rel = 1e-15 if p["param.wte"].dtype == np.float64 else 1e-7
        given = dict(ref, **{k: (v * (1 + rel * rng.standard_normal(v.shape))).astype(v.dtype) for k, v in p.items()})
        out = g.case_outputs(name, given)
        assert set(out) == {k for k in ref if g.tensor_kind(k) != "exact"}
        for k, v in out.items():
            r = g.compare_tensor(v, ref[k], *g.tolerance(k, ref[k].dtype))
            assert r["share"] < 0.25, (name, k, r)                 # measured max: 0.072 (gpt_f32 logits)


def test_training_tolerance_absorbs_gradient_noise(monkeypatch):
    """AdamW amplifies absolute noise in near-zero gradients by lr/eps = 1e6 (m/sqrt(v) is ill-conditioned
    there; the attention key bias has an exactly-zero gradient). Model a port whose every gradient
    element is off by 1e-15 * max|g| of its tensor at every step: the 5-step results stay inside."""
    rng = np.random.default_rng(1)
    train = g._train

    def noisy(params, names, loss_and_grads, xs, ys):
        def lg(x, y):
            loss, grads = loss_and_grads(x, y)
            return loss, {n: a + 1e-15 * np.abs(a).max() * rng.standard_normal(a.shape) for n, a in grads.items()}
        return train(params, names, lg, xs, ys)
    monkeypatch.setattr(g, "_train", noisy)
    report = g.check_bundle(GOLDEN, cases=["train_gpt_f64", "train_alh_householder_f64"])
    assert report["ok"]
    assert _max_share(report) < 0.1                                # measured: 0.026; at 1e-14 * max|g|: 0.26
    assert _max_share(report) > 1e-4                               # the noise did reach the results
