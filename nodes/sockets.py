"""The pack's own socket types. Everything else uses core ComfyUI types."""
from comfy_api.latest import io

Faces = io.Custom("SEGTALKER_FACES")
Segmentation = io.Custom("SEGTALKER_SEGMENTATION")
Style = io.Custom("SEGTALKER_STYLE")
Model = io.Custom("SEGTALKER_MODEL")

CATEGORY = "SegTalker"
