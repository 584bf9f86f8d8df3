"""Loader nodes: one per model slot (face parser, TSG, encoder, generator), and audio files.

One loader per slot because ComfyUI output types are static: each loader's output has its
slot's socket type, and each lists only the files its header says fill that slot.
"""
from __future__ import annotations

import hashlib
import os

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


class SegTalkerLoadAudio(io.ComfyNode):
    """Speech from a file in the input folder, read through PyAV: for a ComfyUI without
    torchaudio, where core Load Audio is missing (the example workflows use core Load Audio)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        import folder_paths

        input_dir = folder_paths.get_input_directory()
        files = folder_paths.filter_files_content_types(os.listdir(input_dir), ["audio", "video"])
        return io.Schema(
            node_id="SegTalkerLoadAudio",
            display_name="SegTalker Load Audio",
            category=f"{CATEGORY}/loaders",
            description="Loads speech from an audio or video file in the input folder (wav, mp3, flac, m4a, mp4).",
            inputs=[
                # No upload widget: the frontend builds that one only for its own audio nodes
                # (it looks for an audio preview element that a pack node never gets, and the node
                # then fails to be created). Upload with core Load Audio, or copy into input/.
                io.Combo.Input("audio", options=sorted(files),
                               tooltip="an audio or video file in ComfyUI's input folder"),
            ],
            outputs=[io.Audio.Output(display_name="audio")],
        )

    @classmethod
    def execute(cls, audio: str) -> io.NodeOutput:
        import folder_paths

        path = folder_paths.get_annotated_filepath(audio)
        return io.NodeOutput(pipeline.load_audio_for_comfy(path))

    @classmethod
    def fingerprint_inputs(cls, audio: str):
        import folder_paths

        with open(folder_paths.get_annotated_filepath(audio), "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()

    @classmethod
    def validate_inputs(cls, audio: str):
        import folder_paths

        if not folder_paths.exists_annotated_filepath(audio):
            return f"audio file {audio!r} is not in the input folder; upload it or pick another"
        return True
