"""The pack in ComfyUI's real frontend, driven in headless Chromium (``browser/drive.mjs``).

Against two frontends -- ``pinned`` (the one requirements-comfyui.txt installs, served by the
session's ``comfyui_server``) and ``latest`` (``browser_host.LATEST_FRONTEND``, installed into the
test cache and given to a second server with ``--front-end-root``) -- every UI-format workflow of
``example_workflows/``:

* loads with every node a registered type, no link whose two ends disagree on the type, and no
  page error naming the pack;
* converts (``app.graphToPrompt()``) to exactly the shipped ``api_workflows/<name>.api.json``, up to
  ``browser_host.ALLOWED_DIFFERENCES``;
* stores its seeds as "fixed" (a "randomize" seed changes after every run);
* queued from the page, runs to completion and produces what its checker in ``workflow_checks``
  asserts (the same checkers as the API test), with its output preview shown in the page -- or, for
  a workflow no test machine can run, is refused by ``/prompt`` for exactly its checker's rejection;
  a screenshot per workflow lands in the pytest temp dir (``<basetemp>/browser*/<frontend>/``).
  The inputs are examples/ with the speech cut to 2.5 s (``workflow_checks.stage_test_inputs``), for
  CI time. ``learned_e4s`` runs on random weights in E4S's checkpoint layout converted by the pack's
  converter: the test uses a 64-px E4S-layout file (K = 4, the encoder at E4S's full widths) for
  CI time; the 1024 conversion is covered by tests/test_convert_e4s.py.

Also: the server's template listing names each example workflow of the pack once and no API file,
each template opens from the template route, each has a real JPEG thumbnail; the UI files frozen
in ``frozen_workflows/`` still load and convert (node ids, input names, socket types and widget
order are frozen), and so do those of older interfaces kept in its sub-folders (e.g.
``before-blend/``: saved before Paste Back, Talk and Talk Video got their ``blend`` widget); a node of a pack that is not installed is reported by type, fast; a ``/prompt``
rejection is reported with the server's message at once, without waiting for ``/history``.

Needs Chromium, Node.js and ``browser/node_modules`` (``bash setup.sh``); without them these tests
skip, or fail under ``SEGTALKER_REQUIRE_COMFYUI=1`` (``.ci/run``).
"""
from __future__ import annotations

import copy
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import browser_host
import comfyui_host
import workflow_checks

REPO_DIR = comfyui_host.REPO_DIR
UI_DIR = REPO_DIR / "example_workflows"
API_DIR = REPO_DIR / "api_workflows"
FROZEN_DIR = Path(__file__).resolve().parent / "frozen_workflows"
PACK = comfyui_host.PACK_LINK_NAME
UI_WORKFLOWS = sorted(p.stem for p in UI_DIR.glob("*.json"))
# "<name>" (the interface frozen last) and "<archive>/<name>" (older ones, still to load).
FROZEN_WORKFLOWS = sorted(str(p.relative_to(FROZEN_DIR))[: -len(".json")] for p in FROZEN_DIR.rglob("*.json")
                          if not p.name.endswith(".api.json"))
FRONTENDS = ("pinned", "latest")
LOAD_TIMEOUT = 150.0  # page load + workflow load + conversion, no run

BROWSER = [pytest.mark.comfyui, pytest.mark.browser, pytest.mark.slow]


def _unavailable(reason: str):
    comfyui_host.skip_or_fail(reason)


@pytest.fixture(scope="session")
def browser_tools() -> None:
    problem = browser_host.browser_tools_problem()
    if problem:
        _unavailable(problem)


@pytest.fixture(scope="session")
def browser_artefacts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("browser")
    sys.stderr.write(f"\n[browser] screenshots and driver results in {path}\n")
    return path


