"""Video dubbing paints the clip's own mouth (issue 13, item 8): a bank of its open mouths.

The clip is made of the astronaut photo (a smile: lips apart, real teeth) and the same face
rendered at rest (mouth closed), alternating, as a video whose person talks would show both.
"""
from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np
import pytest

from segtalker_core import builtin, pipeline
from segtalker_core.procedural.mouth_bank import ENTRY_BYTES, MouthBank, MouthBankConfig, mouth_key
from segtalker_core.procedural.mouth_segmentation import opening_polygon, polygon_mask
from segtalker_core.procedural.renderer import RenderOptions, SourceFace
from segtalker_core.procedural.rig import RigConfig
from segtalker_core.procedural.warp import Box
from test_procedural_common import SIZE, astronaut, closed_astronaut, params, psnr

VIDEO_OPTIONS = RenderOptions(blink=False, rig=RigConfig(keep_reference_shape=False))  # as dubbing drives


@functools.lru_cache(maxsize=None)
def smile() -> SourceFace:
    return SourceFace(*astronaut(), RenderOptions(blink=False))


def closed_face() -> SourceFace:
    """A fresh closed-mouth frame prepared as video dubbing prepares each frame."""
    return SourceFace(*closed_astronaut(), VIDEO_OPTIONS)


@functools.lru_cache(maxsize=None)
def openings() -> tuple[tuple[float, np.ndarray, np.ndarray], ...]:
    """The smile re-opened by the rig: (jaw, crop, landmarks) at several jaw openings; each shows
    the smile's own upper teeth, so each is a bank entry with a different key."""
    out = []
    for jaw in (0.3, 0.45, 0.6, 0.75, 0.9, 1.0):
        frame = smile().frame(params(jaw=jaw, teeth=1.0))
        out.append((jaw, frame.crop, frame.landmarks))
    return tuple(out)


def interior_mask(*landmarks: np.ndarray, erode: int = 2, size: int = SIZE) -> np.ndarray:
    """Pixels inside every given inner-lip opening, away from its edge [size, size] bool."""
    mask = np.ones((size, size), bool)
    for points in landmarks:
        mask &= polygon_mask(opening_polygon(points), Box(0, 0, size, size)) > 0
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * erode + 1,) * 2, np.uint8)) > 0


def correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(a[mask].astype(np.float64).ravel(), b[mask].astype(np.float64).ravel())[0, 1])


# --- collecting ------------------------------------------------------------------------------


def test_only_open_mouths_with_teeth_enter_the_bank():
    bank = MouthBank(MouthBankConfig(min_spacing=0.0))  # keep repeats of one opening too
    crop, landmarks, _ = astronaut()
    closed, closed_landmarks, _ = closed_astronaut()
    kept = [bank.add_frame(c, lm, i) for i, (c, lm) in enumerate([(crop, landmarks), (closed, closed_landmarks)] * 3)]
    assert kept == [True, False] * 3
    assert sorted(e.frame_index for e in bank.entries) == [0, 2, 4]
    assert all(e.key[0] >= bank.config.min_gap and e.teeth >= bank.config.min_teeth for e in bank.entries)
    # An open mouth with no teeth (a dark cavity) does not count either.
    face = closed_face()
    dark = face.frame(params(jaw=0.8, teeth=0.0))
    dark_crop = dark.crop.copy()
    dark_crop[interior_mask(dark.landmarks, erode=0)] = (40, 10, 12)
    assert mouth_key(dark.landmarks)[0] > 0.1
    assert not MouthBank().add_frame(dark_crop, dark.landmarks, 0)


@pytest.fixture(scope="module")
def clip() -> "pipeline.FaceTrack":
    """Six frames of a video: open smile, closed, open, closed, ... parsed as a video."""
    frames = np.stack([astronaut()[0] if i % 2 == 0 else closed_astronaut()[0] for i in range(6)])
    return pipeline.parse_faces(frames, crop_size=256, video=True)


def test_collect_from_a_parsed_clip_keeps_its_open_frames_only(clip):
    bank = MouthBank(MouthBankConfig(min_spacing=0.0))
    assert bank.collect(clip) == 3
    assert sorted(e.frame_index for e in bank.entries) == [0, 2, 4]
    # Frames are counted over every track a bank is shown: a second chunk continues the count.
    bank.collect(clip)
    assert sorted(e.frame_index for e in bank.entries) == [0, 2, 4, 6, 8, 10]
    assert bank.seen == bank.scanned == 12
    # By default a repeat of an opening already kept is skipped: fewer copies of the smile.
    spaced = MouthBank()
    assert 1 <= spaced.collect(clip) < 3
    assert {e.frame_index for e in spaced.entries} <= {0, 2, 4}


