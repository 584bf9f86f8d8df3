"""Synthesis of face crops, paste-back, and the one-node Talk chain."""
from __future__ import annotations

from comfy_api.latest import io

from ..segtalker_core import pipeline
from ..segtalker_core.face.paste import BLEND_MODES
from ..segtalker_core.procedural.head_motion import DEFAULT_STRENGTH as DEFAULT_HEAD_MOTION
from ..segtalker_core.working_memory import batch_size_choice
from .comfy_glue import image_to_uint8, progress_for, uint8_to_image
from .model_runs import batch_size_input, model_on_device
from .sockets import CATEGORY, GeneratorModel, Segmentation, Style


def blend_input() -> io.Combo.Input:
    """Paste-back blend. Optional and the node's last widget: UI workflows saved before it load with
    their widgets in place, and API-format prompts without it still validate (linear)."""
    return io.Combo.Input(
        "blend", options=list(BLEND_MODES), default="linear", optional=True,
        tooltip="linear: one alpha blend (fast); multiband: Laplacian-pyramid blend as E4S pastes "
                "(smoother seams, slower)",
    )


def head_motion_input() -> io.Float.Input:
    """Idle head motion of a portrait. Optional and after ``blend``: UI workflows saved before it
    load with their widgets in place (it takes its default), API prompts without it still validate."""
    return io.Float.Input(
        "head_motion", default=DEFAULT_HEAD_MOTION, min=0.0, max=1.0, step=0.05, optional=True,
        tooltip="portraits: small natural head movement (slow sway, nods on stressed syllables), "
                "the background kept steady; 0: the head stays still. A video keeps its own motion",
    )


class SegTalkerSynthesize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerSynthesize",
            display_name="SegTalker Synthesize",
            category=f"{CATEGORY}/synthesis",
            description=(
                "Renders one face crop per segmentation frame from the style codes: the built-in "
                "mesh-warp renderer, or a learned mask-guided StyleGAN generator."
            ),
            inputs=[
                Segmentation.Input("segmentation"),
                Style.Input("style"),
                GeneratorModel.Input("generator", optional=True, tooltip="a mask-guided generator bundle; built-in when empty"),
                io.Combo.Input("background", options=["source", "generated"], default="source",
                               tooltip="keep the source frame's background, or render it from its own code"),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="noise, fixed for the whole video"),
                batch_size_input(),
            ],
            outputs=[io.Image.Output(display_name="crops")],
        )

    @classmethod
    def execute(cls, segmentation, style, background: str, seed: int, generator=None,
                batch_size: int = 0) -> io.NodeOutput:
        batch_size = batch_size_choice(batch_size, "batch_size")  # 0: None, automatic
        with model_on_device(generator, batch=batch_size, frame_size=segmentation.faces.crop_size):
            crops = pipeline.synthesize(
                segmentation,
                style,
                model=generator,
                background=background,
                seed=seed,
                progress=progress_for(len(segmentation)),
                batch_size=batch_size,
            )
        return io.NodeOutput(uint8_to_image(crops))


class SegTalkerPasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerPasteBack",
            display_name="SegTalker Paste Back",
            category=f"{CATEGORY}/synthesis",
            description="Blends the synthesized crops back into the original frames at full resolution.",
            inputs=[
                io.Image.Input("crops"),
                Segmentation.Input("segmentation", tooltip="says which original frame and crop transform each crop belongs to"),
                io.Int.Input("feather", default=12, min=0, max=64, tooltip="blend edge width in crop pixels"),
                blend_input(),
                head_motion_input(),
            ],
            outputs=[io.Image.Output(display_name="frames")],
        )

    @classmethod
    def execute(cls, crops, segmentation, feather: int, blend: str = "linear",
                head_motion: float = DEFAULT_HEAD_MOTION) -> io.NodeOutput:
        crops_u8 = image_to_uint8(crops, "crops")
        frames = pipeline.paste_back(
            crops_u8, segmentation, feather_px=feather, progress=progress_for(len(crops_u8)), blend=blend,
            head_motion=head_motion,
        )
        return io.NodeOutput(uint8_to_image(frames))


class SegTalkerTalk(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerTalk",
            display_name="SegTalker Talk (all-in-one)",
            category=CATEGORY,
            description=(
                "Portrait or video + speech -> lip-synced frames, with the built-in backends. "
                "Feed the frames and the audio to Create Video + Save Video."
            ),
            inputs=[
                io.Image.Input("image", tooltip="a portrait, or the frames of a video to dub"),
                io.Audio.Input("audio"),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.05),
                io.Combo.Input("video_mode", options=["loop", "pingpong"], default="pingpong"),
                io.Boolean.Input("blink", default=True),
                blend_input(),
                head_motion_input(),
            ],
            outputs=[
                io.Image.Output(display_name="frames"),
                io.Audio.Output(display_name="audio"),
                io.Float.Output(display_name="fps"),
            ],
        )

    @classmethod
    def execute(cls, image, audio, fps: float, strength: float, video_mode: str, blink: bool,
                blend: str = "linear", head_motion: float = DEFAULT_HEAD_MOTION) -> io.NodeOutput:
        frames_in = image_to_uint8(image, "image")
        mono = pipeline.load_mono(audio, "audio")
        n_frames = pipeline.audio_frame_count(mono, fps)
        frames = pipeline.talk_frames(
            frames_in,
            mono,
            fps,
            strength=strength,
            video_mode=video_mode,
            blink=blink,
            blend=blend,
            head_motion=head_motion,
            progress=progress_for(n_frames),
        )
        return io.NodeOutput(uint8_to_image(frames), audio, fps)
