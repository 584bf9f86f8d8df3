"""The built-in backends of each stage: viseme rig, mesh-warp renderer, region colour statistics.

No weight files; everything runs on the CPU. The stages stream: each takes and yields one
:class:`~.containers.SegmentationFrame` at a time, so a whole talk (parse -> talking segmentation
-> synthesis -> paste-back) keeps nothing per frame. A portrait is driven through one
:class:`~.procedural.renderer.SourceFace` (its rig and warp mesh are built once); a video is
re-driven frame by frame on each frame's own crop, keeping the head pose of the video.

A portrait at silence keeps the person's own mouth: in the rests between utterances the audio
articulation (0 = silence) is anchored at the source's estimated pose
(:func:`~.procedural.rig.anchor_at_reference`), so its parted lips and teeth stay as they are; in
speech the articulation drives the mouth as it is, handing over as the articulation leaves and
returns to its rest pose (:func:`~.procedural.rig.blend_rest_and_speech`); p/b/m seal the lips.
Video dubbing drives each frame absolutely (0 = closed): the frame's own mouth moved with the
original speech, which the new speech replaces. Where the new speech opens the mouth, a video's
interior and teeth are its own: a :class:`~.procedural.mouth_bank.MouthBank` collects the clip's
open mouths (with teeth) and each drawn frame takes the one nearest its driven opening, warped into
place (``mouth_bank``: a :class:`~.procedural.mouth_bank.MouthBankConfig`, on by default, or a bank
to share between the tracks of one video).

The renderer draws what the maps say (:class:`MapFollower`): a map the rig made itself comes with
its pose and is drawn at once; any other map (edited, or from a learned TSG) is measured and the
rig fitted to it, with the articulation it was made from as a hint that counts only where it
agrees with the map.
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator

import numpy as np

from . import labels as L
from .containers import FaceTrack, SegmentationFrame, StyleCodes
from .masks import dilate
from .procedural.mouth_bank import MouthBank, MouthBankConfig
from .procedural.renderer import DrivenFrame, RenderOptions, SourceFace, eye_closure_schedule
from .audio.articulation import ArticulationTrack
from .procedural.rig import RigConfig, blend_rest_and_speech, check_params, speech_activity

log = logging.getLogger("segtalker")

MOUTH_REGIONS = (L.region_index("lips"), L.region_index("mouth_interior"))
EYES = L.region_index("eyes")
_AGREE_SHARE = 0.02  # of the source's lips area: mouth pixels a hint may get wrong and still count
_AGREE_MIN_PX = 4
_EYE_AGREE_SHARE = 0.05  # of the source's eye area
_RESIDUAL_REACH = 0.06  # IOD: how far past the fitted mouth a map's mouth pixels are painted


class FrameDriver:
    """The source face behind each output frame.

    A portrait (one source face) reuses one :class:`SourceFace`; a video builds each frame's from
    that frame's own crop (cached while consecutive output frames reuse the same input frame),
    with the synthesised-teeth colours of the first face seen, so they do not flicker.

    ``mouth_bank`` (video only): a :class:`~.procedural.mouth_bank.MouthBankConfig` (None: the
    default, on) to build a bank of this track's open mouths from, or a
    :class:`~.procedural.mouth_bank.MouthBank` to add this track's frames to and use (one bank
    shared by the tracks of a streamed video keeps its entries and its choice across them). The
    bank is collected on the first :meth:`source` call and set on every face's interior.
    Attribute ``bank``: the bank in use (None for a portrait or with the bank off).
    """

    def __init__(self, faces: FaceTrack, blink: bool = False, seed: int = 0, portrait: bool | None = None,
                 own_rest: bool = True, mouth_bank: MouthBankConfig | MouthBank | None = None) -> None:
        self.faces = faces
        # One input frame is a portrait, unless the caller knows it is a chunk of a video.
        portrait = (len(faces) == 1) if portrait is None else portrait
        self.portrait = bool(portrait and faces.found[0])
        # own_rest False: a portrait rests with closed lips, as a video's frames do.
        self.own_rest = bool(own_rest)
        # Blinks are added to portraits only: a video already blinks on its own.
        # A video's frames are driven from one closed rest each: their own mouth shapes (which
        # moved with the replaced speech) would make the lips jitter.
        self.options = RenderOptions(
            blink=blink and self.portrait, blink_seed=int(seed),
            rig=RigConfig(keep_reference_shape=self.portrait and self.own_rest),
        )
        self._cached: tuple[int, SourceFace] | None = None
        self._palette = None
        self.bank = None if self.portrait else _video_bank(mouth_bank)
        self._collected = False

    def rig_params(self, source: SourceFace, articulation: np.ndarray, activity: float | None = None) -> np.ndarray:
        """Rig parameters [5] of one frame's audio ``articulation`` [5] on ``source``: for a
        portrait the source's own mouth at rest and the articulation in running speech, mixed by
        ``activity`` 0..1 (:func:`~.procedural.rig.speech_activity` of the whole track; None:
        judged from this frame alone) -- see :func:`~.procedural.rig.blend_rest_and_speech`; as
        they are for a video."""
        if not (self.portrait and self.own_rest):
            return np.asarray(articulation, np.float64)
        weight = None if activity is None else np.array([activity])
        return blend_rest_and_speech(articulation, source.rig.reference_params, ArticulationTrack.REST, weight)[0]

    def eye_closure(self, n_frames: int, fps: float) -> np.ndarray:
        """The blink schedule ``[T]`` (zeros for a video, or with blinks off)."""
        return eye_closure_schedule(self.options, n_frames, fps)

    def source(self, index: int) -> SourceFace | None:
        """The prepared face of input frame ``index``, or None when it has no face."""
        if not self.faces.found[index]:
            return None
        if self.portrait:
            index = 0
        if self._cached is None or self._cached[0] != index:
            f = self.faces
            source = SourceFace(f.crops[index], f.landmarks[index], f.regions[index], self.options, self._palette)
            self._palette = self._palette or source.palette
            if self.bank is not None:
                if not self._collected:
                    self._collected = True
                    self.bank.collect(self.faces)
                source.interior.bank = self.bank
            self._cached = (index, source)
            if self.options.blink and min(source.blink_gate.strengths) < 1.0:
                log.info("%s: the eyes cannot all be seen blinking", source.blink_gate.describe())
        return self._cached[1]


def _video_bank(mouth_bank: MouthBankConfig | MouthBank | None) -> MouthBank | None:
    """The bank a video's driver uses: the given one, a new one from a config, None when off."""
    if isinstance(mouth_bank, MouthBank):
        return mouth_bank if mouth_bank.config.enabled else None
    config = mouth_bank if mouth_bank is not None else MouthBankConfig()
    if not isinstance(config, MouthBankConfig):
        raise TypeError(
            f"mouth_bank must be a MouthBankConfig, a MouthBank or None, got {type(mouth_bank).__name__}"
        )
    return MouthBank(config) if config.enabled else None


