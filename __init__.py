"""ComfyUI entry point of the SegTalker node pack.

ComfyUI imports this folder as a package (under a path-derived module name). It registers the
nodes through the V3 ``comfy_entrypoint`` and does nothing heavy: no model is loaded, nothing is
downloaded or installed. The node classes reach the core library next to them by relative import
(``from ..segtalker_core import pipeline``), so nothing is added to ``sys.path`` and this pack's
``segtalker_core`` can never be confused with another copy on the path. Models load when a node
runs.
"""


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    from .nodes import NODE_CLASSES

    class SegTalkerExtension(ComfyExtension):
        async def get_node_list(self):
            return list(NODE_CLASSES)

    return SegTalkerExtension()
