"""Crops of rotated rectangles as network inputs: MediaPipe's ``ImageToTensorCalculator`` (CPU).

MediaPipe warps the uint8 image with OpenCV (``warpPerspective``, bilinear) so that the
rectangle's corners land on the tensor's corners: tensor pixel ``(u, v)`` of a ``W x H`` tensor
samples the image at ``centre + R(rotation) @ ((u / W - 0.5) * width, (v / H - 0.5) * height)``
in pixel-index coordinates (pixel centres at integers), then scales the values into the model's
range. Two implementations:

* :func:`crop_frames` (models on the CPU): that very operation, ``cv2.warpPerspective`` of the
  uint8 frames, so the whole frame is never converted to a float tensor -- only the crops are
  (a 1280 x 720 frame is 2.8 M values, a mesh crop 0.1 M);
* :func:`crop_rects` (any device, float images already there): the same with ``grid_sample``;
  like OpenCV it snaps sample positions to 1/32 px and rounds the warped values to integers
  (``emulate_uint8``), which keeps the network input within one grey level of OpenCV's (the
  interpolation weights differ in their last bits: OpenCV's are 15-bit fixed point).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

_OPENCV_SUBPIXEL = 32.0  # cv::warpPerspective's INTER_TAB_SIZE: sample positions in 1/32 px


def crop_rects(
    images: torch.Tensor,  # [B, 3, H, W] float, values 0..255
    image_index: torch.Tensor,  # [R] long: the image of each rectangle
    rects: torch.Tensor,  # [R, 5] normalised (x_center, y_center, width, height, rotation)
    size: tuple[int, int],  # (width, height) of the output tensor
    value_range: tuple[float, float],  # the model's input range for 0..255
    border: str,  # "zeros" (BORDER_ZERO) or "border" (BORDER_REPLICATE)
    emulate_uint8: bool = True,
) -> torch.Tensor:
    """``[R, 3, size_h, size_w]`` crops, in ``images``' dtype."""
    height, width = images.shape[2], images.shape[3]
    out_w, out_h = size
    geometry = rects.to(torch.float32)
    centre_x, centre_y = geometry[:, 0] * width, geometry[:, 1] * height
    rect_w, rect_h = geometry[:, 2] * width, geometry[:, 3] * height
    cos, sin = torch.cos(geometry[:, 4]), torch.sin(geometry[:, 4])
    u = torch.arange(out_w, dtype=torch.float32, device=images.device) / out_w - 0.5
    v = torch.arange(out_h, dtype=torch.float32, device=images.device) / out_h - 0.5
    du = u[None, None, :] * rect_w[:, None, None]  # [R, 1, W]
    dv = v[None, :, None] * rect_h[:, None, None]  # [R, H, 1]
    x = centre_x[:, None, None] + cos[:, None, None] * du - sin[:, None, None] * dv
    y = centre_y[:, None, None] + sin[:, None, None] * du + cos[:, None, None] * dv
    if emulate_uint8:
        x = torch.round(x * _OPENCV_SUBPIXEL) / _OPENCV_SUBPIXEL
        y = torch.round(y * _OPENCV_SUBPIXEL) / _OPENCV_SUBPIXEL
    # grid_sample, align_corners=False: pixel index p sits at (2p + 1) / size - 1.
    grid = torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)
    if images.shape[0] == 1:
        source = images.to(torch.float32).expand(len(rects), -1, -1, -1)  # a view, no copies
    else:
        source = images[image_index].to(torch.float32)
    crops = F.grid_sample(source, grid, mode="bilinear", padding_mode=border,
                          align_corners=False)
    if emulate_uint8:
        crops = torch.round(crops)
    low, high = value_range
    crops = crops * ((high - low) / 255.0) + low
    return crops.to(images.dtype)


def crop_frames(
    frames: np.ndarray,  # [B, H, W, 3] uint8
    image_index,  # R ints: the frame of each rectangle
    rects: torch.Tensor,  # [R, 5] as crop_rects'
    size: tuple[int, int],  # (width, height) of the output tensor
    value_range: tuple[float, float],
    border: str,  # "zeros" or "border"
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """:func:`crop_rects` on uint8 frames in host memory with OpenCV: ``[R, 3, size_h,
    size_w]`` CPU tensor in ``dtype`` (channels-last memory, what the networks run in)."""
    height, width = frames.shape[1], frames.shape[2]
    out_w, out_h = size
    mode = {"zeros": cv2.BORDER_CONSTANT, "border": cv2.BORDER_REPLICATE}[border]
    crops = np.empty((len(rects), out_h, out_w, 3), np.uint8)
    for row, (frame, rect) in enumerate(zip(image_index, rects.tolist())):
        # Output pixel (u, v) -> frame position, crop_rects' mapping (in double, as OpenCV
        # inverts the matrix MediaPipe gives it).
        centre_x, centre_y = rect[0] * width, rect[1] * height
        rect_w, rect_h = rect[2] * width, rect[3] * height
        cos, sin = float(np.cos(rect[4])), float(np.sin(rect[4]))
        inverse = np.array([
            [cos * rect_w / out_w, -sin * rect_h / out_h,
             centre_x - 0.5 * cos * rect_w + 0.5 * sin * rect_h],
            [sin * rect_w / out_w, cos * rect_h / out_h,
             centre_y - 0.5 * sin * rect_w - 0.5 * cos * rect_h],
            [0.0, 0.0, 1.0]])
        cv2.warpPerspective(frames[int(frame)], inverse, (out_w, out_h), dst=crops[row],
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=mode,
                            borderValue=0)
    tensor = torch.from_numpy(crops).permute(0, 3, 1, 2).to(torch.float32)
    low, high = value_range
    return (tensor * ((high - low) / 255.0) + low).to(dtype)


def whole_image_rects(count: int, device: torch.device) -> torch.Tensor:
    """``[count, 5]`` rectangles covering whole images, unrotated."""
    rect = torch.tensor([0.5, 0.5, 1.0, 1.0, 0.0], device=device)
    return rect.expand(count, 5).clone()
