"""Node contract, checked against the real ComfyUI 0.3.75 code but without a server.

* The pack imports as ComfyUI imports it (a path-named package), registers through the V3
  ``comfy_entrypoint`` only, builds every schema, and stays light (no mediapipe / pocketsphinx /
  librosa at import or registration time).
* Every node: id and category prefixed ``SegTalker``, a display name, socket types that are core
  ComfyUI types or ``SEGTALKER_*``, no clash with a core node id, every node class defined in
  ``nodes/`` registered.
* Every example workflow: a UI file in ``example_workflows/`` (the one folder ComfyUI's template
  browser should list them from) with an API twin in ``api_workflows/``, no workflow files in the
  other folders the template scan reads, every node type known to ComfyUI (core + this pack), API
  inputs that exist, links between matching types, and the UI and API files describing the same
  graph.

Widget *values* are not compared between the UI and API files (the UI stores them positionally with
frontend-only extras such as ``control_after_generate``); the server test runs the API files.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import comfyui_host

REPO_DIR = comfyui_host.REPO_DIR
UI_DIR = REPO_DIR / "example_workflows"
API_DIR = REPO_DIR / "api_workflows"
# Besides example_workflows/, ComfyUI's template scan (app/custom_node_manager.py) reads these.
OTHER_TEMPLATE_DIRS = ("example", "examples", "workflow", "workflows")
HEAVY_MODULES = ("mediapipe", "pocketsphinx", "librosa")
FRONTEND_ONLY_NODES = {"Note", "MarkdownNote"}  # UI-only, never exported to the API format
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
PACK_MODULE = f"custom_nodes.{comfyui_host.PACK_LINK_NAME}"


def _ui_names(directory: Path) -> set[str]:
    return {p.name[: -len(".json")] for p in directory.glob("*.json")
            if not p.name.endswith(".api.json")}


def _api_names(directory: Path) -> set[str]:
    return {p.name[: -len(".api.json")] for p in directory.glob("*.api.json")}


WORKFLOW_NAMES = sorted(_ui_names(UI_DIR) | _api_names(API_DIR))


@pytest.fixture(scope="module")
def comfy_table(comfyui_dir) -> dict:
    """ComfyUI's node table with core nodes and this pack loaded, as /object_info would serve it."""
    return comfyui_host.offline_object_info(comfyui_dir, REPO_DIR)


# --------------------------------------------------------------------------- the pack


def test_pack_registers_through_v3_entrypoint(pack_description):
    d = pack_description
    assert d["has_entrypoint"], "__init__.py has no callable comfy_entrypoint"
    assert not d["exports_node_class_mappings"], (
        "__init__.py exports NODE_CLASS_MAPPINGS: ComfyUI would load the pack as V1 and ignore "
        "comfy_entrypoint")
    assert d.get("extension_type") == "ComfyExtension", \
        f"comfy_entrypoint() returned {d.get('extension_type')}, not a ComfyExtension"
    assert d.get("node_list_is_list"), "get_node_list() must return a list"
    assert d["nodes"], "get_node_list() returned no nodes"
    assert not d["errors"], "\n".join(d["errors"])


def test_pack_import_and_registration_stay_light(pack_description):
    loaded = set(pack_description["modules_added"])
    heavy = sorted(m for m in HEAVY_MODULES if m in loaded)
    assert not heavy, (f"importing the pack and registering its nodes imported {heavy}; "
                       f"import them inside the node's execute()")


def _core_types(object_info: dict, core_ids: list[str]) -> set[str]:
    types = set(WIDGET_TYPES)
    for node_id in core_ids:
        info = object_info.get(node_id) or {}
        for section in ("required", "optional"):
            for spec in (info.get("input", {}).get(section) or {}).values():
                if isinstance(spec, (list, tuple)) and spec and isinstance(spec[0], str):
                    types.update(t.strip() for t in spec[0].split(","))
        for t in info.get("output") or []:
            if isinstance(t, str):
                types.update(x.strip() for x in t.split(","))
    types.discard("*")
    return types


