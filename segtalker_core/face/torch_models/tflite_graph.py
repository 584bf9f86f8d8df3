"""Run a converted TFLite graph (``tools/convert_mediapipe_models.py``) with PyTorch operators.

The three MediaPipe face models are small convolution graphs of a dozen operator kinds. Rather
than re-typing each architecture layer by layer (and risking a wrong stride or padding in one of
~500 layers), the converter stores each model's operator list as the .tflite holds it, and
:class:`TFLiteGraph` executes it: each TFLite operator maps to one PyTorch call, with TFLite's
conventions (``SAME`` padding that puts the odd pixel at the end, NHWC axes, half-pixel bilinear
resize) reproduced exactly. MediaPipe's custom operators of the attention mesh live in
:mod:`.attention_ops`.

Layout: 4-D activations run as NCHW (what ``conv2d`` wants); every operator whose meaning depends
on axes (reshape, concatenation, padding, slicing) converts its NHWC axes. Batch: the .tflite
graphs are written for one image; every operator here keeps the leading batch axis, so any batch
size runs in one forward.

Speed on a CPU: activations are kept ``channels_last`` (PyTorch's fast path for the many
depthwise convolutions; NCHW measured 1.2-1.5x slower) and a forward runs on :data:`CPU_THREADS`
threads, restored afterwards: these layers are too small to gain from more, and on a loaded
machine extra threads only wait for each other (measured: 10x slower with 2 threads on 2 busy
cores). CPU inference runs the graph traced once and frozen by ``torch.jit`` (see
:meth:`TFLiteGraph._frozen_for`): the ~400 operators of the mesh then cost no Python
interpretation each, and the outputs are bit-identical to the eager graph's. The eager graph
serves GPUs (there a batch is bound by the kernels) and anything that needs gradients.

Weights: float16 constants (the models store float16 and dequantize on load) are upcast exactly
to the module's dtype by ``.to()``; nothing stored is rounded.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import attention_ops

GRAPH_FORMAT = "segtalker-tflite-graph-1"
CPU_THREADS = 1
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)  # NHWC axis -> NCHW axis


class MissingWeightsError(FileNotFoundError):
    """A converted model file is not where the pack expects it."""


def load_graph_file(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(graph description, constants) from a converted .safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(
            f"face model weights {str(path)!r} are missing; they ship with the pack in "
            f"segtalker_core/face/weights/. Reinstall the pack, or recreate them with "
            f"`python tools/convert_mediapipe_models.py` (needs mediapipe==0.10.14 and tflite)"
        )
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if "graph" not in metadata:
            raise ValueError(f"{str(path)!r} holds no 'graph' metadata: not a converted face "
                             f"model; recreate it with tools/convert_mediapipe_models.py")
        graph = json.loads(metadata["graph"])
        constants = {name: handle.get_tensor(name) for name in handle.keys()}
    if graph.get("format") != GRAPH_FORMAT:
        raise ValueError(f"{str(path)!r} has graph format {graph.get('format')!r}, expected "
                         f"{GRAPH_FORMAT!r}; recreate it with tools/convert_mediapipe_models.py")
    return graph, constants


class TFLiteGraph(nn.Module):
    """A converted TFLite graph as a module: ``forward(x NCHW) -> {output name: tensor}``.

    4-D outputs come back NCHW; others keep the TFLite shape with the batch axis first.
    """

    def __init__(self, graph: Mapping, constants: Mapping[str, torch.Tensor],
                 freeze_on_cpu: bool = True) -> None:
        super().__init__()
        self.ops = list(graph["ops"])
        self.input_id = int(graph["inputs"][0])
        self.outputs = {name: int(index) for name, index in graph["outputs"].items()}
        self.shapes = {int(k): list(v) for k, v in graph["shapes"].items()}
        self.freeze_on_cpu = freeze_on_cpu
        self._frozen: tuple | None = None  # (input key, frozen TorchScript module)
        self.weights = nn.ParameterDict()  # float constants, in the layout their operator wants
        self.integers: dict[int, list[int]] = {}  # shape / padding / slice constants
        layouts: dict[int, tuple[str, int]] = {}  # constant -> (operator, input) of its layout
        for op in self.ops:
            for position, tensor_id in enumerate(op["in"]):
                name = f"t{tensor_id}"
                if name not in constants:
                    continue
                value = constants[name]
                if not value.is_floating_point():
                    self.integers[tensor_id] = value.flatten().tolist()
                    continue
                use = (op["op"], position)
                if tensor_id in layouts:
                    if _layout_kind(*layouts[tensor_id]) != _layout_kind(*use):
                        raise ValueError(f"constant {tensor_id} is used by {layouts[tensor_id]} "
                                         f"and {use}, which need different layouts")
                    continue
                layouts[tensor_id] = use
                prepared = _prepare_constant(op["op"], position, value)
                self.weights[str(tensor_id)] = nn.Parameter(prepared.float(), requires_grad=False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        image = image.contiguous(memory_format=torch.channels_last)
        with cpu_threads(image.device):
            if self._use_frozen(image):
                return dict(zip(self.outputs, self._frozen_for(image)(image)))
            return self._run(image)

    def _apply(self, fn, *args, **kwargs):
        self._constants = None  # .to() / .half(): the weights are new tensors
        self._frozen = None
        return super()._apply(fn, *args, **kwargs)

    def _use_frozen(self, image: torch.Tensor) -> bool:
        """The frozen graph serves CPU inference only: gradients need the eager graph, and on
        a GPU a batch is bound by the kernels, not by Python."""
        return (self.freeze_on_cpu and image.device.type == "cpu" and image.dim() == 4
                and not torch.is_grad_enabled())

    def _frozen_for(self, image: torch.Tensor) -> torch.jit.ScriptModule:
        """The eager graph traced once and frozen (``torch.jit.freeze``): one TorchScript graph
        with the constants inlined, no Python per operator -- 2.5x less CPU time per mesh
        forward, the same operators on the same values (bit-identical outputs, tested). The
        trace records the batch axis symbolically (every shape that depends on it is read from
        the tensor), so one trace serves any batch size; a new image size or dtype re-traces."""
        key = (tuple(image.shape[1:]), image.dtype)
        frozen = getattr(self, "_frozen", None)
        if frozen is not None and frozen[0] == key:
            return frozen[1]
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # Tracer warnings: Python ints read off shapes (kernel padding of a fixed-size
            # layer) become constants of the trace, which is what a fixed model wants. The
            # FutureWarning is torch.jit's deprecation notice, no concern of the user's.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            example = torch.zeros((2,) + key[0], dtype=image.dtype).contiguous(
                memory_format=torch.channels_last)
            try:
                traced = torch.jit.trace(_Outputs(self), example, check_trace=False)
                module = torch.jit.freeze(traced.eval())
            except Exception as error:  # a torch without a working TorchScript
                warnings.warn(f"face model: torch.jit trace/freeze failed ({error}); running "
                              f"the slower eager graph on the CPU", RuntimeWarning)
                self.freeze_on_cpu = False
                return _Outputs(self)
        self._frozen = (key, module)
        return module

    def _run(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if getattr(self, "_constants", None) is None:
            self._constants = {int(k): v for k, v in self.weights.items()}
            self._constants.update(self.integers)
        values: dict[int, torch.Tensor] = dict(self._constants)
        values[self.input_id] = image
        for op in self.ops:
            inputs = [values[index] if index >= 0 else None for index in op["in"]]
            kind = op["op"]
            run = _OPS.get(kind)
            if run is None:
                raise NotImplementedError(f"TFLite operator {kind} is not implemented")
            result = run(self, op, inputs)
            outputs = result if isinstance(result, tuple) else (result,)
            for index, value in zip(op["out"], outputs):
                values[index] = value
        return {name: values[index] for name, index in self.outputs.items()}


class _Outputs(nn.Module):
    """The eager graph with a tuple of outputs (in ``graph.outputs`` order), for tracing."""

    def __init__(self, graph: TFLiteGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.graph._run(image).values())


@contextlib.contextmanager
def cpu_threads(device: torch.device) -> Iterator[None]:
    """:data:`CPU_THREADS` intra-op threads for a CPU forward, the caller's count restored."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, CPU_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _layout_kind(kind: str, position: int) -> str:
    """Which of :func:`_prepare_constant`'s layouts a constant used here gets."""
    if position == 1 and kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU",
                                  "CUSTOM:Convolution2DTransposeBias"):
        return kind
    return "operand"


