"""SegTalker node classes (ComfyUI V3 schema). Thin: every algorithm is in segtalker_core."""
from .loaders import SegTalkerLoadAudio, SegTalkerLoadModel, SegTalkerLoadParser
from .parsing import SegTalkerFaceParse, SegTalkerSegmentationToMask
from .style import SegTalkerEncodeStyle, SegTalkerSwapStyle
from .synthesis import SegTalkerPasteBack, SegTalkerSynthesize, SegTalkerTalk
from .talking import SegTalkerAudioToSegmentation, SegTalkerEditSegmentation

NODE_CLASSES = [
    SegTalkerLoadParser,
    SegTalkerLoadModel,
    SegTalkerLoadAudio,
    SegTalkerFaceParse,
    SegTalkerSegmentationToMask,
    SegTalkerAudioToSegmentation,
    SegTalkerEditSegmentation,
    SegTalkerEncodeStyle,
    SegTalkerSwapStyle,
    SegTalkerSynthesize,
    SegTalkerPasteBack,
    SegTalkerTalk,
]