def test_a_full_bank_drops_the_inner_of_two_equal_neighbours():
    """Of the two nearest openings, with as many teeth each, the one nearer to the rest goes:
    the widest opening stays even when it is the newest of the nearest pair."""
    from segtalker_core.procedural.mouth_bank import GRID_H, GRID_W, MouthEntry

    def entry(gap: float, index: int) -> MouthEntry:
        return MouthEntry(key=np.array([gap, 0.5, 0.6]), patch=np.zeros((GRID_H, GRID_W, 3), np.float32),
                          heights=np.zeros(GRID_W, np.float32), upper_depth=np.zeros(GRID_W, np.float32),
                          lower_depth=np.zeros(GRID_W, np.float32), ring_rgb=np.zeros(3),
                          teeth=1.0, frame_index=index, id=index)

    bank = MouthBank(MouthBankConfig(capacity=3))
    # Gaps 0.16, 0.26, 0.35 then the widest, 0.38: the nearest pair is (0.35, 0.38).
    bank.entries = [entry(gap, i) for i, gap in enumerate((0.16, 0.26, 0.35, 0.38))]
    bank.entries.pop(bank._redundant())
    assert [e.key[0] for e in bank.entries] == [0.16, 0.26, 0.38]
    # The narrowest the same way, as the older of its pair.
    bank.entries = [entry(gap, i) for i, gap in enumerate((0.16, 0.18, 0.28, 0.38))]
    bank.entries.pop(bank._redundant())
    assert [e.key[0] for e in bank.entries] == [0.16, 0.28, 0.38]
    # With fewer teeth, the widest goes all the same.
    bank.entries = [entry(gap, i) for i, gap in enumerate((0.16, 0.26, 0.35, 0.38))]
    bank.entries[3] = dataclasses.replace(bank.entries[3], teeth=0.5)
    bank.entries.pop(bank._redundant())
    assert [e.key[0] for e in bank.entries] == [0.16, 0.26, 0.35]


def test_memory_is_bounded_entries_and_frames_examined():
    bank = MouthBank(MouthBankConfig(capacity=3))
    for i, (_, crop, landmarks) in enumerate(openings()):
        bank.add_frame(crop, landmarks, i)
    assert len(bank.entries) == 3
    assert bank.nbytes <= 3 * (ENTRY_BYTES + 64)
    # A full bank keeps openings spread out: the narrowest and the widest stay.
    gaps = sorted(e.key[0] for e in bank.entries)
    every = [mouth_key(lm)[0] for _, _, lm in openings()]
    assert gaps[0] == pytest.approx(min(every)) and gaps[-1] == pytest.approx(max(every))
    # Only the first scan_frames frames shown are examined.
    few = MouthBank(MouthBankConfig(scan_frames=2))

    class Track:  # the FaceTrack fields collect reads
        crops = [c for _, c, _ in openings()]
        landmarks = [lm for _, _, lm in openings()]
        found = [True] * len(openings())

        def __len__(self):
            return len(self.crops)

    few.collect(Track())
    assert few.scanned == 2 and few.seen == len(openings())
    assert sorted(e.frame_index for e in few.entries) == [0, 1]


# --- retrieval -------------------------------------------------------------------------------


def test_retrieval_picks_the_entry_with_the_nearest_opening():
    bank = MouthBank()
    for i, (_, crop, landmarks) in enumerate(openings()):
        bank.add_frame(crop, landmarks, i)
    jaws = [jaw for jaw, _, _ in openings()]
    face = closed_face()
    for wanted in (0.29, 0.47, 0.58, 0.77, 0.88, 0.99):
        driven = face.drive(params(jaw=wanted, teeth=1.0)).landmarks
        entry, _ = bank.nearest(mouth_key(driven))
        expected = int(np.argmin(np.abs(np.array(jaws) - wanted)))
        assert entry.frame_index == expected, (wanted, entry.frame_index, expected)
        bank.reset()
        chosen = bank.pick(driven)
        assert chosen.weight == 1.0 and chosen.entries[0][0].frame_index == expected
    # Half way between two, the one that opens less wins: it can be extended (its teeth rows
    # stay on their lips), a wider one could only be squeezed.
    between = face.drive(params(jaw=0.525, teeth=1.0)).landmarks
    assert bank.nearest(mouth_key(between))[0].frame_index == 1  # jaw 0.45, not 0.6


