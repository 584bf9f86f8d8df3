"""MediaPipe's face models (BlazeFace short range, the attention face mesh, selfie segmentation)
re-implemented in PyTorch from weights converted once by ``tools/convert_mediapipe_models.py``.

Importing this package loads no weights and imports neither mediapipe nor TensorFlow.
"""
