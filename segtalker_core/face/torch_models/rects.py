"""Rotated face rectangles (MediaPipe's ``NormalizedRect``), batched, and how they are made.

A rectangle is a ``[R, 5]`` float tensor ``(x_center, y_center, width, height, rotation)``:
centre and size normalised by the image width / height, rotation in radians (positive turns the
rectangle's x axis towards the image's y axis, i.e. clockwise on screen). The rules are those of
MediaPipe 0.10.14's face-mesh graph:

* from a detection (``FaceDetectionFrontDetectionToRoi``): the box, rotated so that keypoint 0
  -> keypoint 1 (the eyes) is level, made square on its longer side in pixels, scaled by 1.5;
* from landmarks (``FaceLandmarkLandmarksToRoi``, the tracking ROI for the next frame): the
  landmarks' bounding box, rotated so that landmark 33 -> 263 (the eye corners) is level, square
  on the longer side, scaled by 1.5;
* association (``AssociationNormRectCalculator``, threshold 0.5): rectangles from the previous
  frame's landmarks replace newly detected ones that overlap them by IoU > 0.5 (the rotation is
  ignored for the overlap).
"""
from __future__ import annotations

import math

import torch

ROI_SCALE = 1.5
DETECTION_EYES = (0, 1)  # BlazeFace keypoints: the two eyes
LANDMARK_EYES = (33, 263)  # face-mesh points: the outer eye corners
ASSOCIATION_IOU = 0.5


def normalize_radians(angle: torch.Tensor) -> torch.Tensor:
    """``angle`` wrapped into ``[-pi, pi)``."""
    return angle - 2 * math.pi * torch.floor((angle + math.pi) / (2 * math.pi))


def box_to_rect(boxes: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                image_size: tuple[int, int]) -> torch.Tensor:
    """Rectangles from boxes ``[R, 4]`` (xmin, ymin, xmax, ymax; normalised) and the two points
    ``[R, 2]`` whose direction sets the rotation; ``image_size`` is (width, height) in px."""
    width, height = image_size
    dx = (end[:, 0] - start[:, 0]) * width
    dy = (end[:, 1] - start[:, 1]) * height
    rotation = normalize_radians(-torch.atan2(-dy, dx))
    centre_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
    centre_y = 0.5 * (boxes[:, 1] + boxes[:, 3])
    return torch.stack((centre_x, centre_y, boxes[:, 2] - boxes[:, 0],
                        boxes[:, 3] - boxes[:, 1], rotation), dim=1)


def square_and_scale(rects: torch.Tensor, image_size: tuple[int, int],
                     scale: float = ROI_SCALE) -> torch.Tensor:
    """``RectTransformationCalculator`` with ``square_long`` and ``scale_x = scale_y = scale``."""
    width, height = image_size
    long_side = torch.maximum(rects[:, 2] * width, rects[:, 3] * height)
    out = rects.clone()
    out[:, 2] = long_side / width * scale
    out[:, 3] = long_side / height * scale
    return out


def rects_from_detections(boxes: torch.Tensor, keypoints: torch.Tensor,
                          image_size: tuple[int, int]) -> torch.Tensor:
    """Face-mesh ROIs ``[R, 5]`` from detections: boxes ``[R, 4]``, keypoints ``[R, 6, 2]``."""
    start, end = DETECTION_EYES
    rects = box_to_rect(boxes, keypoints[:, start], keypoints[:, end], image_size)
    return square_and_scale(rects, image_size)


def rects_from_landmarks(landmarks: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Tracking ROIs ``[R, 5]`` from normalised landmarks ``[R, 478, 2+]``."""
    xy = landmarks[..., :2]
    boxes = torch.cat((xy.min(dim=1).values, xy.max(dim=1).values), dim=1)
    start, end = LANDMARK_EYES
    rects = box_to_rect(boxes, xy[:, start], xy[:, end], image_size)
    return square_and_scale(rects, image_size)


def rect_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two rectangles ``[5]`` as axis-aligned boxes (rotation ignored, as MediaPipe)."""
    ax0, ay0 = a[0] - a[2] / 2, a[1] - a[3] / 2
    bx0, by0 = b[0] - b[2] / 2, b[1] - b[3] / 2
    ix = torch.clamp(torch.minimum(ax0 + a[2], bx0 + b[2]) - torch.maximum(ax0, bx0), min=0)
    iy = torch.clamp(torch.minimum(ay0 + a[3], by0 + b[3]) - torch.maximum(ay0, by0), min=0)
    inter = float(ix * iy)
    union = float(a[2] * a[3] + b[2] * b[3]) - inter
    return inter / union if union > 0 else 0.0


def associate(detected: torch.Tensor, tracked: torch.Tensor,
              threshold: float = ASSOCIATION_IOU) -> torch.Tensor:
    """Merge detected ``[D, 5]`` then tracked ``[T, 5]`` rectangles: each added rectangle
    removes the ones already kept that overlap it by IoU > ``threshold`` and goes last."""
    kept: list[torch.Tensor] = []
    for rect in list(detected) + list(tracked):
        kept = [other for other in kept if rect_iou(rect, other) <= threshold]
        kept.append(rect)
    if not kept:
        return detected.new_zeros((0, 5))
    return torch.stack(kept)
