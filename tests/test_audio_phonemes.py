"""pocketsphinx phone timeline, ARPAbet visemes and dominance coarticulation."""
from __future__ import annotations

import numpy as np
import pytest

from segtalker_core.audio import PhonemeRecognizerUnavailable, phoneme_timeline
from segtalker_core.audio.coarticulation import coarticulate
from segtalker_core.audio.phonemes import split_points
from segtalker_core.audio.visemes import REST, is_speech_phone, phone_targets, viseme_of
from speech import speak_wave

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests by the river."


def _check_timeline(segs, duration: float) -> None:
    assert segs
    for s in segs:
        assert 0.0 <= s.start < s.end <= duration + 0.011, s
    for a, b in zip(segs, segs[1:]):
        assert a.end <= b.start + 1e-9, (a, b)


def _loud_fraction(segs, wave: np.ndarray) -> float:
    """Share of the speech phones' time that lies where the audio is not silent."""
    hop = 160
    n = len(wave) // hop
    rms = np.sqrt(np.mean(wave[: n * hop].reshape(n, hop) ** 2, axis=1))
    loud = rms > 0.01 * rms.max()
    total = hit = 0
    for s in segs:
        if is_speech_phone(s.phone):
            k = np.arange(int(s.start * 100), min(n, int(s.end * 100)))
            total += len(k)
            hit += int(loud[k].sum())
    return hit / max(total, 1)


def test_sentence_gives_an_ordered_timeline_on_the_speech():
    wave = speak_wave(SENTENCE)[0]
    segs = phoneme_timeline(wave)
    _check_timeline(segs, len(wave) / 16000)
    speech = [s for s in segs if is_speech_phone(s.phone)]
    assert len(speech) >= 15  # ~60 phones spoken; the allphone decoder merges some
    assert _loud_fraction(segs, wave) > 0.8


def test_bilabials_are_recognised_in_papa_mama_baba():
    wave = speak_wave("papa mama baba")[0]
    phones = {s.phone for s in phoneme_timeline(wave)}
    assert phones & {"P", "B", "M"}, phones


def test_long_audio_is_decoded_in_pieces_cut_at_pauses():
    gap = np.zeros(int(0.3 * 16000), np.float32)
    words = [speak_wave(w)[0] for w in ("one", "two", "three", "four", "five", "six")]
    wave = np.concatenate([x for w in words for x in (w, gap)])
    from scipy.ndimage import maximum_filter1d

    silent = maximum_filter1d(np.abs(wave), 321) < 1e-3  # no sound within 10 ms
    pieces = split_points(wave, max_s=1.5, min_s=0.75)
    assert len(pieces) >= 6  # one per word at least: the pauses between them are left out
    assert all(0 <= a < b <= len(wave) and b - a <= 1.5 * 16000 for a, b in pieces)
    assert all(b0 <= a1 for (_, b0), (a1, _) in zip(pieces, pieces[1:]))
    for a, b in pieces:  # never cut into a word (the signal's own ends excepted)
        assert (a == 0 or silent[a]) and (b == len(wave) or silent[b - 1]), (a / 16000, b / 16000)
    covered = np.zeros(len(wave), bool)
    for a, b in pieces:
        covered[a:b] = True
    assert covered[~silent].all()  # every sound is decoded
    # one long sounding stretch is cut into pieces no longer than the limit
    sentence = speak_wave(SENTENCE)[0]
    long_pieces = split_points(sentence, max_s=1.5, min_s=0.75)
    assert len(long_pieces) >= 3 and all(b - a <= 1.5 * 16000 for a, b in long_pieces)
    segs = phoneme_timeline(wave, max_piece_s=1.5)
    _check_timeline(segs, len(wave) / 16000)
    assert _loud_fraction(segs, wave) > 0.8
    # the pieces' phones land in every word, not just the first piece
    starts = np.array([s.start for s in segs if is_speech_phone(s.phone)])
    assert starts.max() > len(wave) / 16000 - 1.0


def test_missing_model_is_reported(tmp_path):
    with pytest.raises(PhonemeRecognizerUnavailable, match="missing"):
        phoneme_timeline(np.zeros(16000, np.float32), model_dir=str(tmp_path))


def test_viseme_table():
    for p in ("P", "B", "M"):
        target, dom = viseme_of(p)
        assert target[3] == 1.0 and target[0] < 0.1 and dom[3] > dom[0]
    aa, _ = viseme_of("AA1")  # stress digits are ignored
    iy, _ = viseme_of("IY")
    uw, _ = viseme_of("UW")
    assert aa[0] > iy[0] and aa[0] > uw[0]  # open vowel opens the jaw most
    assert iy[1] > 0.5 > uw[1] and uw[2] > 0.8  # ee spreads, oo rounds
    np.testing.assert_array_equal(viseme_of("SIL")[0], REST)
    np.testing.assert_array_equal(viseme_of("+NSN+")[0], REST)
    assert not is_speech_phone("SIL") and is_speech_phone("AH0")


def _segments(spec):
    class Seg:
        def __init__(self, phone, start, end):
            self.phone, self.start, self.end = phone, start, end

    out, t = [], 0.0
    for phone, dur in spec:
        out.append(Seg(phone, t, t + dur))
        t += dur
    return out, t


def test_coarticulation_reaches_short_closures_and_short_openings():
    segs, dur = _segments([("AA", 0.2), ("P", 0.06), ("AH", 0.04), ("M", 0.06), ("AA", 0.2)])
    n = int(dur * 100)
    targets, dominance, speech = phone_targets(segs, n, 100)
    assert speech.all()
    smooth = coarticulate(targets, dominance, 100)
    closure = smooth[:, 3]
    assert closure[20:26].max() >= 0.9  # the 60 ms /p/
    assert closure[30:36].max() >= 0.9  # the 60 ms /m/
    assert closure[26:30].min() <= 0.4  # the 40 ms vowel between them still parts the lips
    # a plain moving average of the same length does not get there
    box = np.convolve(targets[:, 3], np.ones(9) / 9, mode="same")
    assert box[20:26].max() < 0.9 or box[26:30].min() > 0.4
    # constant targets stay put
    flat = coarticulate(np.tile(targets[5], (50, 1)), np.ones((50, 5), np.float32), 100)
    np.testing.assert_allclose(flat, np.tile(targets[5], (50, 1)), atol=1e-5)


def test_a_recording_gives_the_same_phones_whatever_was_decoded_before():
    """The decoder is cached between calls, and its live cepstral mean adapts to what it hears:
    a recording's phones must not depend on the recording decoded before it (they did: a dub's
    first frames changed after another file had been talked)."""
    from segtalker_core.audio import phonemes

    first = speak_wave("I thought all of them would go.")[0]
    other = speak_wave("A quieter, lower and slower voice.", rate=110, pitch=15)[0]
    phonemes._decoder.cache_clear()
    fresh = phoneme_timeline(first)
    phoneme_timeline(other)
    assert phoneme_timeline(first) == fresh