def iter_talking_segmentation(
    faces: FaceTrack,
    params: np.ndarray,  # [T, 5] articulation of the output frames
    fps: float,
    source_index: np.ndarray,  # [T] frame of `faces` behind each output frame
    blink: bool = True,
    seed: int = 0,
    portrait: bool | None = None,
    own_rest: bool = True,  # a portrait rests with its own mouth (False: with closed lips)
    mouth_bank: MouthBankConfig | MouthBank | None = None,  # a video's own mouths (FrameDriver)
) -> Iterator[SegmentationFrame]:
    """The rig's talking segmentation, one frame at a time, each with its pose attached.

    ``params`` are the audio's articulation, and travel with each frame as they are; for a
    portrait the pose anchors them at the source's own mouth (:meth:`FrameDriver.rig_params`).
    The poses bring their faces along, and a video's faces their mouth bank: they are to be
    painted once each, in order (as :func:`iter_synthesize` does).
    """
    n = len(params)
    assert len(source_index) == n, (len(source_index), n)
    driver = FrameDriver(faces, blink, seed, portrait, own_rest, mouth_bank)
    closure = driver.eye_closure(n, fps)
    activity = articulation_activity(params, fps)
    for t in range(n):
        i = int(source_index[t])
        source = driver.source(i)
        if source is None:
            yield SegmentationFrame(faces.regions[i], i, np.asarray(params[t], np.float32), 0.0, faces.landmarks[i])
            continue
        articulation = check_params(np.atleast_2d(params[t]), "params")[0].astype(np.float32)
        pose = source.drive(driver.rig_params(source, articulation, float(activity[t])), float(closure[t]))
        yield SegmentationFrame(pose.regions, i, articulation, pose.eye_closure, pose.landmarks, pose)


