"""The PyTorch face models against mediapipe 0.10.14 itself, on the same images.

Both run here (the test environment has mediapipe; where it cannot be installed, e.g. Python
3.13, the comparisons cannot exist and are skipped with that reason; the tests at the end, which
need no mediapipe, run everywhere). Tolerances:

* landmarks: mean <= 0.5 px and max <= 2 px, measured in a 512 crop of the face: pixel errors
  scaled by 512 / the long side of the face's landmark box (stricter than the pipeline's aligned
  512 crops, where the face fills only about half of the crop);
* detector boxes: IoU >= 0.95 with mediapipe's ``FaceDetection(model_selection=0)``, and the
  same number of faces;
* selfie mask (probability > 0.5): IoU >= 0.98 with ``SelfieSegmentation(model_selection=0)``.

Images: the example portrait, the example video's frames (tracking mode against mediapipe's
tracking mode), skimage's astronaut, faces at several sizes and in-plane rotations, and a
faceless image.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from segtalker_core.face.torch_models import loading
from segtalker_core.face.torch_models.landmarker import TorchFaceLandmarker
from segtalker_core.face.torch_models import tflite_graph
from segtalker_core.face.torch_models.tflite_graph import MissingWeightsError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CROP = 512.0
MEAN_PX, MAX_PX = 0.5, 2.0
BOX_IOU, MASK_IOU = 0.95, 0.98
VIDEO_FRAMES = 12

_measured: dict[str, tuple[float, float]] = {}


def _quiet(call, *args):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype")
        return call(*args)


def _rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


def _rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def _on_canvas(image: np.ndarray, scale: float, canvas: tuple[int, int]) -> np.ndarray:
    """``image`` resized by ``scale`` on a grey ``canvas`` (width, height), off centre."""
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = np.full((canvas[1], canvas[0], 3), 128, np.uint8)
    y0, x0 = (canvas[1] - small.shape[0]) // 3, (canvas[0] - small.shape[1]) // 4
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these models are small, and the test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mp_solutions():
    return pytest.importorskip(
        "mediapipe.python.solutions",
        reason="mediapipe==0.10.14 is the reference and is not installable here (e.g. Python "
               "3.13)")


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return _rgb(EXAMPLES / "portrait.png")


@pytest.fixture(scope="module")
def still_images(portrait) -> dict[str, np.ndarray]:
    astronaut = np.ascontiguousarray(skimage.data.astronaut())
    return {
        "portrait": portrait,
        "astronaut": astronaut,
        "portrait x2": cv2.resize(portrait, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC),
        "small face in 640x480": _on_canvas(portrait, 0.8, (640, 480)),
        "portrait rotated 30": _rotated(portrait, 30),
        "portrait rotated -50": _rotated(portrait, -50),
        "portrait rotated 90": np.ascontiguousarray(np.rot90(portrait)),
        "face cut by the left border": np.ascontiguousarray(portrait[40:, 135:]),
        "astronaut rotated 180": np.ascontiguousarray(astronaut[::-1, ::-1]),
    }


@pytest.fixture(scope="module")
def video_frames() -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(EXAMPLES / "video.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == VIDEO_FRAMES:
                break
    assert len(frames) == VIDEO_FRAMES
    return frames


def _mediapipe_faces(mesh, image: np.ndarray) -> list[np.ndarray]:
    result = _quiet(mesh.process, image)
    return [np.array([(p.x, p.y, p.z) for p in face.landmark], np.float32)
            for face in result.multi_face_landmarks or ()]


def _crop_errors(ours: np.ndarray, theirs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per-point distances in a 512 crop of the face (see the module docstring)."""
    scale = np.array(size, np.float32)
    xy_ours, xy_theirs = ours[:, :2] * scale, theirs[:, :2] * scale
    face_side = float(np.ptp(xy_theirs, axis=0).max())
    return np.linalg.norm(xy_ours - xy_theirs, axis=1) * (CROP / face_side)