@dataclass
class Frontend:
    name: str                 # "pinned" / "latest"
    version: str | None       # what the test expects the page to report
    server: comfyui_host.ComfyUIServer
    out_dir: Path
    object_info: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)  # example workflow -> driver result (queued once)
    frozen: dict = field(default_factory=dict)   # "frozen-<name>" -> driver result (loaded only)

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module", params=FRONTENDS)
def frontend(request, browser_tools, comfyui_dir, browser_artefacts, tmp_path_factory):
    out_dir = browser_artefacts / request.param
    out_dir.mkdir(exist_ok=True)
    own = None
    if request.param == "pinned":
        server = request.getfixturevalue("comfyui_server")
        version = browser_host.pinned_frontend_version()
    else:
        version = browser_host.LATEST_FRONTEND
        try:
            static = browser_host.ensure_frontend(version)
        except browser_host.BrowserUnavailable as exc:
            _unavailable(str(exc))
        own = server = comfyui_host.ComfyUIServer(
            comfyui_dir, REPO_DIR, tmp_path_factory.mktemp(f"comfyui-frontend-{version}"),
            extra_args=("--front-end-root", str(static)))
        server.start()
        sys.stderr.write(f"\n[browser] ComfyUI with frontend {version} booted in "
                         f"{server.boot_seconds:.1f} s on {server.url}\n")
    try:
        workflow_checks.stage_test_inputs(server)
        yield Frontend(request.param, version, server, out_dir, server.object_info())
    finally:
        if own is not None:
            own.stop()


# --------------------------------------------------------------------------- helpers


def expected_error_classes(name: str) -> set[str]:
    """Node classes a workflow may show flagged once loaded: the one its checker expects /prompt
    to refuse (newer frontends flag a loader whose model file is absent)."""
    rejection = getattr(workflow_checks.CHECKERS.get(Path(name).name), "rejection", None)
    return {rejection.class_type} if rejection is not None else set()


def load_problems(result: dict, what: str, allowed_error_classes: set[str] = frozenset()) -> list[str]:
    """Everything wrong with loading + converting a workflow in the page."""
    problems = []
    if result.get("driver_error"):
        problems.append(f"{what}: {result['driver_error']}")
    if result.get("missing_types"):
        problems.append(f"{what}: node types the frontend does not know (not installed?): "
                        f"{result['missing_types']}")
    flagged = [n for n in result.get("nodes_with_errors") or []
               if n.split(":", 1)[-1] not in allowed_error_classes]
    if flagged:
        problems.append(f"{what}: nodes flagged with errors after loading: {flagged}")
    for key in ("load_error", "convert_error"):
        if result.get(key):
            problems.append(f"{what}: {key.replace('_', ' ')}: {result[key]}")
    if result.get("link_type_errors"):
        problems.append(f"{what}: links whose ends disagree on the type: {result['link_type_errors']}")
    problems += [f"{what}: {p}" for p in browser_host.pack_errors(result)]
    return problems


def not_fixed_seeds(result: dict) -> dict[str, str]:
    return {k: v for k, v in browser_host.seed_controls(result).items() if v != "fixed"}


def queue_failure(result: dict) -> str | None:
    """The reason a queued run did not succeed, in the server's words, or None."""
    queue = result.get("queue")
    if queue is None:
        return "the workflow was not queued (it did not load or convert)"
    if queue.get("error"):
        return queue["error"]
    status = result.get("history_status") or {}
    if status.get("status_str") != "success":
        if status.get("status_str") == "timeout":
            return "the run did not finish within the driver's time limit"
        return comfyui_host.describe_status(status)
    return None