def test_node_schemas(pack_description, comfy_table):
    core_ids = comfy_table["core_node_ids"]
    core_types = _core_types(comfy_table["object_info"], core_ids)
    assert {"IMAGE", "MASK", "AUDIO", "VIDEO"} <= core_types  # sanity of the type census
    problems = []
    seen = {}
    for node in pack_description["nodes"]:
        where = node["class"]
        if "schema_error" in node:
            problems.append(f"{where}: schema does not build:\n{node['schema_error']}")
            continue
        if not node["is_comfynode"]:
            problems.append(f"{where}: not a comfy_api.latest.io.ComfyNode subclass")
        nid = node["node_id"]
        if nid in seen:
            problems.append(f"{where}: node id {nid!r} also used by {seen[nid]}")
        seen[nid] = where
        if not str(nid).startswith("SegTalker"):
            problems.append(f"{where}: node id {nid!r} does not start with 'SegTalker'")
        if nid in core_ids:
            problems.append(f"{where}: node id {nid!r} is a core ComfyUI node id")
        if not str(node["category"] or "").startswith("SegTalker"):
            problems.append(f"{where}: category {node['category']!r} does not start with 'SegTalker'")
        if not (isinstance(node["display_name"], str) and node["display_name"].strip()):
            problems.append(f"{where}: no display name")
        sockets = [("input", s) for s in node["inputs"]] + [("output", s) for s in node["outputs"]]
        for kind, sock in sockets:
            for t in str(sock["io_type"]).split(","):
                t = t.strip()
                if not (t in core_types or t.startswith("SEGTALKER_")):
                    problems.append(f"{where}: {kind} {sock['id']!r} has type {t!r}, neither a core "
                                    f"ComfyUI type nor SEGTALKER_*")
    assert not problems, "\n".join(problems)


def test_every_node_class_in_nodes_package_is_registered(pack_description):
    defined = set(pack_description["defined_node_classes"])
    registered = {n["class"] for n in pack_description["nodes"]}
    assert defined, "found no ComfyNode classes in nodes/"
    unregistered = sorted(defined - registered)
    assert not unregistered, f"node classes defined in nodes/ but not in get_node_list(): {unregistered}"


def test_comfyui_loads_every_pack_node(pack_description, comfy_table):
    """nodes.init_extra_nodes (what main.py runs) puts every node in ComfyUI's table as ours."""
    info = comfy_table["object_info"]
    problems = []
    for node in pack_description["nodes"]:
        nid = node.get("node_id")
        if nid not in info:
            problems.append(f"{nid}: not in ComfyUI's node table")
        elif info[nid].get("python_module") != PACK_MODULE:
            problems.append(f"{nid}: registered by {info[nid].get('python_module')!r}, not "
                            f"{PACK_MODULE!r} (a core node of that id wins)")
    ours = {k for k, v in info.items() if v.get("python_module") == PACK_MODULE}
    extra = ours - {n.get("node_id") for n in pack_description["nodes"]}
    if extra:
        problems.append(f"ComfyUI lists pack nodes that get_node_list() does not: {sorted(extra)}")
    errors = {k: v for k, v in comfy_table["errors"].items() if k in ours}
    problems += [f"{k}: node info failed:\n{v}" for k, v in errors.items()]
    problems += comfyui_host.pack_log_problems(comfy_table["_stderr"], REPO_DIR,
                                               Path(comfyui_host.PACK_LINK_NAME))
    assert not problems, "\n".join(problems)


# Each model slot has its own socket type: a loader's output links only into its slot.
MODEL_SOCKETS = {
    "SegTalkerLoadParser": ("SEGTALKER_PARSER", [("SegTalkerFaceParse", "parser")]),
    "SegTalkerLoadTSG": ("SEGTALKER_TSG", [("SegTalkerAudioToSegmentation", "tsg")]),
    "SegTalkerLoadEncoder": ("SEGTALKER_ENCODER", [("SegTalkerEncodeStyle", "encoder")]),
    "SegTalkerLoadGenerator": ("SEGTALKER_GENERATOR", [("SegTalkerSynthesize", "generator")]),
}
PRECISION_OPTIONS = ["auto", "fp32", "bf16", "fp16"]


def _combo_options(spec) -> list:
    if isinstance(spec[0], list):
        return list(spec[0])
    return list((spec[1] if len(spec) > 1 else {}).get("options", []))


