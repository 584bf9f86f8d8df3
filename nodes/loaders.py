"""Loader nodes: face parser, learned SegTalker components, audio files."""
from __future__ import annotations

import hashlib
import os

from comfy_api.latest import io

from segtalker_core import pipeline

from . import model_folders
from .sockets import CATEGORY, Model

BUILTIN = "builtin (MediaPipe landmarks, no weights)"


class SegTalkerLoadParser(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = [BUILTIN]
        choices += model_folders.list_files(model_folders.FACE_PARSING)
        choices += model_folders.list_files(model_folders.SEGTALKER)
        return io.Schema(
            node_id="SegTalkerLoadParser",
            display_name="SegTalker Load Face Parser",
            category=f"{CATEGORY}/loaders",
            description=(
                "Face parser for SegTalker Face Parse: the built-in MediaPipe-landmark parser, or a "
                "BiSeNet checkpoint (79999_iter.pth / .safetensors) from models/face_parsing."
            ),
            inputs=[
                io.Combo.Input("parser", options=choices, default=BUILTIN),
            ],
            outputs=[Model.Output(display_name="parser")],
        )

    @classmethod
    def execute(cls, parser: str) -> io.NodeOutput:
        if parser == BUILTIN:
            return io.NodeOutput(pipeline.builtin_parser_model())
        model = pipeline.load_model(model_folders.resolve(parser))
        pipeline.require_component(model, ("parser",), slot="parser")
        return io.NodeOutput(model)


class SegTalkerLoadModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerLoadModel",
            display_name="SegTalker Load Model",
            category=f"{CATEGORY}/loaders",
            description=(
                "A learned SegTalker component from models/segtalker (.safetensors bundle: TSG, "
                "mask-guided encoder or generator). Its description output says what the file is."
            ),
            inputs=[
                io.Combo.Input("model", options=model_folders.list_files(model_folders.SEGTALKER)),
            ],
            outputs=[
                Model.Output(display_name="model"),
                io.String.Output(display_name="description"),
            ],
        )

    @classmethod
    def execute(cls, model: str) -> io.NodeOutput:
        loaded = pipeline.load_model(model_folders.resolve(model))
        return io.NodeOutput(loaded, loaded.description, ui={"text": [loaded.description]})


class SegTalkerLoadAudio(io.ComfyNode):
    """Core LoadAudio needs torchaudio; this one reads any audio or video file through PyAV."""

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
                io.Combo.Input("audio", options=sorted(files), upload=io.UploadType.audio),
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