def _prepare_constant(kind: str, position: int, value: torch.Tensor) -> torch.Tensor:
    """A float constant in the layout its operator uses at run time."""
    if kind == "CONV_2D" and position == 1:
        return value.permute(0, 3, 1, 2).contiguous()  # OHWI -> OIHW
    if kind == "DEPTHWISE_CONV_2D" and position == 1:
        return value.permute(3, 0, 1, 2).contiguous()  # 1HWC -> C1HW
    if kind == "CUSTOM:Convolution2DTransposeBias" and position == 1:
        return value.permute(3, 0, 1, 2).contiguous()  # OHWI -> IOHW
    if kind == "PRELU" and position == 1:
        return value.reshape(-1, 1, 1) if value.dim() >= 1 else value  # per channel
    if value.dim() == 4:
        return value.permute(0, 3, 1, 2).contiguous()  # an NHWC operand
    if value.dim() == 3 and kind in ("ADD", "MUL") and value.shape[:2] == (1, 1):
        return value.reshape(-1, 1, 1)  # [1, 1, C] broadcast over H, W of an NHWC tensor
    return value


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "NONE":
        return x
    if name == "RELU":
        return F.relu(x)
    if name == "RELU6":
        return F.relu6(x)
    if name == "RELU_N1_TO_1":
        return x.clamp(-1.0, 1.0)
    if name == "TANH":
        return torch.tanh(x)
    raise NotImplementedError(f"fused activation {name}")


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite ``SAME``: the output is ceil(size / stride); an odd total goes at the end."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int] = (1, 1), value: float = 0.0) -> torch.Tensor:
    top, bottom = _same_padding(x.shape[2], kernel[0], stride[0], dilation[0])
    left, right = _same_padding(x.shape[3], kernel[1], stride[1], dilation[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


def _conv(graph: TFLiteGraph, op: dict, inputs: list) -> torch.Tensor:
    x, weight, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    opt = op["opt"]
    stride, dilation = tuple(opt["stride"]), tuple(opt["dilation"])
    groups = 1
    if op["op"] == "DEPTHWISE_CONV_2D":
        groups = x.shape[1]
    kernel = tuple(weight.shape[2:])
    padding = (0, 0)
    if opt["padding"] == "SAME":
        top, bottom = _same_padding(x.shape[2], kernel[0], stride[0], dilation[0])
        left, right = _same_padding(x.shape[3], kernel[1], stride[1], dilation[1])
        if top == bottom and left == right:
            padding = (top, left)  # symmetric: the convolution pads without a copy
        else:
            x = F.pad(x, (left, right, top, bottom))
    y = F.conv2d(x, weight, bias, stride=stride, dilation=dilation, groups=groups,
                 padding=padding)
    return _activation(y, opt["activation"])


def _transpose_conv_bias(graph: TFLiteGraph, op: dict, inputs: list) -> torch.Tensor:
    """MediaPipe's ``Convolution2DTransposeBias``: a transposed convolution plus bias."""
    x, weight, bias = inputs
    stride = tuple(op["opt"]["stride"])
    kernel = tuple(weight.shape[2:])
    y = F.conv_transpose2d(x, weight, bias, stride=stride)
    if op["opt"]["padding"] == "SAME":
        out_h, out_w = x.shape[2] * stride[0], x.shape[3] * stride[1]
        top = max((x.shape[2] - 1) * stride[0] + kernel[0] - out_h, 0) // 2
        left = max((x.shape[3] - 1) * stride[1] + kernel[1] - out_w, 0) // 2
        y = y[:, :, top:top + out_h, left:left + out_w]
    return y


def _pool(graph: TFLiteGraph, op: dict, inputs: list) -> torch.Tensor:
    x = inputs[0]
    opt = op["opt"]
    kernel, stride = tuple(opt["filter"]), tuple(opt["stride"])
    if op["op"] == "MAX_POOL_2D":
        if opt["padding"] == "SAME":
            x = _pad_same(x, kernel, stride, value=float("-inf"))
        y = F.max_pool2d(x, kernel, stride)
    else:
        if opt["padding"] == "SAME":
            # TFLite averages over the pixels inside the image only.
            ones = _pad_same(torch.ones_like(x[:, :1]), kernel, stride)
            summed = F.avg_pool2d(_pad_same(x, kernel, stride), kernel, stride) * (
                kernel[0] * kernel[1])
            y = summed / (F.avg_pool2d(ones, kernel, stride) * (kernel[0] * kernel[1]))
        else:
            y = F.avg_pool2d(x, kernel, stride)
    return _activation(y, opt["activation"])


def _binary(graph: TFLiteGraph, op: dict, inputs: list) -> torch.Tensor:
    a, b = inputs
    y = a + b if op["op"] == "ADD" else a * b
    return _activation(y, op["opt"].get("activation", "NONE"))


def _prelu(graph: TFLiteGraph, op: dict, inputs: list) -> torch.Tensor:
    x, alpha = inputs
    if x.dim() == 4 and alpha.numel() == x.shape[1]:
        return F.prelu(x, alpha.reshape(-1))
    return torch.where(x >= 0, x, x * alpha)


def _pad(graph: TFLiteGraph, op: dict, inputs: list) -> torch.Tensor:
    x, paddings = inputs
    pairs = [paddings[2 * i:2 * i + 2] for i in range(len(paddings) // 2)]
    if x.dim() == 4:
        pairs = [pairs[0], pairs[3], pairs[1], pairs[2]]  # NHWC -> NCHW
    if pairs[0] != [0, 0]:
        raise NotImplementedError("padding the batch axis")
    flat = []
    for before, after in reversed(pairs[1:]):
        flat += [before, after]
    return F.pad(x, flat)


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _to_internal(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def _reshape(graph: TFLiteGraph, op: dict, inputs: list) -> torch.Tensor:
    shape = list(graph.shapes[op["out"][0]])
    x = _to_nhwc(inputs[0])
    return _to_internal(x.reshape([x.shape[0]] + shape[1:]))


def _concatenation(graph: TFLiteGraph, op: dict, inputs: list) -> torch.Tensor:
    axis = op["opt"]["axis"]
    if inputs[0].dim() == 4:
        axis = _NHWC_TO_NCHW_AXIS[axis % 4]
    return _activation(torch.cat(inputs, dim=axis), op["opt"]["activation"])


def _strided_slice(graph: TFLiteGraph, op: dict, inputs: list) -> torch.Tensor:
    x, begin, end, strides = inputs
    opt = op["opt"]
    if opt["shrink_axis_mask"] or opt["ellipsis_mask"] or opt["new_axis_mask"]:
        raise NotImplementedError("STRIDED_SLICE with shrink / ellipsis / new-axis masks")
    x = _to_nhwc(x)
    index: list[slice] = [slice(None)]  # the batch axis is kept whole
    for axis in range(1, x.dim()):
        start = None if opt["begin_mask"] >> axis & 1 else begin[axis]
        stop = None if opt["end_mask"] >> axis & 1 else end[axis]
        index.append(slice(start, stop, strides[axis]))
    return _to_internal(x[tuple(index)])


def _resize_bilinear(graph: TFLiteGraph, op: dict, inputs: list) -> torch.Tensor:
    x, size = inputs
    opt = op["opt"]
    if opt["align_corners"]:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
    if not opt["half_pixel_centers"]:
        raise NotImplementedError("RESIZE_BILINEAR without half-pixel centres")
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


_OPS = {
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _conv,
    "CUSTOM:Convolution2DTransposeBias": _transpose_conv_bias,
    "MAX_POOL_2D": _pool,
    "AVERAGE_POOL_2D": _pool,
    "ADD": _binary,
    "MUL": _binary,
    "PRELU": _prelu,
    "RELU": lambda graph, op, inputs: F.relu(inputs[0]),
    "LOGISTIC": lambda graph, op, inputs: torch.sigmoid(inputs[0]),
    "HARD_SWISH": lambda graph, op, inputs: F.hardswish(inputs[0]),
    "PAD": _pad,
    "RESHAPE": _reshape,
    "CONCATENATION": _concatenation,
    "STRIDED_SLICE": _strided_slice,
    "RESIZE_BILINEAR": _resize_bilinear,
    "CUSTOM:Landmarks2TransformMatrix": attention_ops.landmarks_to_transform_matrix,
    "CUSTOM:TransformTensorBilinear": attention_ops.transform_tensor_bilinear,
    "CUSTOM:TransformLandmarks": attention_ops.transform_landmarks,
}
