"""The evaluation report: ``report.md`` (tables people read), ``report.json`` (the same numbers
for scripts) and ``figures/*.png``, each written whole or not at all."""
from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path

from ..atomic_files import write_bytes
from . import figures
from .evaluate import ClipReport

# Rows of the Markdown table: (group, key, label, format).
ROWS = (
    ("frames", "compared", "frames compared", "{:d}"),
    ("frames", "without_face", "frames without a face (excluded)", "{:d}"),
    ("image", "psnr_db", "PSNR, whole frame (dB)", "{:.2f}"),
    ("image", "ssim", "SSIM, whole frame", "{:.4f}"),
    ("image", "face_psnr_db", "PSNR, face crop (dB)", "{:.2f}"),
    ("image", "face_ssim", "SSIM, face crop", "{:.4f}"),
    ("image", "cpbd", "CPBD (generated)", "{:.3f}"),
    ("image", "cpbd_reference", "CPBD (reference)", "{:.3f}"),
    ("image", "lmd_mouth_px", "LMD mouth (px)", "{:.2f}"),
    ("image", "fid", "FID (pytorch-fid Inception)", "{:.2f}"),
    ("image", "lpips", "LPIPS, whole frame", "{:.4f}"),
    ("image", "lpips_face", "LPIPS, face crop", "{:.4f}"),
    ("image", "lpips_net", "LPIPS network", "{}"),
    ("image", "lmd_face_px", "LMD face (px)", "{:.2f}"),
    ("texture", "static_psnr_db", "PSNR outside the lower face (dB)", "{:.2f}"),
    ("texture", "static_ssim", "SSIM outside the lower face", "{:.4f}"),
    ("texture", "lower_face_high_frequency_ratio", "lower-face detail vs source (HF energy ratio)", "{:.3f}"),
    ("temporal", "static_change", "frame-to-frame change outside the lower face (levels)", "{:.3f}"),
    ("temporal", "static_change_reference", "the same in the reference (levels)", "{:.3f}"),
    ("lip_sync", "envelope_correlation", "mouth opening vs speech envelope, offset 0 (spoken stretch)", "{:.3f}"),
    ("lip_sync", "envelope_correlation_whole_clip", "the same over the whole clip (rests included)", "{:.3f}"),
    ("lip_sync", "best_offset_frames", "audio-video offset maximising it (frames, + = video late)", "{:+d}"),
    ("lip_sync", "best_offset_correlation", "correlation at that offset", "{:.3f}"),
    ("lip_sync", "mouth_motion_vs_reference", "mouth motion vs the reference's", "{:.3f}"),
    ("lip_sync", "bilabial_local_opening", "opening at bilabials / its peak within 0.2 s (median; 0 shut, 1 no closing)",
     "{:.3f}"),
    ("lip_sync", "segsyncnet_confidence", "Seg-SyncNet confidence", "{:.3f}"),
    ("lip_sync", "segsyncnet_offset_frames", "Seg-SyncNet offset (frames)", "{:+d}"),
    ("lip_sync", "lse_c", "LSE-C (SyncNet v2)", "{:.3f}"),
    ("lip_sync", "lse_d", "LSE-D (SyncNet v2)", "{:.3f}"),
    ("lip_sync", "lse_offset_frames", "SyncNet v2 offset (frames)", "{:+d}"),
)

# What the metrics that need weight files need, by the option that gives them.
WEIGHTED_METRICS = {
    "syncnet": "Seg-SyncNet confidence and offset: a Seg-SyncNet bundle (.safetensors), --syncnet",
    "syncnet_v2": "LSE-C / LSE-D: syncnet_v2.model from joonson/syncnet_python, --syncnet-v2",
    "inception": "FID: pytorch-fid's Inception weights pt_inception-2015-12-05-6726825d.pth, --inception",
    "lpips": "LPIPS: the lpips package's alex.pth (or vgg.pth) with torchvision's alexnet-owt-7be5be79.pth "
             "(or vgg16-397923af.pth), --lpips and --lpips-backbone (or one whole LPIPS state dict, --lpips)",
}
# Metrics of the papers this version does not compute, whatever is given (none at present).
NOT_COMPUTED: tuple[str, ...] = ()


