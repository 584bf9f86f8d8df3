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
serves GPUs (there a batch is bound by the kernels) and anything that needs gradients. A single
image (video tracking, one photo) is bound by per-call costs, not arithmetic: its trace runs
the depthwise layers of tiny maps as dense sums (:func:`_use_dense_depthwise`), and no trace
recomputes layer sizes (:func:`_size`). The operators run in the order
:mod:`.parallel_branches` plans: the mesh's lips and eye sub-networks, ~220 of its ~340
operators, run side by side as one call per layer on channel-stacked activations (grouped
1 x 1 layers as one batched product, :func:`_grouped_pointwise`): 0.5-0.6 ms less CPU per
mesh forward of a single image on this pack's 2-core test machine (~7 %), bit-identical
outputs for a batch (tested).

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

from . import attention_ops, parallel_branches
from .parallel_branches import OperatorGroup

GRAPH_FORMAT = "segtalker-tflite-graph-1"
CPU_THREADS = 1
DENSE_DEPTHWISE_LIMIT = 40_000  # products per image; see _use_dense_depthwise
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)  # NHWC axis -> NCHW axis


class MissingWeightsError(FileNotFoundError):
    """A converted model file is not where the pack expects it."""


# Forwards of one input kind run on the eager graph before it is traced (see _worth_tracing).
_EAGER_FORWARDS_BEFORE_TRACE = 1


