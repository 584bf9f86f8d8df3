"""The clip's own mouth, for video dubbing: a bank of its open mouths, retrieved per output frame.

A dubbed video is re-driven frame by frame from a closed rest; where the new speech opens the
mouth, the built-in interior would draw synthesised teeth (or shift the frame's own, if that frame
happened to be open). The same video usually shows the person's real mouth open somewhere: this
module keeps those appearances and paints them back.

**Collecting** (:meth:`MouthBank.collect`, once per :class:`~.containers.FaceTrack` a video run
parses, before its frames are drawn): a frame counts when its inner lips are apart
(:attr:`MouthBankConfig.min_gap`) with teeth showing (:func:`.mouth_interior.analyse_mouth` score
>= :attr:`MouthBankConfig.min_teeth`). Its interior is resampled into *outline coordinates* of the
face frame (:class:`~.rig.FaceFrame`, IOD units): ``across`` -1..1 from one inner mouth corner to
the other, ``down`` 0..1 from the upper to the lower inner lip edge in each column -- a
``[GRID_H, GRID_W, 3]`` float32 patch, independent of crop size, head roll and scale -- and keyed by
its opening (:func:`mouth_key`: lip gap, inner width, lower-lip drop below the nose, IOD), with
how far its upper and lower teeth rows reach from their lips. A frame whose key is within
:attr:`MouthBankConfig.min_spacing` of an entry's is skipped after its key (a steady mouth is
stored once).

**Memory is bounded**: at most :attr:`MouthBankConfig.capacity` entries (each
:data:`ENTRY_BYTES`, 96 KiB: 16 entries are 1.5 MiB), and only the first
:attr:`MouthBankConfig.scan_frames` frames a bank is shown are examined (10 s at 25 fps by
default; later frames cost nothing). A full bank keeps the entries that cover the openings best:
of the closest pair of keys the one with fewer teeth goes.

**Retrieval** (:meth:`MouthBank.pick`, per painted frame, from the *driven* landmarks): the entry
nearest the driven opening (distance in :data:`KEY_SCALE` units; an entry that opens less than
the driven mouth counts its gap and drop difference :data:`WIDER_GAP_SCALE` times less, as it can
be extended -- one that opens more could only be squeezed) is used within
:attr:`~MouthBankConfig.reach` (with no entry near, the output is exactly the synthesised one).
The choice has hysteresis: another entry replaces the current one only when it is nearer by
:attr:`~MouthBankConfig.switch_margin`, and the two are cross-faded over
:attr:`~MouthBankConfig.crossfade_frames` frames; the bank comes on when the current entry is
within ``reach`` and goes off (back to synthesis) only beyond ``reach + fade``, fading over
:attr:`~MouthBankConfig.onoff_frames` -- never a steady mix of real and synthesised teeth (which would show both). So a
choice is state, kept by the bank across the frames of a run (one bank per video, frames painted
in order).

**Painting** (:meth:`MouthBank.paint`): each output pixel of the driven opening finds its place in
the entry's outline: ``across`` gives the column; upper teeth hang from the upper lip and the
lower row sits on the lower lip, so the upper half of a column is read at the same distance
below the upper lip edge and the lower half at the same distance above the lower lip edge
(IOD): a smaller opening hides more of the teeth, and in a taller one each row stays on its lip
at its own size while the entry's middle (what lay between the rows) hands over to the
synthesised cavity, tongue and lower teeth as the stretch grows (the synthetic upper row is left
out: the real one is there). Colours are scaled by the ratio of the lips' mean colour around the
two openings (clipped to :data:`_GAIN_RANGE`), for light that changed between the frames.

Where it is switched: :class:`MouthBankConfig` (``enabled``, default on), given to
:class:`~.builtin.FrameDriver` / :func:`~.builtin.iter_talking_segmentation` as ``mouth_bank``;
video input only (a portrait's own teeth are already its own).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..face import mesh_topology as T
from .mouth_interior import analyse_mouth
from .mouth_segmentation import opening_polygon, polygon_mask
from .rig import FaceFrame
from .warp import Box

GRID_H, GRID_W = 64, 128  # outline-coordinate patch: rows down the opening, columns across it
ENTRY_BYTES = GRID_H * GRID_W * 3 * 4 + 3 * GRID_W * 4  # float32 patch + three per-column arrays
# Units of the key distance (IOD): lip gap, inner-corner width, lower-lip drop below the nose tip.
KEY_SCALE = np.array([0.05, 0.08, 0.06])
# An entry that opens *less* than the driven mouth is extended (its teeth rows stay on their lips,
# the synthesised cavity shows between them): its gap and drop count this much less there.
WIDER_GAP_SCALE = 3.0
# Extra height of the opening, as a share of the entry's height at its widest, at which the
# entry's middle starts handing over to the synthesised cavity, and over which it does: the
# rig's outline of a matching opening is a few percent off the source's, which must not mix
# synthesis into real teeth.
_MIDDLE_START = 0.1
_MIDDLE_SPAN = 0.3
NOSE_TIP = 1  # face-mesh point at the tip of the nose (the rig never moves it)
_RING = 0.025  # IOD: width of the lip band around the opening whose mean colour sets the gain
_GAIN_RANGE = (0.85, 1.18)


@dataclass(frozen=True)
class MouthBankConfig:
    """How a video's mouth bank is collected and used (see the module docstring).

    ``enabled``: build and use a bank for video input (default on; a portrait never has one);
    ``capacity``: entries kept at most; ``scan_frames``: frames examined at most (the first ones
    shown); ``min_gap`` (IOD) / ``min_teeth`` (0..1): what an entry's frame must show;
    ``min_spacing``: a frame whose key is nearer than this to an entry's is skipped unexamined
    (a steady mouth costs one key per frame, not an entry each); ``reach`` / ``fade``: key
    distance within which an entry is taken up / how much further it is kept once taken (the
    on/off hysteresis); ``switch_margin``: how much nearer another entry must be to replace the
    current one; ``crossfade_frames``: frames a switch between entries is blended over (0: a
    cut); ``onoff_frames``: the same for the bank coming on or going off (default a cut: speech
    passes through an entry's reach in a few frames, and a fade between the real teeth and the
    synthesised ones -- often a thin strip over a dark cavity -- shows grey, half-transparent
    teeth in most of them; the on/off hysteresis already keeps it from flickering).
    """

    enabled: bool = True
    capacity: int = 16
    scan_frames: int = 250
    min_gap: float = 0.05
    min_teeth: float = 0.3
    min_spacing: float = 0.25
    reach: float = 1.0
    fade: float = 1.0
    switch_margin: float = 0.5
    crossfade_frames: int = 3
    onoff_frames: int = 0

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.scan_frames < 0 or min(self.crossfade_frames, self.onoff_frames) < 0:
            raise ValueError(
                f"mouth bank: capacity >= 1, scan_frames, crossfade_frames and onoff_frames >= 0, "
                f"got {self.capacity}, {self.scan_frames}, {self.crossfade_frames}, {self.onoff_frames}"
            )
        if self.reach < 0 or self.fade <= 0 or self.switch_margin < 0:
            raise ValueError(
                f"mouth bank: reach >= 0, fade > 0 and switch_margin >= 0, got {self.reach}, "
                f"{self.fade}, {self.switch_margin}"
            )


def mouth_key(landmarks: np.ndarray) -> np.ndarray:
    """The opening of one face ``[478, 2+]`` (crop px) as a key ``[3]`` float64, IOD units:
    (lip gap at the centre, inner-corner width, lower-lip drop below the nose tip).

    Measured the same way on a source frame's landmarks and on driven ones; the nose tip is
    above everything the rig moves, so the drop tells the jaw from lips retracted off the teeth.
    """
    frame = FaceFrame.from_landmarks(landmarks)
    uv = frame.to_face(np.asarray(landmarks)[:, :2])
    left, right = T.INNER_MOUTH_CORNERS
    gap = uv[T.LOWER_LIP_TOP, 1] - uv[T.UPPER_LIP_BOTTOM, 1]
    width = abs(uv[right, 0] - uv[left, 0])
    drop = uv[T.LOWER_LIP_TOP, 1] - uv[NOSE_TIP, 1]
    return np.array([gap, width, drop], np.float64)


@dataclass(frozen=True)
class MouthEntry:
    """One open mouth of the clip: ``key`` [3] (:func:`mouth_key`); ``patch`` [GRID_H, GRID_W, 3]
    float32 0..1, its interior in outline coordinates (rows: ``down`` 0..1, columns: ``across``
    -1..1); ``heights`` [GRID_W] float32: the opening's height (IOD) in each column;
    ``upper_depth`` / ``lower_depth`` [GRID_W] float32: how far (IOD) the upper-jaw teeth reach
    down from the upper lip edge / the lower-jaw teeth up from the lower lip edge (0: none);
    ``ring_rgb``
    [3]: mean colour of the lips around it (0..1); ``teeth``: its teeth score; ``frame_index``: the
    frame it came from, counted over everything the bank was shown; ``id``: unique in its bank."""

    key: np.ndarray
    patch: np.ndarray
    heights: np.ndarray
    upper_depth: np.ndarray
    lower_depth: np.ndarray
    ring_rgb: np.ndarray
    teeth: float
    frame_index: int
    id: int


@dataclass(frozen=True)
class BankPick:
    """What one frame takes from the bank: ``weight`` 0..1 (share of the bank's interior over the
    synthesised one: 0 or 1 but while fading), ``entries``: the entries mixed and their shares (summing to 1; two while
    a switch cross-fades), ``distance``: the key distance of the current entry."""

    weight: float = 0.0
    entries: tuple[tuple[MouthEntry, float], ...] = ()
    distance: float = float("inf")


@dataclass
class _Choice:
    """The retrieval's state between frames (hysteresis and cross-fade)."""

    current: int | None = None  # entry id
    previous: int | None = None  # entry id being faded out
    step: int = 0  # frames since the switch
    level: float = 0.0  # share of the bank in the last frame
    target: float = 0.0  # where that share is going (0 or 1)
    started: bool = False  # a frame has been picked


