"""The pack's own socket types. Everything else uses core ComfyUI types.

Each model slot has its own type (names from the component registry), so ComfyUI refuses a link
from, say, a TSG loader into a generator input at edit time instead of failing at run time.
"""
from comfy_api.latest import io

from ..segtalker_core.components import ENCODER, GENERATOR, PARSER, SOCKETS, TSG

Faces = io.Custom("SEGTALKER_FACES")
Segmentation = io.Custom("SEGTALKER_SEGMENTATION")
Style = io.Custom("SEGTALKER_STYLE")
ParserModel = io.Custom(SOCKETS[PARSER])
TSGModel = io.Custom(SOCKETS[TSG])
EncoderModel = io.Custom(SOCKETS[ENCODER])
GeneratorModel = io.Custom(SOCKETS[GENERATOR])

CATEGORY = "SegTalker"
