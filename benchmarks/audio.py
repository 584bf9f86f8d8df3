"""Audio benchmark: time and peak memory of the audio stages on N minutes of espeak-ng speech.

    .venv/bin/python benchmarks/audio.py --minutes 10

Prints one table row per stage. Needs espeak-ng (the speech is synthesised here, with pauses).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

def long_speech(minutes: float) -> np.ndarray:
    from speech import long_speech as speech_seconds

    return speech_seconds(minutes * 60)


def measure(name: str, fn) -> None:
    tracemalloc.start()
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| {name:24s} | {dt:7.2f} s | {peak / 2**20:7.1f} MiB | {rss:7.0f} MiB | {out} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--quick", action="store_true", help="6 s of speech: only shows that it runs")
    args = ap.parse_args()
    if args.quick:
        args.minutes = 0.1

    from segtalker_core.audio import articulation_from_audio, iter_mel_windows
    from segtalker_core.audio.features import acoustic_features

    wave = long_speech(args.minutes)
    # Imports (librosa pulls in numba) and filter banks are one-off costs, not per-audio ones.
    articulation_from_audio(wave[:16000], args.fps)
    list(iter_mel_windows(wave[:16000], args.fps))
    print(f"{args.minutes} min of speech, {len(wave)} samples ({wave.nbytes / 2**20:.0f} MiB), fps {args.fps}")
    print("| stage | time | peak Python-traced memory | process peak RSS so far | result |")
    print("|---|---|---|---|---|")

    def mel_all():
        n = 0
        for chunk in iter_mel_windows(wave, args.fps, chunk_frames=256):
            n += len(chunk)
        return f"{n} windows"

    measure("mel windows (chunked)", mel_all)
    measure("acoustic features", lambda: f"{len(acoustic_features(wave))} frames")
    measure("articulation acoustic", lambda: f"{len(articulation_from_audio(wave, args.fps, method='acoustic'))} frames")

    def auto():
        track = articulation_from_audio(wave, args.fps)
        return f"{len(track)} frames, {len(track.phones)} phones, method {track.method}"

    measure("articulation auto", auto)


if __name__ == "__main__":
    main()
