"""ComfyUI entry point of the SegTalker node pack.

ComfyUI imports this file as a package. It registers the nodes through the V3 ``comfy_entrypoint``
and does nothing heavy: no model is loaded, nothing is downloaded or installed. The node classes
import ``segtalker_core`` (numpy only at import); models load when a node runs.
"""
import os
import sys

# The core library sits next to this file; make it importable by its absolute name, because
# ComfyUI imports this folder under a path-derived module name.
_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    from .nodes import NODE_CLASSES

    class SegTalkerExtension(ComfyExtension):
        async def get_node_list(self):
            return list(NODE_CLASSES)

    return SegTalkerExtension()
