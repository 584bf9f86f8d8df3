"""The 478-point face mesh with refined lips and irises (``face_landmark_with_attention``).

Choice: the attention model, the one MediaPipe 0.10.14's ``FaceMesh(refine_landmarks=True)``
runs, not ``face_landmark.tflite`` + ``iris_landmark.tflite``: only the same network gives the
same points. Its three custom operators are re-implemented in :mod:`.attention_ops`.

Per rectangle (a face ROI, :mod:`.rects`) the image is cropped to 192 x 192 (values 0..1,
replicated border); the network gives the 468-point mesh, 80 lip points, 71 points per eye
region and 5 per iris in crop pixels, and a face-presence logit. The refinement (MediaPipe's
``TensorsToFaceLandmarksWithAttention``) overwrites mesh points with the lip and eye points (x, y
only: the mesh keeps its z there), appends the irises as points 468-472 (left) and 473-477
(right) with z the mean of the eye's first 16 mesh points' z, and projects everything from the
crop back to the image (z scaled like x by the rectangle's width).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .roi_crop import crop_rects
from .tflite_graph import TFLiteGraph

INPUT_SIZE = 192
NUM_MESH = 468
NUM_POINTS = 478
IRIS_Z_POINTS = 16  # each eye's first 16 refined points (its contour) give its iris depth


@dataclass(frozen=True)
class MeshResult:
    """``landmarks [R, 478, 3]`` normalised by the image (z by its width); ``presence [R]``:
    the face-presence probability of each rectangle."""

    landmarks: torch.Tensor
    presence: torch.Tensor


class AttentionFaceMesh(nn.Module):
    """``forward(images [B, 3, H, W] 0..255, image_index [R], rects [R, 5]) ->``
    :class:`MeshResult`: all rectangles of all images in one network forward.
    :meth:`from_crops` is the second half, for a caller that cropped the rectangles itself
    (``roi_crop.crop_frames`` of uint8 frames on the CPU)."""

    def __init__(self, network: TFLiteGraph) -> None:
        super().__init__()
        self.network = network
        # The refinement's index maps are the crops' landmark subsets inside the model
        # (the same lists as MediaPipe's LandmarksRefinementCalculator options).
        subsets = {op["opt"]["left_rotation_idx"]: op["opt"]["subset_idxs"]
                   for op in network.ops if op["op"] == "CUSTOM:Landmarks2TransformMatrix"}
        self.lips = list(subsets[61])
        self.left_eye = list(subsets[33])
        self.right_eye = list(subsets[362])
        assert (len(self.lips), len(self.left_eye), len(self.right_eye)) == (80, 71, 71)
        device = next(iter(network.weights.values())).device
        self.register_buffer("xy_source", _refined_xy_source(self.lips, self.left_eye,
                                                             self.right_eye).to(device),
                             persistent=False)
        self.register_buffer("iris_z_source", torch.tensor(
            [self.left_eye[:IRIS_Z_POINTS], self.right_eye[:IRIS_Z_POINTS]], device=device),
            persistent=False)

    def forward(self, images: torch.Tensor, image_index: torch.Tensor,
                rects: torch.Tensor) -> MeshResult:
        if len(rects) == 0:
            return MeshResult(images.new_zeros((0, NUM_POINTS, 3), dtype=torch.float32),
                              images.new_zeros((0,), dtype=torch.float32))
        crops = crop_rects(images, image_index, rects, (INPUT_SIZE, INPUT_SIZE), (0.0, 1.0),
                           "border")
        return self.from_crops(crops, rects)

    def from_crops(self, crops: torch.Tensor, rects: torch.Tensor) -> MeshResult:
        """The mesh of the network inputs ``crops [R, 3, 192, 192]`` (values 0..1) of
        ``rects [R, 5]``."""
        if len(rects) == 0:
            return MeshResult(crops.new_zeros((0, NUM_POINTS, 3), dtype=torch.float32),
                              crops.new_zeros((0,), dtype=torch.float32))
        out = {name: value.float() for name, value in self.network(crops).items()}
        count = len(rects)
        mesh = out["output_mesh_identity"].reshape(count, NUM_MESH, 3)
        # One gather does the refinement's overwrites (xy_source: which output each point's
        # x, y come from); a dozen small index assignments per frame cost ~0.3 ms on a CPU.
        every_xy = torch.cat([mesh[..., :2]] + [out[name].reshape(count, -1, 2)
                                                for name in _REFINED_OUTPUTS], dim=1)
        xy = every_xy[:, self.xy_source]
        iris_z = mesh[:, :, 2][:, self.iris_z_source].mean(dim=2)  # [R, 2]: left, right
        z = torch.cat((mesh[..., 2], iris_z.repeat_interleave(5, dim=1)), dim=1)
        points = torch.cat((xy, z[..., None]), dim=2)
        landmarks = project(points / INPUT_SIZE, rects.float())
        presence = torch.sigmoid(out["conv_faceflag"].reshape(count))
        return MeshResult(landmarks, presence)


# The refinement's outputs in the order their x, y overwrite the mesh (MediaPipe's), the irises
# appended as points 468-472 and 473-477.
_REFINED_OUTPUTS = ("output_lips", "output_left_eye", "output_right_eye", "output_left_iris",
                    "output_right_iris")


def _refined_xy_source(lips: list[int], left_eye: list[int],
                       right_eye: list[int]) -> torch.Tensor:
    """``[478]``: for each point, its x, y's index in the mesh's 468 points followed by the
    outputs of :data:`_REFINED_OUTPUTS` (80 + 71 + 71 + 5 + 5 points); a later output wins."""
    source = list(range(NUM_MESH)) + [0] * (NUM_POINTS - NUM_MESH)
    start = NUM_MESH
    for indexes in (lips, left_eye, right_eye, range(468, 473), range(473, 478)):
        for offset, point in enumerate(indexes):
            source[point] = start + offset
        start += len(indexes)
    return torch.tensor(source, dtype=torch.long)


def project(points: torch.Tensor, rects: torch.Tensor) -> torch.Tensor:
    """Crop-normalised ``points [R, P, 3]`` -> image-normalised, as MediaPipe's
    ``LandmarkProjectionCalculator``."""
    x, y = points[..., 0] - 0.5, points[..., 1] - 0.5
    cos, sin = torch.cos(rects[:, 4])[:, None], torch.sin(rects[:, 4])[:, None]
    new_x = (cos * x - sin * y) * rects[:, 2, None] + rects[:, 0, None]
    new_y = (sin * x + cos * y) * rects[:, 3, None] + rects[:, 1, None]
    new_z = points[..., 2] * rects[:, 2, None]
    return torch.stack((new_x, new_y, new_z), dim=-1)
