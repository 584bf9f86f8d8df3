"""Writes the example workflows in both ComfyUI formats from one description each.

    .venv/bin/python tools/build_workflows.py

For every graph below it writes ``example_workflows/<name>.json`` (UI format: drag into ComfyUI;
ComfyUI's template browser lists this folder) and ``api_workflows/<name>.api.json`` (API format:
POST /prompt). The API files stay out of the folders ComfyUI scans for templates
(``example_workflows``, ``example``, ``examples``, ``workflow``, ``workflows``), where each would
show up as a template that fails to open. Widget order, defaults and socket types come from
ComfyUI's own node table (built offline with the pack loaded, the same way the tests do), so the
two formats cannot disagree with the nodes. Needs the test cache's ComfyUI (run the tests once).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
UI_DIR = REPO / "example_workflows"
API_DIR = REPO / "api_workflows"
sys.path.insert(0, str(REPO / "tests"))

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# What the frontend stores after an upload-enabled combo (as in ComfyUI's own templates).
UPLOAD_EXTRAS = {"image_upload": ["image"], "video_upload": ["image"], "audio_upload": [None, None]}
BUILTIN_PARSER = "builtin (MediaPipe landmarks, no weights)"


@dataclass
class Node:
    id: int
    type: str
    values: dict[str, Any]
    links: dict[str, tuple["Node", int]]
    title: str | None = None


@dataclass
class Graph:
    name: str
    nodes: list[Node] = field(default_factory=list)

    def add(self, type_: str, title: str | None = None, **inputs: Any) -> Node:
        links = {k: v for k, v in inputs.items() if isinstance(v, tuple)}
        values = {k: v for k, v in inputs.items() if not isinstance(v, tuple)}
        node = Node(len(self.nodes) + 1, type_, values, links, title)
        self.nodes.append(node)
        return node


def _inputs_in_order(info: dict) -> list[tuple[str, Any, dict]]:
    out = []
    for section in ("required", "optional"):
        spec = info["input"].get(section, {})
        for name in info.get("input_order", {}).get(section, list(spec)):
            entry = spec[name]
            type_ = entry[0]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            out.append((name, type_, options))
    return out


def _is_widget(type_: Any) -> bool:
    return isinstance(type_, list) or type_ in WIDGET_TYPES


def _has_seed_control(name: str, type_: Any, options: dict) -> bool:
    """Whether the frontend gives this widget a "control after generate" companion: any input that
    asks for one, and every INT named ``seed`` or ``noise_seed`` (the frontend adds it by name and
    fills it with "randomize" when the stored values stop before it)."""
    return bool(options.get("control_after_generate")) or (type_ == "INT" and name in ("seed", "noise_seed"))


def _default(name: str, type_: Any, options: dict) -> Any:
    if "default" in options:
        return options["default"]
    if isinstance(type_, list):
        return type_[0] if type_ else None
    if type_ == "COMBO":
        return (options.get("options") or [None])[0]
    raise ValueError(f"input {name!r} has no default; give a value in the graph")


def _depths(graph: Graph) -> dict[int, int]:
    depth: dict[int, int] = {}
    for node in graph.nodes:  # nodes are added after their inputs
        depth[node.id] = 1 + max((depth[src.id] for src, _ in node.links.values()), default=-1)
    return depth


def build(graph: Graph, object_info: dict) -> tuple[dict, dict]:
    api: dict[str, Any] = {}
    ui_nodes, ui_links = [], []
    outgoing: dict[tuple[int, int], list[int]] = {}
    depth = _depths(graph)
    row_of: dict[int, int] = {}
    for node in graph.nodes:
        if node.type not in object_info:
            raise KeyError(f"{graph.name}: node type {node.type!r} is not known to ComfyUI")
        info = object_info[node.type]
        known = {name for name, _, _ in _inputs_in_order(info)}
        unknown = (set(node.values) | set(node.links)) - known
        if unknown:
            raise KeyError(f"{graph.name}: {node.type} has no input(s) {sorted(unknown)}")
        api_inputs: dict[str, Any] = {}
        widgets_values: list[Any] = []
        ui_inputs = []
        for name, type_, options in _inputs_in_order(info):
            if name in node.links:
                src, slot = node.links[name]
                link_id = len(ui_links) + 1
                out_type = object_info[src.type]["output"][slot]
                ui_links.append([link_id, src.id, slot, node.id, len(ui_inputs), out_type])
                outgoing.setdefault((src.id, slot), []).append(link_id)
                ui_input = {"name": name, "type": out_type, "link": link_id}
                if _is_widget(type_):
                    # A widget fed by a link: the frontend keeps the widget (and its value) behind it.
                    ui_input["widget"] = {"name": name}
                    widgets_values.append(_default(name, type_, options))
                ui_inputs.append(ui_input)
                api_inputs[name] = [str(src.id), slot]
            elif _is_widget(type_):
                value = node.values[name] if name in node.values else _default(name, type_, options)
                api_inputs[name] = value
                widgets_values.append(value)
                if _has_seed_control(name, type_, options):
                    # The frontend's extra "control after generate" widget: shipped seeds stay put.
                    widgets_values.append("fixed")
                for flag, extras in UPLOAD_EXTRAS.items():
                    if options.get(flag):
                        widgets_values.extend(extras)
            elif not name in info["input"].get("optional", {}):
                raise ValueError(f"{graph.name}: required input {node.type}.{name} is not connected")
        api[str(node.id)] = {"class_type": node.type, "inputs": api_inputs,
                             "_meta": {"title": node.title or info.get("display_name", node.type)}}
        column = depth[node.id]
        row_of[node.id] = sum(1 for other in graph.nodes[: node.id - 1] if depth[other.id] == column)
        ui_nodes.append({
            "id": node.id,
            "type": node.type,
            "pos": [40 + 380 * column, 60 + 330 * row_of[node.id]],
            "size": [340, 120 + 26 * len(widgets_values)],
            "flags": {},
            "order": node.id - 1,
            "mode": 0,
            "inputs": ui_inputs,
            "outputs": [],
            "properties": {"Node name for S&R": node.type},
            "widgets_values": widgets_values,
            **({"title": node.title} if node.title else {}),
        })
    for ui_node in ui_nodes:
        info = object_info[ui_node["type"]]
        names = info.get("output_name") or info["output"]
        ui_node["outputs"] = [
            {"name": names[slot], "type": type_, "links": outgoing.get((ui_node["id"], slot)) or None,
             "slot_index": slot}
            for slot, type_ in enumerate(info["output"])
        ]
    ui = {
        "last_node_id": len(graph.nodes),
        "last_link_id": len(ui_links),
        "nodes": ui_nodes,
        "links": ui_links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }
    return ui, api


# ------------------------------------------------------------------------------------------------
# The example graphs


def face_parsing() -> Graph:
    g = Graph("face_parsing")
    image = g.add("LoadImage", image="portrait.png")
    parser = g.add("SegTalkerLoadParser", parser=BUILTIN_PARSER)
    parse = g.add("SegTalkerFaceParse", image=(image, 0), parser=(parser, 0))
    g.add("SaveImage", images=(parse, 1), filename_prefix="segtalker/parsing_preview")
    mask = g.add("SegTalkerSegmentationToMask", faces=(parse, 0), space="frame", feather=4,
                 lips=True, mouth_interior=True)
    as_image = g.add("MaskToImage", mask=(mask, 0))
    g.add("SaveImage", images=(as_image, 0), filename_prefix="segtalker/mouth_mask")
    return g


def talk_portrait() -> Graph:
    g = Graph("talk_portrait")
    image = g.add("LoadImage", image="portrait.png")
    audio = g.add("LoadAudio", audio="speech.wav")
    parse = g.add("SegTalkerFaceParse", image=(image, 0))
    talking = g.add("SegTalkerAudioToSegmentation", faces=(parse, 0), audio=(audio, 0), fps=25.0)
    style = g.add("SegTalkerEncodeStyle", faces=(parse, 0))
    crops = g.add("SegTalkerSynthesize", segmentation=(talking, 0), style=(style, 0))
    frames = g.add("SegTalkerPasteBack", crops=(crops, 0), segmentation=(talking, 0))
    video = g.add("CreateVideo", images=(frames, 0), audio=(audio, 0), fps=25.0)
    g.add("SaveVideo", video=(video, 0), filename_prefix="segtalker/talk_portrait")
    return g


def dub_video() -> Graph:
    g = Graph("dub_video")
    video = g.add("LoadVideo", file="video.mp4")
    parts = g.add("GetVideoComponents", video=(video, 0))
    audio = g.add("LoadAudio", audio="speech.wav")
    # The video's own frame rate drives the dubbed frames, so its head motion keeps its timing.
    talk = g.add("SegTalkerTalk", image=(parts, 0), audio=(audio, 0), fps=(parts, 2), video_mode="pingpong")
    out = g.add("CreateVideo", images=(talk, 0), audio=(talk, 1), fps=(talk, 2))
    g.add("SaveVideo", video=(out, 0), filename_prefix="segtalker/dub_video")
    return g


def dub_long_video() -> Graph:
    """Talk Video: core VIDEO in, VIDEO out, streamed frame by frame through a file (no IMAGE
    batch), so a long clip dubs in flat memory. The speech replaces the video's own sound."""
    g = Graph("dub_long_video")
    video = g.add("LoadVideo", file="video.mp4")
    audio = g.add("LoadAudio", audio="speech.wav")
    talk = g.add("SegTalkerTalkVideo", video=(video, 0), audio=(audio, 0), strength=1.0, video_mode="pingpong")
    g.add("SaveVideo", video=(talk, 0), filename_prefix="segtalker/dub_long_video")
    return g