def run_in_browser(frontend: Frontend, name: str) -> dict:
    """Example workflow ``name`` loaded, converted and queued in the page. On first use, every
    example workflow goes through one page, queued one after another (each checker's ``prepare``
    first), so the page starts once per frontend."""
    if not frontend.results:
        jobs = {}
        for wf in UI_WORKFLOWS:
            checker = workflow_checks.CHECKERS.get(wf)
            if checker is not None and checker.prepare is not None:
                checker.prepare(frontend.server)
            timeout = checker.timeout if checker is not None else 300.0
            jobs[wf] = {"workflow": UI_DIR / f"{wf}.json", "queue": True, "timeout": timeout + 60,
                        "screenshot": frontend.out_dir / f"{wf}.png"}
        frontend.results = browser_host.drive_batch(frontend.url, frontend.out_dir, jobs,
                                                    page_timeout=LOAD_TIMEOUT)
    return frontend.results[name]


def _frozen_tag(name: str) -> str:
    return "frozen-" + name.replace("/", "--")  # a file name: results and screenshots by tag


def frozen_in_browser(frontend: Frontend, name: str) -> dict:
    """Frozen UI workflow ``name`` loaded and converted (not run); all of them in one page."""
    if not frontend.frozen:
        jobs = {_frozen_tag(wf): {"workflow": FROZEN_DIR / f"{wf}.json", "timeout": 60,
                                  "screenshot": frontend.out_dir / f"{_frozen_tag(wf)}.png"}
                for wf in FROZEN_WORKFLOWS}
        frontend.frozen = browser_host.drive_batch(frontend.url, frontend.out_dir, jobs,
                                                   page_timeout=LOAD_TIMEOUT)
    return frontend.frozen[_frozen_tag(name)]


def describe(result: dict) -> str:
    return (f"(frontend {result.get('frontend_version')}, {result.get('wall_seconds', 0):.0f} s; "
            f"screenshot and driver result in the [browser] artefacts folder named at the session start)")


# --------------------------------------------------------------------------- example workflows


@pytest.mark.parametrize("name", UI_WORKFLOWS or ["<none>"])
@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.slow
def test_example_workflow_loads_and_converts_to_its_api_file(frontend, name):
    assert name != "<none>", f"no UI workflows in {UI_DIR}"
    api_path = API_DIR / f"{name}.api.json"
    assert api_path.is_file(), f"{UI_DIR / (name + '.json')} has no API-format twin {api_path}"
    result = run_in_browser(frontend, name)
    assert result.get("frontend_version") == frontend.version, (
        f"the page runs frontend {result.get('frontend_version')}, expected {frontend.version}")
    problems = load_problems(result, name, expected_error_classes(name))
    api = json.loads(api_path.read_text())
    problems += [f"{name}: {d}" for d in browser_host.prompt_differences(
        api, result.get("prompt"), frontend.object_info)]
    assert not problems, "\n".join(problems) + "\n" + describe(result)


@pytest.mark.parametrize("name", UI_WORKFLOWS or ["<none>"])
@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.slow
def test_example_workflow_seeds_are_fixed(frontend, name):
    assert name != "<none>", f"no UI workflows in {UI_DIR}"
    result = run_in_browser(frontend, name)
    bad = not_fixed_seeds(result)
    assert not bad, (f"{name}: seeds whose 'control after generate' is not 'fixed' once loaded (write "
                     f"'fixed' after each seed in widgets_values): {bad}")


