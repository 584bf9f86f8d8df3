"""The stage functions the nodes and the CLI share: built-in and learned paths, and their bad input."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segtalker_core import labels as L
from segtalker_core import pipeline
from segtalker_core.containers import FaceTrack, TalkingSegmentation
from segtalker_core.frame_schedule import source_indices

REPO = Path(__file__).resolve().parents[1]
FPS = 25.0


def _read_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(REPO / "examples" / name)), cv2.COLOR_BGR2RGB)


def _tone_audio(seconds: float, rate: int = 16000) -> dict:
    """A ComfyUI AUDIO mapping: an amplitude-modulated vowel-like tone (speech-like envelope)."""
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3 * t))
    wave = envelope * (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 660 * t) + 0.3 * np.sin(2 * np.pi * 1200 * t))
    wave = (0.3 * wave / np.abs(wave).max()).astype(np.float32)
    return {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": rate}


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return _read_rgb("portrait.png")


@pytest.fixture(scope="module")
def faces(portrait) -> FaceTrack:
    return pipeline.parse_faces(portrait[None], crop_size=256)


@pytest.fixture(scope="module")
def speech_audio() -> dict:
    from speech import speak_wave

    wave, rate = speak_wave("papa mama baba, hello world")
    return {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": rate}


# ---------------------------------------------------------------------------------------------
# Parsing and masks


def test_parse_faces_fills_the_track(faces, portrait):
    assert len(faces) == 1 and faces.found.all()
    assert faces.crops.shape == (1, 256, 256, 3)
    assert faces.frame_size == portrait.shape[:2]
    present = set(np.unique(faces.regions[0]).tolist())
    for region in ("skin", "eyes", "brows", "nose", "lips", "hair"):
        assert L.region_index(region) in present, region


def test_frame_without_face_keeps_its_slot(portrait):
    grey = np.full_like(portrait, 128)
    track = pipeline.parse_faces(np.stack([portrait, grey, portrait]), crop_size=128)
    assert track.found.tolist() == [True, False, True]
    assert not track.labels[1].any()
    np.testing.assert_array_equal(track.frames[1], grey)


def test_no_face_anywhere_names_the_input(portrait):
    grey = np.full((2,) + portrait.shape, 90, np.uint8)
    with pytest.raises(pipeline.NoFaceError, match="'driving_video'"):
        pipeline.parse_faces(grey, input_name="driving_video", crop_size=128)


def test_parser_slot_refuses_other_components(portrait):
    wrong = pipeline.LoadedModel(component="tsg", runner=None, source="x.safetensors")
    with pytest.raises(ValueError, match="parser"):
        pipeline.parse_faces(portrait[None], wrong)


def test_faces_preview_shows_region_colours(faces):
    preview = pipeline.faces_preview(faces, opacity=1.0)
    lips = faces.regions[0] == L.region_index("lips")
    np.testing.assert_array_equal(preview[0][lips][0], L.REGION_PALETTE[L.region_index("lips")])


def test_region_mask_crop_and_frame_space(faces):
    crop_mask = pipeline.region_mask(faces=faces, regions=["lips"], space="crop")
    lips = faces.regions == L.region_index("lips")
    np.testing.assert_array_equal(crop_mask > 0.5, lips)
    frame_mask = pipeline.region_mask(faces=faces, regions=["lips"], space="frame")
    assert frame_mask.shape == (1,) + faces.frame_size
    # The frame-space mask lands where the crop's lips map back to in the original frame.
    depth = cv2.distanceTransform(lips[0].astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(np.argmax(depth), depth.shape)  # the pixel deepest inside the lips
    fx, fy = faces.inverse_transforms[0] @ np.array([x, y, 1.0])
    assert frame_mask[0, int(round(fy)), int(round(fx))] > 0.5
    grown = pipeline.region_mask(faces=faces, regions=["lips"], dilate_px=4)
    assert grown.sum() > crop_mask.sum()


def test_region_mask_needs_a_region(faces):
    with pytest.raises(ValueError, match="no region selected"):
        pipeline.region_mask(faces=faces, regions=[])


def test_source_indices_loop_and_pingpong():
    np.testing.assert_array_equal(source_indices(3, 7, "loop"), [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(source_indices(3, 7, "pingpong"), [0, 1, 2, 1, 0, 1, 2])
    np.testing.assert_array_equal(source_indices(5, 3, "pingpong"), [0, 1, 2])
    np.testing.assert_array_equal(source_indices(1, 4, "loop"), [0, 0, 0, 0])


# ---------------------------------------------------------------------------------------------
# Built-in chain


@pytest.fixture(scope="module")
def segmentation(faces, speech_audio) -> TalkingSegmentation:
    return pipeline.talking_segmentation(faces, speech_audio, FPS, blink=False)


def test_segmentation_has_one_map_per_audio_frame(segmentation, speech_audio, faces):
    duration = speech_audio["waveform"].shape[-1] / speech_audio["sample_rate"]
    assert len(segmentation) == int(np.ceil(duration * FPS)) == pipeline.audio_frame_count(speech_audio, FPS)
    assert segmentation.regions.shape[1:] == (256, 256)
    # Everything away from the mouth keeps the reference parsing exactly.
    top = slice(0, 110)
    np.testing.assert_array_equal(segmentation.regions[:, top], np.broadcast_to(faces.regions[0, top], segmentation.regions[:, top].shape))
    # The mouth moves: the lips+interior area changes over time.
    mouth = np.isin(segmentation.regions, [L.region_index("lips"), L.region_index("mouth_interior")]).sum(axis=(1, 2))
    assert mouth.std() > 0.05 * mouth.mean()


def test_synthesize_and_paste_back_builtin(segmentation, faces):
    style = pipeline.encode_style(faces)
    crops = pipeline.synthesize(segmentation, style)
    assert crops.shape == (len(segmentation), 256, 256, 3) and crops.dtype == np.uint8
    frames = pipeline.paste_back(crops, segmentation)
    assert frames.shape == (len(segmentation),) + faces.frame_size + (3,)
    # Far from the face (image corners) the original frame is untouched.
    np.testing.assert_array_equal(frames[:, :40, :40], np.broadcast_to(faces.frames[0, :40, :40], frames[:, :40, :40].shape))
    _check_head_motion(crops, segmentation, faces, frames)


def _check_head_motion(crops, segmentation, faces, still):
    """Paste-back with idle head motion: the person moves by the schedule, the far background
    (the portrait's top corners) stays bit for bit, the first frame is the portrait's pose."""
    moving = pipeline.paste_back(crops, segmentation, head_motion=1.0)
    np.testing.assert_array_equal(moving[0], still[0])
    for corner in ((slice(0, 40), slice(0, 40)), (slice(0, 40), slice(-40, None))):
        np.testing.assert_array_equal(moving[(slice(None), *corner)], still[(slice(None), *corner)])
    plan = pipeline.portrait_motion(faces, len(segmentation), FPS, 0, 1.0, segmentation.mouth_params[:, 0])
    motion, warp = plan.motion, plan.warp
    t = int(np.argmax(np.abs(motion.shift[:, 0])))
    # Where the forehead is (mid-brow landmark 9, frame pixels), the rigid motion moves it by:
    to_frame = cv2.invertAffineTransform(faces.transforms[0])
    point = to_frame[:, :2] @ faces.landmarks[0, 9, :2] + to_frame[:, 2]
    angle, scale = np.deg2rad(motion.roll[t]), 1.0 + motion.scale[t]
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pivot = np.array(warp.pivot)
    expected = pivot + rotation @ (point - pivot) + motion.shift[t] * warp.face_height - point
    assert np.abs(expected).max() > 1.0  # at strength 1 the forehead moves by pixels
    x, y = int(point[0]), int(point[1])
    box = (slice(y - 24, y + 8), slice(x - 24, x + 24))  # the forehead and brows: no mouth change
    grey = lambda image: cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)  # noqa: E731
    window = cv2.createHanningWindow((48, 32), cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(grey(still[t][box]), grey(moving[t][box]), window)
    assert abs(dx - expected[0]) < 0.6 and abs(dy - expected[1]) < 0.6, ((dx, dy), expected)
    with pytest.raises(ValueError, match="input 'head_motion' must be a number within 0..1"):
        pipeline.paste_back(crops, segmentation, head_motion=1.5)


def test_head_motion_is_for_portraits_only(faces):
    """A video has its own head motion: no idle motion is made for it, nor at strength 0."""
    import dataclasses

    video = dataclasses.replace(faces, **{name: np.concatenate([getattr(faces, name)] * 2) for name in
                                          ("frames", "crops", "labels", "landmarks", "transforms", "found")})
    assert pipeline.portrait_motion(video, 10, FPS, strength=1.0) is None
    assert pipeline.portrait_motion(faces, 10, FPS, strength=0.0) is None
    assert pipeline.portrait_motion(faces, 10, FPS, strength=0.5) is not None


def test_paste_back_refuses_mismatched_crops(segmentation):
    crops = np.zeros((len(segmentation) - 1, 256, 256, 3), np.uint8)
    with pytest.raises(ValueError, match="crops"):
        pipeline.paste_back(crops, segmentation)


def test_lip_colour_swap_moves_lips_toward_reference(faces, segmentation):
    from segtalker_core.procedural.region_style import region_lab_stats

    reference = pipeline.parse_faces(_read_rgb("reference_face.png")[None], crop_size=256)
    style = pipeline.encode_style(faces)
    swapped = pipeline.swap_style(style, pipeline.encode_style(reference), ["lips"], 1.0)
    plain = pipeline.synthesize(segmentation, style)[0]
    edited = pipeline.synthesize(segmentation, swapped)[0]
    lips = L.region_index("lips")
    regions = segmentation.regions[0]
    ref_lab = region_lab_stats(reference.crops[0], reference.regions[0])[0][lips, :3]
    before = np.linalg.norm(region_lab_stats(plain, regions)[0][lips, :3] - ref_lab)
    after = np.linalg.norm(region_lab_stats(edited, regions)[0][lips, :3] - ref_lab)
    assert after < 0.5 * before
    far = np.ones_like(regions, bool)
    far[cv2.dilate((regions == lips).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0] = False
    np.testing.assert_array_equal(edited[far], plain[far])


def test_edit_segmentation_hair_shape_from_mask(segmentation):
    hair = L.region_index("hair")
    mask = np.zeros((1, 256, 256), np.float32)
    mask[0, 10:40, 60:200] = 1.0
    edited = pipeline.edit_segmentation(segmentation, "hair", mask=mask, fill="background", mask_space="crop")
    assert (edited.regions[:, 10:40, 60:200] == hair).all()
    assert not (edited.regions[:, 41:] == hair).any()  # hair outside the painted shape is gone
    crops = pipeline.synthesize(edited, None)
    assert crops.shape[0] == len(edited)


def test_edit_segmentation_needs_one_shape_source(segmentation):
    with pytest.raises(ValueError, match="exactly one"):
        pipeline.edit_segmentation(segmentation, "hair")


def test_talk_frames_count_follows_audio(portrait):
    audio = _tone_audio(0.5)
    frames = pipeline.talk_frames(portrait[None], audio, 24.0, crop_size=256, method="acoustic")
    assert frames.shape == (12,) + portrait.shape


def test_audio_shorter_than_a_frame_gives_one_frame(faces):
    audio = _tone_audio(0.01)
    seg = pipeline.talking_segmentation(faces, audio, FPS, method="acoustic")
    assert len(seg) == 1


def test_bad_audio_input_is_named(faces):
    with pytest.raises((ValueError, TypeError), match="audio"):
        pipeline.talking_segmentation(faces, {"waveform": "not audio", "sample_rate": 16000}, FPS)


# ---------------------------------------------------------------------------------------------
# Learned path (tiny random-init bundles: right shapes and counts, not a face)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict:
    from segtalker_core.models.random_bundle import write_random_bundles

    paths = write_random_bundles(tmp_path_factory.mktemp("bundles"), resolution=64, seed=0)
    return {name: pipeline.load_model(str(path)) for name, path in paths.items()}


def test_learned_chain_runs_end_to_end(faces, bundles):
    audio = _tone_audio(0.6)
    seg = pipeline.talking_segmentation(faces, audio, FPS, model=bundles["tsg"])
    assert len(seg) == 15 and seg.regions.shape[1:] == (256, 256)
    assert seg.meta["backend"] == "tsg"
    style = pipeline.encode_style(faces, model=bundles["encoder"])
    assert style.kind == "learned" and style.codes.shape[:2] == (1, 12)
    # 256 px maps into a 64 px generator: resampled, with a logged warning.
    crops = pipeline.synthesize(seg, style, model=bundles["generator"], seed=3)
    again = pipeline.synthesize(seg, style, model=bundles["generator"], seed=3)
    assert crops.shape == (15, 256, 256, 3)
    np.testing.assert_array_equal(crops, again)  # noise is fixed per seed
    background = seg.regions == 0
    np.testing.assert_array_equal(crops[background], faces.crops[seg.source_index][background])
    frames = pipeline.paste_back(crops, seg)
    assert frames.shape == (15,) + faces.frame_size + (3,)


def test_learned_slots_refuse_wrong_components(faces, bundles):
    audio = _tone_audio(0.2)
    with pytest.raises(ValueError, match="tsg"):
        pipeline.talking_segmentation(faces, audio, FPS, model=bundles["generator"])
    with pytest.raises(ValueError, match="encoder"):
        pipeline.encode_style(faces, model=bundles["tsg"])


def test_learned_generator_refuses_builtin_style(faces, bundles):
    seg = pipeline.talking_segmentation(faces, _tone_audio(0.2), FPS, method="acoustic")
    with pytest.raises(ValueError, match="W\\+ codes"):
        pipeline.synthesize(seg, pipeline.encode_style(faces), model=bundles["generator"])


def test_learned_generator_refuses_nan_codes(faces, bundles):
    seg = pipeline.talking_segmentation(faces, _tone_audio(0.2), FPS, method="acoustic")
    style = pipeline.encode_style(faces, model=bundles["encoder"])
    style.codes = style.codes.clone()
    style.codes[0, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN|finite"):
        pipeline.synthesize(seg, style, model=bundles["generator"])


def test_builtin_renderer_refuses_learned_style(faces, bundles):
    seg = pipeline.talking_segmentation(faces, _tone_audio(0.2), FPS, method="acoustic")
    style = pipeline.encode_style(faces, model=bundles["encoder"])
    with pytest.raises(ValueError, match="built-in"):
        pipeline.synthesize(seg, style)


def test_tsg_generator_resolution_mismatch_resamples_with_a_warning(faces, bundles, tmp_path, caplog):
    from segtalker_core.models.random_bundle import write_random_bundles

    paths = write_random_bundles(tmp_path, resolution=128, seed=1)
    generator = pipeline.load_model(str(paths["generator"]))
    encoder = pipeline.load_model(str(paths["encoder"]))
    seg = pipeline.talking_segmentation(faces, _tone_audio(0.2), FPS, model=bundles["tsg"])  # TSG at 64
    style = pipeline.encode_style(faces, model=encoder)
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        crops = pipeline.synthesize(seg, style, model=generator)
    assert re.search("64 px.*128 px", caplog.text)
    assert crops.shape == (len(seg), 256, 256, 3)


def test_style_codes_of_another_encoder_are_refused(faces, bundles, tmp_path):
    from segtalker_core.models.random_bundle import write_random_bundles

    other = write_random_bundles(tmp_path, resolution=64, seed=7)
    foreign_style = pipeline.encode_style(faces, model=pipeline.load_model(str(other["encoder"])))
    seg = pipeline.talking_segmentation(faces, _tone_audio(0.2), FPS, method="acoustic")
    with pytest.raises(ValueError, match="another encoder|trained for generator"):
        pipeline.synthesize(seg, foreign_style, model=bundles["generator"])


def test_frontal_portrait_is_not_flagged_as_turned(faces, portrait, caplog):
    from segtalker_core.face.pose import yaw_degrees

    assert abs(float(yaw_degrees(faces.landmarks[0]))) < 10.0
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        pipeline.parse_faces(portrait[None], crop_size=128)
    assert "turned" not in caplog.text


def test_dubbing_in_chunks_reads_only_what_the_audio_needs():
    from segtalker_core.video_io import VideoReader

    audio = _tone_audio(1.0)  # 25 frames of the 50-frame example video
    with VideoReader(REPO / "examples" / "video.mp4", chunk_size=8) as reader:
        chunks = list(reader)
    seen = []

    def chunk_source():
        for chunk in chunks:
            seen.append(len(chunk))
            yield chunk

    frames = list(pipeline.iter_talk_chunks(chunk_source(), audio, FPS, crop_size=128, method="acoustic"))
    assert len(frames) == 25
    assert frames[0].shape == chunks[0].shape[1:]
    assert sum(seen) <= 32  # the reader stopped after the chunk that covered frame 25
    # Away from the face the dubbed frames are the video's own frames, in order.
    video = np.concatenate(chunks)
    for t in (0, 12, 24):
        np.testing.assert_array_equal(frames[t][:30, :30], video[t][:30, :30])


def test_dubbing_in_chunks_without_any_face_is_an_error():
    grey = [np.full((8, 96, 96, 3), 120, np.uint8) for _ in range(4)]
    with pytest.raises(pipeline.NoFaceError, match="'clip.mp4'"):
        list(pipeline.iter_talk_chunks(iter(grey), _tone_audio(1.0), FPS, crop_size=64,
                                       method="acoustic", input_name="clip.mp4"))


def test_edit_segmentation_mask_painted_on_the_frame(segmentation, faces):
    hair = L.region_index("hair")
    h, w = faces.frame_size
    painted = np.zeros((1, h, w), np.float32)
    painted[0, : h // 8] = 1.0  # a band along the top of the original image
    edited = pipeline.edit_segmentation(segmentation, "hair", mask=painted, mask_space="frame")
    expected = cv2.warpAffine(painted[0], faces.transforms[0], (256, 256)) > 0.5
    protected = np.isin(segmentation.regions[0], [L.region_index("lips"), L.region_index("mouth_interior")])
    np.testing.assert_array_equal(edited.regions[0] == hair, expected & ~protected)
    with pytest.raises(ValueError, match="mask_space"):
        pipeline.edit_segmentation(segmentation, "hair", mask=painted, mask_space="crop")


def test_edit_segmentation_shape_from_another_face(segmentation):
    reference = pipeline.parse_faces(_read_rgb("reference_face.png")[None], crop_size=256)
    edited = pipeline.edit_segmentation(segmentation, "hair", shape_from=reference)
    hair = L.region_index("hair")
    np.testing.assert_array_equal(edited.regions[0] == hair, reference.regions[0] == hair)


def test_face_mesh_runs_where_the_parser_runs(monkeypatch):
    """The detector of a parse (whole batch or chunked video) is made on the parser's device;
    a parser that says none leaves the detector's CPU default."""
    from segtalker_core.face import detect

    seen = []

    class Spy(detect.FaceMeshDetector):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("device"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(detect, "FaceMeshDetector", Spy)
    frames = _read_rgb("portrait.png")[None].repeat(2, axis=0)
    placed = pipeline.builtin_parser_model()
    placed.device = torch.device("cpu")  # what LoadedModel.place records
    list(pipeline.iter_face_tracks([frames], placed, crop_size=64))
    pipeline.parse_faces(frames, placed, crop_size=64)
    assert seen == [torch.device("cpu")] * 2
    seen.clear()
    list(pipeline.iter_face_tracks([frames], crop_size=64))
    assert seen == [None]
    assert pipeline.parser_device(None) is None