def lip_colour_edit() -> Graph:
    g = Graph("lip_colour_edit")
    image = g.add("LoadImage", image="portrait.png")
    reference = g.add("LoadImage", title="Reference face", image="reference_face.png")
    audio = g.add("LoadAudio", audio="speech.wav")
    parse = g.add("SegTalkerFaceParse", image=(image, 0))
    parse_ref = g.add("SegTalkerFaceParse", title="Parse reference", image=(reference, 0))
    talking = g.add("SegTalkerAudioToSegmentation", faces=(parse, 0), audio=(audio, 0), fps=25.0)
    style = g.add("SegTalkerEncodeStyle", faces=(parse, 0))
    style_ref = g.add("SegTalkerEncodeStyle", title="Encode reference style", faces=(parse_ref, 0))
    swapped = g.add("SegTalkerSwapStyle", style=(style, 0), reference=(style_ref, 0), strength=1.0, lips=True)
    crops = g.add("SegTalkerSynthesize", segmentation=(talking, 0), style=(swapped, 0))
    frames = g.add("SegTalkerPasteBack", crops=(crops, 0), segmentation=(talking, 0))
    video = g.add("CreateVideo", images=(frames, 0), audio=(audio, 0), fps=25.0)
    g.add("SaveVideo", video=(video, 0), filename_prefix="segtalker/lip_colour_edit")
    return g