@pytest.mark.parametrize("name", UI_WORKFLOWS or ["<none>"])
@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.slow
def test_example_workflow_runs_from_the_page(frontend, name):
    assert name != "<none>", f"no UI workflows in {UI_DIR}"
    checker = workflow_checks.CHECKERS.get(name)
    assert checker is not None, f"no checker for {name!r} in tests/workflow_checks.py"
    result = run_in_browser(frontend, name)
    rejection = getattr(checker, "rejection", None)
    if rejection is not None:
        reply = (result.get("queue") or {}).get("reply") or {}
        assert reply.get("status") == 400, (
            f"{name}: expected /prompt to refuse it ({rejection}), got {json.dumps(reply)[:2000]}")
        errors = (reply.get("body") or {}).get("node_errors") or {}
        kinds = {(e.get("type"), (e.get("extra_info") or {}).get("input_name"), result["prompt"][nid]["class_type"])
                 for nid, entry in errors.items() for e in entry.get("errors", [])}
        assert kinds == {("value_not_in_list", rejection.input, rejection.class_type)}, (
            f"{name}: /prompt refused it for {sorted(kinds)}, expected only {rejection}")
        return
    failure = queue_failure(result)
    if failure:
        pytest.fail(f"{name} queued from the page: {failure}\n{describe(result)}\n"
                    f"{frontend.server.log_tail(30)}", pytrace=False)
    prompt_id = result["prompt_id"]
    history = frontend.server.get_json(f"/history/{prompt_id}")[prompt_id]
    run = workflow_checks.WorkflowRun(
        name=name, api=result["prompt"], history=history,
        outputs=frontend.server.output_files(history),
        input_dir=frontend.server.input_dir, output_dir=frontend.server.output_dir)
    checker.check(run)
    previews = result.get("previews") or {}
    assert previews, f"{name}: no node reported an output to preview\n{describe(result)}"
    unseen = {nid: p for nid, p in previews.items() if p.get("images", 0) + p.get("videos", 0) == 0}
    assert not unseen, (f"{name}: output nodes whose preview does not show in the page (no loaded "
                        f"image or playable video): {unseen}\n{describe(result)}")


# --------------------------------------------------------------------------- template browser


@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.slow
def test_template_browser_lists_and_opens_each_example_once(frontend):
    result = browser_host.drive(frontend.url, frontend.out_dir, templates=PACK,
                                timeout=LOAD_TIMEOUT + 30 * len(UI_WORKFLOWS), tag="templates",
                                screenshot=frontend.out_dir / "templates.png")
    templates = result.get("templates") or {}
    assert templates.get("listing_status") == 200, f"/api/workflow_templates: {templates}"
    listing = templates.get("listing") or {}
    names = listing.get(PACK, [])
    counts = Counter(names)
    problems = []
    if sorted(counts) != UI_WORKFLOWS:
        problems.append(f"the template listing of {PACK} is {sorted(counts)}, expected {UI_WORKFLOWS}")
    problems += [f"{n} listed {c} times" for n, c in counts.items() if c != 1]
    problems += [f"API-format file in the template listing: {n}" for n in names if n.endswith(".api")]
    for name, entry in (templates.get("loads") or {}).items():
        if entry.get("status") != 200:
            problems.append(f"template {name}: HTTP {entry.get('status')}")
            continue
        problems += load_problems(entry, f"template {name}", expected_error_classes(name))
        if not entry.get("prompt_nodes"):
            problems.append(f"template {name}: converts to an empty prompt")
    # The frontend's own template browser: the pack's category lists each workflow once, with a
    # loaded thumbnail, and a click on a card opens that workflow.
    ui = templates.get("ui") or {}
    if ui.get("error"):
        problems.append(f"template browser: {ui['error']}")
    cards = Counter(ui.get("cards") or [])
    if sorted(cards) != UI_WORKFLOWS or any(c != 1 for c in cards.values()):
        problems.append(f"the template browser shows {dict(cards)} for {PACK}, expected each of "
                        f"{UI_WORKFLOWS} once")
    no_thumb = sorted(n for n, w in (ui.get("thumbnails") or {}).items() if not w)
    if no_thumb:
        problems.append(f"template cards without a loaded thumbnail: {no_thumb}")
    for name, entry in (ui.get("opened") or {}).items():
        if entry.get("error") or not entry.get("matches") or entry.get("missing_types"):
            problems.append(f"template card {name} did not open its workflow: {entry}")
    problems += [f"template page: {p}" for p in browser_host.pack_errors(result)]
    # The template browser shows NAME.jpg from the same route.
    for name in UI_WORKFLOWS:
        try:
            with comfyui_host._OPENER.open(
                    f"{frontend.url}/api/workflow_templates/{PACK}/{name}.jpg", timeout=30) as resp:
                head = resp.read(3)
                ctype = resp.headers.get("Content-Type", "")
        except Exception as exc:  # noqa: BLE001 - report it
            problems.append(f"thumbnail {name}.jpg not served: {exc}")
            continue
        if head != b"\xff\xd8\xff" or "jpeg" not in ctype:
            problems.append(f"thumbnail {name}.jpg served as {ctype!r}, starts {head!r}")
    assert not problems, "\n".join(problems)