def _frozen_key(image: torch.Tensor) -> tuple:
    """The kind of input a frozen graph serves: image size, dtype, single image or batch."""
    return (tuple(image.shape[1:]), image.dtype, image.shape[0] == 1)


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
                 freeze_on_cpu: bool = True, fuse_parallel: bool = True) -> None:
        super().__init__()
        self.ops = list(graph["ops"])
        self.input_id = int(graph["inputs"][0])
        self.outputs = {name: int(index) for name, index in graph["outputs"].items()}
        self.shapes = {int(k): list(v) for k, v in graph["shapes"].items()}
        self.freeze_on_cpu = freeze_on_cpu
        self._frozen: dict[tuple, torch.jit.ScriptModule] = {}  # input kind -> frozen graph
        self._eager_calls: dict[tuple, int] = {}  # input kind -> forwards run eagerly so far
        self._dense_kernels: dict[tuple, torch.Tensor] = {}  # see dense_kernel
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
        # The order the operators run in: the file's, or (fuse_parallel) depth order with
        # parallel equal operators as one call each (see parallel_branches). A group runs as
        # one operator made once here (_fused_ops, by step number), whose stacked constants
        # live in group_weights under "<step>_<input position>".
        self.steps: list[dict | OperatorGroup] = list(self.ops)
        self.group_weights = nn.ParameterDict()
        self._fused_ops: dict[int, dict] = {}
        if fuse_parallel:
            constant_ids = {int(name) for name in self.weights} | set(self.integers)
            self.steps = parallel_branches.plan(self.ops, self.shapes, constant_ids,
                                                self.integers)
            for number, step in enumerate(self.steps):
                if isinstance(step, OperatorGroup):
                    self._fused_ops[number] = self._fuse(number, step)

    def _fuse(self, number: int, group: OperatorGroup) -> dict:
        """The operator that runs ``group`` in one call. Its inputs: -1 for a stacked
        activation (or none), the shared integer constant's id, or the name in
        :attr:`group_weights` of the members' float constants stacked along their first axis
        (output channels of a convolution's weight, its bias, a PReLU's slopes; the name is
        also ``dense_kernel``'s cache key)."""
        first = group.ops[0]
        inputs: list[int | str] = []
        for position, tensor_id in enumerate(first["in"]):
            if str(tensor_id) in self.weights:
                name = f"{number}_{position}"
                stacked = torch.cat([self.weights[str(op["in"][position])] for op in group.ops])
                if first["op"] == "CONV_2D" and position == 1:
                    stacked = stacked.contiguous(memory_format=torch.channels_last)
                self.group_weights[name] = nn.Parameter(stacked, requires_grad=False)
                inputs.append(name)
            else:  # equal in all members (the signature says so) when an integer constant
                inputs.append(tensor_id if tensor_id in self.integers else -1)
        opt = dict(first["opt"], members=len(group))
        if first["op"] == "CONV_2D":
            opt["groups"] = len(group)
        return {"op": first["op"], "in": inputs, "out": [], "opt": opt}

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        image = image.contiguous(memory_format=torch.channels_last)
        with cpu_threads(image.device):
            if self._use_frozen(image) and self._worth_tracing(image):
                return dict(zip(self.outputs, self._frozen_for(image)(image)))
            return self._run(image)

    def _apply(self, fn, *args, **kwargs):
        self._constants = None  # .to() / .half(): the weights are new tensors
        self._frozen = {}
        self._eager_calls = {}
        self._dense_kernels = {}
        return super()._apply(fn, *args, **kwargs)

    def _use_frozen(self, image: torch.Tensor) -> bool:
        """The frozen graph serves CPU inference only: gradients need the eager graph, and on
        a GPU a batch is bound by the kernels, not by Python."""
        return (self.freeze_on_cpu and image.device.type == "cpu" and image.dim() == 4
                and not torch.is_grad_enabled())

    def _worth_tracing(self, image: torch.Tensor) -> bool:
        """Trace a kind of input on its second forward, not its first: a trace costs about 0.4 s
        of CPU per graph, a forward of the eager graph a few ms more than the frozen one, and a
        portrait detects its face once -- tracing on first use was a third of ``talk``'s time
        to its first frame. Both graphs give the same outputs bit for bit (tested)."""
        key = _frozen_key(image)
        if key in self._frozen:
            return True
        calls = self._eager_calls.get(key, 0)
        if calls < _EAGER_FORWARDS_BEFORE_TRACE:
            self._eager_calls[key] = calls + 1
            return False
        return True

    def _frozen_for(self, image: torch.Tensor) -> torch.jit.ScriptModule:
        """The eager graph traced once and frozen (``torch.jit.freeze``): one TorchScript graph
        with the constants inlined, no Python per operator -- 2.5x less CPU time per mesh
        forward, the same operators on the same values (bit-identical outputs, tested). The
        trace records the batch axis symbolically (every shape that depends on it is read from
        the tensor), so one trace serves any batch size of its kind -- a single image or a
        batch (:func:`_use_dense_depthwise` differs between them); a new image size or dtype
        traces again, and every trace is kept."""
        key = _frozen_key(image)
        single = key[2]
        module = self._frozen.get(key)
        if module is not None:
            return module
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # Tracer warnings: Python ints read off shapes (kernel padding of a fixed-size
            # layer) become constants of the trace, which is what a fixed model wants. The
            # FutureWarning is torch.jit's deprecation notice, no concern of the user's.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            example = torch.zeros((1 if single else 2,) + key[0], dtype=image.dtype).contiguous(
                memory_format=torch.channels_last)
            try:
                traced = torch.jit.trace(_Outputs(self, single), example, check_trace=False)
                module = torch.jit.freeze(traced.eval())
            except Exception as error:  # a torch without a working TorchScript
                warnings.warn(f"face model: torch.jit trace/freeze failed ({error}); running "
                              f"the slower eager graph on the CPU", RuntimeWarning)
                self.freeze_on_cpu = False
                return _Outputs(self, single)
        self._frozen[key] = module
        return module

    def _run(self, image: torch.Tensor, single: bool | None = None) -> dict[str, torch.Tensor]:
        """The eager graph; ``single``: the input is one image (default: read off ``image``;
        a trace passes it, the batch size being symbolic there)."""
        if getattr(self, "_constants", None) is None:
            self._constants = {int(k): v for k, v in self.weights.items()}
            self._constants.update(self.integers)
        run = _Run(self, image.shape[0] == 1 if single is None else single)
        values: dict[int, torch.Tensor | _Member] = dict(self._constants)
        values[self.input_id] = image
        stacks: dict[tuple[int, ...], torch.Tensor] = {}  # gathered group inputs, reused
        for number, step in enumerate(self.steps):
            if isinstance(step, OperatorGroup):
                self._run_group(run, number, step, values, stacks)
                continue
            inputs = [_resolve(values[index]) if index >= 0 else None for index in step["in"]]
            result = _operator(step["op"])(run, step, inputs)
            outputs = result if isinstance(result, tuple) else (result,)
            for index, value in zip(step["out"], outputs):
                values[index] = value
        return {name: _resolve(values[index]) for name, index in self.outputs.items()}

    def _run_group(self, run: _Run, number: int, group: OperatorGroup, values: dict,
                   stacks: dict) -> None:
        """One call for all members of ``group``: activations stacked along the channels,
        constants from :attr:`group_weights`; the members' outputs become views of its
        output."""
        fused = self._fused_ops[number]
        inputs: list = []
        for position, source in enumerate(fused["in"]):
            if isinstance(source, str):
                inputs.append(self.group_weights[source])
            elif source >= 0:
                inputs.append(self.integers[source])
            elif group.ops[0]["in"][position] < 0:
                inputs.append(None)
            else:
                ids = tuple(op["in"][position] for op in group.ops)
                if ids not in stacks:
                    stacks[ids] = _stack([values[index] for index in ids])
                inputs.append(stacks[ids])
        result = _operator(fused["op"])(run, fused, inputs)
        width = int(self.shapes[group.ops[0]["out"][0]][-1])
        for member, op in enumerate(group.ops):
            values[op["out"][0]] = _Member(result, member, width)

    def dense_kernel(self, op: dict, weight: torch.Tensor, height: int,
                     width: int) -> torch.Tensor:
        """:func:`_dense_depthwise`'s ``[P, Q, C]`` matrix of a depthwise layer on
        ``height x width`` inputs, made once: the layer's response to each unit impulse (exact:
        one weight times 1 plus zeros)."""
        key = (op["in"][1], height, width, tuple(op["opt"]["stride"]), op["opt"]["padding"])
        kernel = self._dense_kernels.get(key)
        if kernel is None:
            with torch.inference_mode(False), torch.no_grad():
                positions, channels = height * width, weight.shape[0]
                impulses = torch.eye(positions, dtype=weight.dtype, device=weight.device)
                impulses = impulses.reshape(positions, 1, height, width).expand(
                    positions, channels, height, width)
                response = _depthwise(impulses, weight, None, op["opt"])  # [Q, C, Ho, Wo]
                kernel = response.permute(2, 3, 0, 1).reshape(-1, positions, channels)
                self._dense_kernels[key] = kernel.contiguous()
        return kernel