def test_the_painted_interior_is_the_clips_real_teeth():
    """A closed frame driven to the smile's opening shows the smile's own teeth pixels."""
    crop, landmarks, _ = astronaut()
    pose_params = smile().rig.reference_params.astype(np.float64)
    synthesised = closed_face()
    pose = synthesised.drive(pose_params)
    before = synthesised.paint(pose)
    banked = closed_face()
    banked.interior.bank = MouthBank()
    assert banked.interior.bank.add_frame(crop, landmarks, 0)
    after = banked.paint(banked.drive(pose_params))
    inside = interior_mask(pose.landmarks, landmarks)
    assert inside.sum() > 500
    # The smile's real teeth, where they were: today's synthesis is far from them.
    assert psnr(after, crop, inside) > 28 and correlation(after, crop, inside) > 0.95
    assert psnr(before, crop, inside) < 15 and correlation(before, crop, inside) < 0.5
    # Outside the opening and its soft edge nothing differs.
    near = cv2.dilate(interior_mask(pose.landmarks, erode=0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    np.testing.assert_array_equal(after[~near], before[~near])


@pytest.mark.parametrize("wider", [0.15, 0.35])
def test_a_wider_opening_keeps_the_real_teeth_their_size(wider):
    """Driven wider than the entry, the upper teeth still hang from the upper lip, unscaled;
    well beyond it the synthesised cavity shows below them (no stretched teeth)."""
    crop, landmarks, _ = astronaut()
    face = closed_face()
    face.interior.bank = MouthBank()
    face.interior.bank.add_frame(crop, landmarks, 0)
    p = smile().rig.reference_params.astype(np.float64)
    p[0] += wider
    pose = face.drive(p)
    layers = face.interior.layers(pose.landmarks, face.rig.jaw_offset(p)[0], p[4], SIZE)
    assert layers.bank.max() == pytest.approx(1.0)
    bright = (layers.rgb.min(axis=-1) > 0.6) & (layers.alpha > 0.99) & (layers.bank > 0.5)
    rows = np.flatnonzero(bright.sum(axis=1) > 3)
    own = analyse_rows(crop, landmarks)
    # The band of bright teeth rows is as tall as the smile's (within 20 %), not stretched.
    assert abs(len(rows) - own) <= 0.2 * own, (len(rows), own)
    if wider > 0.3:
        middle = (layers.bank < 0.1) & (layers.alpha > 0.99)
        assert middle.sum() > 200  # the synthesised cavity between the rows
        assert layers.tongue[middle].mean() + layers.lower_teeth[middle].mean() > 0.1
        assert layers.upper_teeth.max() == 0.0  # no synthetic row under the real one


def analyse_rows(crop: np.ndarray, landmarks: np.ndarray) -> int:
    """Rows of the photo's opening with more than 3 bright teeth pixels."""
    inside = interior_mask(landmarks, erode=0)
    bright = inside & (crop.min(axis=-1) > 0.6 * 255)
    return int(np.count_nonzero(bright.sum(axis=1) > 3))


def test_an_entry_from_a_darker_frame_is_lit_like_the_frame_it_goes_into():
    crop, landmarks, _ = astronaut()
    darker = np.clip(crop * 0.75 + 0.5, 0, 255).astype(np.uint8)
    face = closed_face()
    face.interior.bank = MouthBank()
    assert face.interior.bank.add_frame(darker, landmarks, 0)
    pose_params = smile().rig.reference_params.astype(np.float64)
    pose = face.drive(pose_params)
    out = face.paint(pose)
    inside = interior_mask(pose.landmarks, landmarks)
    ratio = out[inside].astype(np.float64).mean() / crop[inside].astype(np.float64).mean()
    # Taken as stored the teeth would be at 0.75 of their brightness; the lips around both
    # openings tell the light apart (the gain is capped at 1.18, so 0.885 at most here).
    assert 0.85 < ratio < 0.92, ratio


def test_no_entry_falls_back_exactly_to_the_synthesis():
    closed, closed_landmarks, _ = closed_astronaut()
    empty = MouthBank()
    assert not empty.add_frame(closed, closed_landmarks, 0)
    p = params(jaw=0.7, teeth=1.0)
    plain, banked = closed_face(), closed_face()
    banked.interior.bank = empty
    np.testing.assert_array_equal(banked.frame(p).crop, plain.frame(p).crop)
    # An entry too far from the driven opening is not used either.
    far = MouthBank(MouthBankConfig(reach=0.0, fade=0.1))
    far.add_frame(*astronaut()[:2], 0)
    banked.interior.bank = far
    np.testing.assert_array_equal(banked.frame(params(jaw=1.0, teeth=1.0)).crop,
                                  plain.frame(params(jaw=1.0, teeth=1.0)).crop)


def test_the_choice_does_not_flicker():
    """Openings jittering between two entries keep one of them (a bare nearest choice flips)."""
    bank = MouthBank()
    for i, (_, crop, landmarks) in enumerate(openings()[1:3]):  # jaw 0.45 and 0.6
        bank.add_frame(crop, landmarks, i)
    face = closed_face()

    def nearest_id(jaw: float) -> int:
        return bank.nearest(mouth_key(face.drive(params(jaw=jaw, teeth=1.0)).landmarks))[0].id

    scan = np.linspace(0.45, 0.6, 61)
    boundary = float(scan[np.flatnonzero(np.diff([nearest_id(j) for j in scan]))[0]])
    jaws = boundary + 0.03 * np.random.default_rng(0).uniform(-1, 1, 40)
    chosen, nearest = [], []
    for jaw in jaws:
        driven = face.drive(params(jaw=float(jaw), teeth=1.0)).landmarks
        nearest.append(bank.nearest(mouth_key(driven))[0].id)
        chosen.append(bank.pick(driven).entries[-1][0].id)
    flips = lambda ids: int(np.count_nonzero(np.diff(ids)))  # noqa: E731
    assert flips(nearest) >= 8, flips(nearest)
    assert flips(chosen) <= 1, chosen
    # A real change of opening does switch, cross-fading over the configured frames.
    picks = [bank.pick(face.drive(params(jaw=jaw, teeth=1.0)).landmarks) for jaw in [0.62] * 5 + [0.42] * 5]
    assert [p.entries[-1][0].frame_index for p in picks] == [1] * 5 + [0] * 5
    shares = [p.entries[-1][1] if len(p.entries) == 2 else 1.0 for p in picks[5:]]
    assert shares == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert [p.entries[0][0].frame_index for p in picks[5:8]] == [1, 1, 1]  # the one fading out


def test_the_bank_does_not_blink_on_and_off_at_the_edge_of_its_reach():
    crop, landmarks, _ = astronaut()
    face = closed_face()
    own = float(smile().rig.reference_params[0])

    def driven(jaw: float) -> np.ndarray:
        return face.drive(params(jaw=jaw, teeth=1.0)).landmarks

    def weights(config: MouthBankConfig, start: float, jaws: np.ndarray) -> list[float]:
        bank = MouthBank(config)
        bank.add_frame(crop, landmarks, 0)
        return [bank.pick(driven(j)).weight for j in [start] * 3 + list(jaws)][3:]

    probe = MouthBank()
    probe.add_frame(crop, landmarks, 0)
    wider = np.linspace(own, 1.0, 60)
    distance = np.array([probe.distances(mouth_key(driven(j)))[0] for j in wider])
    config = MouthBankConfig()
    edge = float(wider[np.argmin(np.abs(distance - (config.reach + 0.5 * config.fade)))])
    jitter = edge + 0.02 * np.random.default_rng(1).uniform(-1, 1, 30)
    # Between reach and reach + fade the bank keeps what it had: on if it came from inside...
    assert set(weights(config, own, jitter)) == {1.0}
    # ... off if it came from far outside.
    assert set(weights(config, 1.0, jitter)) == {0.0}
    # Without the band it would blink (the same jitter crosses a bare threshold).
    bare = MouthBankConfig(reach=config.reach + 0.5 * config.fade, fade=1e-3, onoff_frames=0)
    levels = weights(bare, own, jitter)
    assert 0.0 in levels and 1.0 in levels


# --- dubbing ---------------------------------------------------------------------------------


def _dub(faces, jaw: float, mouth_bank) -> list[np.ndarray]:
    n = len(faces)
    articulation = np.tile(params(jaw=jaw, teeth=1.0).astype(np.float32), (n, 1))
    frames = builtin.iter_talking_segmentation(faces, articulation, 25.0, np.arange(n), blink=False,
                                               portrait=False, mouth_bank=mouth_bank)
    return [crop for crop, _ in builtin.iter_synthesize(frames, faces, portrait=False)]


def test_dubbing_paints_the_clips_teeth_into_its_closed_frames(clip):
    bank = MouthBank()
    jaw = float(smile().rig.reference_params[0])
    on = _dub(clip, jaw, bank)
    off = _dub(clip, jaw, MouthBankConfig(enabled=False))
    assert bank.entries and {e.frame_index for e in bank.entries} <= {0, 2, 4}
    for i in (1, 3, 5):
        # The closed frames' interiors had synthetic teeth; now the smile's, in its colours.
        own = clip.crops[0]
        pose = SourceFace(clip.crops[i], clip.landmarks[i], clip.regions[i], VIDEO_OPTIONS).drive(
            params(jaw=jaw, teeth=1.0))
        inside = interior_mask(pose.landmarks, clip.landmarks[0], erode=1, size=clip.crop_size)
        assert inside.sum() > 50
        assert correlation(on[i], own, inside) > correlation(off[i], own, inside) + 0.2


def test_a_clip_that_never_opens_its_mouth_dubs_as_before(clip):
    closed = clip.select([1, 3, 5])
    bank = MouthBank()
    on = _dub(closed, 0.6, bank)
    off = _dub(closed, 0.6, MouthBankConfig(enabled=False))
    assert bank.entries == [] and bank.scanned == 3
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)


def test_a_bank_shared_by_the_tracks_of_a_video_carries_its_mouths_over(clip):
    """A streamed video's chunks are separate tracks: one bank passed to each keeps the open
    mouths of earlier chunks for later ones that never open (each alone would have none)."""
    jaw = float(smile().rig.reference_params[0])
    first, second = clip.select([0, 1]), clip.select([3, 5])
    shared = MouthBank()
    _dub(first, jaw, shared)
    carried = _dub(second, jaw, shared)
    alone = _dub(second, jaw, MouthBankConfig())
    assert shared.seen == 4 and {e.frame_index for e in shared.entries} == {0}
    own = clip.crops[0]
    for k, i in enumerate((3, 5)):
        pose = SourceFace(clip.crops[i], clip.landmarks[i], clip.regions[i], VIDEO_OPTIONS).drive(
            params(jaw=jaw, teeth=1.0))
        inside = interior_mask(pose.landmarks, clip.landmarks[0], erode=1, size=clip.crop_size)
        assert correlation(carried[k], own, inside) > correlation(alone[k], own, inside) + 0.2


def _banks_shown(monkeypatch) -> dict[int, list[int]]:
    """Per mouth bank (by identity), the length of each track it is shown while a dub runs."""
    shown: dict[int, list[int]] = {}
    collect = MouthBank.collect

    def recording(self, faces):
        shown.setdefault(id(self), []).append(len(faces))
        return collect(self, faces)

    monkeypatch.setattr(MouthBank, "collect", recording)
    return shown


@pytest.mark.parametrize("entry", ["pipeline", "talk_file"])
def test_a_chunked_dub_shows_every_chunk_to_one_bank(monkeypatch, entry):
    """Both chunked dubs (the built-in one and the model chain on built-in stages) keep one bank
    over their tracks, so an open mouth of an early chunk can paint a later chunk's."""
    import video_clips as V
    from segtalker_core import talk_file
    from segtalker_core.audio.io import load_audio, read_audio_file

    frames = V.example_frames(20)
    wave, rate = read_audio_file(V.SPEECH)
    audio = load_audio(wave[..., int(1.0 * rate) : int(1.8 * rate)], sample_rate=rate, name="audio")
    chunks = (frames[i : i + 6] for i in range(0, len(frames), 6))
    shown = _banks_shown(monkeypatch)
    if entry == "pipeline":
        out = list(pipeline.iter_talk_chunks(chunks, audio, 25.0, crop_size=128))
    else:
        settings = talk_file.TalkSettings(crop_size=128, head_motion=0.0)
        out = list(talk_file.iter_talk_chunks_with_models(chunks, audio, 25.0, settings, talk_file.TalkModels()))
    assert len(out) == 20
    # One bank, shown several tracks (the chunks of 6 frames), each frame once.
    (tracks,) = shown.values()
    assert len(tracks) >= 2 and sum(tracks) == 20, shown