def write_report(folder: str | os.PathLike, reports: list[ClipReport],
                 weights: dict[str, str] | None = None, unpaired: list[str] | None = None,
                 inputs: dict | None = None) -> Path:
    """Write the report of ``reports`` into ``folder`` (created if missing; its parent must
    exist); returns the Markdown file's path. ``weights``: the weight files given, by metric;
    ``unpaired``: inputs without a counterpart, listed in the report."""
    root = check_report_folder(folder)
    (root / "figures").mkdir(parents=True, exist_ok=True)
    inputs = inputs or {}
    clip_entries = []
    for report in reports:
        written = {}
        for kind, draw in (("sync", figures.sync_plot), ("sheet", figures.contact_sheet),
                           ("heat", figures.heat_map)):
            data = draw(report)
            if data is not None:
                relative = f"figures/{_safe(report.name)}_{kind}.png"
                write_bytes(root / relative, data, inputs, "a report figure")
                written[kind] = relative
        clip_entries.append((report, written))
    weights = weights or {}
    missing = {k: v for k, v in WEIGHTED_METRICS.items() if k not in weights}
    document = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "clips": [{"name": r.name, "generated": r.generated, "reference": r.reference, "audio": r.audio,
                   "metrics": _json_ready(r.metrics), "notes": r.notes, "figures": f}
                  for r, f in clip_entries],
        "unpaired": unpaired or [],
        "weights_given": weights,
        "weights_missing": missing,
        "not_computed": list(NOT_COMPUTED),
    }
    write_bytes(root / "report.json", (json.dumps(document, indent=2, allow_nan=False) + "\n").encode(),
                inputs, "the JSON report")
    markdown = _markdown(document, clip_entries)
    return write_bytes(root / "report.md", markdown.encode(), inputs, "the Markdown report")


def check_report_folder(folder: str | os.PathLike) -> Path:
    """The report folder, refused before any work when it is a file or its parent is missing."""
    root = Path(os.fspath(folder))
    if root.exists() and not root.is_dir():
        raise ValueError(f"report folder {os.fspath(folder)!r} is a file; the report goes into a folder "
                         "(give another -o)")
    if not root.parent.is_dir():
        raise FileNotFoundError(f"report folder {os.fspath(folder)!r}: the folder {str(root.parent)!r} does "
                                "not exist; create it first or write elsewhere")
    return root


def _markdown(document: dict, clip_entries) -> str:
    lines = ["# SegTalker evaluation", "", f"Created {document['created']}.", ""]
    reports = [r for r, _ in clip_entries]
    if len(reports) > 1:
        lines += ["## Summary", "", "| metric | " + " | ".join(r.name for r in reports) + " |",
                  "|---|" + "---|" * len(reports)]
        for group, key, label, fmt in ROWS:
            cells = [_cell(r.metrics.get(group, {}).get(key), fmt) for r in reports]
            if any(c != "–" for c in cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    for report, written in clip_entries:
        lines += [f"## {report.name}", "", f"- generated: `{report.generated}`",
                  f"- reference: `{report.reference}`",
                  f"- audio: `{report.audio}`" if report.audio else "- audio: none", "",
                  "| metric | value |", "|---|---|"]
        for group, key, label, fmt in ROWS:
            value = report.metrics.get(group, {}).get(key)
            if value is not None:
                lines.append(f"| {label} | {_cell(value, fmt)} |")
        sync = report.metrics.get("lip_sync", {})
        if "bilabials" in sync:
            lines.append(f"| bilabials (p, b, m) closed ({sync.get('bilabial_timing', 'phone timing')}) | "
                         f"{sync['bilabials_closed']} of {sync['bilabials']} |")
        lines.append("")
        flicker = report.metrics.get("temporal", {}).get("flicker_frames", [])
        lines.append("Flicker frames: " + (", ".join(f"{f['frame']} ({f['score']:.1f})" for f in flicker)
                                           if flicker else "none") + ".")
        regions = report.metrics.get("regions", {})
        if regions:
            lines += ["", "Mean absolute difference by region (levels 0..255): " + ", ".join(
                f"{name} {_cell(value, '{:.2f}')}" for name, value in regions.items()) + "."]
        if report.notes:
            lines += ["", "Notes:"] + [f"- {note}" for note in report.notes]
        for kind, title in (("sync", "Mouth opening and speech envelope"),
                            ("sheet", "Generated (top) vs reference (bottom) at the strongest mouth motion"),
                            ("heat", "Mean absolute difference (blue 0, red 40+ levels)")):
            if kind in written:
                lines += ["", f"![{title}]({written[kind]})"]
        lines.append("")
    if document["unpaired"]:
        lines += ["## Not evaluated", ""] + [f"- {item}" for item in document["unpaired"]] + [""]
    lines += ["## Metrics not computed", ""]
    lines += [f"- {text} (weights not given)" for text in document["weights_missing"].values()]
    lines += [f"- {text}" for text in NOT_COMPUTED] + [""]
    return "\n".join(lines)


def _cell(value, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float) and math.isnan(value):
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _json_ready(value):
    """NaN -> null, inf -> "inf" (JSON has neither), numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "clip"
