"""Phone timing of a recording from its transcript, for the bilabial closure check.

The words are force-aligned to the speech with pocketsphinx's alignment search (the en-us
acoustic model and CMU dictionary shipped in its wheel; no download): a first pass places the
words (with optional silences between them), a second pass places each word's phones inside
them. Forced alignment rather than the phone-loop recogniser of :mod:`..audio.phonemes`
because the transcript says *which* phones are spoken; the aligner only has to find *when*,
which it does far more reliably than it recognises them (a missed or invented /m/ would count
as a closure miss or hit that the video did not earn).

Words missing from the CMU dictionary (names, coined words, digits) get their pronunciation
from ``espeak-ng -x`` (its ASCII phoneme names), translated to the dictionary's ARPAbet by
:data:`ESPEAK_TO_ARPABET`. English only: the model and the dictionary are English.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from .lipsync import Phone

RATE = 16000
FRAME_RATE = 100  # pocketsphinx's frames per second

# espeak-ng's en-us phoneme names (``-x``, stress marks removed) -> ARPAbet. Vowel qualities
# only need to be near: the acoustics place the boundaries; consonants map exactly.
ESPEAK_TO_ARPABET = {
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "f": "F", "v": "V", "T": "TH",
    "D": "DH", "s": "S", "z": "Z", "S": "SH", "Z": "ZH", "h": "HH", "tS": "CH", "dZ": "JH",
    "m": "M", "n": "N", "N": "NG", "l": "L", "r": "R", "w": "W", "j": "Y", "?": "T", "x": "K",
    "C": "HH", "a": "AE", "A": "AA", "0": "AA", "O": "AO", "V": "AH", "@": "AH", "3": "ER",
    "I": "IH", "i": "IY", "E": "EH", "e": "EH", "eI": "EY", "aI": "AY", "aU": "AW", "OI": "OY",
    "oU": "OW", "U": "UH", "u": "UW", "@L": "AH L", "A@": "AA R", "O@": "AO R", "o@": "AO R",
    "e@": "EH R", "i@": "IH R", "i@3": "IH R", "U@": "UH R", "aI@": "AY ER", "aI3": "AY ER",
    "aU@": "AW ER", "aU3": "AW ER",
}


def read_transcript(value: str, option: str = "--transcript") -> str:
    """``value`` is a text file's path (read) or the transcript itself."""
    path = Path(value)
    looks_like_path = path.suffix.lower() in (".txt", ".lab", ".text") and " " not in value.strip()
    if looks_like_path or path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{option} {value!r} does not exist; give the transcript file or "
                                    "the spoken text itself") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{option} {value!r} cannot be read as UTF-8 text ({error})") from None
    return value


def transcript_words(text: str) -> list[str]:
    """Lower-case words (letters, digits, apostrophes) of ``text``; punctuation dropped."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)*", text.lower())


def align_transcript(wave16k: np.ndarray, text: str) -> list[Phone]:
    """Phones (ARPAbet, ``SIL`` for pauses) of ``text`` placed on the 16 kHz mono ``[N]`` speech.

    Raises ValueError when the text has no words, a word has no pronunciation, or the words
    cannot be aligned to the audio (the transcript does not match the speech)."""
    assert wave16k.ndim == 1, wave16k.shape
    words = transcript_words(text)
    if not words:
        raise ValueError("the transcript has no words to align")
    decoder, lock = _decoder()
    pcm = (np.clip(wave16k, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    with lock:
        # The cached decoder's live cepstral mean adapts to what it heard: a fresh start keeps
        # one recording's alignment independent of the recordings aligned before it.
        decoder.reinit_feat()
        for word in dict.fromkeys(words):
            if decoder.lookup_word(word) is None:
                decoder.add_word(word, espeak_pronunciation(word), True)
        try:
            decoder.set_align_text(" ".join(words))
        except RuntimeError as error:
            raise ValueError(f"the transcript cannot be aligned ({error})") from None
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            raise ValueError(f"the transcript ({len(words)} words) could not be aligned to the "
                             f"{len(wave16k) / RATE:.1f} s of audio: does it match the speech?")
        decoder.set_alignment()  # second pass: phones inside the placed words
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        alignment = decoder.get_alignment()
        phones = [] if alignment is None else [
            Phone(str(p.name), p.start / FRAME_RATE, (p.start + p.duration) / FRAME_RATE)
            for p in alignment.phones()]
    if not phones:
        raise ValueError("the transcript's words were placed but not their phones (alignment failed)")
    return phones


def espeak_pronunciation(word: str) -> str:
    """ARPAbet phones of ``word`` from espeak-ng (en-us), for words the dictionary lacks."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ValueError(f"transcript word {word!r} is not in pocketsphinx's English dictionary, and "
                         "espeak-ng (which would spell it out) is not installed: install espeak-ng or "
                         "write the word as it is spoken")
    done = subprocess.run([exe, "-q", "-x", "--sep=_", "-v", "en-us", word], capture_output=True,
                          text=True, timeout=30)
    phones = []
    for name in re.split(r"[_\s]+", done.stdout):
        name = re.sub(r"[',%=:#;]", "", name).removesuffix("-")  # stress, length marks
        if name not in ESPEAK_TO_ARPABET:
            name = name.rstrip("0123456789") or name  # variants: O2 -> O, @5 -> @ (but 0, 3 are vowels)
        if not name:
            continue
        # Unknown names are left out: the acoustics then stretch their neighbours over them.
        phones.extend(ESPEAK_TO_ARPABET.get(name, ESPEAK_TO_ARPABET.get(name[:1], "")).split())
    if not phones:
        raise ValueError(f"transcript word {word!r}: espeak-ng gave no usable pronunciation "
                         f"({done.stdout.strip() or done.stderr.strip()!r}); write it as it is spoken")
    return " ".join(phones)


@lru_cache(maxsize=1)
def _decoder():
    from ..audio.phonemes import PhonemeRecognizerUnavailable, default_model_dir

    try:
        import pocketsphinx

        model = default_model_dir()
        # Wide beams: a forced alignment has one path to follow, a narrow beam loses it.
        decoder = pocketsphinx.Decoder(
            hmm=os.path.join(model, "en-us"), dict=os.path.join(model, "cmudict-en-us.dict"),
            beam=1e-100, wbeam=1e-80, pbeam=1e-100, bestpath=False, loglevel="FATAL")
    except (ImportError, PhonemeRecognizerUnavailable, RuntimeError) as error:
        raise ValueError(f"the transcript alignment needs pocketsphinx and its en-us model ({error})") from None
    # A decoder is not re-entrant; the lock lets threads share the cached one.
    return decoder, threading.Lock()