def _check_landmarks(name: str, ours: list[np.ndarray], theirs: list[np.ndarray],
                     image: np.ndarray) -> None:
    assert len(ours) == len(theirs), f"{name}: {len(ours)} faces vs mediapipe's {len(theirs)}"
    size = (image.shape[1], image.shape[0])
    for face_ours, face_theirs in zip(ours, theirs):
        assert face_ours.shape == (478, 3)
        errors = _crop_errors(face_ours, face_theirs, size)
        _measured[name] = (float(errors.mean()), float(errors.max()))
        assert errors.mean() <= MEAN_PX and errors.max() <= MAX_PX, (name, _measured[name])


def test_landmarks_match_mediapipe_on_still_images(mp_solutions, still_images):
    ours = TorchFaceLandmarker(video=False, max_faces=2)
    with mp_solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=2,
                                         refine_landmarks=True) as mesh:
        for name, image in still_images.items():
            theirs = _mediapipe_faces(mesh, image)
            assert theirs, f"{name}: mediapipe finds no face; the test image is wrong"
            _check_landmarks(name, ours.process(image), theirs, image)


def test_tracking_mode_matches_mediapipe_on_the_example_video(mp_solutions, video_frames):
    ours = TorchFaceLandmarker(video=True, max_faces=1)
    with mp_solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                         refine_landmarks=True) as mesh:
        for index, frame in enumerate(video_frames):
            _check_landmarks(f"video frame {index}", ours.process(frame),
                             _mediapipe_faces(mesh, frame), frame)


def test_a_batch_gives_the_same_faces_as_frame_by_frame(still_images):
    same_size = [still_images[k] for k in ("portrait", "portrait rotated 30",
                                           "portrait rotated 90")]
    landmarker = TorchFaceLandmarker(video=False, max_faces=1)
    batched = landmarker.process_batch(np.stack(same_size))
    for image, faces in zip(same_size, batched):
        single = landmarker.process(image)
        assert len(faces) == len(single) == 1
        np.testing.assert_allclose(faces[0], single[0], atol=1e-4)


def test_the_device_crop_path_agrees_with_the_cpu_crop_path(still_images, video_frames):
    """On the CPU the network inputs are OpenCV warps of the uint8 frames; on a GPU they are
    sampled from the frames on the device (``crop_rects``). Run here on the CPU, that path
    gives the same faces within the tolerance: still images, and the video tracked."""
    for video, images in ((False, list(still_images.values())), (True, video_frames)):
        host = TorchFaceLandmarker(video=video, max_faces=2)
        device = TorchFaceLandmarker(video=video, max_faces=2)
        device.crop_on_host = False
        for index, image in enumerate(images):
            ours, theirs = device.process(image), host.process(image)
            assert len(ours) == len(theirs), (video, index)
            for face_device, face_host in zip(ours, theirs):
                errors = _crop_errors(face_device, face_host, (image.shape[1], image.shape[0]))
                assert errors.mean() <= MEAN_PX and errors.max() <= MAX_PX, (
                    video, index, errors.mean(), errors.max())


def test_no_face_gives_no_landmarks_in_both(mp_solutions):
    blank = np.full((240, 320, 3), 90, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    ours = TorchFaceLandmarker(video=False, max_faces=1)
    with mp_solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                         refine_landmarks=True) as mesh:
        for image in (blank, noise):
            assert _mediapipe_faces(mesh, image) == []
            assert ours.process(image) == []


