"""A hostile service: every attack ends with nothing written outside the outbox and the
state folder, the key in no file or log, a readable error on the subject, and the next
pass unaffected."""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

import pytest
from aiohttp import web

from pipeline.store.states import DONE, TRAINING, UPLOADED

from .conftest import Workspace
from .hostile import Hostile, each_model, endless

LISTS = r"^/v3/(training|training/subject|model)$"


def _rename_models(hostile: Hostile, evil: str) -> None:
    """Every model name the service shows (status, task list, model list) becomes ``evil``."""

    def change(entry: dict[str, Any]) -> None:
        for field in ("model_name", "sd_name", "sd_name_in_api"):
            if entry.get(field):
                entry[field] = hostile.alias(entry[field], evil)

    hostile.rewrite_json(LISTS, lambda data: each_model(data, change))


@pytest.mark.parametrize("evil", [
    "../../../outside/x.safetensors",
    "{root}/absolute/x.safetensors",
    "../../../../venv/lib/python3.11/site-packages/zz.pth",
])
async def test_the_model_name_never_becomes_a_path(hostile, workspace: Workspace, evil) -> None:
    _rename_models(hostile, evil.format(root=workspace.root))
    result = await workspace.run(hostile.base_url)
    assert [(s.name, s.state, s.error) for s in result.subjects] == [("alice", DONE, None)]
    assert workspace.files_outside() == []
    lora = workspace.outbox / "alice" / "alice.safetensors"
    assert lora.read_bytes()[8:9] == b"{"
    sidecar = json.loads(lora.with_suffix(".json").read_text())
    assert sidecar["model_name"] == evil.format(root=workspace.root)  # recorded, not obeyed


async def test_the_picture_type_never_becomes_a_path(hostile, workspace: Workspace) -> None:
    def poison(data: dict[str, Any]) -> dict[str, Any]:
        for image in data.get("images") or []:
            image["image_type"] = "x/../../../../../outside/pic"
        return data

    hostile.rewrite_json(r"^/v3/async/task-result$", poison)
    result = await workspace.run(hostile.base_url)
    assert result.subjects[0].state == DONE and result.subjects[0].error is None
    assert workspace.files_outside() == []
    pictures = sorted(p.name for p in (workspace.outbox / "alice").rglob("*.png"))
    assert pictures == ["alice-01-take-1-1.png"]


@pytest.mark.parametrize("declared", [None, 2 << 30], ids=["streamed", "announced-2GiB"])
async def test_a_lora_over_its_bound_is_refused_and_the_pictures_still_come(
    hostile, workspace: Workspace, declared
) -> None:
    def redirect_download(data: dict[str, Any]) -> dict[str, Any]:
        for model in data.get("models") or []:
            model["download_url"] = hostile.base_url + "/evil/lora"
        return data

    hostile.rewrite_json(r"^/v3/model$", redirect_download)
    hostile.serve(r"^/evil/lora$", functools.partial(endless, declared=declared))
    result = await workspace.run(hostile.base_url, max_lora_bytes=1 << 20)
    subject = result.subjects[0]
    assert subject.state == DONE and subject.lora_path is None
    assert any("LORA_MAX_LORA_BYTES" in w for w in subject.warnings), subject.warnings
    assert list(workspace.outbox.rglob("*.safetensors")) == []
    assert list(workspace.outbox.rglob("*.part")) == []
    assert len(list(workspace.outbox.rglob("*.png"))) == 1


async def _huge_list(request: web.Request) -> web.StreamResponse:
    task = json.dumps({"task_id": "x", "task_name": "y" * 900, "task_status": "TRAINING"})
    return await endless(request, chunk=b'{"tasks": [' + (task + ",").encode() * 64,
                         total=32 << 20)


