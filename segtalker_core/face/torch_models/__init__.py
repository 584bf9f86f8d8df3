"""MediaPipe's face models (BlazeFace short range, the attention face mesh, selfie segmentation)
re-implemented in PyTorch from weights converted once by ``tools/convert_mediapipe_models.py``
(shipped in ``segtalker_core/face/weights/``, Apache-2.0, see the NOTICE there).

Modules, one concept each:

* :mod:`.tflite_graph` -- runs a converted TFLite operator graph with PyTorch operators;
* :mod:`.parallel_branches` -- which of a graph's operators run side by side as one call;
* :mod:`.attention_ops` -- the attention mesh's custom operators (region crops of its features);
* :mod:`.roi_crop` -- rotated-rectangle crops as network inputs (MediaPipe's ImageToTensor);
* :mod:`.rects` -- face ROIs from detections and from landmarks, and their association;
* :mod:`.blazeface` -- the detector: anchors, decoding, weighted non-maximum suppression;
* :mod:`.face_mesh` -- the 478-point mesh with refined lips and irises;
* :mod:`.selfie` -- the person mask;
* :mod:`.landmarker` -- the face-mesh solution graph: detection, ROIs, tracking for video;
* :mod:`.loading` -- the weight files, loaded once per device and dtype.

Agreement with mediapipe 0.10.14 itself is what ``tests/test_torch_face_models.py`` checks (and
prints with ``pytest -s``). Device and dtype come from the caller; a batch of frames goes through
detection and the mesh in one forward each (:meth:`.landmarker.TorchFaceLandmarker.process_batch`).

Importing this package loads no weights and imports neither mediapipe nor TensorFlow.
"""