def _box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_detector_boxes_match_mediapipe(mp_solutions, still_images, video_frames):
    detector = loading.face_detector()
    images = dict(still_images, **{"video frame 0": video_frames[0]})
    worst = 1.0
    with mp_solutions.face_detection.FaceDetection(model_selection=0,
                                                   min_detection_confidence=0.5) as reference:
        for name, image in images.items():
            result = _quiet(reference.process, image)
            theirs = []
            for detection in result.detections or ():
                box = detection.location_data.relative_bounding_box
                theirs.append((box.xmin, box.ymin, box.xmin + box.width, box.ymin + box.height))
            with torch.inference_mode():
                found = detector(torch.from_numpy(image).permute(2, 0, 1)[None].float(), 0.5)[0]
            ours = found.boxes.tolist()
            assert len(ours) == len(theirs), f"{name}: {len(ours)} boxes vs {len(theirs)}"
            for box in theirs:
                best = max(_box_iou(box, mine) for mine in ours)
                worst = min(worst, best)
                assert best >= BOX_IOU, (name, best)
    _measured["detector worst IoU"] = (worst, worst)


def test_selfie_mask_matches_mediapipe(mp_solutions, still_images, video_frames):
    segmenter = loading.selfie_segmenter()
    portrait = still_images["portrait"]
    images = {
        "portrait at 256": cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA),
        "portrait": portrait,
        "astronaut": still_images["astronaut"],
        "portrait rotated 30": still_images["portrait rotated 30"],
        "video frame 0": video_frames[0],
    }
    worst = 1.0
    with mp_solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as reference:
        for name, image in images.items():
            theirs = _quiet(reference.process, image).segmentation_mask > 0.5
            with torch.inference_mode():
                mask = segmenter(torch.from_numpy(image).permute(2, 0, 1)[None].float())[0]
            ours = mask.numpy() > 0.5
            assert ours.shape == theirs.shape
            assert theirs.any(), f"{name}: mediapipe sees no person; the test image is wrong"
            iou = (ours & theirs).sum() / (ours | theirs).sum()
            worst = min(worst, float(iou))
            assert iou >= MASK_IOU, (name, iou)
    _measured["selfie worst IoU"] = (worst, worst)


def test_report_measured_agreement(mp_solutions, capsys):
    """Prints the measured numbers (``pytest -s``); fails if an earlier test measured nothing."""
    landmark_rows = {k: v for k, v in _measured.items() if "IoU" not in k}
    assert landmark_rows, "run with the other tests of this module"
    with capsys.disabled():
        print("\nlandmark error in a 512 face crop (mean px, max px):")
        for name, (mean, peak) in landmark_rows.items():
            print(f"  {name:28s} {mean:.3f} {peak:.3f}")
        for name in ("detector worst IoU", "selfie worst IoU"):
            if name in _measured:
                print(f"  {name:28s} {_measured[name][0]:.4f}")


# -- without mediapipe ---------------------------------------------------------------------------

