"""Audio -> talking segmentation, and segmentation edits."""
from __future__ import annotations

from comfy_api.latest import io

from ..segtalker_core import pipeline
from ..segtalker_core.labels import REGIONS_12, SHAPE_EDIT_FILLS
from ..segtalker_core.working_memory import batch_size_choice
from .comfy_glue import progress_for, uint8_to_image
from .model_runs import batch_size_input, model_on_device
from .sockets import CATEGORY, Faces, Segmentation, TSGModel


class SegTalkerAudioToSegmentation(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerAudioToSegmentation",
            display_name="SegTalker Audio to Talking Segmentation",
            category=f"{CATEGORY}/talking",
            description=(
                "Drives the face's segmentation with speech: one label map per video frame "
                "(ceil(duration x fps) frames). Built-in viseme rig, or a learned TSG model."
            ),
            inputs=[
                Faces.Input("faces"),
                io.Audio.Input("audio"),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01),
                TSGModel.Input("tsg", optional=True, tooltip="a TSG bundle; the built-in viseme rig when empty"),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.05, tooltip="mouth motion scale"),
                io.Combo.Input(
                    "phonemes", options=["auto", "phonemes", "acoustic"], default="auto",
                    tooltip="auto: English phoneme recognition, acoustic features when it finds nothing; acoustic works for any language",
                ),
                io.Combo.Input(
                    "video_mode", options=["loop", "pingpong"], default="pingpong",
                    tooltip="when the input video is shorter than the audio",
                ),
                io.Boolean.Input("blink", default=True, tooltip="add natural blinks (built-in backend)"),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="blink timing"),
                batch_size_input(),
            ],
            outputs=[
                Segmentation.Output(display_name="segmentation"),
                io.Image.Output(display_name="preview"),
            ],
        )

    @classmethod
    def execute(cls, faces, audio, fps: float, strength: float, phonemes: str, video_mode: str,
                blink: bool, seed: int, tsg=None, batch_size: int = 0) -> io.NodeOutput:
        mono = pipeline.load_mono(audio, "audio")
        n_frames = pipeline.audio_frame_count(mono, fps)
        batch_size = batch_size_choice(batch_size, "batch_size")  # 0: None, automatic
        with model_on_device(tsg, batch=batch_size, frame_size=faces.crop_size):
            segmentation = pipeline.talking_segmentation(
                faces,
                mono,
                fps,
                model=tsg,
                strength=strength,
                method=phonemes,
                video_mode=video_mode,
                blink=blink,
                seed=seed,
                progress=progress_for(n_frames),
                batch_size=batch_size,
            )
        return io.NodeOutput(segmentation, uint8_to_image(pipeline.segmentation_preview(segmentation)))


class SegTalkerEditSegmentation(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerEditSegmentation",
            display_name="SegTalker Edit Segmentation",
            category=f"{CATEGORY}/editing",
            description=(
                "Edits a region's shape in every frame: take it from another face (its region shape, "
                "aligned in crop space) or paint a MASK into the region (one mask for all frames, or "
                "one per frame). Any region, the lips and mouth interior too: both synthesizers draw "
                "the edited map."
            ),
            inputs=[
                Segmentation.Input("segmentation"),
                io.Combo.Input("region", options=list(REGIONS_12), default="hair"),
                Faces.Input("shape_from", optional=True, tooltip="take the region's shape from this face (frame 0)"),
                io.Mask.Input("mask", optional=True, tooltip="paint: pixels > 0.5 become the region"),
                io.Combo.Input("mask_space", options=["frame", "crop"], default="frame",
                               tooltip="frame: painted on the original image; crop: on the aligned face crop"),
                io.Combo.Input("fill", options=list(SHAPE_EDIT_FILLS), default="skin",
                               tooltip="what replaces the region's old pixels that the new shape leaves"),
            ],
            outputs=[
                Segmentation.Output(display_name="segmentation"),
                io.Image.Output(display_name="preview"),
            ],
        )

    @classmethod
    def execute(cls, segmentation, region: str, fill: str, mask_space: str, shape_from=None, mask=None) -> io.NodeOutput:
        mask_array = None if mask is None else mask.detach().float().cpu().numpy()
        edited = pipeline.edit_segmentation(
            segmentation, region, shape_from=shape_from, mask=mask_array, fill=fill, mask_space=mask_space,
        )
        return io.NodeOutput(edited, uint8_to_image(pipeline.segmentation_preview(edited)))
