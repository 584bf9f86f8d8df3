"""Audio: loading and resampling, Wav2Lip-compatible mel windows, and speech -> mouth articulation.

Everything here works on 16 kHz mono float32 (:class:`MonoAudio`). Heavy libraries (librosa,
soundfile, av, pocketsphinx, torch) are imported only by the functions that need them.
"""
from .articulation import ArticulationTrack, articulation_from_audio
from .io import MonoAudio, audio_dict_from_file, load_audio, read_audio_file
from .mel import MelWindows, iter_mel_windows, mel_windows, melspectrogram
from .phonemes import PhonemeRecognizerUnavailable, PhoneSegment, phoneme_timeline
from .timing import as_fraction, frame_count, mel_window_starts
from .visemes import COLUMNS, REST

__all__ = [
    "ArticulationTrack",
    "COLUMNS",
    "MelWindows",
    "MonoAudio",
    "PhoneSegment",
    "PhonemeRecognizerUnavailable",
    "REST",
    "articulation_from_audio",
    "as_fraction",
    "audio_dict_from_file",
    "frame_count",
    "iter_mel_windows",
    "load_audio",
    "mel_window_starts",
    "mel_windows",
    "melspectrogram",
    "phoneme_timeline",
    "read_audio_file",
]
