"""MediaPipe's custom TFLite operators of the attention face mesh, batched in PyTorch.

``face_landmark_with_attention.tflite`` refines lips and eyes in three sub-networks: from the
coarse mesh it computes a crop (``Landmarks2TransformMatrix`` v2) around each region, samples the
backbone's 48x48 feature map there (``TransformTensorBilinear`` v2) and maps the region's
landmarks back (``TransformLandmarks`` v2). The semantics follow MediaPipe's reference kernels
(``mediapipe/util/tflite/operations/*.cc`` at v0.10.14), including their conventions: the crop's
rotation makes the two given landmarks level, its size is the rotated bounding box of a landmark
subset times ``scale_x / scale_y``, the sampler treats output pixel centres with a half-pixel
correction, and a sample whose position leaves ``[0, size - 1]`` on either axis is zero.

Geometry is computed in float32 whatever the network's dtype: in float16 the crop positions
(0..48 feature pixels) and the landmark coordinates would lose the sub-pixel precision that the
refinement is for.

Each function has the signature of a :mod:`.tflite_graph` operator: ``(graph, op, inputs)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def landmarks_to_transform_matrix(graph, op: dict, inputs: list) -> torch.Tensor:
    """``[N, L, 3]`` landmarks -> ``[N, 4, 4]``: output-crop pixel -> feature-map position."""
    landmarks = inputs[0].float()
    opt = op["opt"]
    left = landmarks[:, opt["left_rotation_idx"], :2]
    right = landmarks[:, opt["right_rotation_idx"], :2]
    delta = right - left
    rotation = opt["target_rotation_radians"] - torch.atan2(delta[:, 1], delta[:, 0])  # [N]
    cos, sin = torch.cos(rotation), torch.sin(rotation)
    subset = landmarks[:, list(opt["subset_idxs"]), :2]  # [N, K, 2]
    # Rotate by +rotation, take the axis-aligned box there, rotate its centre back.
    x = cos[:, None] * subset[..., 0] - sin[:, None] * subset[..., 1]
    y = sin[:, None] * subset[..., 0] + cos[:, None] * subset[..., 1]
    x_min, x_max = x.min(dim=1).values, x.max(dim=1).values
    y_min, y_max = y.min(dim=1).values, y.max(dim=1).values
    width, height = x_max - x_min, y_max - y_min
    mid_x, mid_y = 0.5 * (x_min + x_max), 0.5 * (y_min + y_max)
    centre_x = cos * mid_x + sin * mid_y
    centre_y = -sin * mid_x + cos * mid_y
    out_w, out_h = float(opt["output_width"]), float(opt["output_height"])
    scale_x = opt["scale_x"] * width / out_w
    scale_y = opt["scale_y"] * height / out_h
    # shift(centre) @ rotate(-rotation) @ scale @ shift(-out / 2), written out.
    a, b = cos * scale_x, sin * scale_y
    c, d = -sin * scale_x, cos * scale_y
    matrix = torch.zeros(landmarks.shape[0], 4, 4, dtype=landmarks.dtype,
                         device=landmarks.device)
    matrix[:, 0, 0], matrix[:, 0, 1] = a, b
    matrix[:, 1, 0], matrix[:, 1, 1] = c, d
    matrix[:, 0, 3] = centre_x - a * out_w / 2 - b * out_h / 2
    matrix[:, 1, 3] = centre_y - c * out_w / 2 - d * out_h / 2
    matrix[:, 2, 2] = 1.0
    matrix[:, 3, 3] = 1.0
    return matrix


def transform_tensor_bilinear(graph, op: dict, inputs: list) -> torch.Tensor:
    """Sample ``features [N, C, H, W]`` at ``matrix [N, 4, 4]`` -> ``[N, C, out_h, out_w]``."""
    features, matrix = inputs
    matrix = matrix.float()
    out_h, out_w = int(op["opt"]["output_height"]), int(op["opt"]["output_width"])
    height, width = features.shape[2], features.shape[3]
    m = matrix[:, :2, :]  # [N, 2, 4]
    # MediaPipe's align-corners correction: sample at pixel centres (x + 0.5), minus 0.5.
    offset = m[:, :, 3] + 0.5 * m[:, :, 0] + 0.5 * m[:, :, 1] - 0.5  # [N, 2]
    ys, xs = torch.meshgrid(
        torch.arange(out_h, dtype=torch.float32, device=features.device),
        torch.arange(out_w, dtype=torch.float32, device=features.device), indexing="ij")
    sample_x = m[:, 0, 0, None, None] * xs + m[:, 0, 1, None, None] * ys + offset[:, 0, None, None]
    sample_y = m[:, 1, 0, None, None] * xs + m[:, 1, 1, None, None] * ys + offset[:, 1, None, None]
    inside = (sample_x >= 0) & (sample_x <= width - 1) & (sample_y >= 0) & (sample_y <= height - 1)
    grid = torch.stack((2.0 * sample_x / (width - 1) - 1.0,
                        2.0 * sample_y / (height - 1) - 1.0), dim=-1)
    sampled = F.grid_sample(features.float(), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)
    return (sampled * inside[:, None].to(sampled.dtype)).to(features.dtype)


def transform_landmarks(graph, op: dict, inputs: list) -> torch.Tensor:
    """``landmarks [N, L, 2 or 3]`` through ``matrix [N, 4, 4]`` (x, y only; z is kept)."""
    landmarks, matrix = inputs[0].float(), inputs[1].float()
    x, y = landmarks[..., 0], landmarks[..., 1]
    new_x = matrix[:, 0, 0, None] * x + matrix[:, 0, 1, None] * y + matrix[:, 0, 3, None]
    new_y = matrix[:, 1, 0, None] * x + matrix[:, 1, 1, None] * y + matrix[:, 1, 3, None]
    return torch.cat((new_x[..., None], new_y[..., None], landmarks[..., 2:]), dim=-1)