class _Member:
    """Member ``index``'s ``width`` channels of a group's channel-stacked output."""

    __slots__ = ("stacked", "index", "width")

    def __init__(self, stacked: torch.Tensor, index: int, width: int) -> None:
        self.stacked, self.index, self.width = stacked, index, width

    def tensor(self) -> torch.Tensor:
        return self.stacked.narrow(1, self.index * self.width, self.width)


def _resolve(value):
    """A value as an operator takes it: a group member becomes its channels' view."""
    return value.tensor() if isinstance(value, _Member) else value


def _stack(values: list) -> torch.Tensor:
    """Activations stacked along the channels: a group's output itself when ``values`` are
    all its members in order (the usual case: one group feeds the next), else a copy."""
    first = values[0]
    if (isinstance(first, _Member) and all(
            isinstance(value, _Member) and value.stacked is first.stacked
            and value.index == index for index, value in enumerate(values))
            and len(values) * first.width == _size(first.stacked, 1)):
        return first.stacked
    return torch.cat([_resolve(value) for value in values], dim=1).contiguous(
        memory_format=torch.channels_last)


def _operator(kind: str):
    function = _OPS.get(kind)
    if function is None:
        raise NotImplementedError(f"TFLite operator {kind} is not implemented")
    return function


class _Run:
    """What the operators of one forward see as ``graph``: the graph's shapes and whether the
    input is a single image (per forward, not on the shared module: the cached networks may
    serve two threads)."""

    def __init__(self, graph: TFLiteGraph, single: bool) -> None:
        self.graph = graph
        self.shapes = graph.shapes
        self.single = single


class _Outputs(nn.Module):
    """The eager graph with a tuple of outputs (in ``graph.outputs`` order), for tracing."""

    def __init__(self, graph: TFLiteGraph, single: bool) -> None:
        super().__init__()
        self.graph = graph
        self.single = single

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.graph._run(image, self.single).values())


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
        # OHWI -> OIHW in channels-last memory (OHWI's own): what convolutions of
        # channels-last activations use, else conv2d copies the weight at every call.
        return value.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
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


def _size(x: torch.Tensor, axis: int) -> int:
    """An activation's size other than the batch's (or a weight's), as a Python int: in a
    trace it is a constant (a trace serves one input size), not ~4 traced scalar operations
    per layer run at every forward. The batch size stays symbolic (read from the tensor where
    an operator needs it)."""
    assert axis != 0, "the batch size must stay symbolic"
    return int(x.shape[axis])


