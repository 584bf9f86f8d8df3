"""Style-code extraction and swapping."""
from __future__ import annotations

from comfy_api.latest import io

from ..segtalker_core import pipeline
from .model_runs import model_on_device
from .region_inputs import region_toggles, selected_regions
from .sockets import CATEGORY, EncoderModel, Faces, Style


class SegTalkerEncodeStyle(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerEncodeStyle",
            display_name="SegTalker Encode Style",
            category=f"{CATEGORY}/style",
            description=(
                "Per-region style codes of one face (one reference frame, so the video does not "
                "flicker): learned W+ codes from an encoder, or built-in colour statistics."
            ),
            inputs=[
                Faces.Input("faces"),
                EncoderModel.Input("encoder", optional=True, tooltip="a mask-guided encoder bundle; built-in when empty"),
                io.Int.Input("frame", default=0, min=0, max=100000, tooltip="which frame of the faces is the reference"),
            ],
            outputs=[Style.Output(display_name="style")],
        )

    @classmethod
    def execute(cls, faces, frame: int, encoder=None) -> io.NodeOutput:
        with model_on_device(encoder, frame_size=faces.crop_size):
            style = pipeline.encode_style(faces, model=encoder, frame=frame)
        return io.NodeOutput(style)


class SegTalkerSwapStyle(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerSwapStyle",
            display_name="SegTalker Swap Style",
            category=f"{CATEGORY}/editing",
            description="Gives the chosen regions the look of a reference face; strength interpolates the codes.",
            inputs=[
                Style.Input("style"),
                Style.Input("reference"),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05),
                *region_toggles(default_on=("lips",)),
            ],
            outputs=[Style.Output(display_name="style")],
        )

    @classmethod
    def execute(cls, style, reference, strength: float, **regions) -> io.NodeOutput:
        return io.NodeOutput(pipeline.swap_style(style, reference, selected_regions(regions), strength))
