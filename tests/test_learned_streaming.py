"""The learned path streams (#15): batch sizes, streaming vs collected, host-side checks, the
worker thread, the batch picked from free memory, and the CPU allocator setting."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segtalker_core import learned, pipeline, precision
from segtalker_core.run_ahead import run_ahead
from segtalker_core.working_memory import pick_batch_size

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from segtalker_core.models.random_bundle import write_random_bundles

    image = cv2.cvtColor(cv2.imread(str(REPO / "examples" / "portrait.png")), cv2.COLOR_BGR2RGB)
    faces = pipeline.parse_faces(image[None], crop_size=128)
    paths = write_random_bundles(tmp_path_factory.mktemp("bundles"), resolution=64, seed=0)
    models = {k: pipeline.load_model(str(v)) for k, v in paths.items()}
    rate = 16000
    t = np.arange(int(0.44 * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 - 0.5 * np.cos(2 * np.pi * 3 * t))).astype(np.float32)
    audio = {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": rate}
    seg = pipeline.talking_segmentation(faces, audio, 25.0, model=models["tsg"])
    style = pipeline.encode_style(faces, model=models["encoder"])
    return faces, models, audio, seg, style


def test_tsg_maps_do_not_depend_on_batch_or_chunk(chain):
    faces, models, audio, seg, _ = chain
    mono = pipeline.load_mono(audio, "audio")
    n = len(seg)
    index = np.zeros(n, np.int64)
    ref = learned.tsg_segmentation(faces, mono, 25.0, n, index, models["tsg"], batch_size=8)
    assert ref.shape == (n, 128, 128) and np.array_equal(ref, seg.regions)
    for b in (1, 3, None):
        assert np.array_equal(learned.tsg_segmentation(faces, mono, 25.0, n, index, models["tsg"],
                                                       batch_size=b), ref), b
    blocks = list(learned.iter_tsg_segmentation(faces, mono, 25.0, n, index, models["tsg"],
                                                batch_size=2, chunk=4))
    assert [len(b) for b in blocks] == [4] * (n // 4) + ([n % 4] if n % 4 else [])
    assert np.array_equal(np.concatenate(blocks), ref)
    # A chunk is at least one batch (a smaller one would cap the batch).
    blocks = list(learned.iter_tsg_segmentation(faces, mono, 25.0, n, index, models["tsg"],
                                                batch_size=8, chunk=4))
    assert [len(b) for b in blocks] == [8] * (n // 8) + ([n % 8] if n % 8 else [])


def test_generator_crops_equal_a_direct_forward_pass(chain):
    """Against the pre-#15 computation done by hand for frame 0: int64 maps on the device, the
    generator's own label check, one frame a batch (at batch 1 the crops are bit-identical)."""
    faces, models, _, seg, style = chain
    g = models["generator"].runner
    crops = learned.synthesize_learned(seg, style, models["generator"], seed=3, batch_size=1)
    noise = g.make_noise(1, torch.Generator().manual_seed(3), device="cpu")
    maps = torch.from_numpy(seg.regions[:1].astype(np.int64))
    maps = torch.nn.functional.interpolate(maps[:, None].float(), size=(64, 64), mode="nearest-exact")[:, 0].long()
    with torch.inference_mode():
        image = g(style.codes[:1].float(), maps, noise=noise, valid=torch.from_numpy(style.valid[:1]))
    image = torch.nn.functional.interpolate(image.float(), size=(128, 128), mode="bilinear", align_corners=False)
    rgb = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()[0]
    face = seg.regions[0] != 0
    assert np.array_equal(crops[0][face], rgb[face])
    assert np.array_equal(crops[0][~face], faces.crops[0][~face])


def test_streamed_crops_equal_collected_ones_and_stay_bounded(chain):
    faces, models, _, seg, style = chain
    # Batches of 1 on both sides: across batch sizes the CPU conv kernels may round the last
    # level differently (they did before the streaming change too), and the clip's 11 frames
    # end in a remainder batch that the repeated stream fills from the next copy.
    ref = learned.synthesize_learned(seg, style, models["generator"], seed=3, batch_size=1)
    pulled = []

    def frames():  # the clip four times over: 44 frames
        for _ in range(4):
            for f in seg.frames():
                pulled.append(f)
                yield f

    stream = learned.iter_synthesize_learned(frames(), faces, style, models["generator"], seed=3,
                                             batch_size=1, ahead=1)
    crop, frame = next(stream)
    # One block of 8 frames being consumed, at most one computed ahead, one being gathered.
    assert len(pulled) <= 3 * 8 < 4 * len(seg)
    rest = [c for c, _ in stream]
    assert np.array_equal(np.stack([crop] + rest), np.concatenate([ref] * 4))
    assert frame.source_index == 0


