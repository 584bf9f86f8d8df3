"""Loader nodes: one per model slot (face parser, TSG, encoder, generator). Audio comes in
through core Load Audio.

One loader per slot because ComfyUI output types are static: each loader's output has its
slot's socket type, and each lists only the files its header says fill that slot.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..segtalker_core import pipeline
from ..segtalker_core.components import ENCODER, GENERATOR, PARSER, TSG
from ..segtalker_core.model_loading import file_slot
from ..segtalker_core.precision import PRECISIONS
from . import model_folders
from .sockets import CATEGORY, EncoderModel, GeneratorModel, ParserModel, TSGModel

BUILTIN = "builtin (MediaPipe landmarks, no weights)"
PRECISION_TOOLTIP = (
    "what the model computes in on the GPU: auto = what ComfyUI recommends for the device "
    "(fp32 on a CPU); bf16 falls back to fp16/fp32 where the device lacks it. The stored weights "
    "are never rounded."
)


def _precision_input() -> io.Combo.Input:
    return io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                          tooltip=PRECISION_TOOLTIP)


def _files_of(slot: str, folders: tuple[str, ...]) -> list[str]:
    """``"<folder>/<file>"`` choices whose header says they fill ``slot`` (cheap: header only,
    cached by path and mtime)."""
    choices = []
    for folder in folders:
        for choice in model_folders.list_files(folder):
            path = model_folders.full_path(choice)
            if path is not None and file_slot(path) == slot:
                choices.append(choice)
    return choices


class SegTalkerLoadParser(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        folders = (model_folders.FACE_PARSING, model_folders.SEGTALKER)
        choices = [BUILTIN] + _files_of(PARSER, folders)
        return io.Schema(
            node_id="SegTalkerLoadParser",
            display_name="SegTalker Load Face Parser",
            category=f"{CATEGORY}/loaders",
            description=(
                "Face parser for SegTalker Face Parse: the built-in MediaPipe-landmark parser, or "
                "a BiSeNet checkpoint (79999_iter.pth / .safetensors) from models/face_parsing. "
                "Only files that are face parsers are listed."
            ),
            inputs=[
                io.Combo.Input("parser", options=choices, default=BUILTIN),
                _precision_input(),
            ],
            outputs=[ParserModel.Output(display_name="parser")],
        )

    @classmethod
    def execute(cls, parser: str, precision: str = "auto") -> io.NodeOutput:
        if parser == BUILTIN:
            return io.NodeOutput(pipeline.builtin_parser_model())
        path = model_folders.resolve(parser)
        return io.NodeOutput(pipeline.load_model(path, slot=PARSER, precision=precision))


def _learned_schema(node_id: str, display_name: str, slot: str, what: str, socket) -> io.Schema:
    return io.Schema(
        node_id=node_id,
        display_name=display_name,
        category=f"{CATEGORY}/loaders",
        description=(
            f"A {what} bundle (.safetensors) from models/segtalker; only files whose header says "
            f"they are a {what} are listed. The description output says what the file is."
        ),
        inputs=[
            io.Combo.Input("model", options=_files_of(slot, (model_folders.SEGTALKER,))),
            _precision_input(),
        ],
        outputs=[
            socket.Output(display_name=slot),
            io.String.Output(display_name="description"),
        ],
    )


def _load_learned(model: str, slot: str, precision: str) -> io.NodeOutput:
    loaded = pipeline.load_model(model_folders.resolve(model), slot=slot, precision=precision)
    return io.NodeOutput(loaded, loaded.description, ui={"text": [loaded.description]})


class SegTalkerLoadTSG(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _learned_schema("SegTalkerLoadTSG", "SegTalker Load TSG", TSG,
                               "TSG (talking segmentation generator)", TSGModel)

    @classmethod
    def execute(cls, model: str, precision: str = "auto") -> io.NodeOutput:
        return _load_learned(model, TSG, precision)


class SegTalkerLoadEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _learned_schema("SegTalkerLoadEncoder", "SegTalker Load Encoder", ENCODER,
                               "mask-guided encoder", EncoderModel)

    @classmethod
    def execute(cls, model: str, precision: str = "auto") -> io.NodeOutput:
        return _load_learned(model, ENCODER, precision)


class SegTalkerLoadGenerator(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _learned_schema("SegTalkerLoadGenerator", "SegTalker Load Generator", GENERATOR,
                               "mask-guided StyleGAN generator", GeneratorModel)

    @classmethod
    def execute(cls, model: str, precision: str = "auto") -> io.NodeOutput:
        return _load_learned(model, GENERATOR, precision)