def test_model_sockets_are_typed_per_slot(comfy_table):
    info = comfy_table["object_info"]
    problems = []
    for loader, (socket, consumers) in MODEL_SOCKETS.items():
        if loader not in info:
            problems.append(f"{loader}: missing")
            continue
        if info[loader]["output"][0] != socket:
            problems.append(f"{loader}: outputs {info[loader]['output'][0]!r}, not {socket!r}")
        precision = info[loader]["input"]["required"].get("precision")
        if precision is None or _combo_options(precision) != PRECISION_OPTIONS:
            problems.append(f"{loader}: no precision combo {PRECISION_OPTIONS}")
        for node, name in consumers:
            specs, _ = _input_specs(info[node])
            if specs.get(name) != socket:
                problems.append(f"{node}.{name} takes {specs.get(name)!r}, not {socket!r}")
            for other, (other_socket, _) in MODEL_SOCKETS.items():
                if other != loader and types_match(other_socket, specs.get(name)):
                    problems.append(f"{node}.{name} would accept {other}'s {other_socket}")
    ours = [v for k, v in info.items() if v.get("python_module") == PACK_MODULE]
    for node in ours:
        specs, _ = _input_specs(node)
        types = list(specs.values()) + list(node.get("output") or [])
        if "SEGTALKER_MODEL" in types:
            problems.append(f"{node['name']}: still uses the untyped SEGTALKER_MODEL socket")
    assert not problems, "\n".join(problems)


