"""A quantized model in a real pipeline: torch.compile(fullgraph=True), torch.export (saved and
reloaded), no host reads of tensors in the int forward (what CUDA graphs need), refused dtype
casts and bit-identical device moves and copies.
"""

import copy
import io

import pytest
import torch

from fqvit_kernels import ops
from fqvit_kernels.nn import load_quantized, quantize_model, save_quantized

timm_vit = pytest.importorskip("timm.models.vision_transformer")

ARCH = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
PRESETS = ["fqvit-8/8/4", "fqvit-8/8/8"]


def _vit(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return timm_vit.VisionTransformer(**ARCH).eval()


def _calib():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(4, 3, 32, 32, generator=gen) for _ in range(2)]


def _images(n=3, seed=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=PRESETS)
def converted(request):
    """A freshly converted int model (never called) and its preset."""
    return quantize_model(_vit(), _calib(), request.param, progress=False), request.param


def _fqvit_ops(graph_module) -> set:
    found = set()
    for m in graph_module.modules():
        graph = getattr(m, "graph", None)
        if graph is not None:
            found |= {str(n.target) for n in graph.nodes if str(n.target).startswith("fqvit.")}
    return found


@pytest.mark.slow
def test_compile_fullgraph_without_graph_breaks_is_bit_identical(converted):
    model, preset = converted
    x = _images()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(copy.deepcopy(model))(x)
    assert explained.graph_break_count == 0, [str(r.reason)[:200] for r in explained.break_reasons]
    assert explained.graph_count == 1
    compiled = torch.compile(model, fullgraph=True)
    first, second = compiled(x), compiled(_images(seed=5))
    assert torch.equal(first, model(x)), preset
    assert torch.equal(second, model(_images(seed=5))), preset


def test_fake_mode_traces_without_graph_breaks(converted):
    """FQ-ViT's float simulation has no data-dependent Python control flow either (its float ops may
    be fused differently by a compiler backend, so only the graph is checked here)."""
    model, _ = converted
    fake = copy.deepcopy(model).set_mode("fake")
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fake)(_images())
    assert explained.graph_break_count == 0, [str(r.reason)[:200] for r in explained.break_reasons]


def test_export_runs_bit_identically_after_save_and_load(converted):
    model, preset = converted
    x = _images()
    program = torch.export.export(model, (x,))
    names = _fqvit_ops(program.graph_module)
    attention = "fqvit.int_attention.default" if preset == "fqvit-8/8/4" else "fqvit.int_attention_uniform.default"
    assert {"fqvit.quantize.default", "fqvit.int8_linear.default", "fqvit.dequantize.default", attention} <= names
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    reloaded = torch.export.load(buffer)
    expected = model(x)
    assert torch.equal(program.module()(x), expected)
    assert torch.equal(reloaded.module()(x), expected)
    # The exported program holds the parameters: a second input runs too (same batch size).
    assert torch.equal(reloaded.module()(_images(seed=7)), model(_images(seed=7)))


_HOST_READS = ["item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy"]


def _count_host_reads(fn, monkeypatch) -> dict:
    counts = {}
    with monkeypatch.context() as patch:
        for name in _HOST_READS:
            original = getattr(torch.Tensor, name)

            def counting(self, *args, _name=name, _original=original, **kwargs):
                counts[_name] = counts.get(_name, 0) + 1
                return _original(self, *args, **kwargs)
            patch.setattr(torch.Tensor, name, counting)
        fn()
    return counts


@pytest.mark.parametrize("source", ["converted", "loaded"])
def test_int_forward_reads_no_tensor_on_the_host(converted, source, monkeypatch, tmp_path):
    """After conversion or loading (and one call that validates the parameters), an int forward
    reads nothing on the host except the input's NaN/inf check, which ops.value_checks(False)
    switches off: that is what CUDA-graph capture and a sync-free GPU pipeline need."""
    model, _ = converted
    if source == "loaded":
        save_quantized(model, tmp_path / "m.pt")
        model = load_quantized(tmp_path / "m.pt")
    x = _images()
    expected = model(x)
    assert _count_host_reads(lambda: model(x), monkeypatch) == {"__bool__": 1}  # isfinite(x).all()
    with ops.value_checks(False):
        reads = _count_host_reads(lambda: model(x), monkeypatch)
        assert torch.equal(model(x), expected)
    assert reads == {}


@pytest.mark.parametrize("cast", [lambda m: m.half(), lambda m: m.bfloat16(), lambda m: m.double(),
                                  lambda m: m.to(torch.float16), lambda m: m.blocks[0].to(torch.bfloat16),
                                  lambda m: m.type(torch.int8)],
                         ids=["half", "bfloat16", "double", "to-float16", "block-to-bfloat16", "type-int8"])
def test_dtype_casts_are_refused_and_leave_the_model_intact(converted, cast):
    model, _ = converted
    x = _images()
    expected = model(x)
    with pytest.raises(TypeError, match="float32 scales"):
        cast(model)
    assert torch.equal(model(x), expected)
    assert all(b.dtype != torch.float16 and b.dtype != torch.bfloat16 for b in model.buffers())


def test_device_moves_and_copies_keep_every_bit(converted, tmp_path):
    model, _ = converted
    x = _images()
    expected = model(x)
    assert torch.equal(model.float()(x), expected)  # float32: a no-op, accepted
    assert torch.equal(copy.deepcopy(model).to("cpu")(x), expected)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(x), expected)
    if torch.cuda.is_available():
        moved = copy.deepcopy(model).to("cuda")
        assert torch.equal(moved(x.cuda()).cpu(), expected)
        assert torch.equal(moved.to("cpu")(x), expected)


@pytest.mark.gpu  # CUDA graphs
@pytest.mark.parametrize("preset", PRESETS)
def test_cuda_graph_capture_and_replay_is_bit_identical(preset):
    """An int model captured in a CUDA graph at batch 1 (after one eager call that validates the
    parameters) replays bit-identically to eager, for new inputs copied into the static input."""
    model = quantize_model(_vit(), _calib(), preset, progress=False).to("cuda")
    static_x = _images(1).cuda()
    eager = model(static_x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            model(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = model(static_x)
    graph.replay()
    assert torch.equal(static_out, eager)
    other = _images(1, seed=9).cuda()
    static_x.copy_(other)
    graph.replay()
    assert torch.equal(static_out, model(other))