def learned_random() -> Graph:
    """The paper's learned chain, with the tiny random-init bundles of
    ``python -m segtalker_core random-bundle ComfyUI/models/segtalker`` (frames of the right count
    and size, not a face: swap in trained bundles)."""
    g = Graph("learned_random")
    image = g.add("LoadImage", image="portrait.png")
    audio = g.add("LoadAudio", audio="speech.wav")
    tsg = g.add("SegTalkerLoadTSG", model="segtalker/tsg_random_64.safetensors", precision="auto")
    encoder = g.add("SegTalkerLoadEncoder", model="segtalker/encoder_random_64.safetensors", precision="auto")
    generator = g.add("SegTalkerLoadGenerator", model="segtalker/generator_random_64.safetensors", precision="auto")
    parse = g.add("SegTalkerFaceParse", image=(image, 0), crop_size=256)
    talking = g.add("SegTalkerAudioToSegmentation", faces=(parse, 0), audio=(audio, 0), tsg=(tsg, 0), fps=25.0)
    style = g.add("SegTalkerEncodeStyle", faces=(parse, 0), encoder=(encoder, 0))
    crops = g.add("SegTalkerSynthesize", segmentation=(talking, 0), style=(style, 0), generator=(generator, 0))
    frames = g.add("SegTalkerPasteBack", crops=(crops, 0), segmentation=(talking, 0))
    video = g.add("CreateVideo", images=(frames, 0), audio=(audio, 0), fps=25.0)
    g.add("SaveVideo", video=(video, 0), filename_prefix="segtalker/learned_random")
    return g