async def test_a_huge_answer_is_refused_and_the_next_pass_goes_on(
    hostile, workspace: Workspace
) -> None:
    hostile.serve(r"^/v3/training$", _huge_list)
    result = await workspace.run(hostile.base_url, max_json_bytes=1 << 20, max_wait=5)
    subject = result.subjects[0]
    # Without the task list the pipeline cannot prove it never paid: it does not pay.
    assert subject.state == UPLOADED
    assert "LORA_MAX_JSON_BYTES" in (subject.error or "")
    assert hostile.upstream.emulator.counters_snapshot()["trainings_created"]["total"] == 0

    hostile.clear()
    again = await workspace.run(hostile.base_url)
    assert again.subjects[0].state == DONE


async def test_a_cursor_that_never_ends_is_cut_at_max_pages(hostile, workspace: Workspace) -> None:
    fresh = itertools.count()

    async def endless_pages(request: web.Request) -> web.Response:
        return web.json_response({"tasks": [], "pagination": {"next_cursor": f"c{next(fresh)}"}})

    hostile.serve(r"^/v3/training$", endless_pages)
    result = await workspace.run(hostile.base_url, max_pages=7, max_wait=5)
    assert "LORA_MAX_PAGES" in (result.subjects[0].error or "")
    assert hostile.count("GET", r"^/v3/training$") == 7


async def test_the_monitor_outlives_a_list_nested_too_deeply(hostile, workspace: Workspace) -> None:
    created = []
    hostile.rewrite_json(r"^/v3/training/subject$", lambda d: created.append(d) or d,
                         method="POST")
    # Deep nesting once the training exists: the monitor reads each task by id instead.
    hostile.rewrite_json(r"^/v3/training$", lambda d: "[" * 100_000 if created else d)
    result = await workspace.run(hostile.base_url)
    assert result.subjects[0].state == DONE
    assert "monitor.list_failed" in workspace.logs.getvalue()
    assert "nested too deeply" in workspace.logs.getvalue()


async def test_a_lone_surrogate_is_a_readable_error_not_a_dead_monitor(
    hostile, workspace: Workspace
) -> None:
    def surrogate(entry: dict[str, Any]) -> None:
        entry["model_name"] = "model_\ud800.safetensors"

    hostile.rewrite_json(LISTS, lambda data: each_model(data, surrogate))
    result = await workspace.run(hostile.base_url, max_wait=3)
    subject = result.subjects[0]
    assert subject.state == TRAINING
    assert "status cannot be read" in (subject.error or "")
    assert "not valid Unicode" in (subject.error or "")

    hostile.clear()
    again = await workspace.run(hostile.base_url)
    assert again.subjects[0].state == DONE and again.subjects[0].error is None


@pytest.mark.parametrize("where", ["upload", "picture"])
async def test_the_key_echoed_by_presigned_storage_lands_nowhere(
    hostile, workspace: Workspace, where
) -> None:
    async def echo(request: web.Request) -> web.Response:
        body = f"<Error><Code>Denied</Code><Message>Bearer {hostile.key}</Message></Error>"
        return web.Response(status=403 if where == "upload" else 400, text=body)

    hostile.serve(r"^/_s3/training/" if where == "upload" else r"^/_s3/images/", echo)
    result = await workspace.run(hostile.base_url, max_wait=5)
    assert hostile.key, "the stand-in never saw the key"
    subject = result.subjects[0]
    readable = (subject.error or "") + json.dumps(subject.to_json())
    assert "Denied" in readable or "Bearer ***" in readable
    assert hostile.key.encode() not in workspace.written()


async def test_a_key_carried_in_a_service_url_lands_nowhere(hostile, workspace: Workspace) -> None:
    def leak(data: dict[str, Any]) -> dict[str, Any]:
        for image in data.get("images") or []:
            image["image_url"] = f"file:///{hostile.key}/x.png?token={hostile.key}"
        return data

    hostile.rewrite_json(r"^/v3/async/task-result$", leak)
    result = await workspace.run(hostile.base_url, max_wait=5)
    subject = result.subjects[0]
    assert subject.state == DONE and "not http(s)" in (subject.error or "")
    assert hostile.key.encode() not in workspace.written()
