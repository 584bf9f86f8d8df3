"""Parallel branches of the converted face graphs run as one wider operator each
(``face.torch_models.parallel_branches`` plans, ``tflite_graph`` executes): the plan is a
valid order of the graph, the fused graph computes what the operators one by one compute, and
the pieces it adds (grouped 1 x 1 convolution as a batched product, per-member channel
padding, the mesh refinement as one gather) equal their plain forms."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segtalker_core.face.torch_models import face_mesh, loading, parallel_branches, tflite_graph
from segtalker_core.face.torch_models.parallel_branches import OperatorGroup


def _graphs(file_name: str):
    graph, constants = tflite_graph.load_graph_file(loading.WEIGHTS_DIR / file_name)
    fused = tflite_graph.TFLiteGraph(graph, constants).eval()
    plain = tflite_graph.TFLiteGraph(graph, constants, fuse_parallel=False).eval()
    return fused, plain


def test_the_plan_runs_every_operator_once_and_after_its_inputs():
    fused, plain = _graphs(loading.MESH_FILE)
    flat = []
    for step in fused.steps:
        flat += list(step.ops) if isinstance(step, OperatorGroup) else [step]
    assert sorted(id(op) for op in flat) == sorted(id(op) for op in plain.ops)
    ready = {fused.input_id} | {int(name) for name in fused.weights} | set(fused.integers)
    for step in fused.steps:
        members = step.ops if isinstance(step, OperatorGroup) else (step,)
        for op in members:
            assert all(i < 0 or i in ready for i in op["in"]), op
        for op in members:  # a group's members do not feed one another
            ready.update(op["out"])
    groups = [step for step in fused.steps if isinstance(step, OperatorGroup)]
    # The lips and eyes sub-networks (3 branches, 5 once the irises split off) are what groups.
    assert {len(group) for group in groups} >= {3, 5}
    assert sum(len(group) for group in groups) > 200
    for group in groups:
        kinds = {op["op"] for op in group.ops}
        assert len(kinds) == 1 and kinds <= parallel_branches.FUSIBLE


@pytest.mark.parametrize("file_name", [loading.DETECTOR_FILE, loading.SELFIE_FILE])
def test_a_graph_without_parallel_branches_runs_its_operators_alone(file_name):
    fused, plain = _graphs(file_name)
    assert not any(isinstance(step, OperatorGroup) for step in fused.steps)
    assert sorted(id(op) for op in fused.steps) == sorted(id(op) for op in plain.ops)
    assert not fused.group_weights


@pytest.mark.parametrize("batch", [2, 3])
def test_the_fused_mesh_equals_the_operators_run_one_by_one(batch):
    """A batch runs the same kernels per channel: equal bit for bit."""
    fused, plain = _graphs(loading.MESH_FILE)
    image = torch.rand((batch, 3, 192, 192), generator=torch.Generator().manual_seed(batch))
    image = image.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected, actual = plain._run(image), fused._run(image)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_a_single_image_through_the_fused_mesh_is_within_float_rounding():
    """A single image's depthwise layers on tiny maps run as dense sums, decided per member
    (the same layers as unstacked), summed over more channels at once: the same values up to
    float rounding."""
    fused, plain = _graphs(loading.MESH_FILE)
    image = torch.rand((1, 3, 192, 192), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected, actual = plain(image), fused(image)
    for name in expected:
        scale = float(expected[name].abs().max()) or 1.0
        assert float((actual[name] - expected[name]).abs().max()) <= 1e-5 * scale, name


@pytest.mark.parametrize("groups, size, channels, outputs", [(5, 2, 128, 128), (3, 8, 64, 64),
                                                              (2, 1, 32, 142)])
def test_a_grouped_pointwise_layer_equals_the_grouped_convolution(groups, size, channels,
                                                                  outputs):
    generator = torch.Generator().manual_seed(size)
    x = torch.randn((2, groups * channels, size, size), generator=generator).contiguous(
        memory_format=torch.channels_last)
    weight = torch.randn((groups * outputs, channels, 1, 1), generator=generator)
    bias = torch.randn((groups * outputs,), generator=generator)
    actual = tflite_graph._grouped_pointwise(x, weight, bias, groups)
    expected = F.conv2d(x, weight, bias, groups=groups)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tflite_graph._grouped_pointwise(x, weight, None, groups),
                               F.conv2d(x, weight, None, groups=groups), rtol=1e-5, atol=1e-5)


def test_a_groups_channel_padding_pads_each_member():
    members = [torch.randn((2, 3, 4, 5)) for _ in range(3)]
    stacked = torch.cat(members, dim=1).contiguous(memory_format=torch.channels_last)
    padded = tflite_graph._pad_channels_of_each(stacked, 3, [1, 2])
    expected = torch.cat([F.pad(m, (0, 0, 0, 0, 1, 2)) for m in members], dim=1)
    assert torch.equal(padded, expected)
    op = {"op": "PAD", "in": [], "out": [], "opt": {"members": 3}}
    nhwc_pads = [0, 0, 1, 0, 0, 1, 1, 2]  # NHWC (before, after) pairs: H, W and C padded
    through_operator = tflite_graph._pad(None, op, [stacked, nhwc_pads])
    assert torch.equal(through_operator, F.pad(expected, (0, 1, 1, 0)))


def test_the_refinement_gather_overwrites_as_mediapipe_does():
    """Lips, then each eye overwrite the mesh's x, y (z kept); the irises are appended with the
    mean z of their eye's first 16 points -- written here as the plain index assignments."""
    mesh = loading.face_mesh()
    generator = torch.Generator().manual_seed(3)
    count = 2
    out = {"output_mesh_identity": torch.randn((count, 1404, 1, 1), generator=generator)}
    for name, points in (("output_lips", 80), ("output_left_eye", 71), ("output_right_eye", 71),
                         ("output_left_iris", 5), ("output_right_iris", 5)):
        out[name] = torch.randn((count, 2 * points, 1, 1), generator=generator)
    out["conv_faceflag"] = torch.randn((count, 1, 1, 1), generator=generator)
    rects = torch.tensor([[0.5, 0.5, 0.4, 0.4, 0.3], [0.3, 0.6, 0.2, 0.3, -1.0]])

    class Outputs(torch.nn.Module):
        def forward(self, crops):
            return out

    network = mesh.network
    try:
        mesh.network = Outputs()
        result = mesh.from_crops(torch.zeros((count, 3, 192, 192)), rects)
    finally:
        mesh.network = network
    points = out["output_mesh_identity"].reshape(count, 468, 3)
    points = torch.cat((points, torch.zeros((count, 10, 3))), dim=1)
    for name, indexes in (("output_lips", mesh.lips), ("output_left_eye", mesh.left_eye),
                          ("output_right_eye", mesh.right_eye)):
        points[:, indexes, :2] = out[name].reshape(count, -1, 2)
    for name, first, eye in (("output_left_iris", 468, mesh.left_eye),
                             ("output_right_iris", 473, mesh.right_eye)):
        points[:, first:first + 5, :2] = out[name].reshape(count, 5, 2)
        points[:, first:first + 5, 2] = points[:, eye[:16], 2].mean(dim=1, keepdim=True)
    expected = face_mesh.project(points / face_mesh.INPUT_SIZE, rects)
    assert torch.equal(result.landmarks, expected)
    assert torch.equal(result.presence, torch.sigmoid(out["conv_faceflag"].reshape(count)))