def test_nonfinite_generator_output_is_refused_after_the_copy(chain, monkeypatch):
    faces, models, _, seg, style = chain
    g = models["generator"].runner
    forward = type(g).forward

    def broken(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        return out.masked_fill(torch.zeros_like(out, dtype=torch.bool).index_fill_(1, torch.tensor([0]), True), float("nan"))

    monkeypatch.setattr(type(g), "forward", broken)
    with pytest.raises(precision.NonFiniteOutputError, match="mask-guided generator .* fp32"):
        learned.synthesize_learned(seg, style, models["generator"], batch_size=2)


def test_maps_with_bad_labels_are_refused_on_the_host(chain):
    faces, models, _, seg, style = chain
    frame = seg.frame(0)
    frame.regions = frame.regions.copy()
    frame.regions[0, 0] = 12
    with pytest.raises(ValueError, match="labels up to 12"):
        list(learned.iter_synthesize_learned([frame], faces, style, models["generator"], ahead=0))


def test_run_ahead_keeps_order_and_raises_where_the_producer_failed():
    def items():
        yield from range(5)
        raise KeyError("broken at 5")

    got = []
    with pytest.raises(KeyError, match="broken at 5"):
        for x in run_ahead(items(), depth=2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_batch_size_follows_free_memory(chain):
    models = chain[1]
    g = models["generator"]
    small = pick_batch_size(g, "cuda", torch.float32, frame_size=512, free_bytes=1 << 24)
    large = pick_batch_size(g, "cuda", torch.float32, frame_size=512, free_bytes=1 << 34)
    assert 1 <= small < large <= 32
    assert pick_batch_size(g, "cpu", torch.float32) == learned.GENERATOR_BATCH  # CPU: unknown


def test_allocator_setting_applies_on_glibc():
    code = "from segtalker_core import allocator; print(allocator.keep_freed_blocks())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    import platform
    assert out == str(platform.libc_ver()[0] == "glibc" and sys.platform.startswith("linux"))


# --- the learned chain of talk_file streams (#15 item 2) ---------------------------------------


@pytest.fixture(scope="module")
def talk_chain(tmp_path_factory):
    """A 64 px portrait, random 64 px bundles, and 2.1 s of speech: 53 frames at 25 fps (not a
    multiple of any batch or chunk below, so the last block of each is a remainder)."""
    from segtalker_core.models.random_bundle import write_random_bundles
    from segtalker_core.talk_file import TalkModels

    image = cv2.cvtColor(cv2.imread(str(REPO / "examples" / "portrait.png")), cv2.COLOR_BGR2RGB)
    paths = write_random_bundles(tmp_path_factory.mktemp("talk_bundles"), resolution=64, seed=1)
    loaded = {k: pipeline.load_model(str(v)) for k, v in paths.items()}
    models = TalkModels(tsg=loaded["tsg"], encoder=loaded["encoder"], generator=loaded["generator"],
                        batch_size=3)
    speech = pipeline.load_mono(str(REPO / "examples" / "speech.wav"))
    wave = speech.samples[: int(2.1 * speech.sample_rate)].copy()
    mono = pipeline.load_mono({"waveform": torch.from_numpy(wave)[None, None],
                               "sample_rate": speech.sample_rate})
    return image, models, mono


def _settings(**kw):
    from segtalker_core.talk_file import TalkSettings

    return TalkSettings(crop_size=64, head_motion=0.0, **kw)


def _collected_talk(image, mono, settings, models):
    """The learned chain as it ran before it streamed: every stage collected in turn."""
    faces = pipeline.parse_faces(image[None], models.parser, crop_size=settings.crop_size)
    seg = pipeline.talking_segmentation(faces, mono, 25.0, model=models.tsg, strength=settings.strength,
                                        method=settings.method, blink=settings.blink, seed=settings.seed,
                                        batch_size=models.batch_size)
    if models.generator is not None:
        style = pipeline.encode_style(faces, models.encoder)
        crops = pipeline.synthesize(seg, style, model=models.generator, seed=settings.seed,
                                    batch_size=models.batch_size)
        pairs = zip(crops, seg.frames())
    else:
        pairs = pipeline.iter_synthesize(seg.frames(), faces, None,
                                         activity=pipeline.segmentation_activity(seg))
    return np.stack(list(pipeline.iter_paste_back(pairs, faces)))


@pytest.mark.parametrize("stages", ["tsg+generator", "tsg only", "generator only"])
def test_streamed_talk_equals_the_collected_chain(talk_chain, stages):
    """Bit-identical frames, and exactly the audio's count (53), whichever stages are learned."""
    import dataclasses

    from segtalker_core import talk_file

    image, models, mono = talk_chain
    if stages == "tsg only":
        models = dataclasses.replace(models, encoder=None, generator=None)
    elif stages == "generator only":
        models = dataclasses.replace(models, tsg=None)
    settings = _settings()
    seen = []
    streamed = np.stack(list(talk_file.iter_talk_with_models(
        image[None], mono, 25.0, settings, models, progress=lambda d, t: seen.append((d, t)))))
    assert len(streamed) == pipeline.audio_frame_count(mono, 25.0) == 53
    assert seen[-1] == (53, 53)
    assert np.array_equal(streamed, _collected_talk(image, mono, settings, models))


def test_streamed_talk_holds_a_bounded_number_of_frames(talk_chain, monkeypatch):
    """Instrumented: the TSG's maps made minus the frames written, at every frame, stays below
    one TSG chunk plus the generator's blocks in flight (consumed, one ahead, one gathering) --
    a few dozen frames, however long the audio; the collected chain held all 53 at the first."""
    from segtalker_core import talk_file

    image, models, mono = talk_chain
    chunk = 8
    made = [0]
    real = learned.iter_tsg_segmentation

    def counted(*args, **kwargs):
        kwargs["chunk"] = chunk
        for block in real(*args, **kwargs):
            made[0] += len(block)
            yield block

    monkeypatch.setattr(learned, "iter_tsg_segmentation", counted)
    held = []
    for written, _ in enumerate(talk_file.iter_talk_with_models(image[None], mono, 25.0, _settings(),
                                                                models), 1):
        held.append(made[0] - written)
    blocks_in_flight = 3 * learned._block_frames(models.batch_size)  # 3 * 9 frames at batch 3
    assert len(held) == made[0] == 53
    assert max(held) <= chunk + blocks_in_flight < 53, max(held)
    assert held[0] < 53 - 1  # the first frame came before the TSG had made them all


def test_stopping_early_stops_the_generator_thread(talk_chain):
    import threading

    from segtalker_core import talk_file

    image, models, mono = talk_chain
    frames = talk_file.iter_talk_with_models(image[None], mono, 25.0, _settings(), models)
    next(frames)
    assert any(t.name == "segtalker-generator" for t in threading.enumerate())
    frames.close()
    assert not any(t.name == "segtalker-generator" for t in threading.enumerate())


def test_batch_size_zero_is_automatic_and_negative_is_refused(talk_chain):
    from segtalker_core.talk_file import TalkModels
    from segtalker_core.working_memory import batch_size_choice

    assert batch_size_choice(0) is None and batch_size_choice(None) is None
    assert batch_size_choice(5) == 5
    assert TalkModels(batch_size=0).batch_size is None
    for bad in (-1, 2.5, "4"):
        with pytest.raises(ValueError, match="input 'batch_size'"):
            batch_size_choice(bad)
    with pytest.raises(ValueError, match="input 'batch_size' is -2: .*0 to pick it automatically"):
        TalkModels(batch_size=-2)
    image, models, mono = talk_chain
    faces = pipeline.parse_faces(image[None], crop_size=64)
    with pytest.raises(ValueError, match="input 'batch_size' is -1"):
        pipeline.talking_segmentation(faces, mono, 25.0, model=models.tsg, batch_size=-1)
    # Automatic on a CPU resolves to the defaults, so it is the fixed batch's result exactly.
    auto = pipeline.talking_segmentation(faces, mono, 25.0, model=models.tsg, batch_size=0)
    fixed = pipeline.talking_segmentation(faces, mono, 25.0, model=models.tsg, batch_size=learned.TSG_BATCH)
    assert np.array_equal(auto.regions, fixed.regions)
    style = pipeline.encode_style(faces, models.encoder)
    crops = pipeline.synthesize(auto, style, model=models.generator, batch_size=0)
    assert np.array_equal(crops, pipeline.synthesize(auto, style, model=models.generator,
                                                     batch_size=learned.GENERATOR_BATCH))


def test_picked_generator_batch_is_not_capped_by_the_block(chain, monkeypatch):
    """Automatic: the batch is picked before frames are gathered, so a block holds whole batches
    of the picked size (a block sized for the default batch would cap a GPU's 32)."""
    faces, models, _, seg, style = chain
    sizes = []
    real = learned.AdaptiveBatch

    def spy(size, what):
        sizes.append(size)
        return real(size, what)

    monkeypatch.setattr(learned, "AdaptiveBatch", spy)
    from segtalker_core import working_memory
    monkeypatch.setattr(working_memory, "pick_batch_size", lambda *a, **k: 16)
    blocks = []
    real_blocks = learned._frame_blocks

    def frame_blocks(frames, n):
        for b in real_blocks(frames, n):
            blocks.append(len(b[0]))
            yield b

    monkeypatch.setattr(learned, "_frame_blocks", frame_blocks)
    frames = [f for _ in range(3) for f in seg.frames()]  # 33 frames
    out = list(learned.iter_synthesize_learned(frames, faces, style, models["generator"], ahead=0))
    assert len(out) == 33 and sizes == [16] and blocks == [16, 16, 1]


# --- a video at least as long as the audio is read in chunks with learned models too ----------


def _speech(seconds: float):
    speech = pipeline.load_mono(str(REPO / "examples" / "speech.wav"))
    wave = speech.samples[: int(seconds * speech.sample_rate)].copy()
    return pipeline.load_mono({"waveform": torch.from_numpy(wave)[None, None],
                               "sample_rate": speech.sample_rate})


@pytest.mark.parametrize("stages", ["tsg+generator", "generator only"])
def test_chunked_video_equals_the_held_chain(talk_chain, stages):
    """Chunks of 7 frames (tracks released as the crop smoothing allows) give the held chain's
    frames bit for bit when the generator draws them at the same batches (the TSG's reference
    map and the style come from the first face either way). The built-in renderer keeps per-run state, so after a TSG
    it restarts per track, as the built-in chunked dub does (within a few levels; not checked)."""
    import dataclasses

    import video_clips as V
    from segtalker_core import talk_file

    _, models, _ = talk_chain
    # Batches of 1: a track's last batch is a remainder, whose size the CPU kernels round by.
    models = dataclasses.replace(models, batch_size=1)
    if stages == "generator only":
        models = dataclasses.replace(models, tsg=None)
    frames, mono = V.example_frames(30), _speech(1.0)  # 25 frames of audio
    settings = _settings()
    held = np.stack(list(talk_file.iter_talk_with_models(frames[:25], mono, 25.0, settings, models,
                                                         "video", blink=False)))
    chunks = (frames[i : i + 7] for i in range(0, len(frames), 7))
    seen = []
    streamed = np.stack(list(talk_file.iter_talk_chunks_with_models(
        chunks, mono, 25.0, settings, models, progress=lambda d, t: seen.append((d, t)))))
    assert streamed.shape == held.shape and seen[-1] == (25, 25)
    assert np.array_equal(streamed, held)


def test_chunked_video_holds_a_bounded_number_of_frames(talk_chain):
    """Instrumented chunk reader: frames decoded minus frames written stays below a chunk, the
    frames the crop smoothing waits for and the generator's blocks in flight, far below the
    clip (100 frames); the held chain decoded all before writing one."""
    import video_clips as V
    from segtalker_core import talk_file

    _, models, _ = talk_chain
    clip = V.example_frames(50)
    frames = np.concatenate([clip, clip[::-1]])  # 100 frames, the turn as smooth as the clip
    decoded = [0]

    def chunks():
        for i in range(0, len(frames), 5):
            decoded[0] += len(frames[i : i + 5])
            yield frames[i : i + 5]

    held = [decoded[0] - written for written, _ in enumerate(
        talk_file.iter_talk_chunks_with_models(chunks(), _speech(4.0), 25.0, _settings(), models), 1)]
    assert len(held) == 100
    assert max(held) <= 45 < 100, max(held)


def test_learned_video_file_is_streamed(talk_chain, tmp_path):
    import video_clips as V
    from segtalker_core import talk_file
    from segtalker_core.video_io import probe_video

    _, models, _ = talk_chain
    speech = V.speech_clip(tmp_path / "speech.wav", 0.5)
    result = talk_file.talk_video_file(V.EXAMPLE_VIDEO, str(speech), tmp_path / "dub.mp4",
                                       settings=_settings(), models=models)
    assert result.streamed and result.frames == 13 == probe_video(result.path).frame_count
    short = V.write_clip(tmp_path / "short.mp4", V.example_frames(5))  # shorter: held, ping-ponged
    result = talk_file.talk_video_file(short, str(speech), tmp_path / "short_dub.mp4",
                                       settings=_settings(), models=models)
    assert not result.streamed and result.frames == 13