def test_every_example_workflow_has_a_jpeg_thumbnail():
    from PIL import Image
    import numpy as np

    assert UI_WORKFLOWS, f"no UI workflows in {UI_DIR}"
    problems = []
    for name in UI_WORKFLOWS:
        path = UI_DIR / f"{name}.jpg"
        if not path.is_file():
            problems.append(f"{path} is missing (make it with tools/make_thumbnails.py)")
            continue
        if path.read_bytes()[:3] != b"\xff\xd8\xff":
            problems.append(f"{path} is not a JPEG")
            continue
        with Image.open(path) as im:
            if im.format != "JPEG":
                problems.append(f"{path}: PIL reads it as {im.format}")
                continue
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
        if min(arr.shape[:2]) < 128:
            problems.append(f"{path} is only {arr.shape[1]}x{arr.shape[0]}")
        if arr.reshape(-1, 3).std(axis=0).max() < 4.0:
            problems.append(f"{path} is blank")
    stray = sorted(p.name for p in UI_DIR.iterdir()
                   if p.suffix not in (".json", ".jpg") or p.name.endswith(".api.json"))
    problems += [f"{UI_DIR.name}/{s} does not belong in the template folder" for s in stray]
    orphans = sorted(p.stem for p in UI_DIR.glob("*.jpg") if p.stem not in UI_WORKFLOWS)
    problems += [f"{UI_DIR.name}/{o}.jpg has no workflow" for o in orphans]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- frozen interface


@pytest.mark.parametrize("name", FROZEN_WORKFLOWS or ["<none>"])
@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.slow
def test_frozen_workflow_still_loads_and_converts(frontend, name):
    """The UI files as shipped when the interface was frozen still mean the same graph: same node
    types, input names, socket types and widget order (widgets_values are positional). A later
    widget appended at the end may appear in the prompt with its default."""
    assert name != "<none>", f"no frozen workflows in {FROZEN_DIR}"
    api = json.loads((FROZEN_DIR / f"{name}.api.json").read_text())
    result = frozen_in_browser(frontend, name)
    problems = load_problems(result, f"frozen {name}", expected_error_classes(name))
    problems += [f"frozen {name}: {d}" for d in browser_host.prompt_differences(
        api, result.get("prompt"), frontend.object_info, only_api_inputs=True)]
    assert not problems, ("\n".join(problems) + "\nA node id, input name, socket type or widget "
                          "order changed under a shipped workflow: add a migration or restore it.\n"
                          + describe(result))


