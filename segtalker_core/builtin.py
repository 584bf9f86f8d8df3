"""The built-in backends of each stage: viseme rig, mesh-warp renderer, region colour statistics.

No weight files; everything runs on the CPU. A portrait is driven by one :class:`PortraitRenderer`
(its rig and warp mesh are built once); a video is re-driven frame by frame on each frame's own
crop, keeping the head pose of the video.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from .containers import FaceTrack, StyleCodes, TalkingSegmentation
from .procedural.renderer import PortraitRenderer, RenderedFrame, RenderOptions, SourceFace

Progress = Callable[[int, int], None] | None


class FrameDriver:
    """Renders output frame t of a talking clip from the face behind it and its mouth params.

    One object for both cases so the segmentation stage and the synthesis stage render the same
    way: a portrait (one source face) reuses one renderer; a video builds each frame's rig from
    that frame's own crop (cached while consecutive output frames reuse the same input frame).
    """

    def __init__(self, faces: FaceTrack, blink: bool, seed: int, portrait: bool | None = None) -> None:
        self.faces = faces
        # One input frame is a portrait, unless the caller knows it is a chunk of a video.
        self.portrait = (len(faces) == 1) if portrait is None else portrait
        self.portrait = self.portrait and bool(faces.found[0])
        # Blinks are added to portraits only: a video already blinks on its own.
        self.options = RenderOptions(blink=blink and self.portrait, blink_seed=int(seed))
        self._renderer = (
            PortraitRenderer(faces.crops[0], faces.landmarks[0], faces.regions[0], self.options)
            if self.portrait else None
        )
        self._cached: tuple[int, SourceFace] | None = None
        self._palette = None

    def eye_closure(self, n_frames: int, fps: float) -> np.ndarray:
        if self._renderer is None:
            return np.zeros(n_frames, np.float32)
        return self._renderer.eye_closure(n_frames, fps)

    def _source(self, index: int) -> SourceFace:
        if self._renderer is not None:
            return self._renderer.source
        if self._cached is None or self._cached[0] != index:
            f = self.faces
            source = SourceFace(f.crops[index], f.landmarks[index], f.regions[index], self.options, self._palette)
            # Teeth colours from the first face seen, then kept: synthesised teeth do not flicker.
            self._palette = self._palette or source.palette
            self._cached = (index, source)
        return self._cached[1]

    def frame(self, index: int, params: np.ndarray, eye_closure: float, image: bool) -> RenderedFrame | None:
        """The rendered frame, or None when input frame ``index`` has no face (pass-through)."""
        if not self.faces.found[index]:
            return None
        return self._source(index).frame(params, eye_closure, image=image)


def talking_segmentation(
    faces: FaceTrack,
    articulation,  # audio.articulation.ArticulationTrack with T frames
    source_index: np.ndarray,  # [T]
    blink: bool = True,
    seed: int = 0,
    progress: Progress = None,
) -> TalkingSegmentation:
    """Driven 12-region maps and landmarks, one per output frame."""
    n = len(articulation)
    params = articulation.params
    driver = FrameDriver(faces, blink, seed)
    closure = driver.eye_closure(n, articulation.fps)
    s = faces.crop_size
    regions = np.empty((n, s, s), np.uint8)
    landmarks = np.empty((n,) + faces.landmarks.shape[1:], np.float32)
    for t in range(n):
        i = int(source_index[t])
        rendered = driver.frame(i, params[t], float(closure[t]), image=False)
        if rendered is None:
            regions[t], landmarks[t] = faces.regions[i], faces.landmarks[i]
        else:
            regions[t], landmarks[t] = rendered.regions, rendered.landmarks
        if progress is not None:
            progress(t + 1, n)
    return TalkingSegmentation(
        regions=regions,
        faces=faces,
        source_index=np.asarray(source_index, np.int64),
        fps=float(articulation.fps),
        landmarks=landmarks,
        mouth_params=params,
        meta={
            "backend": "builtin",
            "eye_closure": closure,
            "blink": bool(blink),
            "seed": int(seed),
            "articulation": articulation.method,
        },
    )


def encode_style(faces: FaceTrack, frame: int) -> StyleCodes:
    from .procedural.region_style import style_from_faces

    return style_from_faces(faces, frame)


def iter_synthesize(
    segmentation: TalkingSegmentation,
    style: StyleCodes | None,
    progress: Progress = None,
) -> Iterator[np.ndarray]:
    """Rendered crops ``[S, S, 3]`` uint8, one per output frame, in order.

    The crop is the source face warped by the mouth motion, with the mouth interior drawn in.
    Region swaps recorded in a built-in ``style`` recolour their regions; shape edits of the
    segmentation (labels that differ from what the rig drew) are filled with texture of the
    edited region taken from the source face.
    """
    from .procedural.region_style import apply_style_edit
    from .procedural.shape_edit import paint_shape_edits

    if segmentation.mouth_params is None:
        raise ValueError(
            "this segmentation carries no mouth motion (it was built outside SegTalker Audio to "
            "Talking Segmentation); connect a learned generator to SegTalker Synthesize, or make the "
            "segmentation with SegTalker Audio to Talking Segmentation"
        )
    if style is not None and style.kind != "builtin":
        raise ValueError(
            "input 'style' holds learned W+ codes; the built-in renderer needs built-in style "
            "(SegTalker Encode Style without an encoder), or connect a learned generator"
        )
    faces = segmentation.faces
    meta = segmentation.meta
    driver = FrameDriver(faces, bool(meta.get("blink", False)), int(meta.get("seed", 0)))
    closure = meta.get("eye_closure")
    n = len(segmentation)
    for t in range(n):
        i = int(segmentation.source_index[t])
        eye = 0.0 if closure is None else float(closure[t])
        rendered = driver.frame(i, segmentation.mouth_params[t], eye, image=True)
        if rendered is None:
            crop = faces.crops[i].copy()
        else:
            crop = paint_shape_edits(
                rendered.crop, rendered.regions, segmentation.regions[t], faces.crops[i], faces.regions[i],
            )
            if style is not None:
                crop = apply_style_edit(crop, segmentation.regions[t], style)
        yield crop
        if progress is not None:
            progress(t + 1, n)


def paste_mask(
    crop: np.ndarray,  # [S, S, 3] rendered crop
    regions: np.ndarray,  # [S, S] its 12-region map
    source_crop: np.ndarray,  # [S, S, 3] the input frame's crop
    source_regions: np.ndarray,  # [S, S] its 12-region map
    feather_px: float,
) -> np.ndarray:
    """Paste mask ``[S, S]``: the face regions (plus any region the crop changed), limited to a
    band around the pixels that differ from the source crop, so the rest of the original frame
    stays untouched."""
    from .face.paste import FACE_REGIONS, face_blend_mask

    changed = np.any(crop != source_crop, axis=-1)
    if not changed.any():
        return np.zeros(changed.shape, np.float32)
    touched = set(np.unique(regions[changed]).tolist()) | set(np.unique(source_regions[changed]).tolist())
    selected = sorted(set(FACE_REGIONS) | touched)
    return face_blend_mask(np.stack([regions, source_regions]), feather_px, regions=selected, changed=changed)


def iter_talk(
    faces: FaceTrack,
    params: np.ndarray,  # [T, 5] articulation of the output frames
    fps: float,
    source_index: np.ndarray,  # [T] frame of `faces` behind each output frame
    style: StyleCodes | None = None,
    blink: bool = True,
    seed: int = 0,
    feather_px: float = 12.0,
    portrait: bool | None = None,
    progress: Progress = None,
) -> Iterator[np.ndarray]:
    """The fused built-in chain: full-resolution output frames, one at a time.

    Renders each frame once (crop and regions together) and pastes it at once, so nothing per
    frame is kept: memory does not grow with the audio length.
    """
    from .face.paste import paste_face
    from .procedural.region_style import apply_style_edit

    n = len(params)
    driver = FrameDriver(faces, blink, seed, portrait)
    closure = driver.eye_closure(n, fps)
    for t in range(n):
        i = int(source_index[t])
        rendered = driver.frame(i, params[t], float(closure[t]), image=True)
        if rendered is None:
            yield faces.frames[i].copy()
        else:
            crop = rendered.crop if style is None else apply_style_edit(rendered.crop, rendered.regions, style)
            mask = paste_mask(crop, rendered.regions, faces.crops[i], faces.regions[i], feather_px)
            yield paste_face(faces.frames[i], crop, faces.transforms[i], mask)
        if progress is not None:
            progress(t + 1, n)
