"""Request-level fault injection: every kind, determinism, route selection."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from .conftest import HEADERS, EnvFactory, image_bytes, training_body, txt2img_body

UPLOAD = "/v3/assets/training_dataset"


async def test_injected_429_without_and_with_retry_after(make_env: EnvFactory) -> None:
    env = await make_env(fault_429=1.0, seed=1)
    async with env.client.post(UPLOAD, json={"file_extension": "png"}, headers=HEADERS) as got:
        assert got.status == 429
        assert "Retry-After" not in got.headers
        assert (await got.json())["reason"] == "RATE_LIMIT_EXCEEDED"
    assert env.emulator.assets == {}  # refused before any side effect
    env.emulator.config.fault_429_retry_after = 1.0
    async with env.client.post(UPLOAD, json={"file_extension": "png"}, headers=HEADERS) as got:
        assert got.status == 429 and got.headers["Retry-After"] == "1"
    assert env.emulator.counters.faults_injected["429"] == 2
    assert env.emulator.counters.responses["429"] == 2


async def test_injected_5xx_is_json_and_deterministic(make_env: EnvFactory) -> None:
    statuses: list[list[int]] = []
    for _ in range(2):
        env = await make_env(fault_5xx=1.0, seed=99)
        seen = []
        for _ in range(12):
            status, body = await env.call("GET", "/v3/training")
            assert body["code"] == status and body["reason"]
            seen.append(status)
        statuses.append(seen)
        assert env.emulator.counters.faults_injected["5xx"] == 12
    assert statuses[0] == statuses[1]
    assert set(statuses[0]) <= {500, 502, 503, 504} and len(set(statuses[0])) > 1


async def test_partial_odds_mix_faults_and_successes(make_env: EnvFactory) -> None:
    env = await make_env(fault_5xx=0.5, seed=3)
    codes = [(await env.call("GET", "/v3/training"))[0] for _ in range(20)]
    assert 200 in codes and any(code >= 500 for code in codes)


async def test_dropped_connections_lose_the_answer_not_the_effect(make_env: EnvFactory) -> None:
    env = await make_env(seed=5)
    ids = [await env.upload() for _ in range(2)]
    env.emulator.config.fault_drop = 1.0
    errors: list[str | None] = []
    for _ in range(6):
        async with aiohttp.ClientSession() as session:  # a fresh connection each time
            try:
                async with session.post(
                    env.client.make_url("/v3/training/subject"), json=training_body(ids),
                    headers=HEADERS,
                ) as got:
                    await got.read()
                    errors.append(None)
            except aiohttp.ClientError as exc:
                errors.append(type(exc).__name__)
    assert None not in errors
    assert env.emulator.counters.faults_injected["drop"] == 6
    assert env.emulator.counters.trainings_created["total"] == 6  # created, answer lost


async def test_slow_answers_trip_client_timeouts(make_env: EnvFactory) -> None:
    env = await make_env(fault_slow=1.0, slow_seconds=0.5)
    timeout = aiohttp.ClientTimeout(total=0.1)
    with pytest.raises(asyncio.TimeoutError):
        async with env.client.post(
            UPLOAD, json={"file_extension": "png"}, headers=HEADERS, timeout=timeout
        ) as got:
            await got.read()
    assert len(env.emulator.assets) == 1  # the work was done
    assert env.emulator.counters.faults_injected["slow"] == 1


@pytest.mark.parametrize("selector", ["POST /v3/async/txt2img", "/v3/async/txt2img"])
async def test_fault_routes_limit_faults(make_env: EnvFactory, selector: str) -> None:
    env = await make_env(fault_5xx=1.0, fault_routes=[selector])
    await env.upload()  # not selected: unaffected
    status, _ = await env.call("GET", "/v3/training")
    assert status == 200
    status, _ = await env.call("POST", "/v3/async/txt2img", json=txt2img_body())
    assert status >= 500


async def test_presigned_faults_answer_xml(make_env: EnvFactory) -> None:
    env = await make_env(fault_5xx=1.0, fault_routes=["PUT /_s3/training/{assets_id}.{ext}"])
    status, body = await env.call("POST", UPLOAD, json={"file_extension": "png"})
    assert status == 200
    async with env.session.put(body["upload_url"], data=image_bytes()) as got:
        assert got.status >= 500
        assert got.content_type == "application/xml"
        assert "<Error>" in await got.text()
    assert not env.emulator.assets[body["assets_id"]].uploaded


async def test_internal_routes_are_never_faulted(make_env: EnvFactory) -> None:
    env = await make_env(fault_5xx=1.0, fault_drop=0.0)
    for _ in range(5):
        async with env.client.get("/_emulator/counters") as got:
            assert got.status == 200
    assert env.emulator.counters.faults_injected["5xx"] == 0


async def test_latency_is_added(make_env: EnvFactory) -> None:
    env = await make_env(latency=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await env.call("GET", "/v3/training")
    assert loop.time() - started >= 0.05


async def test_task_level_fault_counters(make_env: EnvFactory) -> None:
    env = await make_env(fault_training_failed=0.5, fault_training_canceled=0.5, seed=11)
    for _ in range(6):
        await env.train(images=1)
    faults = env.emulator.counters.faults_injected
    assert faults["training_failed"] + faults["training_canceled"] == 6
    assert env.emulator.counters_snapshot()["faults_injected"] == dict(faults)
