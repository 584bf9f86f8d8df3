"""Language-independent acoustic features at 100 frames/s, the ground the articulation stands on.

Per 10 ms frame (25 ms analysis window, 40 ms for periodicity):

* ``level_db``: overall level, dB re full scale;
* ``vowel_db``: level in 150..3000 Hz, where vowel energy (F1, F2) lives: the jaw follows it;
* ``mid_db``: level in 700..3500 Hz: falls furthest at lip closures, nasal /m/ included (its
  murmur is strong below 700 Hz);
* ``high_db``: level in 4..8 kHz (sibilants, bursts);
* ``f2_hz``: centroid of 800..3000 Hz, an F2-ish cue: high for spread vowels (ee), low for
  rounded ones (oo);
* ``voicing``: peak normalised autocorrelation at pitch lags 60..400 Hz (0 noise .. 1 periodic);
* ``flux``: change of the level-free spectral shape over 40 ms (formants move in speech; they
  stay put in a held musical note, and noise averages out).

Long files are processed in blocks, so memory is proportional to the block, not the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

RATE = 16000
HOP = 160  # 10 ms
WIN = 400  # 25 ms
PITCH_WIN = 640  # 40 ms: two periods of a 60 Hz voice
N_FFT = 1024
FRAME_RATE = RATE // HOP  # 100
_BLOCK = 1000  # frames per block (10 s): ~35 MB of FFT work arrays
_EPS_DB = -120.0


@dataclass(frozen=True)
class AcousticFeatures:
    """``[F]`` float32 arrays at :data:`FRAME_RATE`; frame ``k`` is centred on sample ``160 k``."""

    level_db: np.ndarray
    vowel_db: np.ndarray
    mid_db: np.ndarray
    high_db: np.ndarray
    f2_hz: np.ndarray
    voicing: np.ndarray
    flux: np.ndarray

    def __len__(self) -> int:
        return int(self.level_db.shape[0])

    def __post_init__(self) -> None:
        n = len(self.level_db)
        for name in ("vowel_db", "mid_db", "high_db", "f2_hz", "voicing", "flux"):
            assert getattr(self, name).shape == (n,), (name, getattr(self, name).shape, n)


def num_frames(n_samples: int) -> int:
    return 1 + n_samples // HOP


def acoustic_features(wave16k: np.ndarray) -> AcousticFeatures:
    """Features of a 16 kHz mono signal ``[N]`` -> :class:`AcousticFeatures` of ``1 + N // 160`` frames."""
    assert wave16k.ndim == 1, wave16k.shape
    n = num_frames(len(wave16k))
    parts = [_block(wave16k, a, min(a + _BLOCK, n)) for a in range(0, n, _BLOCK)]
    cols = {k: np.concatenate([p[k] for p in parts]).astype(np.float32) for k in parts[0]}
    cols["flux"] = _flux(np.concatenate([p["shape"] for p in parts]))
    del cols["shape"]
    return AcousticFeatures(**cols)


@lru_cache(maxsize=1)
def _bands() -> dict[str, np.ndarray]:
    f = np.fft.rfftfreq(N_FFT, 1.0 / RATE)
    edges = np.geomspace(150, 7000, 13)  # 12 log-spaced bands for the spectral shape
    shape = np.stack([(f >= lo) & (f < hi) for lo, hi in zip(edges[:-1], edges[1:])]).astype(np.float32)
    return {
        "freqs": f.astype(np.float32),
        "all": ((f >= 60) & (f < 7800)).astype(np.float32),
        "vowel": ((f >= 150) & (f < 3000)).astype(np.float32),
        "mid": ((f >= 700) & (f < 3500)).astype(np.float32),
        "high": ((f >= 4000) & (f < 8000)).astype(np.float32),
        "f2": ((f >= 800) & (f < 3000)).astype(np.float32),
        "shape": shape / shape.sum(axis=1, keepdims=True),
    }


def _frames(x: np.ndarray, start: int, stop: int, width: int) -> np.ndarray:
    """``[stop-start, width]`` frames centred on samples ``160 k``, zero outside the signal."""
    centres = np.arange(start, stop) * HOP
    idx = centres[:, None] + np.arange(width)[None, :] - width // 2
    inside = (idx >= 0) & (idx < len(x))
    return np.where(inside, x[np.clip(idx, 0, len(x) - 1)], 0.0).astype(np.float32)


def _db(power: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def _block(x: np.ndarray, start: int, stop: int) -> dict[str, np.ndarray]:
    b = _bands()
    win = np.hanning(WIN).astype(np.float32)
    fr = _frames(x, start, stop, WIN) * win
    power = np.abs(np.fft.rfft(fr, n=N_FFT, axis=1)) ** 2  # [F, 513]
    # Scale so a full-scale sine reads about 0 dB.
    power *= 4.0 / (win.sum() ** 2)
    level = _db(power @ b["all"])
    vowel = _db(power @ b["vowel"])
    mid = _db(power @ b["mid"])
    high = _db(power @ b["high"])
    f2_power = power * b["f2"]
    f2 = (f2_power @ b["freqs"]) / np.maximum(f2_power.sum(axis=1), 1e-20)
    shape_db = _db(power @ b["shape"].T)  # [F, 12]
    shape_db -= shape_db.mean(axis=1, keepdims=True)  # level-free

    pw = _frames(x, start, stop, PITCH_WIN) * np.hanning(PITCH_WIN).astype(np.float32)
    spec = np.abs(np.fft.rfft(pw, n=2 * PITCH_WIN, axis=1)) ** 2
    ac = np.fft.irfft(spec, axis=1)[:, :PITCH_WIN]
    # Unbias by the window's own autocorrelation so long lags are not penalised.
    wac = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(PITCH_WIN), n=2 * PITCH_WIN)) ** 2)[:PITCH_WIN]
    ac = ac / np.maximum(wac[None, :] / wac[0], 1e-3)
    lo, hi = RATE // 400, RATE // 60
    voicing = ac[:, lo:hi].max(axis=1) / np.maximum(ac[:, 0], 1e-12)
    voicing = np.where(ac[:, 0] > 1e-9, np.clip(voicing, 0.0, 1.0), 0.0)
    return {
        "level_db": level,
        "vowel_db": vowel,
        "mid_db": mid,
        "high_db": high,
        "f2_hz": f2,
        "voicing": voicing,
        "shape": shape_db.astype(np.float32),
    }


def _flux(shape_db: np.ndarray) -> np.ndarray:
    """RMS change (dB) of the 12-band shape between frames 40 ms apart, on 30 ms-smoothed shapes."""
    from scipy.ndimage import uniform_filter1d

    sm = uniform_filter1d(shape_db, 3, axis=0, mode="nearest") if len(shape_db) else shape_db
    d = np.zeros(len(sm), np.float32)
    if len(sm) > 4:
        diff = sm[4:] - sm[:-4]
        d[2:-2] = np.sqrt((diff**2).mean(axis=1))
    return d