def _pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int] = (1, 1), value: float = 0.0) -> torch.Tensor:
    top, bottom = _same_padding(_size(x, 2), kernel[0], stride[0], dilation[0])
    left, right = _same_padding(_size(x, 3), kernel[1], stride[1], dilation[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


def _conv(graph: _Run, op: dict, inputs: list) -> torch.Tensor:
    x, weight, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    if op["op"] == "DEPTHWISE_CONV_2D":
        height, width = _size(x, 2), _size(x, 3)
        if _use_dense_depthwise(graph, op, x, weight):
            kernel = graph.graph.dense_kernel(op, weight, height, width)
            y = _dense_depthwise(x, kernel, bias, _out_size(op["opt"], height, width, weight))
        else:
            y = _depthwise(x, weight, bias, op["opt"])
    elif op["opt"].get("groups", 1) > 1 and _is_pointwise(op["opt"], weight):
        y = _grouped_pointwise(x, weight, bias, op["opt"]["groups"])
    else:
        x, padding = _padded(x, weight, op["opt"])
        y = F.conv2d(x, weight, bias, stride=tuple(op["opt"]["stride"]),
                     dilation=tuple(op["opt"]["dilation"]), padding=padding,
                     groups=op["opt"].get("groups", 1))
    return _activation(y, op["opt"]["activation"])


def _is_pointwise(opt: dict, weight: torch.Tensor) -> bool:
    return (_size(weight, 2), _size(weight, 3)) == (1, 1) and tuple(opt["stride"]) == (1, 1)


def _grouped_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       groups: int) -> torch.Tensor:
    """A grouped 1 x 1 convolution (a parallel group's, see parallel_branches) as one batched
    matrix product over the groups. PyTorch's CPU convolution runs a grouped 1 x 1 layer as
    one small convolution per group, or through oneDNN at ~30 us of fixed cost per call; the
    product is the same sums (bit-identical, measured) in a third to a half of the time on the
    mesh's 2 x 2 to 16 x 16 maps."""
    height, width = _size(x, 2), _size(x, 3)
    channels, outputs = _size(x, 1) // groups, int(weight.shape[0]) // groups
    rows = x.permute(0, 2, 3, 1).reshape(-1, groups, channels).transpose(0, 1)  # [G, NHW, C]
    matrices = weight.reshape(groups, outputs, channels).transpose(1, 2)  # [G, C, O]
    if bias is None:
        y = torch.bmm(rows, matrices)
    else:
        y = torch.baddbmm(bias.reshape(groups, 1, outputs), rows, matrices)  # [G, NHW, O]
    return y.transpose(0, 1).reshape(-1, height, width, groups * outputs).permute(0, 3, 1, 2)


def _padded(x: torch.Tensor, weight: torch.Tensor, opt: dict) -> tuple[torch.Tensor, tuple]:
    """(input, conv2d padding) for TFLite's ``padding``: symmetric padding is the
    convolution's own (no copy), an odd total pads the input."""
    if opt["padding"] != "SAME":
        return x, (0, 0)
    stride, dilation = opt["stride"], opt["dilation"]
    top, bottom = _same_padding(_size(x, 2), _size(weight, 2), stride[0], dilation[0])
    left, right = _same_padding(_size(x, 3), _size(weight, 3), stride[1], dilation[1])
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, (left, right, top, bottom)), (0, 0)


def _out_size(opt: dict, height: int, width: int, weight: torch.Tensor) -> tuple[int, int]:
    stride, dilation = opt["stride"], opt["dilation"]
    if opt["padding"] == "SAME":
        return -(-height // stride[0]), -(-width // stride[1])
    spans = [(_size(weight, axis) - 1) * dilation[axis - 2] + 1 for axis in (2, 3)]
    return (height - spans[0]) // stride[0] + 1, (width - spans[1]) // stride[1] + 1


def _depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               opt: dict) -> torch.Tensor:
    x, padding = _padded(x, weight, opt)
    return F.conv2d(x, weight, bias, stride=tuple(opt["stride"]),
                    dilation=tuple(opt["dilation"]), padding=padding, groups=_size(x, 1))


