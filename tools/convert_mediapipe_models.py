"""Convert MediaPipe's face models (.tflite, from the ``mediapipe==0.10.14`` wheel) to .safetensors.

Run once by a maintainer; the pack's runtime reads only the written files
(``segtalker_core/face/weights/*.safetensors``) and never needs mediapipe, TensorFlow or LiteRT.

    .venv/bin/pip install -r requirements-dev.txt      # the `tflite` flatbuffer parser
    .venv/bin/python tools/convert_mediapipe_models.py  # finds the installed mediapipe wheel
    .venv/bin/python tools/convert_mediapipe_models.py --modules DIR --out DIR

Each file holds the model's graph as written in the .tflite (the operators in their order, with
their options; ``DEQUANTIZE`` of float16 constants folded away: the constants keep their stored
float16 values, nothing is rounded) in the safetensors metadata under ``graph`` (JSON), and every
constant tensor as ``t<index>`` with its TFLite layout (NHWC activations, OHWI kernels).
:mod:`segtalker_core.face.torch_models.tflite_graph` runs that graph with PyTorch operators.

Models (Apache-2.0, Google; model cards linked from ``segtalker_core/face/weights/NOTICE``):
``face_detection_short_range`` (BlazeFace, 128 px), ``face_landmark_with_attention`` (the
478-point mesh with refined lips and irises, 192 px) and ``selfie_segmentation`` (256 px).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segtalker_core.atomic_files import atomic_output  # noqa: E402

# (file in the wheel's mediapipe/modules/, name of the written .safetensors)
MODELS = (
    ("face_detection/face_detection_short_range.tflite", "face_detection_short_range"),
    ("face_landmark/face_landmark_with_attention.tflite", "face_landmark_with_attention"),
    ("selfie_segmentation/selfie_segmentation.tflite", "selfie_segmentation"),
)
GRAPH_FORMAT = "segtalker-tflite-graph-1"
DEFAULT_OUT = ROOT / "segtalker_core" / "face" / "weights"

# TFLite TensorType -> numpy dtype (the types these models use)
_NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64}
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 6: "SIGN_BIT"}


def _builtin_names(tflite) -> dict[int, str]:
    return {value: name for name, value in vars(tflite.BuiltinOperator).items()
            if not name.startswith("_")}


def _options(tflite, op, kind: str) -> dict:
    """The options of one builtin operator as plain JSON values (only the fields the runtime
    reads; an operator kind not listed has none it needs)."""
    table = op.BuiltinOptions()

    def load(cls):
        options = cls()
        options.Init(table.Bytes, table.Pos)
        return options

    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        cls = tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions
        o = load(cls)
        out = {"padding": _PADDING[o.Padding()], "stride": [o.StrideH(), o.StrideW()],
               "dilation": [o.DilationHFactor(), o.DilationWFactor()],
               "activation": _ACTIVATION[o.FusedActivationFunction()]}
        if kind == "DEPTHWISE_CONV_2D":
            out["depth_multiplier"] = o.DepthMultiplier()
        return out
    if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        o = load(tflite.Pool2DOptions)
        return {"padding": _PADDING[o.Padding()], "stride": [o.StrideH(), o.StrideW()],
                "filter": [o.FilterHeight(), o.FilterWidth()],
                "activation": _ACTIVATION[o.FusedActivationFunction()]}
    if kind in ("ADD", "MUL"):
        cls = tflite.AddOptions if kind == "ADD" else tflite.MulOptions
        return {"activation": _ACTIVATION[load(cls).FusedActivationFunction()]}
    if kind == "CONCATENATION":
        o = load(tflite.ConcatenationOptions)
        return {"axis": o.Axis(), "activation": _ACTIVATION[o.FusedActivationFunction()]}
    if kind == "RESIZE_BILINEAR":
        o = load(tflite.ResizeBilinearOptions)
        return {"align_corners": bool(o.AlignCorners()),
                "half_pixel_centers": bool(o.HalfPixelCenters())}
    if kind == "STRIDED_SLICE":
        o = load(tflite.StridedSliceOptions)
        return {"begin_mask": o.BeginMask(), "end_mask": o.EndMask(),
                "shrink_axis_mask": o.ShrinkAxisMask(), "ellipsis_mask": o.EllipsisMask(),
                "new_axis_mask": o.NewAxisMask()}
    return {}


def _custom_options(op, kind: str) -> dict:
    from flatbuffers import flexbuffers

    raw = bytes(op.CustomOptionsAsNumpy()) if op.CustomOptionsLength() else b""
    if kind == "Convolution2DTransposeBias":
        # MediaPipe's op stores a raw TfLiteTransposeConvParams: padding, stride_w, stride_h.
        padding, stride_w, stride_h = np.frombuffer(raw[:12], dtype="<i4").tolist()
        return {"padding": {1: "SAME", 2: "VALID"}[padding], "stride": [stride_h, stride_w]}
    if not raw:
        return {}
    return flexbuffers.Loads(raw)


def read_graph(tflite, data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """(graph description, constants ``{"t<index>": array}``) of one .tflite model."""
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f"expected one subgraph, found {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    names = _builtin_names(tflite)

    def array_of(index: int) -> np.ndarray | None:
        tensor = graph.Tensors(index)
        buffer = model.Buffers(tensor.Buffer())
        if buffer.DataLength() == 0:
            return None
        dtype = _NUMPY_TYPES[tensor.Type()]
        shape = tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else []
        return np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype).reshape(shape).copy()

    constants: dict[str, np.ndarray] = {}
    alias: dict[int, int] = {}  # DEQUANTIZE output -> its float16 constant
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        inputs = [int(j) for j in op.InputsAsNumpy()]
        outputs = [int(j) for j in op.OutputsAsNumpy()]
        if kind == "DEQUANTIZE":
            alias[outputs[0]] = inputs[0]
            continue
        if kind == "CUSTOM":
            kind = code.CustomCode().decode()
            options = _custom_options(op, kind)
            options["version"] = code.Version()
            kind = "CUSTOM:" + kind
        else:
            options = _options(tflite, op, kind)
        ops.append({"op": kind, "in": inputs, "out": outputs, "opt": options})

    used = set()
    for op in ops:
        op["in"] = [alias.get(j, j) for j in op["in"]]
        used.update(j for j in op["in"] if j >= 0)
    shapes = {}
    for index in range(graph.TensorsLength()):
        tensor = graph.Tensors(index)
        shapes[str(index)] = tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else []
        if index in used:
            value = array_of(index)
            if value is not None:
                constants[f"t{index}"] = value
    description = {
        "format": GRAPH_FORMAT,
        "ops": ops,
        "inputs": [int(j) for j in graph.InputsAsNumpy()],
        "outputs": {graph.Tensors(int(j)).Name().decode(): int(j) for j in graph.OutputsAsNumpy()},
        "shapes": shapes,
    }
    return description, constants


_SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
                      np.dtype(np.int32): "I32", np.dtype(np.int64): "I64",
                      np.dtype(np.uint8): "U8"}


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A .safetensors file with its header in a fixed order (sorted keys), so that converting
    twice gives the same bytes (``safetensors.save`` orders the metadata differently per run)."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def convert(source: Path, target: Path) -> None:
    import tflite
    from safetensors.numpy import load

    data = source.read_bytes()
    description, constants = read_graph(tflite, data)
    metadata = {
        "graph": json.dumps(description, separators=(",", ":")),
        "source": f"mediapipe==0.10.14 wheel: mediapipe/modules/{source.parent.name}/{source.name}",
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "license": "Apache-2.0 (Google LLC); see NOTICE beside this file",
    }
    encoded = safetensors_bytes(constants, metadata)
    restored = load(encoded)  # the safetensors library reads it back, value for value
    if sorted(restored) != sorted(constants) or not all(
            np.array_equal(restored[k], constants[k]) for k in constants):
        raise RuntimeError(f"{target.name}: the written tensors do not read back identically")
    with atomic_output(target, inputs={"model": source}) as tmp:
        Path(tmp).write_bytes(encoded)
    size = target.stat().st_size / 1e6
    print(f"{source.name} -> {target} ({len(description['ops'])} ops, {len(constants)} constants, "
          f"{size:.2f} MB)")


def _installed_modules() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: mediapipe is not installed; give --modules DIR (the "
                         "mediapipe/modules folder of an unpacked mediapipe==0.10.14 wheel)")
    return Path(list(spec.submodule_search_locations)[0]) / "modules"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", type=Path, default=None,
                        help="mediapipe/modules folder (default: the installed mediapipe's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write")
    args = parser.parse_args(argv)
    modules = args.modules or _installed_modules()
    for relative, name in MODELS:
        source = modules / relative
        if not source.is_file():
            raise SystemExit(f"error: {source} not found; is this mediapipe 0.10.14's modules "
                             "folder?")
        convert(source, args.out / f"{name}.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
