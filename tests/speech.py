"""Real (synthetic) speech for tests, made with espeak-ng at test time.

Usage from any test module (pytest puts ``tests/`` on ``sys.path``)::

    from speech import speak, speak_wave
    path = speak("papa mama baba", tmp_path / "papa.wav")        # 16 kHz mono wav
    wave, sr = speak_wave("The quick brown fox.", rate=150)       # float32 [N], 16000

espeak-ng is deterministic, so the same text and options always give the same samples. It is a
system package (``apt-get install espeak-ng``); tests that need it fail with a message saying so.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_RATE = 150  # words per minute (espeak-ng's default 175 is hurried)
DEFAULT_VOICE = "en-us"


class EspeakMissing(RuntimeError):
    pass


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakMissing(
            "espeak-ng is not installed; the audio tests synthesise speech with it. "
            "Install it with: apt-get install -y espeak-ng"
        )
    return exe


def speak_wave(
    text: str,
    rate: int = DEFAULT_RATE,
    sample_rate: int = 16000,
    voice: str = DEFAULT_VOICE,
    pitch: int = 50,
) -> tuple[np.ndarray, int]:
    """Synthesise ``text``: (float32 mono ``[N]``, ``sample_rate``). Results are cached per process."""
    key = (text, int(rate), int(sample_rate), voice, int(pitch))
    if key not in _CACHE:
        _CACHE[key] = _synthesise(*key)
    wave = _CACHE[key]
    return wave.copy(), sample_rate


def speak(
    text: str,
    path: str | os.PathLike,
    rate: int = DEFAULT_RATE,
    sample_rate: int = 16000,
    voice: str = DEFAULT_VOICE,
    pitch: int = 50,
) -> Path:
    """Synthesise ``text`` into a 16-bit mono wav file at ``path``; returns the path."""
    import soundfile as sf

    wave, sr = speak_wave(text, rate=rate, sample_rate=sample_rate, voice=voice, pitch=pitch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, subtype="PCM_16")
    return path


_CACHE: dict[tuple, np.ndarray] = {}


def _synthesise(text: str, rate: int, sample_rate: int, voice: str, pitch: int) -> np.ndarray:
    import soundfile as sf

    exe = _espeak()
    digest = hashlib.sha1(repr((text, rate, voice, pitch)).encode()).hexdigest()[:12]
    with tempfile.TemporaryDirectory(prefix="speech-") as tmp:
        raw = Path(tmp) / f"{digest}.wav"
        cmd = [exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(raw), text]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not raw.is_file():
            raise RuntimeError(f"espeak-ng failed ({' '.join(cmd)}): {done.stderr.strip()}")
        data, sr = sf.read(str(raw), dtype="float32", always_2d=True)
    wave = data.mean(axis=1)
    if sr != sample_rate:
        import soxr

        wave = soxr.resample(wave, sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Papa made a map of the bay by the mill.",
    "We will meet you by the river when the rain stops.",
    "Please bring me the blue box from the kitchen.",
    "Every morning she walks along the beach with her dog.",
)


def long_speech(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """``seconds`` of float32 mono speech for benchmarks: seeded choice of sentences and speaking
    rates (130-190 wpm) with pauses of 0.1-1.2 s, so long runs are not one loop of a clip."""
    rng = np.random.default_rng(seed)
    total = int(seconds * sample_rate)
    parts, n = [], 0
    while n < total:
        text = SENTENCES[rng.integers(len(SENTENCES))]
        wave, _ = speak_wave(text, rate=int(rng.integers(130, 190)), sample_rate=sample_rate)
        gap = np.zeros(int(rng.uniform(0.1, 1.2) * sample_rate), np.float32)
        parts += [wave, gap]
        n += len(wave) + len(gap)
    return np.concatenate(parts)[:total]
