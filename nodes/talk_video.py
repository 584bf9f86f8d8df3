"""The one-node dub for long videos: VIDEO + AUDIO -> VIDEO, streamed frame by frame.

IMAGE batches hold every frame as float32 (24 MB a 1080p frame); this node never builds one. It
hands the video file to the core (:func:`segtalker_core.talk_file.talk_video_file`), which decodes
chunk by chunk and encodes each output frame as it is made, into ComfyUI's temp folder. The output
file appears only when complete (see :mod:`segtalker_core.atomic_files`); a video that breaks off
is dubbed with the frames that decode (one warning in the log), and one larger than 4K is
downscaled to 3840 px on its long side first.
"""
from __future__ import annotations

import os
import uuid

from comfy_api.latest import io

from ..segtalker_core import talk_file
from .comfy_glue import progress_for, video_from_path, video_to_path
from .sockets import CATEGORY
from .synthesis import blend_input


class SegTalkerTalkVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SegTalkerTalkVideo",
            display_name="SegTalker Talk Video (long videos)",
            category=CATEGORY,
            description=(
                "Dubs a VIDEO with speech and returns a VIDEO, reading and writing frame by frame "
                "(memory stays flat however long the clip; built-in backends). Without audio the "
                "video is lip-synced to its own sound track. Feed the result to Save Video."
            ),
            inputs=[
                io.Video.Input("video", tooltip="the video to dub (e.g. Load Video); its frame rate is kept"),
                io.Audio.Input("audio", optional=True,
                               tooltip="the speech; empty: the video's own sound track"),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.05, tooltip="mouth motion scale"),
                io.Combo.Input("video_mode", options=["loop", "pingpong"], default="pingpong",
                               tooltip="when the video is shorter than the audio (then it is held in memory)"),
                blend_input(),
            ],
            outputs=[io.Video.Output(display_name="video")],
        )

    @classmethod
    def execute(cls, video, strength: float, video_mode: str, audio=None, blend: str = "linear") -> io.NodeOutput:
        import folder_paths

        temp_dir = folder_paths.get_temp_directory()
        source = video_to_path(video, "video", temp_dir)
        os.makedirs(temp_dir, exist_ok=True)  # the core writes only into folders that exist
        # A fresh name (never the input's), written under a temporary name and renamed when
        # complete: a cancelled run leaves nothing, and Save Video never sees a partial file.
        out = os.path.join(temp_dir, f"segtalker_talk_{uuid.uuid4().hex[:12]}.mp4")
        talk_file.talk_video_file(
            source, audio, out,
            settings=talk_file.TalkSettings(strength=strength, video_mode=video_mode, blend=blend),
            input_name="video",
            progress=progress_for(1),  # the core reports (done, total) with the real total
            inputs={"video": source},
        )
        return io.NodeOutput(video_from_path(out))
