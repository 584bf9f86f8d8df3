"""Integration with a real ComfyUI 0.3.75 server (see ``comfyui_host``).

One server per session, with this pack symlinked into its ``custom_nodes``: every pack node is
served by ``/object_info`` as the pack's, the start-up log holds no import error or traceback of
the pack, and every ``api_workflows/<name>.api.json`` runs to completion and produces what its
checker in ``workflow_checks.py`` asserts (a workflow without a checker fails), or, for a workflow
that needs a model file no test can have (a Stable Diffusion checkpoint), is refused by ``/prompt``
for exactly that missing file and nothing else.

The inputs are examples/ with the speech cut to 2.5 s (``workflow_checks.stage_test_inputs``), for
CI time. ``learned_e4s`` runs on random weights in E4S's checkpoint layout, converted by
``python -m segtalker_core convert``, and a random BiSeNet in its layout: the test uses a 64-px
E4S-layout file (K = 4; the encoder at E4S's full widths) for CI time, as E4S's 13 per-region
layers cost ~20-30 s a frame at 256 px as at 1024 on the CI CPU; the 1024 conversion is covered by
tests/test_convert_e4s.py.
"""
from __future__ import annotations

import json

import pytest

import comfyui_host
import workflow_checks

REPO_DIR = comfyui_host.REPO_DIR
WORKFLOWS_DIR = REPO_DIR / "api_workflows"
PACK_MODULE = f"custom_nodes.{comfyui_host.PACK_LINK_NAME}"
API_WORKFLOWS = sorted(p.name[: -len(".api.json")] for p in WORKFLOWS_DIR.glob("*.api.json"))

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


@pytest.fixture(scope="module")
def server_object_info(comfyui_server) -> dict:
    return comfyui_server.object_info()


def test_server_serves_every_pack_node(comfyui_server, server_object_info, pack_description):
    expected = [n.get("node_id") for n in pack_description["nodes"]]
    assert expected, "the pack registered no nodes"
    problems = []
    for nid in expected:
        info = server_object_info.get(nid)
        if info is None:
            problems.append(f"{nid}: missing from /object_info")
        elif info.get("python_module") != PACK_MODULE:
            problems.append(f"{nid}: served from {info.get('python_module')!r}, not {PACK_MODULE!r}")
    served = sorted(k for k, v in server_object_info.items() if v.get("python_module") == PACK_MODULE)
    unexpected = sorted(set(served) - set(expected))
    if unexpected:
        problems.append(f"/object_info lists pack nodes the pack does not register: {unexpected}")
    # Core nodes the example workflows rely on are really there (e.g. video saving).
    for core in ("LoadImage", "SaveImage", "PreviewImage", "CreateVideo", "SaveVideo"):
        if core not in server_object_info:
            problems.append(f"core node {core} missing from this ComfyUI")
    assert not problems, "\n".join(problems) + "\n" + comfyui_server.log_tail()


def test_startup_log_has_no_pack_errors(comfyui_server, server_object_info):
    log = comfyui_server.startup_log
    problems = comfyui_host.pack_log_problems(log, REPO_DIR, comfyui_server.link_path)
    assert not problems, "ComfyUI's log shows the pack failing:\n\n" + "\n\n".join(problems)
    # The pack's line in ComfyUI's import-time table exists and is not marked as failed.
    rows = [line for line in log.splitlines()
            if "seconds" in line and line.rstrip().endswith(str(comfyui_server.link_path))]
    assert rows, f"no import-time row for {comfyui_server.link_path} in the log\n{comfyui_server.log_tail()}"
    assert not any("IMPORT FAILED" in r for r in rows), rows


@pytest.fixture(scope="module")
def staged_inputs(comfyui_server) -> list[str]:
    """The repository's examples/ (portrait, reference face, video, speech cut short for CI time:
    ``workflow_checks.stage_test_inputs``) in the input dir."""
    return workflow_checks.stage_test_inputs(comfyui_server)


@pytest.mark.parametrize("name", API_WORKFLOWS or ["<none>"])
def test_workflow_runs_and_produces_expected_output(name, request):
    assert name != "<none>", f"no api_workflows/*.api.json to run in {WORKFLOWS_DIR}"
    checker = workflow_checks.CHECKERS.get(name)
    assert checker is not None, (
        f"no output checker registered for workflow {name!r}: add "
        f"@register({name!r}) in tests/workflow_checks.py")
    api = json.loads((WORKFLOWS_DIR / f"{name}.api.json").read_text())
    comfyui_server = request.getfixturevalue("comfyui_server")
    request.getfixturevalue("staged_inputs")
    if checker.prepare is not None:
        checker.prepare(comfyui_server)
    if checker.rejection is not None:
        workflow_checks.assert_only_rejection(comfyui_server, api, checker.rejection)
        return
    history = comfyui_server.run_workflow(api, timeout=checker.timeout)
    run = workflow_checks.WorkflowRun(
        name=name, api=api, history=history, outputs=comfyui_server.output_files(history),
        input_dir=comfyui_server.input_dir, output_dir=comfyui_server.output_dir,
    )
    checker.check(run)


def test_every_checker_has_a_workflow():
    stale = sorted(set(workflow_checks.CHECKERS) - set(API_WORKFLOWS))
    assert not stale, f"checkers registered for workflows that do not exist: {stale}"
