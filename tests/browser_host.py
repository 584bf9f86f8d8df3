"""The real ComfyUI frontend in headless Chromium, for the tests (see ``test_browser_frontend.py``).

* ``browser_tools_problem()`` says what is missing to drive a browser (Debian's ``chromium``, Node.js,
  ``tests/browser/node_modules/playwright-core``), or ``None``; ``bash setup.sh`` installs all three.
* ``ensure_frontend(version)`` installs ``comfyui-frontend-package==version`` with
  ``pip install --no-deps --target`` into the test cache (outside the repository) and returns its
  ``static`` folder, which a server gets with ``--front-end-root``.
* ``drive(url, out_dir, workflow=...)`` runs ``tests/browser/drive.mjs`` in a subprocess with a
  timeout and returns its JSON result (see that script for the fields); ``drive_batch`` runs
  several workflows in one page, one after another (one page start-up instead of one each).
* ``prompt_differences(api, prompt, object_info)`` compares what the frontend's ``graphToPrompt()``
  made of a UI workflow with the shipped API-format file, allowing only ``ALLOWED_DIFFERENCES``.

Only the standard library is imported.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import comfyui_host

REPO_DIR = comfyui_host.REPO_DIR
BROWSER_DIR = REPO_DIR / "tests" / "browser"
DRIVER = BROWSER_DIR / "drive.mjs"
CHROMIUM_ENV = "CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# The newest comfyui-frontend-package on PyPI when the browser tests were written; the tests run
# the pack against it as well as against the one requirements-comfyui.txt pins.
# SEGTALKER_LATEST_FRONTEND=<version> tries another one.
LATEST_FRONTEND = os.environ.get("SEGTALKER_LATEST_FRONTEND", "").strip() or "1.58.1"
SETUP_HINT = "run `bash setup.sh` (as root it installs chromium with apt-get and playwright-core with npm ci)"

# What the frontend's graphToPrompt() may write differently from the API-format files, and nothing
# else (checked per node by prompt_differences):
ALLOWED_DIFFERENCES = {
    # The frontend titles a node by its display name ("Load Image"); the API files of the builder
    # title core nodes by their class name ("LoadImage").
    "_meta.title": "the node's display name from /object_info instead of its class name",
    # The preview widgets of core LoadAudio / LoadVideo (no inputs of the nodes) are serialized
    # with an empty value; the server ignores inputs a node does not declare.
    "LoadAudio.inputs.audioUI": "'' added by the frontend's audio preview widget",
    "LoadVideo.inputs.video-preview": "'' added by the frontend's video preview widget",
}
FRONTEND_ONLY_INPUTS = {("LoadAudio", "audioUI"): ("",), ("LoadVideo", "video-preview"): ("",)}

# Console noise of the frontend itself in a sandbox with no internet: not the pack's.
_ENVIRONMENT_NOISE = (
    "violates the following Content Security Policy directive",
    "because it violates the document's Content Security Policy",
    "Failed to load resource: the server responded with a status of 404",
    "Jobs API",  # 1.58 asks for /api/jobs, which ComfyUI 0.3.75 does not serve
    "Failed to fetch queue",
)
PACK_MARKERS = ("segtalker", comfyui_host.PACK_LINK_NAME.lower())


class BrowserUnavailable(RuntimeError):
    """Chromium, Node.js or playwright-core is missing, or the frontend could not be installed."""


def chromium_path() -> str:
    return os.environ.get(CHROMIUM_ENV, "").strip() or DEFAULT_CHROMIUM


def browser_tools_problem() -> str | None:
    missing = []
    chromium = chromium_path()
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        missing.append(f"Chromium ({chromium}; apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("Node.js (node)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append(f"playwright-core in {BROWSER_DIR / 'node_modules'} (npm ci in {BROWSER_DIR})")
    if not missing:
        return None
    return f"cannot drive the real frontend: missing {', '.join(missing)}; {SETUP_HINT}"


def pinned_frontend_version() -> str | None:
    """The comfyui-frontend-package version requirements-comfyui.txt pins."""
    for line in (REPO_DIR / "requirements-comfyui.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("comfyui-frontend-package=="):
            return line.split("==", 1)[1].strip()
    return None


def ensure_frontend(version: str, cache: Path | None = None) -> Path:
    """``static`` folder of comfyui-frontend-package ``version``, installed once into the cache."""
    cache = cache or comfyui_host.cache_dir()
    root = cache / f"comfyui-frontend-package-{version}"
    static = root / "comfyui_frontend_package" / "static"
    marker = root / ".complete"
    with comfyui_host._file_lock(cache / ".lock"):
        if marker.is_file() and (static / "index.html").is_file():
            return static
        shutil.rmtree(root, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-deps", "--only-binary=:all:", "--target", str(root),
               f"comfyui-frontend-package=={version}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrowserUnavailable(f"`{' '.join(cmd)}` could not run: {exc}") from exc
        if proc.returncode != 0 or not (static / "index.html").is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BrowserUnavailable(f"could not install comfyui-frontend-package=={version} "
                                     f"(exit {proc.returncode}):\n{tail}")
        marker.write_text(f"comfyui-frontend-package {version}\n")
    return static


def _run_driver(url: str, args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    cmd = ["node", str(DRIVER), "--url", url, "--chromium", chromium_path(), *args]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=BROWSER_DIR, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, NO_PROXY="127.0.0.1,localhost"))
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"drive.mjs did not finish within {timeout:.0f} s: {' '.join(cmd)}\n"
                             f"{(exc.stderr or b'')[-3000:]!r}") from None
    return proc, time.monotonic() - started


def _read_result(path: Path, proc: subprocess.CompletedProcess, wall: float) -> dict:
    if not path.is_file():
        raise AssertionError(f"drive.mjs wrote no result {path} (exit {proc.returncode}):\n"
                             f"{(proc.stdout + proc.stderr)[-4000:]}")
    result = json.loads(path.read_text())
    result.setdefault("wall_seconds", wall)
    result["driver_stderr"] = proc.stderr[-4000:]
    return result


def _workflow_file(out_dir: Path, tag: str, workflow: Path | dict) -> Path:
    if isinstance(workflow, dict):
        path = out_dir / f"{tag}.workflow.json"
        path.write_text(json.dumps(workflow))
        return path
    return Path(workflow)


def drive(url: str, out_dir: Path, *, workflow: Path | dict | None = None, queue: bool = False,
          timeout: float = 120.0, screenshot: Path | None = None, templates: str | None = None,
          tag: str = "run") -> dict:
    """One fresh page, one workflow (and/or the template check); returns drive.mjs's result with
    ``wall_seconds`` added. Raises AssertionError (with the driver's stderr) if it did not write a
    result within ``timeout`` + a margin."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / f"{tag}.result.json"
    result_path.unlink(missing_ok=True)
    args = ["--out", str(result_path), "--timeout", str(timeout)]
    if workflow is not None:
        args += ["--workflow", str(_workflow_file(out_dir, tag, workflow))]
    if queue:
        args.append("--queue")
    if screenshot is not None:
        args += ["--screenshot", str(screenshot)]
    if templates is not None:
        args += ["--templates", templates]
    proc, wall = _run_driver(url, args, timeout + 60)
    return _read_result(result_path, proc, wall)


def drive_batch(url: str, out_dir: Path, jobs: dict[str, dict], page_timeout: float = 150.0) -> dict[str, dict]:
    """Several workflows in one page, one after another: ``jobs`` maps a tag to
    ``{workflow, queue, timeout, screenshot}``; returns tag -> result (``wall_seconds`` is the time
    of that job). A job without a result (the driver died or timed out) gets ``driver_error``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    listed, paths = [], {}
    for tag, job in jobs.items():
        paths[tag] = out_dir / f"{tag}.result.json"
        paths[tag].unlink(missing_ok=True)
        listed.append({"workflow": str(_workflow_file(out_dir, tag, job["workflow"])),
                       "out": str(paths[tag]), "queue": bool(job.get("queue")),
                       "timeout": float(job.get("timeout", 120.0)),
                       "screenshot": str(job["screenshot"]) if job.get("screenshot") else None})
    batch = out_dir / f"batch-{int(time.time() * 1000)}.json"
    batch.write_text(json.dumps(listed, indent=1))
    total = page_timeout + sum(j["timeout"] for j in listed) + 60
    try:
        proc, _wall = _run_driver(url, ["--batch", str(batch), "--timeout", str(page_timeout)], total)
        failure = None
    except AssertionError as exc:
        proc, failure = None, str(exc)
    results = {}
    for tag, path in paths.items():
        if path.is_file():
            result = json.loads(path.read_text())
            result["wall_seconds"] = result.get("timings", {}).get("done", 0.0)
            result["driver_stderr"] = proc.stderr[-4000:] if proc is not None else failure
            results[tag] = result
        else:
            detail = failure or f"exit {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}"
            results[tag] = {"workflow": listed[0]["workflow"], "driver_error":
                            f"drive.mjs wrote no result for {tag}: {detail}"}
    return results


def pack_errors(result: dict) -> list[str]:
    """Uncaught page errors, and console errors that name the pack (minus sandbox noise)."""
    problems = [f"page error: {e}" for e in result.get("page_errors", [])]
    for line in result.get("console_errors", []):
        if any(n in line for n in _ENVIRONMENT_NOISE):
            continue
        if any(m in line.lower() for m in PACK_MARKERS):
            problems.append(f"console error: {line}")
    return problems


def display_names(object_info: dict) -> dict[str, str]:
    return {k: (v.get("display_name") or k) for k, v in object_info.items()}


def prompt_differences(api: dict, prompt: dict | None, object_info: dict,
                       only_api_inputs: bool = False) -> list[str]:
    """What ``prompt`` (graphToPrompt().output) has that ``api`` does not, beyond
    ``ALLOWED_DIFFERENCES``. ``only_api_inputs``: inputs ``api`` lacks are allowed in ``prompt``
    when they hold the node's declared default (a widget added later, at the end)."""
    if prompt is None:
        return ["graphToPrompt() gave no prompt"]
    names = display_names(object_info)
    diffs = []
    for nid in sorted(set(api) | set(prompt), key=lambda s: (len(s), s)):
        a, p = api.get(nid), prompt.get(nid)
        if a is None:
            diffs.append(f"node {nid}: in the frontend's prompt ({p.get('class_type')}) but not in the API file")
            continue
        if p is None:
            diffs.append(f"node {nid}: in the API file ({a.get('class_type')}) but not in the frontend's prompt")
            continue
        cls = a.get("class_type")
        if p.get("class_type") != cls:
            diffs.append(f"node {nid}: class_type {p.get('class_type')!r}, API file {cls!r}")
            continue
        a_in, p_in = a.get("inputs", {}), p.get("inputs", {})
        for name in sorted(set(a_in) | set(p_in)):
            if name not in p_in:
                diffs.append(f"node {nid} ({cls}): input {name!r} missing from the frontend's prompt "
                             f"(API file: {a_in[name]!r})")
            elif name not in a_in:
                if p_in[name] in FRONTEND_ONLY_INPUTS.get((cls, name), ()):
                    continue
                if only_api_inputs and _is_default(object_info.get(cls, {}), name, p_in[name]):
                    continue
                diffs.append(f"node {nid} ({cls}): input {name!r}={p_in[name]!r} not in the API file")
            elif not _same(a_in[name], p_in[name]):
                diffs.append(f"node {nid} ({cls}): input {name!r} is {p_in[name]!r} in the frontend's "
                             f"prompt, {a_in[name]!r} in the API file")
        a_title = (a.get("_meta") or {}).get("title")
        p_title = (p.get("_meta") or {}).get("title")
        if a_title is not None and p_title != a_title and not (
                a_title == cls and p_title == names.get(cls, cls)):
            diffs.append(f"node {nid} ({cls}): title {p_title!r}, API file {a_title!r}")
    return diffs


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list) and len(a) == 2 and len(b) == 2:
        return str(a[0]) == str(b[0]) and a[1] == b[1]  # a link
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    return a == b


def _is_default(info: dict, name: str, value: Any) -> bool:
    for section in ("required", "optional"):
        spec = (info.get("input") or {}).get(section, {}).get(name)
        if spec is not None:
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if "default" in opts:
                return _same(opts["default"], value)
            if isinstance(spec[0], list) and spec[0]:
                return value == spec[0][0]
            return False
    return False


def seed_controls(result: dict) -> dict[str, str]:
    """``node_id:seed_widget`` -> the value of the "control after generate" combo after it."""
    found = {}
    for nid, node in (result.get("widgets") or {}).items():
        widgets = node.get("widgets") or []
        for i, w in enumerate(widgets):
            if w.get("name") == "control_after_generate" and i > 0:
                found[f"{nid} ({node.get('type')}).{widgets[i - 1].get('name')}"] = w.get("value")
    return found