def _outline(frame: FaceFrame, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(upper [N, 2], lower [N, 2] inner lip contours (u, v), centre u, half width), defined as
    :class:`~.mouth_shading.Opening` defines ``across``."""
    upper = frame.to_face(np.asarray(landmarks)[list(T.LIPS_INNER_UPPER), :2])
    lower = frame.to_face(np.asarray(landmarks)[list(T.LIPS_INNER_LOWER), :2])
    left = 0.5 * (upper[0, 0] + lower[0, 0])
    right = 0.5 * (upper[-1, 0] + lower[-1, 0])
    half = max(abs(right - left) / 2.0, 1.0 / frame.iod)
    return upper, lower, 0.5 * (left + right), half


def _contour(points: np.ndarray, u: np.ndarray) -> np.ndarray:
    order = np.argsort(points[:, 0], kind="stable")
    return np.interp(u, points[order, 0], points[order, 1])


def ring_colour(image: np.ndarray, landmarks: np.ndarray, iod: float) -> np.ndarray | None:
    """Mean colour [3] (0..1) of the band of ``image`` [S, S, 3] uint8 just outside the inner-lip
    polygon of ``landmarks`` -- the lips' inner part, lit as the interior is; None if empty."""
    polygon = opening_polygon(landmarks)
    reach = max(1, int(round(_RING * iod)))
    box = Box.around(polygon, reach + 1.0, image.shape[0])
    mask = polygon_mask(polygon, box)
    ring = (cv2.dilate(mask, np.ones((2 * reach + 1,) * 2, np.uint8)) > 0) & (mask == 0)
    if not ring.any():
        return None
    return image[box.slices][ring].astype(np.float64).mean(axis=0) / 255.0


class MouthBank:
    """A video's own open mouths (see the module docstring). Build empty, :meth:`collect` the
    frames of each parsed track, :meth:`pick` and :meth:`paint` per output frame.

    ``entries``: the :class:`MouthEntry` kept (at most ``config.capacity``); ``scanned``: frames
    examined so far (at most ``config.scan_frames``); ``seen``: frames shown so far.
    """

    def __init__(self, config: MouthBankConfig | None = None) -> None:
        self.config = config or MouthBankConfig()
        self.entries: list[MouthEntry] = []
        self.scanned = 0
        self.seen = 0
        self._next_id = 0
        self._choice = _Choice()

    @property
    def nbytes(self) -> int:
        """Bytes held by the entries' arrays (at most ``capacity * ENTRY_BYTES`` plus keys)."""
        arrays = ("patch", "heights", "upper_depth", "lower_depth", "key", "ring_rgb")
        return sum(getattr(e, a).nbytes for e in self.entries for a in arrays)

    # --- collecting -------------------------------------------------------------------------

    def collect(self, faces) -> int:
        """Examine the frames of a :class:`~.containers.FaceTrack` (the next ones of the video)
        until ``scan_frames`` frames have been examined in all; returns the entries added."""
        added = 0
        for i in range(len(faces)):
            index, self.seen = self.seen, self.seen + 1
            if self.scanned >= self.config.scan_frames:
                continue
            self.scanned += 1
            if faces.found[i]:
                added += self.add_frame(faces.crops[i], faces.landmarks[i], index)
        return added

    def add_frame(self, crop: np.ndarray, landmarks: np.ndarray, frame_index: int) -> bool:
        """Add one frame ``crop`` [S, S, 3] uint8 with ``landmarks`` [478, 3] if it shows an open
        mouth with teeth; True if it was kept (a full bank may drop it or another entry)."""
        entry = self._entry(crop, landmarks, frame_index)
        if entry is None:
            return False
        self.entries.append(entry)
        self._next_id += 1
        while len(self.entries) > self.config.capacity:
            self.entries.pop(self._redundant())
        return any(e.id == entry.id for e in self.entries)

    def _entry(self, crop: np.ndarray, landmarks: np.ndarray, frame_index: int) -> MouthEntry | None:
        landmarks = np.asarray(landmarks, np.float64)
        if not np.isfinite(landmarks[:, :2]).all():
            return None
        key = mouth_key(landmarks)
        if key[0] < self.config.min_gap:
            return None
        if self.entries and float(self.distances(key).min()) < self.config.min_spacing:
            return None
        frame = FaceFrame.from_landmarks(landmarks)
        mouth = analyse_mouth(crop, landmarks, frame.iod)
        if mouth.score < self.config.min_teeth:
            return None
        ring = ring_colour(crop, landmarks, frame.iod)
        if ring is None:
            return None
        upper, lower, centre, half = _outline(frame, landmarks)
        u = centre + half * np.linspace(-1.0, 1.0, GRID_W)
        top, bottom = _contour(upper, u), _contour(lower, u)
        heights = np.maximum(bottom - top, 0.0)
        down = np.linspace(0.0, 1.0, GRID_H)[:, None]
        uv = np.stack(np.broadcast_arrays(u[None, :], top[None, :] + down * heights[None, :]), axis=-1)
        xy = frame.to_crop(uv).astype(np.float32)
        patch = cv2.remap(crop, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        upper_depth, lower_depth = _teeth_depths(mouth, xy, heights)
        return MouthEntry(
            key=key, patch=(patch.astype(np.float32) / 255.0), heights=heights.astype(np.float32),
            upper_depth=upper_depth, lower_depth=lower_depth,
            ring_rgb=ring, teeth=float(mouth.score), frame_index=int(frame_index), id=self._next_id,
        )

    def _redundant(self) -> int:
        """Index of the entry to drop from an over-full bank: of the two nearest keys, the one
        with fewer teeth; on a tie the one nearer to the rest of the bank (the other is alone on
        its side: the narrowest or widest opening stays), then the newer. So the openings kept
        stay spread out whatever the last bits of their keys."""
        keys = np.stack([e.key for e in self.entries]) / KEY_SCALE
        d = np.linalg.norm(keys[:, None] - keys[None], axis=-1)
        d[np.diag_indices_from(d)] = np.inf
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        a, b = self.entries[i], self.entries[j]
        if a.teeth != b.teeth:
            return int(i if a.teeth < b.teeth else j)
        others = np.ones(len(keys), bool)
        others[[i, j]] = False
        if others.any():
            near_i, near_j = d[i, others].min(), d[j, others].min()
            if near_i != near_j:
                return int(i if near_i < near_j else j)
        return int(i if a.id > b.id else j)

    # --- retrieval --------------------------------------------------------------------------

    def distances(self, key: np.ndarray) -> np.ndarray:
        """Key distance ``[len(entries)]`` of every entry to ``key`` [3] (an entry whose gap or
        drop is smaller than the key's counts that difference :data:`WIDER_GAP_SCALE` times
        less)."""
        if not self.entries:
            return np.zeros(0)
        keys = np.stack([e.key for e in self.entries])
        diff = (np.asarray(key, np.float64) - keys) / KEY_SCALE
        for k in (0, 2):  # gap and drop: the driven mouth open further than the entry
            diff[:, k] = np.where(diff[:, k] > 0, diff[:, k] / WIDER_GAP_SCALE, diff[:, k])
        return np.linalg.norm(diff, axis=1)

    def nearest(self, key: np.ndarray) -> tuple[MouthEntry, float] | None:
        """The entry nearest ``key`` and its distance (no state: no hysteresis), None if empty."""
        d = self.distances(key)
        if not len(d):
            return None
        i = int(np.argmin(d))
        return self.entries[i], float(d[i])

    def pick(self, driven: np.ndarray) -> BankPick:
        """What the frame with ``driven`` landmarks [478, 2+] takes from the bank, with
        hysteresis and cross-fades against the frames picked before it (state changes)."""
        cfg, state = self.config, self._choice
        d = self.distances(mouth_key(driven))
        if not len(d):
            self._choice = _Choice()
            return BankPick()
        ids = [e.id for e in self.entries]
        best = int(np.argmin(d))
        current = ids.index(state.current) if state.current in ids else None
        if current is None or d[best] < d[current] - cfg.switch_margin:
            # Cross-fade only from an entry that was on screen (and is still there).
            fading = current is not None and current != best and state.level > 0.0 and cfg.crossfade_frames > 0
            if current != best:
                state.previous, state.step = (ids[current] if fading else None), 0
            state.current, current = ids[best], best
        distance = float(d[current])
        # The bank comes on within reach and goes off beyond reach + fade: in between, the
        # opening keeps what it had, so a mouth near the edge does not blink between the two.
        if distance <= cfg.reach:
            state.target = 1.0
        elif distance > cfg.reach + cfg.fade:
            state.target = 0.0
        rate = 1.0 / (cfg.onoff_frames + 1)
        # The first frame a bank draws starts where it belongs (no fade in from nothing).
        state.level = state.target if not state.started else float(
            np.clip(state.target, state.level - rate, state.level + rate))
        state.started = True
        if state.level == 0.0:
            state.previous = None
            return BankPick(0.0, (), distance)
        entries: tuple[tuple[MouthEntry, float], ...] = ((self.entries[current], 1.0),)
        if state.previous in ids and state.step < cfg.crossfade_frames:
            state.step += 1
            share = state.step / (cfg.crossfade_frames + 1)
            entries = ((self.entries[ids.index(state.previous)], 1.0 - share), (self.entries[current], share))
        else:
            state.previous = None
        return BankPick(state.level, entries, distance)

    def reset(self) -> None:
        """Forget the retrieval state (the next pick starts fresh); the entries stay."""
        self._choice = _Choice()

    # --- painting ---------------------------------------------------------------------------

    def paint(self, pick: BankPick, opening, ring_rgb: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb [h, w, 3] float32 0..1, cover [h, w] float32 0..1)``: the picked interior over
        ``opening`` (a :class:`~.mouth_shading.Opening` of the driven frame) and how much of each
        pixel it gives (1 but between the teeth rows of an opening taller than the entry's, where
        the synthesised cavity takes over). ``ring_rgb`` [3]: the mean lip colour around the
        driven opening (:func:`ring_colour`; None: no light correction)."""
        op = opening
        gx = ((op.across + 1.0) * (0.5 * (GRID_W - 1))).astype(np.float32)
        y = np.maximum(op.v - op.top, 0.0)  # IOD below the upper lip edge
        z = np.maximum(op.bottom - op.v, 0.0)  # IOD above the lower lip edge
        ho = np.maximum(op.bottom - op.top, 0.0)
        upper_half = y <= 0.5 * ho
        columns = np.arange(GRID_W)
        out = np.zeros(op.box.shape + (3,), np.float32)
        cover = np.zeros(op.box.shape, np.float32)
        for entry, share in pick.entries:
            he = np.interp(gx, columns, entry.heights).astype(np.float32)
            half = 0.5 * he
            # Upper half of the opening read from the upper lip down, lower half from the lower
            # lip up: each row of teeth stays on its own lip, at its own size.
            ye = np.where(upper_half, np.minimum(y, half), he - np.minimum(z, half))
            weight = np.ones(op.box.shape, np.float32)
            taller = ho > he
            if taller.any():
                # Taller than the entry: its teeth stay on their lips; what lies between them
                # (the entry's middle, stretched) hands over to the synthesised cavity.
                up = np.interp(gx, columns, entry.upper_depth).astype(np.float32)
                low = np.interp(gx, columns, entry.lower_depth).astype(np.float32)
                on_upper = taller & (y <= up)
                on_lower = taller & ~on_upper & (z <= low)
                ye = np.where(on_upper, y, np.where(on_lower, he - z, ye))
                middle = taller & ~on_upper & ~on_lower
                # Relative to the entry's full height: near the corners both heights go to 0.
                stretch = (ho - he) / max(float(entry.heights.max()), 1e-6)
                fade = np.clip(1.0 - (stretch - _MIDDLE_START) / _MIDDLE_SPAN, 0.0, 1.0)
                weight = np.where(middle, fade, weight).astype(np.float32)
                # A soft pixel at the teeth's edge rather than a cut.
                weight = cv2.GaussianBlur(weight, (0, 0), 0.7) if (weight < 1.0).any() else weight
            gy = (ye / np.maximum(he, 1e-6) * (GRID_H - 1)).astype(np.float32)
            rgb = cv2.remap(entry.patch, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if ring_rgb is not None:
                gain = np.clip(np.asarray(ring_rgb) / np.maximum(entry.ring_rgb, 1e-3), *_GAIN_RANGE)
                rgb = rgb * gain.astype(np.float32)
            out += np.float32(share) * weight[..., None] * rgb
            cover += np.float32(share) * weight
        # Colour where covered (premultiplied above); cover says how much.
        return out / np.maximum(cover, 1e-6)[..., None], np.clip(cover, 0.0, 1.0)


def _teeth_depths(mouth, xy: np.ndarray, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per grid column [GRID_W], how far (IOD) the upper-jaw teeth reach below the upper lip
    edge and the lower-jaw teeth above the lower lip edge (0: none), from the teeth pixels of
    ``mouth`` (:func:`.mouth_interior.analyse_mouth`) seen through the grid's crop positions
    ``xy`` [GRID_H, GRID_W, 2]; the split between the jaws is the interior's
    (:func:`.mouth_interior._teeth_split`)."""
    from .mouth_interior import _teeth_split

    box = mouth.box
    teeth = cv2.remap(mouth.teeth.astype(np.float32), xy[..., 0] - box.x0, xy[..., 1] - box.y0,
                      cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) > 0.5
    split = _teeth_split(np.ones(teeth.shape, bool), teeth)
    rows = np.arange(GRID_H)[:, None]
    last_upper = np.where(teeth & (rows < split[None]), rows, -1).max(axis=0)
    first_lower = np.where(teeth & (rows >= split[None]), rows, GRID_H).min(axis=0)
    step = heights / (GRID_H - 1)
    # One row beyond the last teeth row: the tooth edge itself is blended with what lies past it.
    upper = np.where(last_upper >= 0, (last_upper + 1) * step, 0.0)
    lower = np.where(first_lower < GRID_H, (GRID_H - first_lower) * step, 0.0)
    return upper.astype(np.float32), lower.astype(np.float32)


__all__ = [
    "BankPick", "ENTRY_BYTES", "GRID_H", "GRID_W", "KEY_SCALE", "MouthBank", "MouthBankConfig",
    "MouthEntry", "mouth_key", "ring_colour",
]