def test_the_pack_detects_and_parses_with_mediapipe_unimportable(portrait, monkeypatch):
    """The runtime path (detector + built-in parser) while every ``import mediapipe...`` fails."""
    from segtalker_core.face.detect import FaceMeshDetector
    from segtalker_core.labels import BISENET_19
    from segtalker_core.parsing.landmark_parser import LandmarkParser

    for name in [name for name in sys.modules if name.split(".")[0] == "mediapipe"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # None in sys.modules: ImportError
    with pytest.raises(ImportError):
        import mediapipe.python.solutions  # noqa: F401
    with FaceMeshDetector() as detector, LandmarkParser() as parser:
        faces = detector.detect(portrait)
        assert len(faces) == 1
        labels = parser.parse(portrait[None], faces[0].landmarks[None])
    names = {BISENET_19[i] for i in np.unique(labels)}
    # Face features from the mesh, and hair / background from the selfie mask.
    assert {"background", "skin", "l_eye", "r_eye", "nose", "u_lip", "l_lip", "hair"} <= names


def test_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(MissingWeightsError, match="face model weights .* are missing.*"
                                                 "convert_mediapipe_models.py"):
        loading.load_network(loading.MESH_FILE)


def test_float16_landmarks_stay_within_the_tolerance_of_float32(portrait):
    """Half precision (the CPU runs it too; a GPU is where it is meant for)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    full = TorchFaceLandmarker(device=device).process(portrait)
    half = TorchFaceLandmarker(device=device, dtype=torch.float16).process(portrait)
    assert len(full) == len(half) == 1
    errors = _crop_errors(half[0], full[0], (portrait.shape[1], portrait.shape[0]))
    assert errors.mean() <= MEAN_PX and errors.max() <= MAX_PX, (errors.mean(), errors.max())


def test_the_shipped_weights_are_what_the_converter_writes(mp_solutions, tmp_path):
    """``tools/convert_mediapipe_models.py`` on the installed wheel reproduces the shipped files
    byte for byte (the converter writes a fixed header order)."""
    pytest.importorskip("tflite", reason="the converter's flatbuffer parser (requirements-dev)")
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("convert_mediapipe_models",
                                                  root / "tools" / "convert_mediapipe_models.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--out", str(tmp_path)]) == 0
    for _, name in tool.MODELS:
        shipped = (loading.WEIGHTS_DIR / f"{name}.safetensors").read_bytes()
        assert (tmp_path / f"{name}.safetensors").read_bytes() == shipped, name


@pytest.mark.parametrize("file_name, size", [(loading.MESH_FILE, 192),
                                             (loading.DETECTOR_FILE, 128),
                                             (loading.SELFIE_FILE, 256)])
def test_the_frozen_cpu_graph_is_bit_identical_to_the_eager_graph(file_name, size):
    """CPU inference runs a torch.jit-frozen trace of the graph (speed) from the second forward
    of a kind of input on (the first runs the eager graph: a portrait detects once, and a trace
    costs more than it saves there); it must be the same computation: equal outputs bit for
    bit, for a single image (its own trace) and for batch sizes other than the traced one."""
    network = loading.load_network(file_name)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        network(torch.zeros((1, 3, size, size)))
        assert not network._frozen, "the first forward of a kind traced the graph"
        for batch in (1, 3, 5):
            image = torch.rand((batch, 3, size, size), generator=generator) * 2 - 1
            frozen = network(image)
            if batch == 3:  # the first batch: eager, the second forward of a batch traces
                assert len(network._frozen) == 1
                frozen = network(image)
            assert len(network._frozen) == (1 if batch == 1 else 2), (
                "the CPU forward did not use the frozen graph of its kind")
            eager = network._run(image.contiguous(memory_format=torch.channels_last))
            assert frozen.keys() == eager.keys()
            for name in frozen:
                assert frozen[name].shape[0] == batch
                assert torch.equal(frozen[name], eager[name]), (file_name, batch, name)


def test_a_single_image_is_the_same_through_its_dense_depthwise_layers():
    """A single image on the CPU runs the depthwise layers on tiny maps as dense sums (speed,
    ``tflite_graph._use_dense_depthwise``); a batch runs them as convolutions. The same image
    alone and inside a batch gives the same outputs up to float rounding."""
    network = loading.load_network(loading.MESH_FILE)
    assert any(tflite_graph._use_dense_depthwise(
        tflite_graph._Run(network, True), op, torch.zeros(1, 128, 4, 4),
        torch.zeros(128, 1, 3, 3)) for op in network.ops if op["op"] == "DEPTHWISE_CONV_2D")
    image = torch.rand((2, 3, 192, 192), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        alone, batch = network(image[:1]), network(image)
    for name in alone:
        scale = float(batch[name][:1].abs().max()) or 1.0
        assert float((alone[name] - batch[name][:1]).abs().max()) <= 1e-5 * scale, name


def test_a_forward_that_needs_gradients_runs_the_eager_graph():
    network = loading.load_network(loading.DETECTOR_FILE)
    image = torch.rand((1, 3, 128, 128), requires_grad=True)
    outputs = network(image)
    assert not network._frozen  # nothing traced: the frozen graph holds no autograd
    sum(value.sum() for value in outputs.values()).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