def test_frozen_workflows_have_fixed_seeds_and_api_twins():
    assert FROZEN_WORKFLOWS, f"no frozen workflows in {FROZEN_DIR}"
    problems = []
    for name in FROZEN_WORKFLOWS:
        if not (FROZEN_DIR / f"{name}.api.json").is_file():
            problems.append(f"{name}: no {name}.api.json beside it")
        ui = json.loads((FROZEN_DIR / f"{name}.json").read_text())
        for node in ui.get("nodes", []):
            values = node.get("widgets_values") or []
            if any(v in ("randomize", "increment", "decrement") for v in values if isinstance(v, str)):
                problems.append(f"{name}: node {node['id']} ({node['type']}) stores a seed control that "
                                f"is not 'fixed': {values}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- bad input


def _face_parsing_ui() -> dict:
    path = UI_DIR / "face_parsing.json"
    if not path.is_file():
        pytest.fail(f"{path} is the base of the bad-input cases and is missing")
    return json.loads(path.read_text())


MISSING_TYPE = "SomeOtherPack_NotInstalledNode"


@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.slow
def test_node_from_a_pack_that_is_not_installed_is_reported(frontend):
    wf = _face_parsing_ui()
    wf["nodes"].append({
        "id": 99, "type": MISSING_TYPE, "pos": [40, 700], "size": [300, 100], "flags": {},
        "order": 99, "mode": 0, "inputs": [], "outputs": [],
        "properties": {"Node name for S&R": MISSING_TYPE, "cnr_id": "some-other-pack"},
        "widgets_values": [1, "x"],
    })
    wf["last_node_id"] = 99
    result = browser_host.drive(frontend.url, frontend.out_dir, workflow=wf, timeout=LOAD_TIMEOUT,
                                tag="missing-node", screenshot=frontend.out_dir / "missing-node.png")
    assert result["missing_types"] == [MISSING_TYPE], result["missing_types"]
    assert result["wall_seconds"] < LOAD_TIMEOUT, f"took {result['wall_seconds']:.0f} s"
    problems = load_problems(result, "with a foreign node")
    assert any(MISSING_TYPE in p for p in problems), problems
    # The frontend's own missing-nodes warning names it too.
    assert any(MISSING_TYPE in d for d in result.get("dialogs", [])), (
        f"no dialog names {MISSING_TYPE}: {result.get('dialogs')}")
    # Nothing of this pack is missing.
    assert not [p for p in problems if MISSING_TYPE not in p], problems


@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.slow
def test_prompt_rejection_fails_fast_with_the_servers_message(frontend):
    wf = _face_parsing_ui()
    (loader,) = [n for n in wf["nodes"] if n["type"] == "LoadImage"]
    loader["widgets_values"][0] = "no_such_portrait.png"
    result = browser_host.drive(frontend.url, frontend.out_dir, workflow=wf, queue=True,
                                timeout=600, tag="rejected", screenshot=frontend.out_dir / "rejected.png")
    failure = queue_failure(result)
    assert failure and failure.startswith("POST /prompt rejected (HTTP 400)"), failure
    assert "no_such_portrait.png" in failure, failure  # the server's own words name the file
    assert "history_status" not in result, "the driver waited for /history after a rejection"
    queued_after = result["timings"]["queued"] - result["timings"]["loaded"]
    assert queued_after < 15 and result["wall_seconds"] < LOAD_TIMEOUT, result["timings"]


def test_prompt_differences_allow_only_the_listed_ones():
    """The comparison itself: titles by display name and LoadAudio's audioUI pass, anything else
    (a changed value, a missing or extra input, another class) is reported."""
    info = {"LoadAudio": {"display_name": "Load Audio", "input": {"required": {}}},
            "X": {"display_name": "X node", "input": {"required": {"n": ["INT", {"default": 3}]}}}}
    api = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "a.wav"}, "_meta": {"title": "LoadAudio"}},
           "2": {"class_type": "X", "inputs": {"m": 1.0, "src": ["1", 0]}, "_meta": {"title": "X node"}}}
    ok = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "a.wav", "audioUI": ""},
                "_meta": {"title": "Load Audio"}},
          "2": {"class_type": "X", "inputs": {"m": 1, "src": [1, 0]}, "_meta": {"title": "X node"}}}
    assert browser_host.prompt_differences(api, ok, info) == []
    bad = copy.deepcopy(ok)
    bad["2"]["inputs"]["m"] = 2
    bad["2"]["inputs"]["n"] = 3
    del bad["2"]["inputs"]["src"]
    bad["1"]["_meta"]["title"] = "Renamed"
    diffs = browser_host.prompt_differences(api, bad, info)
    assert len(diffs) == 4, diffs
    assert browser_host.prompt_differences(api, bad, info, only_api_inputs=True) != diffs  # n=3 default
