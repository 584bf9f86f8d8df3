"""Face parsing and mask extraction nodes."""
from __future__ import annotations

from comfy_api.latest import io

from ..segtalker_core import pipeline
from .comfy_glue import image_to_uint8, mask_to_tensor, progress_for, uint8_to_image
from .model_runs import model_on_device
from .region_inputs import region_toggles, selected_regions
from .sockets import CATEGORY, Faces, ParserModel, Segmentation


class SegTalkerFaceParse(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerFaceParse",
            display_name="SegTalker Face Parse",
            category=f"{CATEGORY}/parsing",
            description=(
                "Finds the face in every frame, aligns a square crop and parses it into the 19 "
                "CelebAMask-HQ classes. Frames without a face are flagged and passed through later."
            ),
            inputs=[
                io.Image.Input("image", tooltip="a portrait, or the frames of a video"),
                ParserModel.Input("parser", optional=True, tooltip="from SegTalker Load Face Parser; built-in when empty"),
                io.Int.Input("crop_size", default=512, min=64, max=1024, step=64),
                io.Int.Input(
                    "face_index", default=-1, min=-1, max=15,
                    tooltip="-1: the largest face; 0, 1, ...: faces from left to right",
                ),
                io.Float.Input(
                    "video_smoothing", default=0.5, min=0.0, max=1.0, step=0.05,
                    tooltip="temporal smoothing of the crop for video input (0 = none)",
                ),
            ],
            outputs=[
                Faces.Output(display_name="faces"),
                io.Image.Output(display_name="preview"),
            ],
        )

    @classmethod
    def execute(cls, image, crop_size: int, face_index: int, video_smoothing: float, parser=None) -> io.NodeOutput:
        frames = image_to_uint8(image, "image")
        model = parser if parser is not None else pipeline.builtin_parser_model()
        pipeline.require_component(model, ("parser",), slot="parser")
        with model_on_device(model, frame_size=crop_size):
            faces = pipeline.parse_faces(
                frames,
                model,
                crop_size=crop_size,
                face_index=face_index,
                smoothing=video_smoothing,
                input_name="image",
                progress=progress_for(len(frames)),
            )
        return io.NodeOutput(faces, uint8_to_image(pipeline.faces_preview(faces)))


class SegTalkerSegmentationToMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerSegmentationToMask",
            display_name="SegTalker Segmentation to Mask",
            category=f"{CATEGORY}/parsing",
            description=(
                "A MASK of the chosen regions, from a face parse or a talking segmentation, in crop "
                "space or projected back onto the original frames (for inpainting and compositing)."
            ),
            inputs=[
                Faces.Input("faces", optional=True),
                Segmentation.Input("segmentation", optional=True, tooltip="used instead of faces when connected"),
                io.Combo.Input("space", options=["crop", "frame"], default="crop"),
                io.Int.Input("dilate", default=0, min=-64, max=64, tooltip="pixels; negative erodes"),
                io.Int.Input("feather", default=0, min=0, max=64, tooltip="Gaussian feather in pixels"),
                *region_toggles(default_on=("lips", "mouth_interior")),
            ],
            outputs=[io.Mask.Output(display_name="mask")],
        )

    @classmethod
    def execute(cls, space: str, dilate: int, feather: int, faces=None, segmentation=None, **regions) -> io.NodeOutput:
        masks = pipeline.region_mask(
            faces=faces,
            segmentation=segmentation,
            regions=selected_regions(regions),
            dilate_px=dilate,
            feather_px=feather,
            space=space,
        )
        return io.NodeOutput(mask_to_tensor(masks))
