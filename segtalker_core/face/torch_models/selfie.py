"""Selfie segmentation (MediaPipe ``selfie_segmentation``, the square 256 x 256 general model).

As MediaPipe 0.10.14's ``SelfieSegmentation(model_selection=0)`` on the CPU: the image is
stretched (no letterbox) to 256 x 256 with values 0..1, the network's sigmoid output is the
person probability, resized bilinearly (half-pixel centres, as ``cv::resize``) to the image size.
MediaPipe's legacy solution does no temporal smoothing on the CPU graph, and neither does this.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .roi_crop import crop_rects, whole_image_rects
from .tflite_graph import TFLiteGraph, cpu_threads

INPUT_SIZE = 256


class SelfieSegmenter(nn.Module):
    """``forward(images [B, 3, H, W] float 0..255) -> [B, H, W]`` float32 probabilities."""

    def __init__(self, network: TFLiteGraph) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dim() == 4 and images.shape[1] == 3, images.shape
        with cpu_threads(images.device):
            return self._segment(images)

    def _segment(self, images: torch.Tensor) -> torch.Tensor:
        count, height, width = images.shape[0], images.shape[2], images.shape[3]
        rects = whole_image_rects(count, images.device)
        tensor = crop_rects(images, torch.arange(count, device=images.device), rects,
                            (INPUT_SIZE, INPUT_SIZE), (0.0, 1.0), "zeros")
        mask = next(iter(self.network(tensor).values())).float()  # [B, 1, 256, 256]
        if (height, width) != (INPUT_SIZE, INPUT_SIZE):
            mask = F.interpolate(mask, size=(height, width), mode="bilinear",
                                 align_corners=False)
        return mask[:, 0]
