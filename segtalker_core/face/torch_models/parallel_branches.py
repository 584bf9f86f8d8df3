"""Parallel branches of a converted TFLite graph, planned to run as one wider operator each.

The attention mesh refines the lips and both eyes in sub-networks of identical shape: three
branches, then five once the eyes split off their irises, ~225 of the graph's ~340 operators,
all on 16 x 16 down to 2 x 2 maps. For a single image each of those layers is a kernel call of
a few microseconds of arithmetic and tens of microseconds of fixed cost. Run side by side with
their activations stacked along the channels (a depthwise convolution over all members'
channels, a grouped convolution with one group per member, one PReLU, one addition...) a
layer of the group costs one call: every output channel is still the same sum of the same
products, only more of them are computed per call.

This module only plans (no tensors): :func:`plan` orders the operators by their depth in the
graph and gathers operators of equal depth and equal signature (kind, options, shapes) into an
:class:`OperatorGroup`. Operators of equal depth cannot depend on one another (a dependency
makes the consumer deeper), so every group is free to run as one call; running operators in
depth order is a valid order of the graph. :mod:`.tflite_graph` executes the plan.
"""
from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

# Operators that act on each channel alone, or (convolutions) have weights that stack per
# member: a group of them is one operator on channel-stacked activations.
FUSIBLE = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MUL", "MAX_POOL_2D",
                     "AVERAGE_POOL_2D", "PAD"})


@dataclass(frozen=True)
class OperatorGroup:
    """Operators of one depth and one signature, in graph order, run as one call on their
    inputs stacked along the channel axis (member k's channels after member k-1's)."""

    ops: tuple[dict, ...]

    def __len__(self) -> int:
        return len(self.ops)


def plan(
    ops: Sequence[dict],  # the graph's operators in file order
    shapes: Mapping[int, Sequence[int]],  # tensor id -> TFLite (NHWC) shape
    constants: Collection[int],  # ids of every constant tensor (float and integer)
    integer_constants: Mapping[int, Sequence[int]],  # shape / padding constants (values matter)
) -> list[dict | OperatorGroup]:
    """The operators in depth order, runs of parallel equal operators as groups."""
    depth = _depths(ops, constants)
    by_depth: dict[int, list[int]] = {}
    for index, op in enumerate(ops):
        by_depth.setdefault(depth[index], []).append(index)
    steps: list[dict | OperatorGroup] = []
    for level in sorted(by_depth):
        buckets: dict[str, list[dict]] = {}
        order: list[str | int] = []
        for index in by_depth[level]:
            op = ops[index]
            key = _signature(op, shapes, constants, integer_constants)
            if key is None:
                order.append(index)
                continue
            if key not in buckets:
                buckets[key] = []
                order.append(key)
            buckets[key].append(op)
        for entry in order:
            if isinstance(entry, int):
                steps.append(ops[entry])
            elif len(buckets[entry]) == 1:
                steps.append(buckets[entry][0])
            else:
                steps.append(OperatorGroup(tuple(buckets[entry])))
    return steps


def _depths(ops: Sequence[dict], constants: Collection[int]) -> list[int]:
    """Per operator: 1 + the deepest operator producing one of its inputs (0 for the graph's
    input). Assumes the file's order is topological, as TFLite's is."""
    produced_at: dict[int, int] = {}
    depths = []
    for op in ops:
        level = 1 + max((produced_at.get(i, 0) for i in op["in"]
                         if i >= 0 and i not in constants), default=0)
        depths.append(level)
        for out in op["out"]:
            produced_at[out] = level
    return depths


def _signature(op: dict, shapes: Mapping[int, Sequence[int]], constants: Collection[int],
               integer_constants: Mapping[int, Sequence[int]]) -> str | None:
    """What operators must share to run as one group; None: this one never groups."""
    kind = op["op"]
    if kind not in FUSIBLE or len(op["out"]) != 1:
        return None
    inputs = [i for i in op["in"] if i >= 0]
    activations = [i for i in inputs if i not in constants]
    if not activations or any(len(shapes[i]) != 4 for i in activations + list(op["out"])):
        return None  # stacking is along the channels of 4-D activations
    if kind in ("ADD", "MUL") and len(activations) != len(inputs):
        return None  # a constant operand of its own per member: not worth stacking
    if kind == "DEPTHWISE_CONV_2D" and op["opt"].get("depth_multiplier", 1) != 1:
        return None
    if kind == "PRELU":
        alpha = inputs[1]
        if alpha not in constants or math.prod(shapes[alpha]) != shapes[activations[0]][-1]:
            return None  # one slope per channel is what stacks
    described = []
    for position, tensor in enumerate(op["in"]):
        if tensor < 0:
            described.append(None)
        elif tensor in integer_constants:
            described.append(("values", list(integer_constants[tensor])))
        else:
            described.append(("constant" if tensor in constants else "activation",
                              list(shapes[tensor])))
    return json.dumps([kind, op["opt"], described, list(shapes[op["out"][0]])], sort_keys=True)