def articulation_activity(params: np.ndarray | None, fps: float) -> np.ndarray | None:
    """Speech activity ``[T]`` of an articulation track ``[T, 5]`` (None for None): what a
    portrait's rest/speech hand-over follows (:func:`~.procedural.rig.speech_activity`)."""
    if params is None or len(params) == 0:
        return None if params is None else np.zeros(0)
    return speech_activity(np.asarray(params, np.float64), ArticulationTrack.REST, fps)


class MapFollower:
    """Turns each wanted map into the rig pose that draws it, for one synthesis run.

    Keeps the last mouth it could follow: a map with no usable mouth (no lips) keeps that one, and
    each kind of bad map is reported once per run, not once per frame. A frame's ``params`` are
    the audio articulation; ``driver`` turns them into the source's rig parameters (anchored for
    a portrait); without one they are used as rig parameters.
    """

    def __init__(self, driver: FrameDriver | None = None, activity: np.ndarray | None = None) -> None:
        self.driver = driver
        self.activity = activity  # [T] speech activity of the frames, in order (None: per frame)
        self.count = 0
        self.previous: np.ndarray | None = None
        self.unusable = 0
        self.clamped = 0

    def pose(self, source: SourceFace, frame: SegmentationFrame) -> tuple[DrivenFrame, bool]:
        """(the pose that draws ``frame``'s map, whether the map's mouth could be followed)."""
        wanted = frame.regions
        t, self.count = self.count, self.count + 1
        if frame.pose is not None and frame.pose.regions is wanted:
            self.previous = frame.pose.params
            return frame.pose, True  # the rig drew this very map
        hint = None
        mouth_ok = eyes_ok = False
        if frame.params is not None:
            activity = None if self.activity is None or t >= len(self.activity) else float(self.activity[t])
            wanted_params = frame.params if self.driver is None else self.driver.rig_params(source, frame.params, activity)
            hint = source.drive(wanted_params, frame.eye_closure)
            mouth_ok, eyes_ok = _agrees(source, hint.regions, wanted)
            if mouth_ok and eyes_ok:
                self.previous = hint.params
                return hint, True
        usable = True
        if hint is not None and mouth_ok:
            params = hint.params
        else:
            params, usable = self._fit(source, wanted, hint)
        eye = hint.eye_closure if hint is not None and eyes_ok else source.eye_reader.read(wanted)
        self.previous = params
        return source.drive(params, eye), usable

    def _fit(self, source: SourceFace, wanted: np.ndarray, hint: DrivenFrame | None) -> tuple[np.ndarray, bool]:
        reader = source.mouth_reader
        measure = reader.measure(wanted)
        if not reader.usable(measure):
            if not self.unusable:
                log.warning(
                    "a segmentation map shows no usable mouth (no lips near the mouth); keeping "
                    "the nearest earlier frame's mouth there, or the source's own (reported once per run)"
                )
            self.unusable += 1
            # No earlier mouth: the source's own, as silence shows it.
            own = source.rig.reference_params
            return (self.previous if self.previous is not None else own.astype(np.float32)), False
        prior = hint.params if hint is not None else self.previous
        params = reader.fit(measure, np.zeros(5, np.float32) if prior is None else prior)
        if measure.gap > 1.15 * reader.max_gap + 2.0 / reader.iod:
            if not self.clamped:
                log.warning(
                    "a segmentation map opens the mouth %.2f inter-ocular distances, more than the "
                    "built-in rig can (%.2f); drawn at the rig's widest (reported once per run)",
                    measure.gap, reader.max_gap,
                )
            self.clamped += 1
        return params, True


def _agrees(source: SourceFace, drawn: np.ndarray, wanted: np.ndarray) -> tuple[bool, bool]:
    """(mouth, eyes): whether a pose's map matches the wanted map closely enough to use."""
    box = source.window.slices
    a, b = drawn[box], wanted[box]
    mouth_wrong = int(np.count_nonzero(np.isin(a, MOUTH_REGIONS) != np.isin(b, MOUTH_REGIONS)))
    mouth_wrong += int(np.count_nonzero((a == MOUTH_REGIONS[1]) != (b == MOUTH_REGIONS[1])))
    limit = max(_AGREE_MIN_PX, _AGREE_SHARE * source.mouth_reader.source.lips_area)
    eyes_drawn = int(np.count_nonzero(drawn == EYES))
    eyes_wanted = int(np.count_nonzero(wanted == EYES))
    eye_limit = max(_AGREE_MIN_PX, _EYE_AGREE_SHARE * int(np.count_nonzero(source.regions == EYES)))
    return mouth_wrong <= limit, abs(eyes_drawn - eyes_wanted) <= eye_limit


