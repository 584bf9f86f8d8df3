"""BlazeFace short range (MediaPipe ``face_detection_short_range``), batched in PyTorch.

The whole image is letterboxed into a 128 x 128 tensor (values -1..1, zero border); the network
gives 896 anchored boxes with 6 keypoints each (eyes, nose tip, mouth, ear tragions). Decoding,
thresholds and the weighted non-maximum suppression follow MediaPipe 0.10.14's graph
(``face_detection_short_range.pbtxt`` + ``face_detection.pbtxt``): SSD anchors of strides
8, 16, 16, 16 (2 anchors per cell at stride 8, 6 at stride 16, all of size 1), box and keypoint
offsets divided by 128 and scaled by the anchor, scores clipped to +-100 then a sigmoid and kept
from 0.5; overlapping boxes (IoU > 0.3) are merged into their score-weighted mean, the best
score kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .roi_crop import crop_rects
from .tflite_graph import TFLiteGraph, cpu_threads

INPUT_SIZE = 128
NUM_KEYPOINTS = 6
MIN_SUPPRESSION_IOU = 0.3
SCORE_CLIP = 100.0
_STRIDES = (8, 16, 16, 16)


@dataclass(frozen=True)
class FaceDetections:
    """Faces found in one image, best score first; coordinates normalised by the image size.

    ``boxes [K, 4]`` (xmin, ymin, xmax, ymax), ``keypoints [K, 6, 2]`` (x, y), ``scores [K]``.
    """

    boxes: torch.Tensor
    keypoints: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def ssd_anchors(size: int = INPUT_SIZE) -> torch.Tensor:
    """``[896, 2]`` anchor centres (x, y) in 0..1, in the network's output order."""
    centres = []
    layer = 0
    while layer < len(_STRIDES):
        stride = _STRIDES[layer]
        per_cell = 0
        while layer < len(_STRIDES) and _STRIDES[layer] == stride:
            per_cell += 2  # aspect ratio 1 plus the interpolated scale
            layer += 1
        cells = -(-size // stride)
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        grid = torch.stack(((xs + 0.5) / cells, (ys + 0.5) / cells), dim=-1).reshape(-1, 1, 2)
        centres.append(grid.expand(-1, per_cell, 2).reshape(-1, 2))
    return torch.cat(centres).to(torch.float32)


class ShortRangeFaceDetector(nn.Module):
    """``forward(images [B, 3, H, W] float 0..255, min_score) -> list of B``
    :class:`FaceDetections` (``min_score``: MediaPipe's ``min_detection_confidence``).

    :meth:`letterbox_rects` + :meth:`detect_input` are the two halves, for a caller that makes
    the network input itself (``roi_crop.crop_frames`` of uint8 frames on the CPU)."""

    def __init__(self, network: TFLiteGraph) -> None:
        super().__init__()
        self.network = network
        self.anchors = ssd_anchors().numpy()  # [896, 2]: decoding runs on the host

    def forward(self, images: torch.Tensor, min_score: float = 0.5) -> list[FaceDetections]:
        assert images.dim() == 4 and images.shape[1] == 3, images.shape
        count, height, width = images.shape[0], images.shape[2], images.shape[3]
        with cpu_threads(images.device):
            tensor = crop_rects(images, torch.arange(count, device=images.device),
                                self.letterbox_rects(count, (width, height), images.device),
                                (INPUT_SIZE, INPUT_SIZE), (-1.0, 1.0), "zeros")
            return self.detect_input(tensor, (width, height), min_score)

    @staticmethod
    def letterbox_rects(count: int, image_size: tuple[int, int],
                        device: torch.device | str = "cpu") -> torch.Tensor:
        """``[count, 5]``: the square around the whole image that the network sees
        (keep_aspect_ratio, zero border); ``image_size`` is (width, height) in px."""
        width, height = image_size
        side = max(width, height)
        rect = torch.tensor([0.5, 0.5, side / width, side / height, 0.0], device=device)
        return rect.expand(count, 5)

    def detect_input(self, tensor: torch.Tensor, image_size: tuple[int, int],
                     min_score: float = 0.5) -> list[FaceDetections]:
        """Faces from the letterboxed network input ``[B, 3, 128, 128]`` (values -1..1) of
        images of ``image_size`` (width, height) px, in those images' coordinates."""
        with cpu_threads(tensor.device):
            return self._detect(tensor, image_size, min_score)

    def _detect(self, tensor: torch.Tensor, image_size: tuple[int, int],
                min_score: float) -> list[FaceDetections]:
        width, height = image_size
        side = max(width, height)
        outputs = self.network(tensor)
        # Decoding and suppression look at a handful of candidates per image: NumPy on the
        # host does them in ~0.1 ms, where ~60 torch calls on tiny tensors took ~0.5 ms (and
        # a GPU would sync at every step of the suppression loop anyway).
        regressors = outputs["regressors"].float().cpu().numpy()  # [B, 896, 16]
        scores = torch.sigmoid(outputs["classificators"].float()[..., 0].clamp(
            -SCORE_CLIP, SCORE_CLIP)).cpu().numpy()  # [B, 896]
        # From the letterboxed square back to the image: x_img = 0.5 + (x - 0.5) * side / W.
        scale = np.array([side / width, side / height], np.float32)
        results = []
        for b in range(tensor.shape[0]):
            keep = scores[b] >= min_score
            boxes, keypoints = decode(regressors[b][keep], self.anchors[keep])
            merged = weighted_nms(boxes, keypoints, scores[b][keep])
            results.append(FaceDetections(
                boxes=_on(((merged[0].reshape(-1, 2, 2) - 0.5) * scale + 0.5).reshape(-1, 4),
                          tensor.device),
                keypoints=_on((merged[1] - 0.5) * scale + 0.5, tensor.device),
                scores=_on(merged[2], tensor.device),
            ))
        return results


def decode(raw: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``[K, 16]`` of anchors ``[K, 2]`` -> boxes ``[K, 4]`` and keypoints ``[K, 6, 2]``
    in the 128 px tensor's normalised coordinates."""
    # Anchor sizes are 1: offsets are in input pixels / 128.
    centre = raw[:, 0:2] / INPUT_SIZE + anchors
    size = raw[:, 2:4] / INPUT_SIZE
    boxes = np.concatenate((centre - size / 2, centre + size / 2), axis=1)
    keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) / INPUT_SIZE
    return boxes, keypoints + anchors[:, None, :]


def _on(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(device)


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of ``boxes [K, 4]`` with one ``box [4]`` (xmin, ymin, xmax, ymax)."""
    low = np.maximum(boxes[:, :2], box[:2])
    high = np.minimum(boxes[:, 2:], box[2:])
    inter = np.clip(high - low, 0, None).prod(axis=1)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    union = area + (box[2:] - box[:2]).prod() - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, np.float32(0.0))


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray,
                 scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's ``WEIGHTED`` non-maximum suppression (IoU > 0.3 merges into the best):
    (boxes ``[F, 4]``, keypoints ``[F, 6, 2]``, scores ``[F]``), best score first."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    out_boxes, out_points, out_scores = [], [], []
    remaining = np.arange(len(scores))
    while len(remaining):
        best = remaining[0]
        overlap = box_iou(boxes[remaining], boxes[best]) > MIN_SUPPRESSION_IOU
        members = remaining[overlap]
        weights = scores[members][:, None]
        total = weights.sum()
        out_boxes.append((boxes[members] * weights).sum(axis=0) / total)
        out_points.append((keypoints[members] * weights[:, :, None]).sum(axis=0) / total)
        out_scores.append(scores[best])
        remaining = remaining[~overlap]
    if not out_scores:
        return (np.zeros((0, 4), np.float32), np.zeros((0, NUM_KEYPOINTS, 2), np.float32),
                np.zeros((0,), np.float32))
    return np.stack(out_boxes), np.stack(out_points), np.array(out_scores, np.float32)
