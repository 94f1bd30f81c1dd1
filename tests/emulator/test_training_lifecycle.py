"""Training states by the clock (contract §4) and the task list (contract §5)."""

from __future__ import annotations

import re

import pytest

from .conftest import Env, EnvFactory


async def test_queuing_training_success_deploying_serving(env: Env) -> None:
    task_id = await env.train()
    first = await env.status(task_id)
    assert first["task_id"] == task_id
    assert first["task_status"] == "QUEUING" and first["models"] == []
    assert first["model_type"] == "lora"
    assert first["extra"] == {"eta_relative": 25, "progress_percent": 0}

    env.clock.advance(5)  # TRAINING starts
    progress = []
    etas = []
    for _ in range(4):
        body = await env.status(task_id)
        assert body["task_status"] == "TRAINING" and body["models"] == []
        progress.append(body["extra"]["progress_percent"])
        etas.append(body["extra"]["eta_relative"])
        env.clock.advance(5)
    assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 75
    assert etas == sorted(etas, reverse=True) and etas[0] == 20

    body = await env.status(task_id)  # 25 s: SUCCESS, deploying
    assert body["task_status"] == "SUCCESS"
    assert body["extra"] == {"eta_relative": 0, "progress_percent": 100}
    [model] = body["models"]
    assert model["model_status"] == "DEPLOYING"
    assert re.fullmatch(r"model_\d{10}_[0-9A-F]{10}\.safetensors", model["model_name"])
    assert model["model_name"] == env.emulator.trainings[task_id].model_name

    env.clock.advance(4.9)
    assert (await env.status(task_id))["models"][0]["model_status"] == "DEPLOYING"
    env.clock.advance(0.2)
    body = await env.status(task_id)
    assert body["models"] == [{"model_name": model["model_name"], "model_status": "SERVING"}]


async def test_model_name_carries_the_completion_time(env: Env) -> None:
    task_id = await env.train()
    expected = int(env.clock.now() + 25)
    assert env.emulator.trainings[task_id].model_name.startswith(f"model_{expected}_")


@pytest.mark.parametrize(
    ("fault", "status"),
    [("fault_training_failed", "FAILED"), ("fault_training_canceled", "CANCELED")],
)
async def test_fated_failures_stop_during_training(
    make_env: EnvFactory, fault: str, status: str
) -> None:
    env = await make_env(**{fault: 1.0}, seed=7)
    task_id = await env.train()
    assert (await env.status(task_id))["task_status"] == "QUEUING"
    seen = []
    for _ in range(30):
        env.clock.advance(1)
        seen.append((await env.status(task_id))["task_status"])
    assert seen[-1] == status
    assert "TRAINING" in seen and "SUCCESS" not in seen
    final = await env.status(task_id)
    assert final["models"] == [] and final["reason"]
    env.clock.advance(1000)
    assert (await env.status(task_id))["task_status"] == status
    kind = fault.removeprefix("fault_")
    assert env.emulator.counters.faults_injected[kind] == 1


async def test_stuck_deploying_never_serves(make_env: EnvFactory) -> None:
    env = await make_env(fault_stuck_deploying=1.0)
    task_id = await env.train()
    env.clock.advance(10_000)
    body = await env.status(task_id)
    assert body["task_status"] == "SUCCESS"
    assert body["models"][0]["model_status"] == "DEPLOYING"


async def test_force_training_status(env: Env) -> None:
    task_id = await env.train()
    env.emulator.force_training_status(task_id, "FAILED", "bad photos")
    body = await env.status(task_id)
    assert body["task_status"] == "FAILED" and body["reason"] == "bad photos"
    env.emulator.force_training_status(task_id, "SUCCESS", model_status="DEPLOYING")
    assert (await env.status(task_id))["models"][0]["model_status"] == "DEPLOYING"
    with pytest.raises(ValueError):
        env.emulator.force_training_status(task_id, "DONE")


async def test_status_errors(env: Env) -> None:
    status, body = await env.call("GET", "/v3/training/subject", params={"task_id": "nope"})
    assert status == 404 and body["reason"] == "TASK_NOT_FOUND"
    status, body = await env.call("GET", "/v3/training/subject")
    assert status == 400 and body["reason"] == "INVALID_REQUEST_BODY"


async def test_style_status_path_and_cross_lookup(env: Env) -> None:
    task_id = await env.train(kind="style")
    assert (await env.status(task_id, kind="style"))["task_status"] == "QUEUING"
    assert (await env.status(task_id, kind="subject"))["task_id"] == task_id
    assert env.emulator.counters.trainings_created == {"total": 1, "style": 1}


async def test_task_list_pages_newest_first(make_env: EnvFactory) -> None:
    env = await make_env()
    ids = []
    for n in range(7):
        ids.append(await env.train(images=1, name=f"subject-{n}"))
        env.clock.advance(1)
    seen: list[dict[str, object]] = []
    cursor = ""
    pages = 0
    while True:
        status, body = await env.call(
            "GET", "/v3/training",
            params={"pagination.limit": "3", "pagination.cursor": cursor},
        )
        assert status == 200
        seen += body["tasks"]
        pages += 1
        cursor = body["pagination"]["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert [t["task_id"] for t in seen] == ids[::-1]
    item = seen[-1]
    assert item["task_name"] == "subject-0" and item["task_type"] == "subject"
    assert item["created_at"] == 1_700_000_000 and item["models"] == []
    assert set(item) == {"task_name", "task_id", "task_type", "task_status", "created_at",
                         "models"}


async def test_task_list_shows_models_and_filters_by_type(env: Env) -> None:
    subject = await env.train(images=1)
    style = await env.train(kind="style", images=1)
    env.clock.advance(31)
    status, body = await env.call("GET", "/v3/training", params={"task_type": "style"})
    assert [t["task_id"] for t in body["tasks"]] == [style]
    assert body["tasks"][0]["models"][0]["model_status"] == "SERVING"
    assert body["pagination"]["next_cursor"] == ""
    status, body = await env.call("GET", "/v3/training")  # SDK call: no pagination params
    assert status == 200 and {t["task_id"] for t in body["tasks"]} == {subject, style}


@pytest.mark.parametrize(
    "params",
    [{"pagination.limit": "0"}, {"pagination.limit": "101"}, {"pagination.limit": "ten"},
     {"pagination.cursor": "garbage!"}, {"task_type": "video"}],
)
async def test_task_list_bad_parameters(env: Env, params: dict[str, str]) -> None:
    status, body = await env.call("GET", "/v3/training", params=params)
    assert status == 400 and body["reason"] == "INVALID_REQUEST_BODY"


async def test_sdk_offset_cursor_accepted(env: Env) -> None:
    for _ in range(3):
        await env.train(images=1)
    status, body = await env.call(
        "GET", "/v3/training", params={"pagination.limit": "2", "pagination.cursor": "c_2"}
    )
    assert status == 200 and len(body["tasks"]) == 1