def draw_frame(
    source: SourceFace,
    pose: DrivenFrame,
    wanted: np.ndarray,  # [S, S] the map the frame must show
    source_crop: np.ndarray,  # [S, S, 3] the input frame's crop (texture of relabelled regions)
    source_regions: np.ndarray,  # [S, S] its 12-region map
    follow_mouth: bool = True,
) -> np.ndarray:
    """The crop of ``pose`` with whatever the wanted map still says differently painted in.

    Mouth pixels the fitted rig could not reach take the rendered mouth's own texture, within a
    short reach of the rendered mouth (beyond it the rig's range wins); other relabelled pixels
    take their new region's texture from the source (:mod:`.procedural.shape_edit`). Where the
    map's mouth could not be followed (``follow_mouth`` False) the pose's own map stands inside
    the area the rig moves.
    """
    from .procedural.shape_edit import paint_shape_edits

    crop = source.paint(pose)
    drawn = pose.regions
    if drawn is wanted:
        return crop
    if not follow_mouth:
        wanted = wanted.copy()
        wanted[source.window.slices] = drawn[source.window.slices]
    changed = drawn != wanted
    if not changed.any():
        return crop
    mouth_change = changed & (np.isin(wanted, MOUTH_REGIONS) | np.isin(drawn, MOUTH_REGIONS))
    target = wanted
    if mouth_change.any():
        near = dilate(np.isin(drawn, MOUTH_REGIONS), max(1.0, _RESIDUAL_REACH * source.iod))
        mouth_target = drawn.copy()
        mouth_target[mouth_change & near] = wanted[mouth_change & near]
        crop = paint_shape_edits(crop, drawn, mouth_target, crop, drawn)
        target = wanted.copy()
        target[mouth_change & ~near] = drawn[mouth_change & ~near]
        drawn = mouth_target
    return paint_shape_edits(crop, drawn, target, source_crop, source_regions)


def iter_synthesize(
    frames: Iterable[SegmentationFrame],
    faces: FaceTrack,
    style: StyleCodes | None = None,
    portrait: bool | None = None,
    activity: np.ndarray | None = None,  # [T] speech activity of the frames (articulation_activity)
    mouth_bank: MouthBankConfig | MouthBank | None = None,  # for faces this call prepares itself
) -> Iterator[tuple[np.ndarray, SegmentationFrame]]:
    """``(crop [S, S, 3] uint8, frame)`` for each segmentation frame, in order.

    The crop is the source face posed to show the frame's map (see :class:`MapFollower`), the
    mouth interior drawn in; region swaps recorded in a built-in ``style`` recolour their regions.
    Frames whose source has no face pass the source crop through.
    """
    from .procedural.region_style import apply_style_edit

    if style is not None and style.kind != "builtin":
        raise ValueError(
            "input 'style' holds learned W+ codes; the built-in renderer needs built-in style "
            "(SegTalker Encode Style without an encoder), or connect a learned generator"
        )
    driver = FrameDriver(faces, portrait=portrait, mouth_bank=mouth_bank)
    follower = MapFollower(driver, activity)
    for frame in frames:
        i = frame.source_index
        # A frame the rig just posed brings its prepared face along (a video's is per frame).
        own = frame.pose is not None and frame.pose.regions is frame.regions
        source = frame.pose.face if own else driver.source(i)
        if source is None:
            yield faces.crops[i].copy(), frame
            continue
        pose, follow_mouth = follower.pose(source, frame)
        crop = draw_frame(source, pose, frame.regions, faces.crops[i], faces.regions[i], follow_mouth)
        if style is not None:
            crop = apply_style_edit(crop, frame.regions, style)
        yield crop, frame


def encode_style(faces: FaceTrack, frame: int) -> StyleCodes:
    from .procedural.region_style import style_from_faces

    return style_from_faces(faces, frame)