# Converted from E4S's published RGI model (``python -m segtalker_core convert iteration_300000.pt``)
# and the face-parsing BiSeNet checkpoint.
E4S_ENCODER = "segtalker/iteration_300000_encoder.safetensors"
E4S_GENERATOR = "segtalker/iteration_300000_generator.safetensors"
BISENET = "face_parsing/79999_iter.pth"
# E4S's 1024 generator costs ~30 s a frame on a CPU: the graph renders the first frames of the
# speech only (0.06 s = 2 frames at 25 fps); raise the duration, or bypass the node, for all of it.
E4S_PREVIEW_SECONDS = 0.06


def learned_e4s() -> Graph:
    """The paper's learned chain on E4S's public RGI weights: BiSeNet parse -> built-in talking
    segmentation -> E4S encoder -> lips from a reference face -> E4S's 1024 mask-guided generator
    -> multi-band paste-back, as E4S pastes."""
    g = Graph("learned_e4s")
    image = g.add("LoadImage", image="portrait.png")
    reference = g.add("LoadImage", title="Reference face", image="reference_face.png")
    speech = g.add("LoadAudio", audio="speech.wav")
    audio = g.add("TrimAudioDuration", title="First seconds of the speech (raise for all of it)",
                  audio=(speech, 0), start_index=0.0, duration=E4S_PREVIEW_SECONDS)
    parser = g.add("SegTalkerLoadParser", parser=BISENET, precision="auto")
    encoder = g.add("SegTalkerLoadEncoder", model=E4S_ENCODER, precision="auto")
    generator = g.add("SegTalkerLoadGenerator", model=E4S_GENERATOR, precision="auto")
    parse = g.add("SegTalkerFaceParse", image=(image, 0), parser=(parser, 0), crop_size=1024)
    parse_ref = g.add("SegTalkerFaceParse", title="Parse reference", image=(reference, 0), parser=(parser, 0),
                      crop_size=1024)
    talking = g.add("SegTalkerAudioToSegmentation", faces=(parse, 0), audio=(audio, 0), fps=25.0)
    style = g.add("SegTalkerEncodeStyle", faces=(parse, 0), encoder=(encoder, 0))
    style_ref = g.add("SegTalkerEncodeStyle", title="Encode reference style", faces=(parse_ref, 0),
                      encoder=(encoder, 0))
    swapped = g.add("SegTalkerSwapStyle", style=(style, 0), reference=(style_ref, 0), strength=1.0, lips=True)
    crops = g.add("SegTalkerSynthesize", segmentation=(talking, 0), style=(swapped, 0), generator=(generator, 0))
    frames = g.add("SegTalkerPasteBack", crops=(crops, 0), segmentation=(talking, 0), blend="multiband")
    video = g.add("CreateVideo", images=(frames, 0), audio=(audio, 0), fps=25.0)
    g.add("SaveVideo", video=(video, 0), filename_prefix="segtalker/learned_e4s")
    return g


