"""Precision: runs in bf16/fp16 never change a cached model's weights, really compute in that
precision, fall back where a device lacks it; out-of-memory errors halve the batch.

Every run goes through the code the nodes and the CLI use (model_loading.load_model,
LoadedModel.place, learned.*, BiSeNetParser.parse). Parametrised over the devices this machine
has: CPU always, CUDA when available.
"""
from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
import pytest
import torch

from segtalker_core import batching, checkpoints, learned, model_loading, precision
from segtalker_core.audio.io import MonoAudio
from segtalker_core.containers import NUM_LANDMARKS, FaceTrack, TalkingSegmentation
from segtalker_core.models.random_bundle import write_random_bundles
from segtalker_core.parsing.bisenet import bisenet_bundle_config, build_bisenet

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
HALF = [torch.bfloat16, torch.float16]
FPS = 25.0
N_FRAMES = 5
SIZE = 64


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("precision")
    files = dict(write_random_bundles(out, resolution=SIZE, seed=0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_bisenet()
        # Non-trivial BatchNorm statistics, so buffers are part of what must not change.
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    files["bisenet"] = checkpoints.save(out / "bisenet_random.safetensors", net.state_dict(),
                                        bisenet_bundle_config())
    return files


def _faces(n: int = 2) -> FaceTrack:
    rng = np.random.default_rng(0)
    labels = np.full((n, SIZE, SIZE), 1, np.uint8)  # skin
    labels[:, 40:48, 24:40] = 12  # upper lip
    labels[:, 48:54, 24:40] = 13  # lower lip
    labels[:, :12] = 17  # hair
    labels[:, 20:26, 16:26] = 4  # an eye
    crops = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    return FaceTrack(
        frames=crops.copy(), crops=crops, labels=labels,
        landmarks=np.full((n, NUM_LANDMARKS, 3), np.nan, np.float32),
        transforms=np.tile(np.eye(2, 3), (n, 1, 1)), found=np.ones(n, bool),
    )


def _audio(seconds: float = N_FRAMES / FPS) -> MonoAudio:
    rng = np.random.default_rng(1)
    samples = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
    return MonoAudio(samples, 16000, Fraction(len(samples), 16000))


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor the module holds: state_dict (parameters + persistent buffers) and the
    non-persistent buffers (FIR kernels...), copied to the CPU."""
    out = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    out.update({f"buffer:{k}": v.detach().to("cpu", copy=True)
                for k, v in module.named_buffers()})
    return out


def _assert_bit_identical(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    changed = [k for k in before
               if before[k].dtype != after[k].dtype
               or not torch.equal(before[k].reshape(-1).view(torch.uint8),
                                  after[k].reshape(-1).view(torch.uint8))]
    assert not changed, f"{len(changed)} of {len(before)} tensors changed, e.g. {changed[:3]}"


class _Outputs:
    """Records what a module's forward returned (first tensor of a tuple), as float32 on CPU."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.values: list[torch.Tensor] = []
        self.dtypes: set[torch.dtype] = set()
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output) -> None:
        tensor = output[0] if isinstance(output, tuple) else output
        self.dtypes.add(tensor.dtype)
        self.values.append(tensor.detach().float().cpu())

    def take(self) -> tuple[set[torch.dtype], torch.Tensor]:
        dtypes, value = self.dtypes, torch.cat(self.values)
        self.values, self.dtypes = [], set()
        return dtypes, value


def _run(component: str, model, paths: dict) -> None:
    """One run of the stage that uses ``model``, through the pipeline's learned functions."""
    faces = _faces()
    if component == "tsg":
        learned.tsg_segmentation(faces, _audio(), FPS, N_FRAMES, np.zeros(N_FRAMES, np.int64),
                                 model, batch_size=2)
    elif component == "encoder":
        learned.encode_style_learned(faces, model, frame=0)
    elif component == "generator":
        encoder = model_loading.load_model(paths["encoder"], model.device, slot="encoder")
        style = learned.encode_style_learned(faces, encoder, frame=0)
        index = np.array([0, 1, 0, 1, 0])
        seg = TalkingSegmentation(faces.regions[index], faces, index, FPS)
        learned.synthesize_learned(seg, style, model, batch_size=2)
    else:
        model.runner.parse(faces.crops)


def _watched(component: str, model) -> torch.nn.Module:
    # BiSeNet inference calls segment(), not forward(); its head is where the logits come out.
    return model.runner.model.conv_out if component == "bisenet" else model.runner


SLOT = {"tsg": "tsg", "encoder": "encoder", "generator": "generator", "bisenet": "parser"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("component", ["tsg", "encoder", "generator", "bisenet"])
def test_half_precision_runs_leave_weights_bit_identical(paths, component, device):
    model = model_loading.load_model(paths[component], device, slot=SLOT[component],
                                     precision="fp32")
    module = model.torch_module
    watch = _Outputs(_watched(component, model))
    before = _tensors(module)
    _run(component, model, paths)
    dtypes, reference = watch.take()
    assert dtypes == {torch.float32}
    for dtype in HALF:
        model.place(device, dtype)
        _run(component, model, paths)
        dtypes, value = watch.take()
        assert dtypes == {dtype}, f"the run did not compute in {dtype}: outputs were {dtypes}"
        assert torch.isfinite(value).all()
        difference = (value - reference).norm() / reference.norm()
        assert 0 < difference < 0.1, f"{dtype}: relative difference {difference:.3g} from fp32"
        _assert_bit_identical(before, _tensors(module))
    # Back in fp32 the result is exactly the first one: nothing was rounded on the way.
    model.place(device, torch.float32)
    _run(component, model, paths)
    _, again = watch.take()
    assert torch.equal(again, reference)


# ------------------------------------------------------------------------------ choices


def test_auto_is_fp32_on_cpu_and_the_recommendation_elsewhere():
    assert precision.resolve("auto", "cpu") == torch.float32
    assert precision.resolve("auto", "cpu", recommended=torch.bfloat16) == torch.float32
    both = lambda _device: precision.Capabilities(bf16=True, fp16=True)  # noqa: E731
    assert precision.resolve("auto", "cuda", torch.bfloat16, both) == torch.bfloat16
    assert precision.resolve("auto", "cuda", None, both) == torch.float32
    assert precision.resolve("fp16", "cpu") == torch.float16
    assert precision.resolve(torch.bfloat16, "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("fp8", "cpu")


def test_bf16_without_support_falls_back_with_a_log_line(monkeypatch, caplog, paths):
    fp16_only = lambda _device: precision.Capabilities(bf16=False, fp16=True)  # noqa: E731
    nothing = lambda _device: precision.Capabilities(bf16=False, fp16=False)  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        assert precision.resolve("bf16", "cpu", capabilities=fp16_only) == torch.float16
        assert precision.resolve("bf16", "cpu", capabilities=nothing) == torch.float32
    lines = [r.getMessage() for r in caplog.records]
    assert any("no bf16 support; computing in fp16" in m for m in lines), lines
    assert any("no bf16 support; computing in fp32" in m for m in lines), lines
    # The loaders use the same check: a bf16 TSG on such a device computes in fp16.
    monkeypatch.setattr(precision, "device_capabilities", fp16_only)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        model = model_loading.load_model(paths["tsg"], "cpu", slot="tsg", precision="bf16")
    assert model.compute_dtype == torch.float16 and model.precision == "bf16"
    assert any("bf16" in r.getMessage() for r in caplog.records)


def test_non_finite_output_names_the_precision():
    bad = torch.tensor([1.0, float("inf")], dtype=torch.float16)
    with pytest.raises(precision.NonFiniteOutputError, match="computing in fp16; fp16 overflow"):
        precision.check_output(bad, "the TSG", torch.float16)
    with pytest.raises(precision.NonFiniteOutputError, match="precision is fp32 already"):
        precision.check_output(bad.float(), "the TSG", torch.float32)
    precision.check_output(torch.ones(3), "the TSG", torch.float32)


# ------------------------------------------------------------------------------ out of memory


def _oom_once_above_one(module: torch.nn.Module, monkeypatch) -> list[int]:
    """Make ``module`` raise torch's OOM error the first time it sees a batch > 1; returns the
    batch sizes it was called with."""
    seen: list[int] = []
    real = module.forward
    raised = []

    def forward(first, *args, **kwargs):
        seen.append(first.shape[0])
        if first.shape[0] > 1 and not raised:
            raised.append(True)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(first, *args, **kwargs)

    monkeypatch.setattr(module, "forward", forward)
    return seen


@pytest.mark.parametrize("component", ["tsg", "generator"])
def test_out_of_memory_mid_batch_halves_and_keeps_every_frame(paths, component, monkeypatch,
                                                              caplog):
    model = model_loading.load_model(paths[component], "cpu", slot=component)
    faces = _faces()
    index = np.array([0, 1, 0, 1, 0])
    if component == "tsg":
        def run():
            return learned.tsg_segmentation(faces, _audio(), FPS, N_FRAMES, index, model,
                                            batch_size=4)
    else:
        encoder = model_loading.load_model(paths["encoder"], "cpu", slot="encoder")
        style = learned.encode_style_learned(faces, encoder, frame=0)
        seg = TalkingSegmentation(faces.regions[index], faces, index, FPS)

        def run():
            return learned.synthesize_learned(seg, style, model, batch_size=4)
    expected = run()
    seen = _oom_once_above_one(model.runner, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        got = run()
    assert seen[:2] == [4, 2], seen  # the failed batch of 4 came back as halves
    assert sum(seen[1:]) == N_FRAMES  # every frame once after the failure
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert any("out of memory with a batch of 4; retrying with 2" in r.getMessage()
               for r in caplog.records)


def test_out_of_memory_in_the_bisenet_parse_batch(paths, monkeypatch):
    model = model_loading.load_model(paths["bisenet"], "cpu", slot="parser")
    parser = model.runner
    parser.batch_size = 4
    model.place("cpu", torch.float32)  # a new run: the batch budget starts at batch_size
    crops = _faces(5).crops
    expected = parser.parse(crops)
    seen: list[int] = []
    real = parser.model.segment

    def segment(x):
        seen.append(x.shape[0])
        if x.shape[0] > 1 and len(seen) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(x)

    monkeypatch.setattr(parser.model, "segment", segment)
    got = parser.parse(crops)
    assert seen == [4, 2, 2, 1]
    np.testing.assert_array_equal(got, expected)


def test_adaptive_batch_reraises_at_one_and_passes_other_errors():
    calls: list[tuple[int, int]] = []

    def always_oom(start: int, stop: int) -> None:
        calls.append((start, stop))
        raise torch.cuda.OutOfMemoryError("out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        batching.AdaptiveBatch(4).run(3, always_oom, release=lambda: None)
    assert calls == [(0, 3), (0, 1)]

    def broken(start: int, stop: int) -> None:
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        batching.AdaptiveBatch(4).run(3, broken, release=lambda: None)
    assert batching.is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not batching.is_out_of_memory(RuntimeError("shape mismatch"))


# ------------------------------------------------------------------------------ fp16 safeguards


def test_fp16_prenormalisation_keeps_a_hot_modulated_conv_finite():
    """Styles and inputs whose product overflows fp16 (300 * 300 > 65504): NVlabs'
    pre-normalisation keeps the demodulated result finite and equal to fp32's."""
    from segtalker_core.models.layers import fir_kernel, modulated_conv2d
    from segtalker_core.models.mask_guided import mask_guided_conv_fast

    gen = torch.Generator().manual_seed(0)
    x = 300 * torch.randn(2, 8, 8, 8, generator=gen)
    weight = torch.randn(4, 8, 3, 3, generator=gen) / 3
    styles = 300 * (1 + torch.rand(2, 8, generator=gen))
    reference = modulated_conv2d(x, weight, styles)
    with precision.compute("cpu", torch.float16):
        plain = modulated_conv2d(x, weight, styles)
        up = modulated_conv2d(x, weight, styles, up=2, blur=fir_kernel([1, 3, 3, 1]))
    assert plain.dtype == torch.float16 and torch.isfinite(plain).all() and torch.isfinite(up).all()
    assert (plain.float() - reference).abs().max() < 0.02 * reference.abs().max()
    # Without the safeguard the same product overflows: the test input really is hot.
    assert not torch.isfinite((x.half() * styles.half()[:, :, None, None])).all()

    region_styles = styles[:, None].expand(-1, 3, -1).contiguous()
    masks = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 8, 8), generator=gen), 3)
    masks = masks.permute(0, 3, 1, 2).float()
    fast_ref = mask_guided_conv_fast(x, weight, region_styles, masks)
    with precision.compute("cpu", torch.float16):
        fast = mask_guided_conv_fast(x, weight, region_styles, masks)
    assert torch.isfinite(fast).all()
    assert (fast.float() - fast_ref).abs().max() < 0.02 * fast_ref.abs().max()


def test_fp16_clamps_generator_activations_and_fp32_does_not():
    from segtalker_core.models.layers import FP16_CLAMP, LRELU_GAIN
    from segtalker_core.models.stylegan import StyledConv

    torch.manual_seed(0)
    layer = StyledConv(4, 4, 8, False, (1, 3, 3, 1), "fast")
    with torch.no_grad():
        layer.bias.fill_(1000.0)  # pushes every activation far past the clamp
    x, w = torch.randn(1, 4, 8, 8), torch.randn(1, 8)
    noise = torch.zeros(1, 1, 8, 8)
    assert layer(x, w, None, noise, None).max() > FP16_CLAMP * LRELU_GAIN
    with precision.compute("cpu", torch.float16):
        hot = layer(x, w, None, noise, None)
    assert hot.float().max() <= FP16_CLAMP * LRELU_GAIN


def test_working_memory_grows_with_batch_and_is_zero_for_builtins(paths):
    from segtalker_core import pipeline
    from segtalker_core.working_memory import working_memory_bytes

    assert working_memory_bytes(None) == 0
    assert working_memory_bytes(pipeline.builtin_parser_model()) == 0
    for name, slot in SLOT.items():
        model = model_loading.load_model(paths[name], "cpu", slot=slot)
        one = working_memory_bytes(model, torch.float32, batch=1)
        four = working_memory_bytes(model, torch.float32, batch=4)
        assert 0 < one < four, name
        assert working_memory_bytes(model, torch.float16, batch=4) < four, name
