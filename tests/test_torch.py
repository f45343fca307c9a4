"""The torch port (alh_ref.torch) against the NumPy spec: names, forward, gradients, golden bundle, CLI errors.

Skipped when torch is not installed (it is the optional ``torch`` extra).
"""
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (optional extra: pip install -e '.[torch]')")

from builders import noisy, perturb, token_batch  # noqa: E402

from alh_ref.alh import ALHConfig, alh_param_shapes  # noqa: E402
from alh_ref.alh.methods import METHODS  # noqa: E402
from alh_ref.alh.methods import make_method as numpy_method  # noqa: E402
from alh_ref.model import GPTConfig, init_params, param_shapes  # noqa: E402
from alh_ref.torch import model as tmodel  # noqa: E402
from alh_ref.torch.alh import ALHNet  # noqa: E402
from alh_ref.torch.cli import main  # noqa: E402
from alh_ref.torch.golden import format_report, golden_check  # noqa: E402
from alh_ref.torch.methods import load_trainable, make_method  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
CFG = GPTConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=16)
ACFG = ALHConfig(D=8, K=4, R=2)


def _base(cfg, seed=1):
    """Pretrained-like float64 base: the init plus noise (LayerNorm gains not 1, biases not 0)."""
    return noisy(init_params(cfg, seed, np.float64), 0.1, np.random.default_rng(seed))


def _batch(cfg, B=3, seed=2):
    ids, targets, _ = token_batch(np.random.default_rng(seed), cfg.vocab_size, B, cfg.block_size)
    return ids, targets


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_names_are_the_numpy_names(tied):
    cfg = GPTConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=16, tied=tied)
    shapes = {n: tuple(p.shape) for n, p in tmodel.GPT(cfg).named_parameters()}
    assert list(shapes.items()) == list(param_shapes(cfg).items())
    for fam in ("householder", "lowrank", "film"):
        for enc in ("transformer", "mean", "static"):
            for head in ("transform", "side"):
                acfg = ALHConfig(family=fam, encoder=enc, head=head, D=8, K=4, R=2)
                got = {n: tuple(p.shape) for n, p in ALHNet(cfg, acfg).canonical().items()}
                assert list(got.items()) == list(alh_param_shapes(cfg, acfg).items())


@pytest.mark.parametrize("name", METHODS)
def test_every_method_matches_numpy_forward_and_gradients(name):
    """float64: logits and loss to 1e-10, every trained tensor's gradient to 1e-8 of its scale, by name."""
    base = _base(CFG)
    x, y = _batch(CFG)
    npm = numpy_method(name, base, CFG, ACFG, seed=3)
    perturb(npm.params, 0.05, np.random.default_rng(4))                    # move off the identity init
    tm = make_method(name, base, CFG, ACFG, seed=3, dtype=torch.float64)
    load_trainable(tm, npm.params)
    assert list(tm.trainable()) == list(npm.params)
    logits, loss, _ = npm.forward(x, y)
    loss_np, grads = npm.loss_and_grads(x, y)
    tl, tloss = tm(torch.as_tensor(x), torch.as_tensor(y))
    np.testing.assert_allclose(tl.detach().numpy(), logits, rtol=1e-10, atol=1e-12)
    assert abs(float(tloss.detach()) - loss_np) <= 1e-10 * abs(loss_np)
    if name == "none":
        assert not tm.trainable() and not tloss.requires_grad                # nothing is trained
        return
    tloss.backward()
    for n, p in tm.trainable().items():
        g = grads[n]
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-7, atol=1e-9 * max(1.0, np.abs(g).max()), err_msg=n)


@pytest.mark.parametrize("name", METHODS)
def test_untied_base_and_float32_match_numpy(name):
    cfg = GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16, tied=False)
    base = _base(cfg)
    x, y = _batch(cfg)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        npm = numpy_method(name, base, cfg, ACFG, seed=5)
        perturb(npm.params, 0.05, np.random.default_rng(6))
        tm = make_method(name, base, cfg, ACFG, seed=5, dtype=dtype)
        load_trainable(tm, npm.params)
        logits, _, _ = npm.forward(x, y)
        got = tm(torch.as_tensor(x))[0].detach().double().numpy()
        np.testing.assert_allclose(got, logits, rtol=tol, atol=tol * np.abs(logits).max())


