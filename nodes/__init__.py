"""SegTalker node classes (ComfyUI V3 schema). Thin: every algorithm is in segtalker_core."""
from .loaders import SegTalkerLoadEncoder, SegTalkerLoadGenerator, SegTalkerLoadParser, SegTalkerLoadTSG
from .parsing import SegTalkerFaceParse, SegTalkerSegmentationToMask
from .style import SegTalkerEncodeStyle, SegTalkerSwapStyle
from .synthesis import SegTalkerPasteBack, SegTalkerSynthesize, SegTalkerTalk
from .talk_video import SegTalkerTalkVideo
from .talking import SegTalkerAudioToSegmentation, SegTalkerEditSegmentation

NODE_CLASSES = [
    SegTalkerLoadParser,
    SegTalkerLoadTSG,
    SegTalkerLoadEncoder,
    SegTalkerLoadGenerator,
    SegTalkerFaceParse,
    SegTalkerSegmentationToMask,
    SegTalkerAudioToSegmentation,
    SegTalkerEditSegmentation,
    SegTalkerEncodeStyle,
    SegTalkerSwapStyle,
    SegTalkerSynthesize,
    SegTalkerPasteBack,
    SegTalkerTalk,
    SegTalkerTalkVideo,
]