def _use_dense_depthwise(graph: _Run, op: dict, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """A single image's depthwise layer on a tiny map (the mesh's last stages are 2 x 2 to
    4 x 4 px) runs as :func:`_dense_depthwise` on the CPU: oneDNN's depthwise convolution
    costs ~40 us per call there whatever the size, of which ~3 us compute; the dense form,
    ``positions_out x positions_in x channels`` products, is ~10 us up to ~40 k of them.
    Batches keep the convolution (the dense work grows with the batch, its overhead not)."""
    if not graph.single or x.device.type != "cpu":
        return False
    height, width = _size(x, 2), _size(x, 3)
    out_h, out_w = _out_size(op["opt"], height, width, weight)
    # A parallel group's layer decides as each member alone would: the same layers take the
    # same path whether the branches run stacked or not.
    channels = _size(x, 1) // op["opt"].get("members", 1)
    return out_h * out_w * height * width * channels <= DENSE_DEPTHWISE_LIMIT


def _dense_depthwise(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None,
                     out_size: tuple[int, int]) -> torch.Tensor:
    """A depthwise convolution as each output position's weighted sum over all input
    positions (``kernel [P, Q, C]``, zero where the filter does not reach), on the
    channels-last activations' own memory."""
    positions, channels = kernel.shape[1], kernel.shape[2]
    rows = x.permute(0, 2, 3, 1).reshape(-1, 1, positions, channels)
    y = (rows * kernel).sum(dim=2)  # [N, P, C]
    if bias is not None:
        y = y + bias
    return y.view(-1, out_size[0], out_size[1], channels).permute(0, 3, 1, 2)


def _transpose_conv_bias(graph: _Run, op: dict, inputs: list) -> torch.Tensor:
    """MediaPipe's ``Convolution2DTransposeBias``: a transposed convolution plus bias."""
    x, weight, bias = inputs
    stride = tuple(op["opt"]["stride"])
    kernel = (_size(weight, 2), _size(weight, 3))
    y = F.conv_transpose2d(x, weight, bias, stride=stride)
    if op["opt"]["padding"] == "SAME":
        height, width = _size(x, 2), _size(x, 3)
        out_h, out_w = height * stride[0], width * stride[1]
        top = max((height - 1) * stride[0] + kernel[0] - out_h, 0) // 2
        left = max((width - 1) * stride[1] + kernel[1] - out_w, 0) // 2
        y = y[:, :, top:top + out_h, left:left + out_w]
    return y


def _pool(graph: _Run, op: dict, inputs: list) -> torch.Tensor:
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


def _binary(graph: _Run, op: dict, inputs: list) -> torch.Tensor:
    a, b = inputs
    y = a + b if op["op"] == "ADD" else a * b
    return _activation(y, op["opt"].get("activation", "NONE"))


def _prelu(graph: _Run, op: dict, inputs: list) -> torch.Tensor:
    x, alpha = inputs
    if x.dim() == 4 and alpha.numel() == _size(x, 1):
        return F.prelu(x, alpha.reshape(-1))
    return torch.where(x >= 0, x, x * alpha)


def _pad(graph: _Run, op: dict, inputs: list) -> torch.Tensor:
    x, paddings = inputs
    pairs = [paddings[2 * i:2 * i + 2] for i in range(len(paddings) // 2)]
    members = op["opt"].get("members", 1)
    if x.dim() == 4 and members > 1 and pairs[3] != [0, 0]:
        x = _pad_channels_of_each(x, members, pairs[3])
        pairs = pairs[:3] + [[0, 0]]
    if x.dim() == 4:
        pairs = [pairs[0], pairs[3], pairs[1], pairs[2]]  # NHWC -> NCHW
    if pairs[0] != [0, 0]:
        raise NotImplementedError("padding the batch axis")
    flat = []
    for before, after in reversed(pairs[1:]):
        flat += [before, after]
    return F.pad(x, flat)


def _pad_channels_of_each(x: torch.Tensor, members: int, pair: list[int]) -> torch.Tensor:
    """A group's PAD of the channel axis: each member's channels padded on their own."""
    height, width, channels = _size(x, 2), _size(x, 3), _size(x, 1) // members
    split = x.permute(0, 2, 3, 1).reshape(-1, height, width, members, channels)
    padded = F.pad(split, (pair[0], pair[1]))
    return padded.reshape(-1, height, width, members * (channels + pair[0] + pair[1])).permute(
        0, 3, 1, 2)


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _to_internal(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def _reshape(graph: _Run, op: dict, inputs: list) -> torch.Tensor:
    shape = list(graph.shapes[op["out"][0]])
    x = _to_nhwc(inputs[0])
    return _to_internal(x.reshape([x.shape[0]] + shape[1:]))


def _concatenation(graph: _Run, op: dict, inputs: list) -> torch.Tensor:
    axis = op["opt"]["axis"]
    if inputs[0].dim() == 4:
        axis = _NHWC_TO_NCHW_AXIS[axis % 4]
    return _activation(torch.cat(inputs, dim=axis), op["opt"]["activation"])


def _strided_slice(graph: _Run, op: dict, inputs: list) -> torch.Tensor:
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


def _resize_bilinear(graph: _Run, op: dict, inputs: list) -> torch.Tensor:
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
