"""SegTalker Talk Video on the real ComfyUI server: VIDEO (+ AUDIO) -> VIDEO through Save Video,
and a VIDEO without an audio stream (fine with speech connected, a clear error without)."""
from __future__ import annotations

import pytest

import comfyui_host
import video_clips as V
from segtalker_core.video_io import probe_video

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


@pytest.fixture(scope="module")
def staged(comfyui_server, tmp_path_factory):
    d = tmp_path_factory.mktemp("talk_video_inputs")
    speech = V.speech_clip(d / "talk_video_speech.wav", 0.6)
    with_sound = V.write_clip(d / "talk_video_with_sound.mp4", V.example_frames(20), audio=speech)
    return {
        "speech": comfyui_server.put_input(speech),
        "silent": comfyui_server.put_input(V.EXAMPLE_VIDEO, "talk_video_silent.mp4"),
        "with_sound": comfyui_server.put_input(with_sound),
    }


def graph(video: str, speech: str | None, prefix: str) -> dict:
    nodes = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": video}},
        "2": {"class_type": "SegTalkerTalkVideo",
              "inputs": {"video": ["1", 0], "strength": 1.0, "video_mode": "pingpong"}},
        "3": {"class_type": "SaveVideo",
              "inputs": {"video": ["2", 0], "filename_prefix": prefix, "format": "auto", "codec": "auto"}},
    }
    if speech is not None:
        nodes["4"] = {"class_type": "LoadAudio", "inputs": {"audio": speech}}
        nodes["2"]["inputs"]["audio"] = ["4", 0]
    return nodes


def saved_video(server, history) -> str:
    videos = [f for f in server.output_files(history) if f.suffix == ".mp4"]
    assert len(videos) == 1, videos
    return str(videos[0].path)


def test_dub_of_a_silent_video_with_speech(comfyui_server, staged):
    history = comfyui_server.run_workflow(graph(staged["silent"], staged["speech"], "talk_video/silent"),
                                          timeout=300)
    info = probe_video(saved_video(comfyui_server, history))
    assert (info.frame_count, info.fps, info.width, info.has_audio) == (15, 25, 400, True)


def test_video_is_synced_to_its_own_sound_without_audio(comfyui_server, staged):
    history = comfyui_server.run_workflow(graph(staged["with_sound"], None, "talk_video/own"), timeout=300)
    info = probe_video(saved_video(comfyui_server, history))
    assert info.frame_count == 20 and info.has_audio


def test_video_without_audio_stream_and_no_audio_is_a_clear_error(comfyui_server, staged):
    with pytest.raises(comfyui_host.ComfyUIError, match="no audio stream"):
        comfyui_server.run_workflow(graph(staged["silent"], None, "talk_video/never"), timeout=300)
