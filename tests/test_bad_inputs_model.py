"""Bad inputs at the model level: images, calibration data, checkpoints, block inputs, modes.

Each case must raise a clear exception (type and message checked); none may return garbage.
"""

import os
import warnings

import pytest
import torch

timm = pytest.importorskip("timm")

from fqvit_kernels.nn import NotCalibratedError, QuantTimmVitBlock, load_quantized, quantize_model, save_quantized  # noqa: E402
from fqvit_kernels.nn.model import QuantVisionTransformer  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qvit = quantize_model(vit, [torch.randn(4, 3, 32, 32)], progress=False)
    block = QuantTimmVitBlock.from_float(vit.blocks[0]).calibrate([torch.randn(2, 17, 192)])
    return vit, qvit, block


def _cases(tiny, tmp_path):
    vit, qvit, block = tiny
    images = torch.randn(2, 3, 32, 32)
    nan_images = images.clone()
    nan_images[0, 0, 0, 0] = float("nan")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(1000))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    float_io_block = QuantTimmVitBlock.from_float(vit.blocks[1]).calibrate([torch.randn(2, 17, 192)])
    float_io_block.float_io = True
    uncalibrated = QuantVisionTransformer.from_float(vit)
    return [
        ("NaN pixel, int mode", lambda: qvit(nan_images), ValueError, "x contains NaN or inf"),
        ("inf pixel, int mode", lambda: qvit(images.masked_fill(images > 1.5, float("inf"))), ValueError, "NaN or inf"),
        ("integer images", lambda: qvit(torch.zeros(2, 3, 32, 32, dtype=torch.int64)), TypeError, "float tensor"),
        ("wrong image size", lambda: qvit(torch.randn(2, 3, 48, 48)), ValueError, "32x32 pixels"),
        ("wrong channel count", lambda: qvit(torch.randn(2, 1, 32, 32)), ValueError, r"\[B >= 1, 3, H, W\]"),
        ("empty batch", lambda: qvit(torch.randn(0, 3, 32, 32)), ValueError, "B >= 1"),
        ("not a tensor", lambda: qvit([1, 2, 3]), TypeError, "images must be a torch.Tensor"),
        ("calibration: wrong channels", lambda: quantize_model(vit, [torch.randn(2, 1, 32, 32)], progress=False),
         ValueError, "images must have shape"),
        ("calibration: not images", lambda: quantize_model(vit, ["abc"], progress=False), TypeError, "calibration batches"),
        ("calibration: no data", lambda: quantize_model(vit, [], progress=False), ValueError, "empty"),
        ("uncalibrated int forward", lambda: uncalibrated.set_mode("int")(images), NotCalibratedError, "not calibrated"),
        ("save uncalibrated", lambda: save_quantized(uncalibrated, tmp_path / "x.pt"), NotCalibratedError, "calibrated"),
        ("load missing file", lambda: load_quantized(tmp_path / "missing.pt"), FileNotFoundError, "no quantized checkpoint"),
        ("load random bytes", lambda: load_quantized(garbage), ValueError, "not a readable fqvit-kernels checkpoint"),
        ("load another torch file", lambda: load_quantized(foreign), ValueError, "not an fqvit-kernels"),
        ("block: wrong width", lambda: block(torch.zeros(2, 17, 100, dtype=torch.int8)), ValueError, "192"),
        ("block: rank 2", lambda: block(torch.zeros(17, 192, dtype=torch.int8)), ValueError, "shape"),
        ("block: empty batch", lambda: block(torch.zeros(0, 17, 192, dtype=torch.int8)), ValueError, "B >= 1"),
        ("block: float without float_io", lambda: block(torch.zeros(2, 17, 192)), TypeError, "int8"),
        ("block: NaN with float_io", lambda: float_io_block(torch.full((1, 17, 192), float("nan"))), ValueError,
         "NaN or inf"),
        ("block: unknown mode", lambda: block.set_mode("int4"), ValueError, "mode must be one of"),
        ("block: attention mask", lambda: block(torch.zeros(1, 17, 192, dtype=torch.int8),
                                                attn_mask=torch.ones(17, 17, dtype=torch.bool)),
         NotImplementedError, "attn_mask"),
    ]


def test_model_level_bad_input_matrix(tiny, tmp_path):
    cases = _cases(tiny, tmp_path)
    assert len(cases) >= 20
    for what, call, exc, message in cases:
        with pytest.raises(exc, match=message) as info:
            call()
        assert info.type is exc or issubclass(info.type, exc), f"{what}: raised {info.type.__name__}"
