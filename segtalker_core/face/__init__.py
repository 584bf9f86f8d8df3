"""Face detection (MediaPipe's face mesh, in PyTorch), FFHQ-style alignment, temporal smoothing,
paste-back.

Importing this package loads no model and does not import torch's face models (nor mediapipe,
which the pack no longer needs); the detector loads them when it first runs.
"""
from .align import Similarity, ffhq_similarity, similarity_to_affine, transform_points, warp_crop
from .aligned import AlignedFaces, align_faces
from .detect import DetectedFace, FaceMeshDetector, select_face
from .image import to_rgb_uint8, to_rgb_uint8_batch
from .smoothing import OneEuroSmoother, Smoothing, smooth_similarity

__all__ = [
    "AlignedFaces", "DetectedFace", "FaceMeshDetector", "OneEuroSmoother", "Similarity",
    "Smoothing", "align_faces", "ffhq_similarity", "select_face", "similarity_to_affine",
    "smooth_similarity", "to_rgb_uint8", "to_rgb_uint8_batch", "transform_points", "warp_crop",
]
