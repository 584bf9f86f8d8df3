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
    # Written with (x, y) pairs as one axis: ~25 tensor operations instead of ~50 with x and y
    # apart, which at batch 1 is most of the time spent here (the tensors are tiny).
    xy = inputs[0].float()[..., :2]
    opt = op["opt"]
    count = xy.shape[0]
    delta = xy[:, opt["right_rotation_idx"]] - xy[:, opt["left_rotation_idx"]]
    rotation = opt["target_rotation_radians"] - torch.atan2(delta[:, 1], delta[:, 0])  # [N]
    cos, sin = torch.cos(rotation), torch.sin(rotation)
    # Rows of the rotation by +rotation: x' = cos x - sin y, y' = sin x + cos y.
    rotate = torch.stack((cos, -sin, sin, cos), dim=1).view(count, 1, 2, 2)
    subset = xy[:, list(opt["subset_idxs"])]  # [N, K, 2]
    # Rotate by +rotation, take the axis-aligned box there, rotate its centre back.
    rotated = (rotate * subset[:, :, None, :]).sum(dim=-1)  # [N, K, 2]
    low, high = torch.aminmax(rotated, dim=1)
    size, middle = high - low, 0.5 * (low + high)  # [N, 2]
    unrotate = rotate[:, 0].transpose(1, 2)  # [N, 2, 2]: the rotation by -rotation
    centre = (unrotate * middle[:, None, :]).sum(dim=-1)  # [N, 2]
    out = torch.tensor([float(opt["output_width"]), float(opt["output_height"])],
                       device=xy.device)
    scale = size * (torch.tensor([opt["scale_x"], opt["scale_y"]], device=xy.device) / out)
    # shift(centre) @ rotate(-rotation) @ scale @ shift(-out / 2): the 2 x 2 part is the
    # rotation by -rotation with its columns scaled, the shift what maps the crop centre.
    linear = unrotate * scale[:, None, :]  # [N, 2, 2]
    shift = centre - (linear * (0.5 * out)).sum(dim=-1)  # [N, 2]
    top = torch.cat((linear, torch.zeros_like(shift)[..., None], shift[..., None]), dim=2)
    bottom = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]], device=xy.device)
    return torch.cat((top, bottom.expand(count, 2, 4)), dim=1)


def transform_tensor_bilinear(graph, op: dict, inputs: list) -> torch.Tensor:
    """Sample ``features [N, C, H, W]`` at ``matrix [N, 4, 4]`` -> ``[N, C, out_h, out_w]``."""
    features, matrix = inputs
    matrix = matrix.float()
    out_h, out_w = int(op["opt"]["output_height"]), int(op["opt"]["output_width"])
    height, width = int(features.shape[2]), int(features.shape[3])  # constants of a trace
    m = matrix[:, None, None, :2, :]  # [N, 1, 1, 2, 4]: broadcast over the output pixels
    # MediaPipe's align-corners correction: sample at pixel centres (x + 0.5), minus 0.5.
    offset = m[..., 3] + 0.5 * m[..., 0] + 0.5 * m[..., 1] - 0.5  # [N, 1, 1, 2]
    ys, xs = torch.meshgrid(
        torch.arange(out_h, dtype=torch.float32, device=features.device),
        torch.arange(out_w, dtype=torch.float32, device=features.device), indexing="ij")
    sample = m[..., 0] * xs[..., None] + m[..., 1] * ys[..., None] + offset  # [N, h, w, 2]
    limit = torch.tensor([width - 1.0, height - 1.0], device=features.device)
    inside = ((sample >= 0) & (sample <= limit)).all(dim=-1)  # [N, h, w]
    # grid_sample, align_corners=True: position p of a size-s axis is 2 p / (s - 1) - 1.
    grid = sample * (2.0 / limit) - 1.0
    sampled = F.grid_sample(features.float(), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)
    # Channels-last like every activation of the graph: the region sub-networks' layers run
    # on it (NCHW took conv2d's slower paths there, and a kernel choice that a frozen graph's
    # constants do not reproduce bit for bit).
    out = (sampled * inside[:, None].to(sampled.dtype)).to(features.dtype)
    return out.contiguous(memory_format=torch.channels_last)


def transform_landmarks(graph, op: dict, inputs: list) -> torch.Tensor:
    """``landmarks [N, L, 2 or 3]`` through ``matrix [N, 4, 4]`` (x, y only; z is kept)."""
    landmarks, matrix = inputs[0].float(), inputs[1].float()
    m = matrix[:, None, :2, :]  # [N, 1, 2, 4]
    xy = landmarks[..., 0:1] * m[..., 0] + landmarks[..., 1:2] * m[..., 1] + m[..., 3]
    return torch.cat((xy, landmarks[..., 2:]), dim=-1)