def test_nodes_reach_the_core_by_relative_import():
    """No sys.path edits: nodes/* import the core as ``..segtalker_core`` (ComfyUI imports the
    pack folder as a package), so another ``segtalker_core`` on the path can never be picked."""
    problems = []
    if re.search(r"sys\.path\.(append|insert)|sys\.path\s*[+=]", (REPO_DIR / "__init__.py").read_text()):
        problems.append("__init__.py edits sys.path")
    for path in sorted((REPO_DIR / "nodes").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("from segtalker_core", "import segtalker_core")):
                problems.append(f"nodes/{path.name}:{number}: absolute import {stripped!r}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- example workflows


def test_example_workflows_present_and_paired():
    ui, api = _ui_names(UI_DIR), _api_names(API_DIR)
    assert ui, f"no example workflows (*.json) in {UI_DIR}"
    assert ui == api, (f"UI files without an API twin in {API_DIR.name}/: {sorted(ui - api)}; "
                       f"API files without a UI twin in {UI_DIR.name}/: {sorted(api - ui)}")
    assert not list(UI_DIR.glob("*.api.json")), "API files in example_workflows/ show up as broken templates"
    # Every .json in a scanned folder is listed as a template: only example_workflows/ may hold any.
    stray = sorted(str(p.relative_to(REPO_DIR)) for d in OTHER_TEMPLATE_DIRS for p in (REPO_DIR / d).glob("*.json"))
    assert not stray, f"workflow files where ComfyUI's template browser would list them twice: {stray}"


def types_match(received, expected) -> bool:
    """ComfyUI 0.3.75's link type rule (comfy_execution.validation, non-strict)."""
    if isinstance(expected, (list, tuple)):  # V1 combo: a list of options
        return received in ("COMBO", "*")
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == expected or "*" in (received, expected):
        return True
    r = {t.strip() for t in received.split(",")}
    e = {t.strip() for t in expected.split(",")}
    return bool(r & e)


def _input_specs(info: dict) -> tuple[dict, set[str]]:
    """{input name: type} over required + optional inputs, and the set of required names."""
    specs, required = {}, set()
    for section in ("required", "optional"):
        for name, spec in (info.get("input", {}).get(section) or {}).items():
            specs[name] = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
            if section == "required":
                required.add(name)
    return specs, required


def check_api_workflow(api: dict, object_info: dict) -> list[str]:
    problems = []
    if not isinstance(api, dict) or "nodes" in api:
        return ["the .api.json file is not in API format ({id: {class_type, inputs}})"]
    for nid, node in api.items():
        ctype = node.get("class_type")
        if ctype not in object_info:
            problems.append(f"API node {nid}: unknown node type {ctype!r} (not core, not this pack)")
            continue
        specs, required = _input_specs(object_info[ctype])
        inputs = node.get("inputs") or {}
        for name, value in inputs.items():
            if name not in specs:
                problems.append(f"API node {nid} ({ctype}): no input named {name!r}; "
                                f"it has {sorted(specs)}")
                continue
            if isinstance(value, list):
                if len(value) != 2 or str(value[0]) not in api:
                    problems.append(f"API node {nid} ({ctype}).{name}: link {value!r} to a missing node")
                    continue
                src_type = api[str(value[0])].get("class_type")
                outs = (object_info.get(src_type) or {}).get("output") or []
                if not isinstance(value[1], int) or not 0 <= value[1] < len(outs):
                    problems.append(f"API node {nid} ({ctype}).{name}: {src_type} has no output "
                                    f"{value[1]!r}")
                    continue
                if not types_match(outs[value[1]], specs[name]):
                    problems.append(f"API node {nid} ({ctype}).{name} expects {specs[name]!r} but "
                                    f"gets {outs[value[1]]!r} from node {value[0]} ({src_type})")
        missing = sorted(required - set(inputs))
        if missing:
            problems.append(f"API node {nid} ({ctype}): required inputs missing: {missing}")
    return problems


def check_ui_workflow(ui: dict, object_info: dict) -> list[str]:
    problems = []
    if not isinstance(ui, dict) or not isinstance(ui.get("nodes"), list):
        return ["the UI file has no 'nodes' list (is it an API-format file?)"]
    if (ui.get("definitions") or {}).get("subgraphs"):
        problems.append("UI workflow uses subgraphs; keep example workflows flat")
    nodes = {}
    for node in ui["nodes"]:
        nid, ntype = node.get("id"), node.get("type")
        nodes[nid] = node
        if ntype in FRONTEND_ONLY_NODES:
            continue
        if ntype not in object_info:
            problems.append(f"UI node {nid}: unknown node type {ntype!r} (not core, not this pack)")
            continue
        if node.get("mode", 0) in (2, 4):
            problems.append(f"UI node {nid} ({ntype}) is muted/bypassed; example graphs run whole")
        specs, _ = _input_specs(object_info[ntype])
        for slot in node.get("inputs") or []:
            if slot.get("name") not in specs:
                problems.append(f"UI node {nid} ({ntype}): no input named {slot.get('name')!r}")
        outs = object_info[ntype].get("output") or []
        for i, slot in enumerate(node.get("outputs") or []):
            if i >= len(outs):
                problems.append(f"UI node {nid} ({ntype}): output slot {i} does not exist")
            elif slot.get("type") not in (outs[i], "*"):
                problems.append(f"UI node {nid} ({ntype}): output slot {i} typed {slot.get('type')!r}, "
                                f"ComfyUI says {outs[i]!r}")
    for link in ui.get("links") or []:
        if isinstance(link, dict):  # newer serialisation
            link = [link.get("id"), link.get("origin_id"), link.get("origin_slot"),
                    link.get("target_id"), link.get("target_slot"), link.get("type")]
        lid, src, src_slot, dst, dst_slot, ltype = link[:6]
        if src not in nodes or dst not in nodes:
            problems.append(f"UI link {lid}: joins missing node(s) {src} -> {dst}")
            continue
        s, d = nodes[src], nodes[dst]
        if s.get("type") not in object_info or d.get("type") not in object_info:
            continue  # reported above
        outs = object_info[s["type"]].get("output") or []
        d_inputs = d.get("inputs") or []
        if not 0 <= src_slot < len(outs) or not 0 <= dst_slot < len(d_inputs):
            problems.append(f"UI link {lid}: slot out of range ({s['type']}[{src_slot}] -> "
                            f"{d['type']}[{dst_slot}])")
            continue
        name = d_inputs[dst_slot].get("name")
        specs, _ = _input_specs(object_info[d["type"]])
        if name in specs and not types_match(outs[src_slot], specs[name]):
            problems.append(f"UI link {lid}: {s['type']} output {src_slot} ({outs[src_slot]}) into "
                            f"{d['type']}.{name} ({specs[name]})")
        if ltype not in (outs[src_slot], "*"):
            problems.append(f"UI link {lid}: typed {ltype!r}, the output is {outs[src_slot]!r}")
        if d_inputs[dst_slot].get("link") != lid:
            problems.append(f"UI link {lid}: {d['type']} (node {dst}) input {name!r} does not "
                            f"refer back to it")
        s_outs = s.get("outputs") or []
        if src_slot >= len(s_outs) or lid not in (s_outs[src_slot].get("links") or []):
            problems.append(f"UI link {lid}: {s['type']} (node {src}) output {src_slot} does not "
                            f"list it")
    return problems


def compare_ui_and_api(ui: dict, api: dict) -> list[str]:
    """Same nodes (id -> type) and same links (src, slot, dst, input name)."""
    problems = []
    nodes = {str(n["id"]): n for n in ui.get("nodes") or []
             if n.get("type") not in FRONTEND_ONLY_NODES}
    ui_types = {nid: n.get("type") for nid, n in nodes.items()}
    api_types = {str(nid): n.get("class_type") for nid, n in api.items()}
    if ui_types != api_types:
        only_ui = {k: v for k, v in ui_types.items() if api_types.get(k) != v}
        only_api = {k: v for k, v in api_types.items() if ui_types.get(k) != v}
        problems.append(f"UI and API nodes differ: UI has {only_ui}, API has {only_api}")
    ui_links = set()
    for link in ui.get("links") or []:
        if isinstance(link, dict):
            link = [link.get("id"), link.get("origin_id"), link.get("origin_slot"),
                    link.get("target_id"), link.get("target_slot"), link.get("type")]
        _lid, src, src_slot, dst, dst_slot = link[:5]
        d_inputs = (nodes.get(str(dst)) or {}).get("inputs") or []
        name = d_inputs[dst_slot].get("name") if 0 <= dst_slot < len(d_inputs) else f"#{dst_slot}"
        ui_links.add((str(src), src_slot, str(dst), name))
    api_links = {(str(v[0]), v[1], str(nid), name)
                 for nid, n in api.items() for name, v in (n.get("inputs") or {}).items()
                 if isinstance(v, list) and len(v) == 2}
    if ui_links != api_links:
        problems.append(f"UI and API links differ: only in UI {sorted(ui_links - api_links)}, "
                        f"only in API {sorted(api_links - ui_links)}")
    return problems


@pytest.mark.parametrize("name", WORKFLOW_NAMES or ["<none>"])
def test_example_workflow_graph(name, request):
    assert name != "<none>", f"no example workflows in {UI_DIR}"
    comfy_table = request.getfixturevalue("comfy_table")
    ui_path, api_path = UI_DIR / f"{name}.json", API_DIR / f"{name}.api.json"
    assert ui_path.is_file() and api_path.is_file(), f"{name}: needs both {ui_path.name} and {api_path.name}"
    ui, api = json.loads(ui_path.read_text()), json.loads(api_path.read_text())
    info = comfy_table["object_info"]
    problems = check_api_workflow(api, info) + check_ui_workflow(ui, info) + compare_ui_and_api(ui, api)
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_head_motion_is_an_optional_last_widget_of_the_portrait_nodes(comfy_table):
    """Paste Back and Talk render portraits: ``head_motion`` (0..1, default 0.5) comes last and
    optional, so workflows saved before it load with their widgets in place and API prompts
    without it validate. Talk Video dubs videos, which keep their own head motion: none there."""
    from segtalker_core.procedural.head_motion import DEFAULT_STRENGTH

    info = comfy_table["object_info"]
    for node_id in ("SegTalkerPasteBack", "SegTalkerTalk"):
        optional = info[node_id]["input"].get("optional") or {}
        assert "head_motion" in optional, f"{node_id}: no optional head_motion input"
        kind, options = optional["head_motion"]
        assert kind == "FLOAT" and (options["default"], options["min"], options["max"]) == (DEFAULT_STRENGTH, 0.0, 1.0)
        order = info[node_id].get("input_order") or {}
        names = list(order.get("required", [])) + list(order.get("optional", []))
        assert names[-1] == "head_motion", f"{node_id}: inputs {names}; head_motion must come last"
    talk_video = info["SegTalkerTalkVideo"]["input"]
    assert "head_motion" not in {**talk_video.get("required", {}), **(talk_video.get("optional") or {})}


LEARNED_RUN_NODES = ("SegTalkerAudioToSegmentation", "SegTalkerSynthesize")


def test_batch_size_is_an_optional_last_widget_of_the_learned_nodes(comfy_table):
    """The nodes that run a learned TSG / generator take ``batch_size`` (INT, default 0 =
    automatic, never negative), optional and last: UI workflows saved before it load with
    their widgets in place, API prompts without it validate."""
    info = comfy_table["object_info"]
    for node_id in LEARNED_RUN_NODES:
        optional = info[node_id]["input"].get("optional") or {}
        assert "batch_size" in optional, f"{node_id}: no optional batch_size input"
        kind, options = optional["batch_size"]
        assert kind == "INT" and (options["default"], options["min"]) == (0, 0), options
        assert "0 = automatic" in options["tooltip"]
        order = info[node_id].get("input_order") or {}
        names = list(order.get("required", [])) + list(order.get("optional", []))
        assert names[-1] == "batch_size", f"{node_id}: inputs {names}; batch_size must come last"


_RUN_LEARNED_NODES = r'''
import sys
out_path, base_dir = sys.argv[1], sys.argv[2]
sys.argv = ["main.py", "--cpu", "--base-directory", base_dir, "--disable-api-nodes",
            "--database-url", "sqlite:///:memory:"]
import comfy.options
comfy.options.enable_args_parsing()
import asyncio, json, types
import numpy as np
import torch
import nodes

asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
(pipeline,) = [m for name, m in sys.modules.items() if name.endswith(".segtalker_core.pipeline")
               and name != "segtalker_core.pipeline"]
seen = []

def talking_segmentation(*args, batch_size=None, **kwargs):
    seen.append(["talking_segmentation", batch_size])
    return "segmentation"

def synthesize(*args, batch_size=None, **kwargs):
    seen.append(["synthesize", batch_size])
    return np.zeros((1, 8, 8, 3), np.uint8)

pipeline.talking_segmentation = talking_segmentation
pipeline.synthesize = synthesize
pipeline.segmentation_preview = lambda segmentation: np.zeros((1, 8, 8, 3), np.uint8)

class Segmentation:
    faces = types.SimpleNamespace(crop_size=64)
    def __len__(self):
        return 1

audio = {"waveform": torch.zeros(1, 1, 8000), "sample_rate": 16000}
talk = nodes.NODE_CLASS_MAPPINGS["SegTalkerAudioToSegmentation"]
synth = nodes.NODE_CLASS_MAPPINGS["SegTalkerSynthesize"]
errors = []
for batch in (3, 0, -1):
    for run in (lambda: talk.execute(types.SimpleNamespace(crop_size=64), audio, 25.0, 1.0, "acoustic",
                                     "pingpong", True, 0, batch_size=batch),
                lambda: synth.execute(Segmentation(), None, "source", 0, batch_size=batch)):
        try:
            run()
        except ValueError as error:
            errors.append(str(error))
talk.execute(types.SimpleNamespace(crop_size=64), audio, 25.0, 1.0, "acoustic", "pingpong", True, 0)
synth.execute(Segmentation(), None, "source", 0)  # a prompt saved before the input: automatic
with open(out_path, "w") as fh:
    json.dump({"seen": seen, "errors": errors}, fh)
'''


def test_batch_size_input_reaches_the_core(comfyui_dir):
    """Executed in ComfyUI (stage functions replaced by recorders): the widget's value is what
    the core gets, 0 and a missing input are None (automatic), a negative one is an error
    naming the input before anything runs."""
    with comfyui_host._linked_custom_nodes(REPO_DIR) as (base, _link):
        result = comfyui_host._run_comfy_script(comfyui_dir, _RUN_LEARNED_NODES, [str(base)],
                                                "running the learned nodes")
    assert result["seen"] == [["talking_segmentation", 3], ["synthesize", 3],
                              ["talking_segmentation", None], ["synthesize", None],
                              ["talking_segmentation", None], ["synthesize", None]]
    assert len(result["errors"]) == 2
    assert all("input 'batch_size' is -1" in e for e in result["errors"]), result["errors"]
