"""Tests for alh_ref.checkpoint: bit-exact round trips, atomic writes, and every load failure mode."""
import json
import os

import numpy as np
import pytest
import safetensors.numpy as stnp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from alh_ref import checkpoint as ck
from alh_ref.errors import InputError, RunError


def _tensors():
    """A small mixed bag of tensors, including optimizer-state names and a NaN payload."""
    rng = np.random.default_rng(0)
    nan_payload = np.array([0x7FC00001, 0xFFC12345, 0x3F800000], dtype=np.uint32).view(np.float32)  # (3,)
    return {
        "wte": rng.standard_normal((7, 4)).astype(np.float32),        # (V,C)
        "ln.g": rng.standard_normal(4),                                # (C,) float64
        "step": np.array(123456789012345, dtype=np.int64),             # () int64
        "ids": rng.integers(-2**62, 2**62, size=(2, 3), dtype=np.int64),  # (B,T)
        "opt.m.wte": np.zeros((7, 4), np.float32),                     # (V,C)
        "opt.v.wte": np.full((7, 4), 1e-30, np.float32),               # (V,C)
        "nan_bits": nan_payload,
        "empty": np.zeros((0, 3), np.float32),                         # (0,3)
        "mask": np.array([True, False, True]),                         # (3,) bool
    }


def _manifest():
    return {"step": 10, "config": {"C": 4, "V": 7, "lr": 3e-4}, "tokenizer_sha256": "ab" * 32,
            "corpus_fingerprint": "cd" * 32, "note": "héllo"}


def _same_bits(a, b):
    # exact by design: a checkpoint stores bytes, it does no arithmetic, so a round trip keeps every bit
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _edit_manifest(folder, fn):
    path = folder / "manifest.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "ckpt"
    ck.save_checkpoint(folder, _tensors(), _manifest())
    return folder


