"""A hostile user's probes: threads, tampered parameters and checkpoints, float mode after loading,
memory, interrupted saves, unusual image dtypes. Each case raises a clear error or works; none may
return a silently wrong answer.
"""

import os
import pickle
import threading

import pytest
import torch

from fqvit_kernels import ops, reference as ref, testing
from fqvit_kernels.nn import load_quantized, quantize_model, save_quantized
from fqvit_kernels.nn.layers import FloatWeightsUnavailableError, QuantLinear
from fqvit_kernels.nn import model as model_module

timm_vit = pytest.importorskip("timm.models.vision_transformer")

ARCH = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)


def _vit(seed=0, **overrides):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return timm_vit.VisionTransformer(**{**ARCH, **overrides}).eval()


@pytest.fixture(scope="module")
def quantized():
    """A float ViT, its quantized model (int mode) and the calibration data."""
    vit = _vit()
    gen = torch.Generator().manual_seed(1)
    calib = [torch.randn(8, 3, 32, 32, generator=gen) for _ in range(2)]
    return vit, quantize_model(vit, calib, "fqvit-8/8/4", progress=False), calib


def _images(n=4, seed=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# -- 1. value checks are per thread --------------------------------------------------------------


def test_value_checks_switched_off_in_one_thread_stay_on_in_others():
    x = torch.tensor([[float("nan"), 1.0]])
    entered, release = threading.Event(), threading.Event()

    def hold_checks_off():
        with ops.value_checks(False):
            entered.set()
            release.wait(timeout=60)

    t = threading.Thread(target=hold_checks_off)
    t.start()
    try:
        assert entered.wait(timeout=60)
        assert ops.value_checks_enabled()
        with pytest.raises(ValueError, match="NaN or inf"):
            torch.ops.fqvit.quantize(x, torch.tensor(0.1), 0)
    finally:
        release.set()
        t.join(timeout=60)


def test_concurrent_model_calls_leave_validation_on(quantized):
    _, q, _ = quantized
    q.set_mode("int")
    x = _images(3)
    with torch.no_grad():
        expected = q(x)
    errors, results = [], []

    def worker():
        try:
            with torch.no_grad():
                for _ in range(5):
                    results.append(q(x))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(results) == 20 and all(torch.equal(r, expected) for r in results)
    assert ops.value_checks_enabled()
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        q(bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        torch.ops.fqvit.quantize(bad, torch.tensor(0.1), 0)


# -- 2. the checkpoint digest covers everything; schema errors name the field ---------------------


def _rewrite(path, payload, redigest):
    if redigest:
        payload["sha256"] = model_module._digest(payload, payload["state_dict"])
    torch.save(payload, path)


def test_edited_checkpoint_metadata_is_refused(quantized, tmp_path):
    _, q, _ = quantized
    path = tmp_path / "q.pt"
    save_quantized(q, path)
    edits = {
        "arch num_heads": lambda p: p["arch"].__setitem__("num_heads", 2),
        "config observer": lambda p: p["config"].__setitem__("observer", "omse"),
        "format": lambda p: p.__setitem__("format_version", p["format_version"]),  # unchanged: must load
    }
    for what, edit in edits.items():
        payload = torch.load(path, weights_only=True)
        edit(payload)
        edited = tmp_path / f"{what.replace(' ', '_')}.pt"
        _rewrite(edited, payload, redigest=False)
        if what == "format":
            load_quantized(edited)
            continue
        with pytest.raises(ValueError, match="checksum"):
            load_quantized(edited)


@pytest.mark.parametrize("edit,message", [
    (lambda p: p.pop("arch"), "'arch' must be a dict"),
    (lambda p: p.__setitem__("arch", "vit"), "'arch' must be a dict"),
    (lambda p: p["arch"].pop("depth"), r"missing keys \['depth'\]"),
    (lambda p: p["arch"].__setitem__("depth", "2"), "'arch.depth'"),
    (lambda p: p["arch"].__setitem__("qkv_bias", 1), "'arch.qkv_bias'"),
    (lambda p: p["arch"].__setitem__("num_heads", 3), "'arch.num_heads' .3. does not divide"),
    (lambda p: p["arch"].__setitem__("extra", 1), r"unknown keys \['extra'\]"),
    (lambda p: p.pop("config"), "'config' must be a dict"),
    (lambda p: p["config"].__setitem__("observer", "bogus"), "'config' is invalid"),
    (lambda p: p["config"].__setitem__("act_bits", "8"), "'config' is invalid"),
    (lambda p: p["state_dict"].__setitem__("extra", "not a tensor"), "'state_dict' must map names to tensors"),
])
def test_checkpoint_schema_errors_name_the_field(quantized, tmp_path, edit, message):
    """Edits with a recomputed (valid) digest: the schema check still refuses them, by name."""
    _, q, _ = quantized
    path = tmp_path / "q.pt"
    save_quantized(q, path)
    payload = torch.load(path, weights_only=True)
    edit(payload)
    _rewrite(path, payload, redigest=not isinstance(payload.get("state_dict", {}).get("extra"), str))
    with pytest.raises(ValueError, match=message):
        load_quantized(path)


def test_checkpoint_with_missing_tensor_is_refused(quantized, tmp_path):
    _, q, _ = quantized
    path = tmp_path / "q.pt"
    save_quantized(q, path)
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["blocks.0.attn.qkv.weight_int8"]
    _rewrite(path, payload, redigest=True)
    with pytest.raises(ValueError, match="weight_int8"):
        load_quantized(path)


# -- 3. float mode after loading is refused; fake and int work from the int8 weights --------------


def test_loaded_model_refuses_float_mode_and_keeps_fake_and_int(quantized, tmp_path):
    _, q, _ = quantized
    path = tmp_path / "q.pt"
    save_quantized(q, path)
    x = _images()
    with torch.no_grad():
        out_int, out_fake = q.set_mode("int")(x), q.set_mode("fake")(x)
    q.set_mode("int")
    with pytest.raises(FloatWeightsUnavailableError, match="keep_float_weights=True"):
        load_quantized(path, mode="float")
    loaded = load_quantized(path)
    with pytest.raises(FloatWeightsUnavailableError):
        loaded.set_mode("float")
    assert loaded.mode == "int"  # the refused switch changed nothing
    with torch.no_grad():
        assert torch.equal(loaded(x), out_int)
        assert torch.equal(loaded.set_mode("fake")(x), out_fake)
    for m in loaded.modules():
        if isinstance(m, QuantLinear):  # fake mode's weight is the dequantized int8 weight
            assert m.weight is None


# -- 4. memory: no float weight copies after conversion -----------------------------------------


def test_converted_model_holds_int8_weights_only(quantized):
    """Releasing the float weights frees exactly their bytes; no float copy of a weight remains.
    (The vit_base numbers against the float model are in the README: scripts/measure_memory.py.)"""
    vit, q, calib = quantized
    kept = quantize_model(vit, calib, "fqvit-8/8/4", progress=False, keep_float_weights=True)
    linears = [m for m in vit.modules() if isinstance(m, torch.nn.Linear)]
    float_weight_bytes = sum(m.weight.numel() * 4 for m in linears)
    assert testing.tensor_bytes(kept) - testing.tensor_bytes(q) == float_weight_bytes
    weight_shapes = {tuple(m.weight.shape) for m in linears}
    for name, t in list(q.named_parameters()) + list(q.named_buffers()):
        assert not (t.is_floating_point() and tuple(t.shape) in weight_shapes), f"{name} is a float weight copy"
    assert all(m.weight is None for m in q.modules() if isinstance(m, QuantLinear))


def test_keep_float_weights_shares_the_float_model_storage(quantized):
    vit, _, calib = quantized
    kept = quantize_model(vit, calib, "fqvit-8/8/4", mode="float", progress=False, keep_float_weights=True)
    assert kept.blocks[0].attn.qkv.weight.data_ptr() == vit.blocks[0].attn.qkv.weight.data_ptr()
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(kept(x), vit(x), rtol=1e-5, atol=1e-5)  # float mode = the float model
        kept.set_mode("int")(x)


# -- 5. the validation cache sees in-place writes (kernels defined for any parameter: tests/ops/)


@pytest.mark.parametrize("write", ["numpy", "data"])
def test_tampered_parameters_are_rechecked(gen, write):
    case = testing.linear_case(7, 16, 24, gen)
    args = list(case.args)
    torch.ops.fqvit.int8_linear(*args)  # passes and is cached
    shift = args[4]
    version = shift._version
    if write == "numpy":
        shift.numpy()[:] = 0
    else:
        shift.data[3] = 70
    assert shift._version == version  # the version counter did not see it
    with pytest.raises(ValueError, match="shift"):
        torch.ops.fqvit.int8_linear(*args)


# -- 6. atomic save ------------------------------------------------------------------------------


def test_interrupted_save_keeps_the_previous_checkpoint(quantized, tmp_path, monkeypatch):
    _, q, _ = quantized
    path = tmp_path / "q.pt"
    save_quantized(q, path)
    before = path.read_bytes()

    def dies_mid_write(obj, fh, *args, **kwargs):
        fh.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt  # the process is interrupted in the middle of the write

    monkeypatch.setattr(model_module.torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_quantized(q, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["q.pt"]  # no temporary file left behind
    load_quantized(path)


# -- 8. error-contract gaps ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_image_dtypes_are_converted(quantized, dtype):
    _, q, _ = quantized
    x = _images().to(dtype)
    for mode in ("int", "fake"):
        q.set_mode(mode)
        with torch.no_grad():
            assert torch.equal(q(x), q(x.to(torch.float32))), (mode, dtype)
    q.set_mode("int")
    with pytest.raises(TypeError, match="images must be a float tensor"):
        q(torch.zeros(2, 3, 32, 32, dtype=torch.complex64))


def test_nan_calibration_batch_is_named():
    vit = _vit()
    batches = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)]
    batches[1][0, 1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="calibration batch 1 contains NaN or inf"):
        quantize_model(vit, batches, progress=False)


def test_quantized_modules_pickle(quantized, tmp_path):
    _, q, _ = quantized
    q.set_mode("int")
    x = _images()
    path = tmp_path / "model.pt"
    torch.save(q, path)
    restored = torch.load(path, weights_only=False)
    with torch.no_grad():
        assert torch.equal(restored(x), q(x))
    block = pickle.loads(pickle.dumps(q.blocks[0]))
    assert block.calibrated


def test_remembered_validation_follows_parameter_writes_and_activation_shapes(gen):
    """A converted model's calls skip the argument checks once the same (tracked, unchanged)
    parameters passed them; any in-place write to a parameter, any untracked parameter and any new
    activation shape brings the checks back."""
    from fqvit_kernels import checks

    case = testing.linear_case(6, 16, 24, gen)
    x, weight, bias, multiplier, shift, zp = case.args
    checks.track_by_version([weight, bias, multiplier, shift])
    op = torch.ops.fqvit.int8_linear
    expected = ref.int8_linear(*case.args)
    for _ in range(2):  # the second call takes the remembered validation
        testing.assert_equal(op(*case.args), expected)
    with pytest.raises(ValueError, match="K="):  # a new activation shape is checked again
        op(x[:, :8].contiguous(), weight, bias, multiplier, shift, zp)
    multiplier[3] = -1  # in place: a new version
    with pytest.raises(ValueError, match="multiplier"):
        op(*case.args)
    untracked = multiplier.clone()
    untracked[3] = 5
    testing.assert_equal(op(x, weight, bias, untracked, shift, zp),
                         ref.int8_linear(x, weight, bias, untracked, shift, zp))
    untracked.numpy()[3] = -1  # behind the version counter's back: an untracked tensor is checked anyway
    with pytest.raises(ValueError, match="multiplier"):
        op(x, weight, bias, untracked, shift, zp)
