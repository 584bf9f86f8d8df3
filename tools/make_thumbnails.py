"""Writes the template browser's thumbnails, ``example_workflows/<name>.jpg``, from real runs.

    .venv/bin/python tools/make_thumbnails.py [name ...]

Starts the tests' real ComfyUI (``tests/comfyui_host.py``: ComfyUI 0.3.75 from the test cache, this
pack linked in, ``examples/`` staged as inputs), runs each ``api_workflows/<name>.api.json`` (after
its checker's ``prepare``, e.g. the random learned bundles) and turns its output into a 512x512
JPEG: the middle frame of the saved video, else the first saved image. A workflow that cannot run
here (its checker expects ``/prompt`` to refuse it for a missing model file) is run without the
refused node and everything after it, and its thumbnail is the pack's output at that point (a mask
drawn over the input picture). Needs the test cache's ComfyUI (run the tests once).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import comfyui_host  # noqa: E402
import workflow_checks  # noqa: E402

UI_DIR = REPO / "example_workflows"
API_DIR = REPO / "api_workflows"
SIZE = 512


def _square(img):
    """Centre crop to a square, then resize to SIZE x SIZE."""
    from PIL import Image

    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.LANCZOS)


def _middle_frame(path: Path):
    import av
    from PIL import Image

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return Image.fromarray(frames[len(frames) // 2])


def _downstream(api: dict, roots: set[str]) -> set[str]:
    """``roots`` and every node that (transitively) takes an input from them."""
    out = set(roots)
    changed = True
    while changed:
        changed = False
        for nid, node in api.items():
            if nid in out:
                continue
            if any(isinstance(v, list) and len(v) == 2 and str(v[0]) in out
                   for v in node["inputs"].values()):
                out.add(nid)
                changed = True
    return out


def _truncated(api: dict, refused_class: str, object_info: dict) -> tuple[dict, str | None]:
    """``api`` without the refused node and what follows it; a SaveImage for each pack MASK/IMAGE
    output that fed the removed part. Returns the graph and the node id of the input picture."""
    removed = _downstream(api, {nid for nid, n in api.items() if n["class_type"] == refused_class})
    kept = {nid: json.loads(json.dumps(n)) for nid, n in api.items() if nid not in removed}
    fed = set()
    for nid in removed:
        for v in api[nid]["inputs"].values():
            if isinstance(v, list) and len(v) == 2 and str(v[0]) in kept:
                fed.add((str(v[0]), int(v[1])))
    next_id = max(int(k) for k in api) + 1
    picture = None
    for src, slot in sorted(fed):
        out_type = object_info[kept[src]["class_type"]]["output"][slot]
        if kept[src]["class_type"] == "LoadImage":
            picture = src
            continue
        if out_type == "MASK":
            kept[str(next_id)] = {"class_type": "MaskToImage", "inputs": {"mask": [src, slot]}}
            kept[str(next_id + 1)] = {"class_type": "SaveImage", "inputs": {
                "images": [str(next_id), 0], "filename_prefix": "thumbnail/mask"}}
            next_id += 2
        elif out_type == "IMAGE":
            kept[str(next_id)] = {"class_type": "SaveImage", "inputs": {
                "images": [src, slot], "filename_prefix": "thumbnail/image"}}
            next_id += 1
    return kept, picture


def thumbnail(server: comfyui_host.ComfyUIServer, name: str, object_info: dict):
    from PIL import Image
    import numpy as np

    api = json.loads((API_DIR / f"{name}.api.json").read_text())
    checker = workflow_checks.CHECKERS.get(name)
    if checker is not None and checker.prepare is not None:
        checker.prepare(server)
    rejection = getattr(checker, "rejection", None) if checker is not None else None
    picture = None
    if rejection is not None:
        api, picture = _truncated(api, rejection.class_type, object_info)
    history = server.run_workflow(api, timeout=checker.timeout if checker else 600)
    files = [f for f in server.output_files(history) if f.folder_type == "output"]
    videos = [f for f in files if f.suffix in (".mp4", ".webm", ".mov", ".mkv")]
    images = [f for f in files if f.suffix in (".png", ".jpg", ".jpeg", ".webp")]
    if videos:
        return _square(_middle_frame(videos[0].path))
    if not images:
        raise SystemExit(f"{name}: the run saved no video or image to make a thumbnail of")
    if rejection is not None and picture is not None:
        # The mask the pack made, in red over the input picture.
        base = Image.open(server.input_dir / api[picture]["inputs"]["image"]).convert("RGB")
        mask = Image.open(images[0].path).convert("L").resize(base.size)
        arr = np.asarray(base, dtype=np.float32)
        alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0 * 0.6
        red = np.array([230, 30, 60], dtype=np.float32)
        return _square(Image.fromarray((arr * (1 - alpha) + red * alpha).astype(np.uint8)))
    return _square(Image.open(images[0].path).convert("RGB"))


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in UI_DIR.glob("*.json"))
    with tempfile.TemporaryDirectory(prefix="segtalker-thumbs-") as tmp:
        server = comfyui_host.ComfyUIServer(comfyui_host.ensure_comfyui(), REPO, Path(tmp))
        with server:
            server.stage_inputs(REPO / "examples")
            info = server.object_info()
            for name in names:
                img = thumbnail(server, name, info)
                out = UI_DIR / f"{name}.jpg"
                img.save(out, "JPEG", quality=85, optimize=True)
                print(f"wrote {out.relative_to(REPO)} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