def _load_error(folder, **kw):
    with pytest.raises(InputError) as ei:
        ck.load_checkpoint(folder, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and msg, msg
    return msg


# ------------------------------------------------------------------------------ round trips


def test_round_trip_bit_for_bit(saved):
    tensors, meta = ck.load_checkpoint(saved)
    want = _tensors()
    assert set(tensors) == set(want)
    for name, arr in want.items():
        assert _same_bits(tensors[name], arr), name
        assert tensors[name].flags.writeable and tensors[name].flags.c_contiguous
    for k, v in _manifest().items():
        assert meta[k] == v
    assert meta["format"] == "alh_ref.checkpoint"
    assert meta["format_version"] == ck.CHECKPOINT_FORMAT_VERSION == 1
    blob = (saved / "model.safetensors").read_bytes()
    assert meta["safetensors_sha256"] == ck.sha256_hex(blob)
    assert meta["tensors"]["wte"] == {"shape": [7, 4], "dtype": "float32",
                                      "sha256": ck.sha256_hex(want["wte"].tobytes())}
    assert meta["tensors"]["step"]["shape"] == [] and meta["tensors"]["step"]["dtype"] == "int64"
    # The tensor file is plain safetensors: any safetensors reader sees the same arrays.
    assert _same_bits(stnp.load(blob)["ids"], want["ids"])


def test_no_temp_files_and_overwrite(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["manifest.json", "model.safetensors"]
    new = {"w": np.arange(6, dtype=np.float64).reshape(2, 3)}              # (2,3)
    ck.save_checkpoint(saved, new, {"step": 11})
    assert sorted(p.name for p in saved.iterdir()) == ["manifest.json", "model.safetensors"]
    tensors, meta = ck.load_checkpoint(saved)
    assert list(tensors) == ["w"] and _same_bits(tensors["w"], new["w"]) and meta["step"] == 11


def test_non_contiguous_and_big_endian_inputs_store_their_values(tmp_path):
    base = np.arange(12, dtype=np.float32).reshape(3, 4)                    # (3,4)
    t = {"t": base.T, "s": base[:, ::2], "be": base.astype(">f8")}          # (4,3), (3,2), (3,4)
    ck.save_checkpoint(tmp_path, t, {})
    got, meta = ck.load_checkpoint(tmp_path)
    # exact: stored bytes come back as they were (float32 -> float64 of 0..11 is exact too)
    np.testing.assert_array_equal(got["t"], base.T)
    np.testing.assert_array_equal(got["s"], base[:, ::2])
    np.testing.assert_array_equal(got["be"], base.astype(np.float64))
    assert got["be"].dtype == np.float64 and meta["tensors"]["t"]["shape"] == [4, 3]


@given(arr=hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.float16]),
                      shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
def test_round_trip_property(tmp_path_factory, arr):
    folder = tmp_path_factory.mktemp("prop")
    ck.save_checkpoint(folder, {"x": arr}, {"n": int(arr.size)})
    got, meta = ck.load_checkpoint(folder, expect_shapes={"x": arr.shape}, expect={"n": arr.size})
    assert _same_bits(got["x"], np.array(arr, order="C")) and meta["n"] == arr.size


def test_manifest_numpy_values_become_json(tmp_path):
    man = {"step": np.int64(5), "loss": np.float32(0.5), "shape": (2, 3), "arr": np.arange(3)}  # (3,)
    ck.save_checkpoint(tmp_path, {}, man)
    _, meta = ck.load_checkpoint(tmp_path, expect={"shape": (2, 3), "step": np.int64(5)})
    assert meta["step"] == 5 and meta["loss"] == 0.5 and meta["shape"] == [2, 3] and meta["arr"] == [0, 1, 2]
    assert type(meta["step"]) is int


# --------------------------------------------------------------------------- atomic writes


def test_failed_serialize_leaves_old_checkpoint(saved, monkeypatch):
    before = _snapshot(saved)

    def boom(*a, **k):
        raise RuntimeError("simulated crash in safetensors")
    monkeypatch.setattr(stnp, "save", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        ck.save_checkpoint(saved, {"w": np.ones(3)}, {"step": 99})
    assert _snapshot(saved) == before
    monkeypatch.undo()
    assert ck.load_checkpoint(saved)[1]["step"] == 10


def test_failed_rename_leaves_old_checkpoint_and_no_temp(saved, monkeypatch):
    before = _snapshot(saved)

    def boom(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RunError, match="No space left"):
        ck.save_checkpoint(saved, {"w": np.ones(3)}, {"step": 99})
    assert _snapshot(saved) == before                      # also: no temp files left behind
    monkeypatch.undo()
    assert ck.load_checkpoint(saved)[1]["step"] == 10


def test_crash_between_files_is_detected_not_loaded(saved, monkeypatch):
    real_replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(RunError):
        ck.save_checkpoint(saved, {"w": np.ones(3)}, {"step": 99})
    monkeypatch.undo()
    assert [os.path.basename(c) for c in calls] == ["model.safetensors", "manifest.json"]
    assert sorted(p.name for p in saved.iterdir()) == ["manifest.json", "model.safetensors"]
    msg = _load_error(saved)                               # old manifest, new tensor file
    assert "corrupted or truncated" in msg and "interrupted" in msg


@pytest.mark.parametrize("tensors, manifest, needle", [
    ({"w": np.ones(2)}, {"format": "x"}, "reserved key"),
    ({"w": np.ones(2)}, {"tensors": {}}, "reserved key"),
    ({"w": np.ones(2)}, {"bad": object()}, "JSON cannot store"),
    ({"w": np.ones(2)}, {1: "x"}, "non-string key"),
    ({"w": np.array(["a"], dtype=object)}, {}, "dtype object"),
    ({"w": np.ones(2, np.complex128)}, {}, "dtype complex128"),
    ({"w": [1.0, 2.0]}, {}, "numpy ndarray"),
    ({"__metadata__": np.ones(2)}, {}, "not allowed"),
    ({"w": np.ones(2)}, [("a", 1)], "manifest must be a dict"),
])
def test_bad_save_input_writes_nothing(saved, tensors, manifest, needle):
    before = _snapshot(saved)
    with pytest.raises(InputError, match=needle):
        ck.save_checkpoint(saved, tensors, manifest)
    assert _snapshot(saved) == before


def test_unwritable_folder_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(InputError, match="cannot create output folder"):
        ck.save_checkpoint(tmp_path / "afile" / "ckpt", {"w": np.ones(2)}, {})
    with pytest.raises(InputError, match="afile"):          # the checkpoint path itself is a file
        ck.save_checkpoint(tmp_path / "afile", {"w": np.ones(2)}, {})
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_folder_chmod(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            ck.save_checkpoint(ro, {"w": np.ones(2)}, {})
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------------- load failures


def test_missing_folder_and_files(tmp_path, saved):
    assert "does not exist" in _load_error(tmp_path / "nope")
    (tmp_path / "plain").write_text("x")
    assert "is not a folder" in _load_error(tmp_path / "plain")
    (saved / "model.safetensors").unlink()
    assert "has no model.safetensors" in _load_error(saved)
    (saved / "manifest.json").unlink()
    assert "has no manifest.json" in _load_error(saved)


def test_manifest_not_json(saved):
    (saved / "manifest.json").write_text('{"format": "alh_ref.checkpoint", ')
    assert "is not valid JSON" in _load_error(saved)
    (saved / "manifest.json").write_bytes(b"\xff\xfe\x00")
    assert "is not valid JSON" in _load_error(saved)
    (saved / "manifest.json").write_text("[1, 2]")
    assert "expected a JSON object" in _load_error(saved)


def test_wrong_format_and_version(saved):
    _edit_manifest(saved, lambda m: m.update(format_version=2))
    msg = _load_error(saved)
    assert "format_version 2 is not supported" in msg and "reads format_version 1" in msg
    _edit_manifest(saved, lambda m: m.update(format_version=1, format="other.thing"))
    msg = _load_error(saved)
    assert "'other.thing'" in msg and "'alh_ref.checkpoint'" in msg


def test_truncated_file(saved):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _load_error(saved)
    assert "corrupted or truncated" in msg and f"{len(data) // 2} bytes" in msg


def test_flipped_byte(saved):
    path = saved / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01                                       # inside the last tensor's data
    path.write_bytes(bytes(data))
    assert "corrupted or truncated" in _load_error(saved)


def test_unparseable_file_with_matching_hash(saved):
    garbage = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json header}"
    (saved / "model.safetensors").write_bytes(garbage)
    _edit_manifest(saved, lambda m: m.update(safetensors_sha256=ck.sha256_hex(garbage)))
    msg = _load_error(saved)
    assert "not a valid safetensors file" in msg and "SafetensorError" in msg


def test_tensor_in_file_not_in_manifest(saved):
    _edit_manifest(saved, lambda m: m["tensors"].pop("opt.v.wte"))
    msg = _load_error(saved)
    assert "opt.v.wte" in msg and "not listed in manifest.json" in msg


def test_tensor_in_manifest_not_in_file(saved):
    _edit_manifest(saved, lambda m: m["tensors"].update(ghost={"shape": [1], "dtype": "float32", "sha256": "0"}))
    msg = _load_error(saved)
    assert "ghost" in msg and "lacks tensor" in msg


def test_shape_dtype_and_tensor_hash_vs_manifest(saved):
    _edit_manifest(saved, lambda m: m["tensors"]["wte"].update(shape=[4, 7]))
    msg = _load_error(saved)
    assert "'wte'" in msg and "(7, 4)" in msg and "(4, 7)" in msg
    _edit_manifest(saved, lambda m: m["tensors"]["wte"].update(shape=[7, 4], dtype="float64"))
    msg = _load_error(saved)
    assert "float32" in msg and "expected float64" in msg
    _edit_manifest(saved, lambda m: m["tensors"]["wte"].update(dtype="float32", sha256="00" * 32))
    assert "'wte'" in (msg := _load_error(saved)) and "sha256" in msg
    _edit_manifest(saved, lambda m: m["tensors"]["wte"].update(shape="7x4"))
    assert "malformed" in _load_error(saved)


def test_expect_shapes(saved):
    tensors, _ = ck.load_checkpoint(saved, expect_shapes={"wte": (7, 4), "step": ()})
    assert tensors["wte"].shape == (7, 4)
    msg = _load_error(saved, expect_shapes={"wte": (8, 4)})
    assert "'wte'" in msg and "(7, 4)" in msg and "expected (8, 4)" in msg
    msg = _load_error(saved, expect_shapes={"wpe": (16, 4)})
    assert "no tensor 'wpe'" in msg and "(16, 4)" in msg


def test_expect_values(saved):
    _, meta = ck.load_checkpoint(saved, expect={"tokenizer_sha256": "ab" * 32, "config": {"C": 4, "V": 7, "lr": 3e-4}})
    assert meta["step"] == 10
    msg = _load_error(saved, expect={"tokenizer_sha256": "ef" * 32})
    assert msg.startswith("tokenizer mismatch: checkpoint was made with tokenizer sha256 " + "ab" * 32)
    assert "this run uses " + "ef" * 32 in msg
    msg = _load_error(saved, expect={"corpus_fingerprint": "00" * 32})
    assert msg.startswith("corpus mismatch:") and "corpus fingerprint" in msg
    assert _load_error(saved, expect={"step": 11}) == "step mismatch: checkpoint has 10, expected 11"
    assert "has no 'seed'" in _load_error(saved, expect={"seed": 1})


# ------------------------------------------------------------------------------- RNG state


@given(seed=st.integers(0, 2**64), n_pre=st.integers(0, 7), odd=st.booleans(),
       kind=st.sampled_from(["PCG64", "PCG64DXSM"]))
def test_rng_round_trip(seed, n_pre, odd, kind):
    rng = np.random.Generator(getattr(np.random, kind)(seed))
    rng.standard_normal(n_pre)
    if odd:
        rng.integers(0, 2**32, size=1, dtype=np.uint32)     # leaves a buffered half-word (has_uint32=1)
    d = json.loads(json.dumps(ck.rng_state_to_json(rng)))
    assert all(isinstance(v, str) for v in (d["state"]["state"], d["state"]["inc"], d["uinteger"]))
    assert d["has_uint32"] == ("1" if odd else "0")
    back = ck.rng_from_json(d)
    assert back.bit_generator.state == rng.bit_generator.state
    # exact: a restored bit generator state replays the same integer stream; floats are derived from it
    np.testing.assert_array_equal(back.integers(0, 2**32, size=5, dtype=np.uint32),
                                  rng.integers(0, 2**32, size=5, dtype=np.uint32))
    np.testing.assert_array_equal(back.standard_normal(9), rng.standard_normal(9))
    np.testing.assert_array_equal(back.permutation(50), rng.permutation(50))


def test_rng_through_checkpoint(tmp_path):
    rng = np.random.default_rng(1234)
    rng.random(3)
    ck.save_checkpoint(tmp_path, {}, {"rng": ck.rng_state_to_json(rng)})
    _, meta = ck.load_checkpoint(tmp_path)
    assert np.array_equal(ck.rng_from_json(meta["rng"]).random(100), rng.random(100))


def test_rng_bad_input():
    with pytest.raises(InputError, match="expected one of PCG64"):
        ck.rng_state_to_json(np.random.Generator(np.random.MT19937(0)))
    good = ck.rng_state_to_json(np.random.default_rng(0))
    with pytest.raises(InputError, match="decimal integer string"):
        ck.rng_from_json({**good, "uinteger": 5})
    with pytest.raises(InputError, match="out of range"):
        ck.rng_from_json({**good, "has_uint32": "2"})
    with pytest.raises(InputError, match="bit generator 'MT19937'"):
        ck.rng_from_json({**good, "bit_generator": "MT19937"})
