"""SegTalker core library: face parsing, talking segmentation, style codes, mask-guided synthesis.

Importing this package loads no model and imports no ComfyUI module; heavy dependencies
(torch, mediapipe, pocketsphinx) are imported where they are used.
"""
__version__ = "0.1.0"