def fuller_hair() -> Graph:
    """Edit Segmentation: the portrait talks with fuller hair. The hair mask of Segmentation to
    Mask, grown by a few pixels, becomes the new hair region in every frame; the renderer continues
    the portrait's own hair texture into it."""
    g = Graph("fuller_hair")
    image = g.add("LoadImage", image="portrait.png")
    audio = g.add("LoadAudio", audio="speech.wav")
    parse = g.add("SegTalkerFaceParse", image=(image, 0))
    hair = g.add("SegTalkerSegmentationToMask", title="Hair, grown", faces=(parse, 0), space="frame",
                 dilate=8, lips=False, mouth_interior=False, hair=True)
    talking = g.add("SegTalkerAudioToSegmentation", faces=(parse, 0), audio=(audio, 0), fps=25.0)
    edited = g.add("SegTalkerEditSegmentation", segmentation=(talking, 0), region="hair", mask=(hair, 0),
                   mask_space="frame", fill="skin")
    style = g.add("SegTalkerEncodeStyle", faces=(parse, 0))
    crops = g.add("SegTalkerSynthesize", segmentation=(edited, 0), style=(style, 0))
    # A still head: the graph shows the edited hair as one shape, frame after frame (its check
    # compares the shape between frames); raise head_motion for a portrait that moves.
    frames = g.add("SegTalkerPasteBack", crops=(crops, 0), segmentation=(edited, 0), head_motion=0.0)
    video = g.add("CreateVideo", images=(frames, 0), audio=(audio, 0), fps=25.0)
    g.add("SaveVideo", video=(video, 0), filename_prefix="segtalker/fuller_hair")
    return g


# A checkpoint most Stable Diffusion 1.5 users have; the graph names it so it opens ready to run.
INPAINT_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"


def lips_inpaint() -> Graph:
    """Mixing with core diffusion nodes: the lips mask of Segmentation to Mask drives a Stable
    Diffusion inpaint of the portrait, composited back with ImageCompositeMasked. Needs a
    checkpoint in models/checkpoints (none ships with the pack)."""
    g = Graph("lips_inpaint")
    image = g.add("LoadImage", image="portrait.png")
    parse = g.add("SegTalkerFaceParse", image=(image, 0))
    mask = g.add("SegTalkerSegmentationToMask", faces=(parse, 0), space="frame", dilate=4, feather=6,
                 lips=True)
    checkpoint = g.add("CheckpointLoaderSimple", ckpt_name=INPAINT_CHECKPOINT)
    positive = g.add("CLIPTextEncode", title="Positive", clip=(checkpoint, 1),
                     text="glossy red lipstick, detailed lips, photo")
    negative = g.add("CLIPTextEncode", title="Negative", clip=(checkpoint, 1), text="blurry, deformed")
    latent = g.add("VAEEncodeForInpaint", pixels=(image, 0), vae=(checkpoint, 2), mask=(mask, 0), grow_mask_by=6)
    sampled = g.add("KSampler", model=(checkpoint, 0), positive=(positive, 0), negative=(negative, 0),
                    latent_image=(latent, 0), seed=7, steps=20, cfg=7.0,
                    sampler_name="euler", scheduler="normal", denoise=1.0)
    decoded = g.add("VAEDecode", samples=(sampled, 0), vae=(checkpoint, 2))
    composite = g.add("ImageCompositeMasked", destination=(image, 0), source=(decoded, 0), x=0, y=0,
                      resize_source=False, mask=(mask, 0))
    g.add("SaveImage", images=(composite, 0), filename_prefix="segtalker/lips_inpaint")
    return g


GRAPHS = [face_parsing, talk_portrait, dub_video, dub_long_video, lip_colour_edit, learned_random, learned_e4s,
          fuller_hair, lips_inpaint]


def main() -> None:
    from comfyui_host import ensure_comfyui, offline_object_info

    table = offline_object_info(ensure_comfyui(), REPO)
    if table["errors"]:
        raise SystemExit(f"ComfyUI could not describe some nodes: {sorted(table['errors'])}")
    object_info = table["object_info"]
    for folder in (UI_DIR, API_DIR):
        folder.mkdir(exist_ok=True)
    for make in GRAPHS:
        graph = make()
        ui, api = build(graph, object_info)
        (UI_DIR / f"{graph.name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        (API_DIR / f"{graph.name}.api.json").write_text(json.dumps(api, indent=2) + "\n")
        print(f"wrote {graph.name}: {len(graph.nodes)} nodes")


if __name__ == "__main__":
    main()