def test_golden_check_passes_every_case_in_float64():
    report = golden_check(GOLDEN)
    assert report["ok"], format_report(report)
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    cases = {e["case"] for e in report["entries"]}
    assert cases == set(manifest["cases"])
    assert len(report["entries"]) == sum(len(c["tensors"]) for c in manifest["cases"].values())
    # a correct float64 port uses about 1e-3 of the tolerance (docs/golden.md section 8)
    assert max(e["share"] for e in report["entries"] if e["case"] != "gpt_f32") < 0.1


def test_golden_check_catches_a_wrong_layernorm_eps(monkeypatch):
    monkeypatch.setattr(tmodel, "LN_EPS", 1e-6)
    report = golden_check(GOLDEN, cases=["gpt_f64", "alh_film_both_mean"])
    assert not report["ok"]
    assert report["first_failure"] == "gpt_f64/act.h.0"          # the first block's LayerNorm diverges first
    assert "FAIL:" in format_report(report).splitlines()[-1]


def test_golden_check_cli(capsys):
    assert main(["golden-check", str(GOLDEN), "--case", "gpt_f32"]) == 0
    out = capsys.readouterr().out.splitlines()
    n = len(json.loads((GOLDEN / "manifest.json").read_text())["cases"]["gpt_f32"]["tensors"])
    assert out[-1].startswith(f"PASS: {n} tensors in 1 case(s)")
    assert any(line.startswith("gpt_f32") and "output.logits" in line for line in out)


@pytest.mark.parametrize("argv, phrase", [
    (["golden-check", "/nonexistent/bundle"], "has no manifest.json"),
    (["golden-check", str(GOLDEN), "--device", "tpu"], "expected cpu or cuda"),
    (["adapt", "--corpus", "pydoc", "--base", "x"], "needs --method"),
    (["eval", "--run", "/nonexistent/run"], "not found"),
    (["adapt", "--corpus", "pydoc", "--base", "x", "--method", "embed-ft", "--K", "2"], "does not apply"),
    (["pretrain", "--corpus", "pydoc", "--dtype", "float64", "--device", "tpu"], "expected cpu or cuda"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path, argv, phrase):
    monkeypatch.chdir(tmp_path)                                            # the default --out runs/ lands here
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and phrase in err[0]


@pytest.mark.parametrize("argv", [["pretrain", "--lr", "nan"], ["pretrain", "--steps", "0"], ["frobnicate"], []])
def test_usage_errors_exit_2(capsys, argv):
    assert main(argv) == 2


def test_golden_check_reports_as_alh_ref_does():
    """The torch report's max_rel is alh-ref's (only where |expected| >= atol/rtol), its lines alh-ref's lines."""
    from alh_ref.golden import check as ref_check
    from alh_ref.golden.bundle import load_bundle
    from alh_ref.torch.golden import compute_case
    names = ["gpt_f64", "alh_householder_both_transformer"]
    report = golden_check(GOLDEN, cases=names)
    man, ref = load_bundle(GOLDEN)
    got = {n: compute_case(man["cases"][n], ref[n]) for n in names}
    differs = 0
    for e in report["entries"]:
        a, b = got[e["case"]][e["key"]], ref[e["case"]][e["key"]]
        want = ref_check.compare_tensor(a, b, e["rtol"], e["atol"])
        assert e["max_rel"] == want["max_rel"]          # exact: the same function on the same recomputed arrays
        nz = b != 0
        if want["max_rel"] is not None and nz.any():
            d = np.abs(a.astype(np.float64) - b)[nz] / np.abs(b[nz].astype(np.float64))   # the rule over b != 0
            differs += bool(d.max() != want["max_rel"])
    assert differs > 0                                  # the rule matters for these tensors: tiny |b| would dominate
    assert format_report(report) == ref_check.format_report(report)
    assert format_report(report).splitlines()[-1].startswith(f"PASS: {len(report['entries'])} tensors in 2 case(s)")
