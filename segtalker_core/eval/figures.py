"""The report's pictures as PNG bytes: mouth opening and speech envelope over time, the contact
sheet, the difference heat map. Plots use matplotlib (a MediaPipe dependency, so installed with
the pack) on its file-only backend; the pictures are drawn with OpenCV."""
from __future__ import annotations

import io

import cv2
import numpy as np

from .evaluate import ClipReport

HEAT_SCALE = 40.0  # levels of mean absolute difference shown as the hottest colour


def sync_plot(report: ClipReport) -> bytes | None:
    """Mouth opening (left axis) and speech envelope (right axis) over time; None without audio."""
    if report.envelope is None:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    t = np.arange(len(report.mouth)) / report.fps
    figure = Figure(figsize=(9, 3), dpi=100)
    axis = figure.add_subplot(1, 1, 1)
    axis.plot(t, report.mouth, color="tab:red", label="mouth opening (generated)")
    axis.set_xlabel("time (s)")
    axis.set_ylabel("mouth opening (eye-corner distances)", color="tab:red")
    other = axis.twinx()
    other.plot(t, report.envelope, color="tab:blue", alpha=0.7, label="speech envelope")
    other.set_ylabel("vowel-band loudness (dB)", color="tab:blue")
    sync = report.sync
    if sync is not None and np.isfinite(sync.best_correlation):
        axis.set_title(f"{report.name}: correlation {sync.correlation_at_zero:.2f} at offset 0, "
                       f"best {sync.best_correlation:.2f} at {sync.best_offset:+d} frames", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def contact_sheet(report: ClipReport) -> bytes | None:
    """Generated face crops (top row) over the reference's (bottom row) at the strongest mouth
    motion; frame numbers in the corners."""
    if report.sheet is None:
        return None
    return _png(report.sheet)


def heat_map(report: ClipReport) -> bytes | None:
    """Mean absolute difference per pixel over the frames with a face, coloured (blue 0 ..
    red ``HEAT_SCALE`` levels and more) over the reference frame."""
    if report.heat is None:
        return None
    level = np.clip(report.heat / HEAT_SCALE * 255.0, 0, 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    gray = cv2.cvtColor(cv2.cvtColor(report.heat_background, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    weight = (0.35 + 0.65 * (level.astype(np.float32) / 255.0))[..., None]
    image = (weight * colour + (1 - weight) * gray).astype(np.uint8)
    return _png(image)


def _png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()
