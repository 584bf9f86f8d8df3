"""MFCCs as SyncNet v2 was trained on (the defaults of the ``python_speech_features`` package's
``mfcc``): 16 kHz audio at 16-bit integer scale, pre-emphasis 0.97, 25 ms rectangular frames
every 10 ms, 512-point power spectrum, 26 triangular mel filters over 0..8 kHz, log, DCT-II
(orthonormal) keeping 13, sine lifter 22, and the first coefficient replaced by the log frame
energy. ``[13, M]``, one column per 10 ms."""
from __future__ import annotations

import numpy as np
from scipy.fft import dct

RATE = 16000
FRAME = 400
STEP = 160
NFFT = 512
FILTERS = 26
COEFFICIENTS = 13
LIFTER = 22
PREEMPHASIS = 0.97


def _mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mel_filterbank() -> np.ndarray:
    """``[26, 257]`` triangular filters on the FFT bins (the bin edges floored, as the package)."""
    points = _hz(np.linspace(_mel(0.0), _mel(RATE / 2), FILTERS + 2))
    bins = np.floor((NFFT + 1) * points / RATE).astype(int)
    bank = np.zeros((FILTERS, NFFT // 2 + 1))
    for j in range(FILTERS):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(lo, mid):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(mid, hi):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


def mfcc(wave16k: np.ndarray) -> np.ndarray:
    """``wave16k [N]`` float in -1..1 (scaled to 16-bit here) -> ``[13, M]`` float64."""
    assert wave16k.ndim == 1, wave16k.shape
    x = np.asarray(wave16k, np.float64) * 32768.0
    x = np.append(x[0], x[1:] - PREEMPHASIS * x[:-1])
    count = 1 if len(x) <= FRAME else 1 + int(np.ceil((len(x) - FRAME) / STEP))
    padded = np.concatenate([x, np.zeros(max((count - 1) * STEP + FRAME - len(x), 0))])
    index = np.arange(FRAME)[None, :] + STEP * np.arange(count)[:, None]
    frames = padded[index]
    power = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    features = power @ mel_filterbank().T
    features = np.where(features == 0, np.finfo(float).eps, features)
    cepstra = dct(np.log(features), type=2, axis=1, norm="ortho")[:, :COEFFICIENTS]
    lift = 1 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(COEFFICIENTS) / LIFTER)
    cepstra = cepstra * lift
    cepstra[:, 0] = np.log(energy)
    return cepstra.T
