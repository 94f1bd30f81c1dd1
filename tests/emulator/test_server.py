"""The emulator on a real loopback port, its CLI hooks, counters and reset."""

from __future__ import annotations

import argparse
import asyncio
import io
import signal
import sys

import aiohttp
import pytest
from PIL import Image

from pipeline.clock import ManualClock
from pipeline.emulator import (
    EmulatorConfig,
    add_cli_arguments,
    config_from_args,
    create_app,
    serve_emulator,
)
from pipeline.emulator.core import Emulator

from .conftest import FAST, HEADERS, image_bytes, training_body, txt2img_body


async def test_full_flow_on_a_real_port() -> None:
    clock = ManualClock()
    async with (
        serve_emulator(EmulatorConfig(**FAST), clock=clock) as server,
        aiohttp.ClientSession(headers=HEADERS) as http,
    ):
        assert server.base_url.startswith("http://127.0.0.1:") and server.port > 0
        ids = []
        for fmt in ("png", "jpeg", "webp"):
            async with http.post(server.url("/v3/assets/training_dataset"),
                                 json={"file_extension": fmt}) as got:
                slot = await got.json()
            assert slot["upload_url"].startswith(server.base_url + "/_s3/")
            async with http.put(slot["upload_url"], data=image_bytes(fmt)) as got:
                assert got.status == 200
            ids.append(slot["assets_id"])
        async with http.post(server.url("/v3/training/subject"),
                             json=training_body(ids)) as got:
            task_id = (await got.json())["task_id"]
        clock.advance(31)
        async with http.get(server.url("/v3/training/subject"),
                            params={"task_id": task_id}) as got:
            lora = (await got.json())["models"][0]["model_name"]
        async with http.post(server.url("/v3/async/txt2img"),
                             json=txt2img_body([lora], image_num=2)) as got:
            generation = (await got.json())["task_id"]
        clock.advance(3)
        async with http.get(server.url("/v3/async/task-result"),
                            params={"task_id": generation}) as got:
            images = (await got.json())["images"]
        for image in images:
            async with http.get(image["image_url"]) as got:
                Image.open(io.BytesIO(await got.read())).load()
        async with http.get(server.url("/_emulator/counters")) as got:
            counters = await got.json()
        assert counters == server.emulator.counters_snapshot()
    assert counters["requests"]["POST /v3/assets/training_dataset"] == 3
    assert counters["requests"]["PUT /_s3/training/{assets_id}.{ext}"] == 3
    assert counters["requests"]["GET /_s3/images/{task_id}/{index}.{ext}"] == 2
    assert counters["trainings_created"] == {"total": 1, "subject": 1}
    assert counters["generations_created"] == {"total": 1, "txt2img": 1}
    assert counters["uploads"] == 3 and counters["bytes_received"] > 0
    assert counters["images_requested"] == 2 and counters["images_generated"] == 2
    assert counters["images_downloaded"] == 2
    assert counters["faults_injected"] == {}


async def test_reset_endpoint_forgets_everything() -> None:
    async with serve_emulator(EmulatorConfig(), clock=ManualClock()) as server, \
            aiohttp.ClientSession(headers=HEADERS) as http:
        async with http.post(server.url("/v3/assets/training_dataset"),
                             json={"file_extension": "png"}) as got:
            assert got.status == 200
        async with http.post(server.url("/_emulator/reset")) as got:
            assert got.status == 200
        assert server.emulator.assets == {}
        async with http.get(server.url("/_emulator/counters")) as got:
            counters = await got.json()
        assert counters["upload_urls_issued"] == 0
        async with http.get(server.url("/_emulator/trainings")) as got:
            assert (await got.json()) == {"trainings": []}


async def test_create_app_and_emulator_app_serve_the_same_state() -> None:
    emulator = Emulator(EmulatorConfig(), ManualClock())
    assert create_app(emulator).router is not None
    async with serve_emulator(emulator=emulator) as server:
        assert server.emulator is emulator


def test_cli_flags_cover_every_setting() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args([
        "--port", "0", "--train-seconds", "1.5", "--api-key", "a", "--api-key", "b",
        "--fault-429", "0.25", "--fault-route", "GET /v3/training", "--seed", "4",
        "--rate-limit-retry-after", "--upload-bandwidth", "1000", "--page-size-max", "50",
    ])
    config = config_from_args(args)
    assert args.port == 0 and args.host == "127.0.0.1"
    assert config.train_seconds == 1.5 and config.api_keys == ["a", "b"]
    assert config.fault_429 == 0.25 and config.fault_routes == ["GET /v3/training"]
    assert config.seed == 4 and config.rate_limit_retry_after is True
    assert config.upload_bandwidth == 1000 and config.page_size_max == 50
    assert config.queue_seconds == EmulatorConfig().queue_seconds
    for name in EmulatorConfig.model_fields:
        assert hasattr(args, name), name


def test_cli_keeps_a_callers_own_port_flag() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9999)
    add_cli_arguments(parser)
    assert parser.parse_args([]).port == 9999


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(fault_5xx=1.5)
    with pytest.raises(ValueError):
        EmulatorConfig(unknown_setting=1)  # type: ignore[call-arg]


async def test_run_emulator_serves_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "from pipeline.emulator import main; main(['--port', '0', '--train-seconds', '1'])",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("Emulator listening on http://127.0.0.1:")
        base = line.split(" on ", 1)[1].strip()
        async with aiohttp.ClientSession() as http, http.get(base + "/_emulator/counters") as got:
            assert got.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
