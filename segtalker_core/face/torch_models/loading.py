"""Load the converted face models from ``segtalker_core/face/weights/`` onto a device.

Loaded modules are cached per (model, device, dtype): a video's frames, the parser and the
detector share one copy. The weights are float16 in the files (as in MediaPipe's .tflite) and
upcast exactly; ``dtype`` is the compute dtype the caller chose.
"""
from __future__ import annotations

import threading
from pathlib import Path

import torch

from .blazeface import ShortRangeFaceDetector
from .face_mesh import AttentionFaceMesh
from .selfie import SelfieSegmenter
from .tflite_graph import TFLiteGraph, load_graph_file

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DETECTOR_FILE = "face_detection_short_range.safetensors"
MESH_FILE = "face_landmark_with_attention.safetensors"
SELFIE_FILE = "selfie_segmentation.safetensors"

_CACHE: dict[tuple[str, str, torch.dtype], torch.nn.Module] = {}
_LOCK = threading.Lock()


def load_network(file_name: str, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> TFLiteGraph:
    graph, constants = load_graph_file(WEIGHTS_DIR / file_name)
    return TFLiteGraph(graph, constants).to(device=device, dtype=dtype).eval()


def _cached(file_name: str, wrap, device, dtype) -> torch.nn.Module:
    key = (file_name, str(torch.device(device)), dtype)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = wrap(load_network(file_name, device, dtype))
        return _CACHE[key]


def face_detector(device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> ShortRangeFaceDetector:
    return _cached(DETECTOR_FILE, ShortRangeFaceDetector, device, dtype)


def face_mesh(device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> AttentionFaceMesh:
    return _cached(MESH_FILE, AttentionFaceMesh, device, dtype)


def selfie_segmenter(device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> SelfieSegmenter:
    return _cached(SELFIE_FILE, SelfieSegmenter, device, dtype)
