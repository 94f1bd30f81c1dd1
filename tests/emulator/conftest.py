"""Fixtures for the emulator tests: an emulator on a test server, driven by a ManualClock."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from json import dumps
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from pipeline.clock import ManualClock
from pipeline.emulator import Emulator, EmulatorConfig, create_app

KEY = "sk-emulator-test"
HEADERS = {"Authorization": f"Bearer {KEY}", "User-Agent": "emulator-tests/1.0"}
SD15_CHECKPOINT = "realisticVisionV51_v51VAE_94301.safetensors"
SDXL_CHECKPOINT = "epicrealismXL_v10_247189.safetensors"

#: Fast timings: a training is SERVING 30 s after creation, a generation ends after 3 s.
FAST = {
    "queue_seconds": 5,
    "train_seconds": 20,
    "deploy_seconds": 5,
    "generation_queue_seconds": 1,
    "generation_seconds": 2,
}


def image_bytes(fmt: str = "png", size: tuple[int, int] = (48, 40), colour: str = "red") -> bytes:
    """A small real picture in ``fmt`` (png, jpeg, webp)."""
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format={"jpeg": "JPEG"}.get(fmt, fmt.upper()))
    return out.getvalue()


@dataclass
class Env:
    """One emulator, its clock and a client to it."""

    emulator: Emulator
    clock: ManualClock
    client: TestClient[Any, Any]

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.client.session

    async def call(
        self, method: str, path: str, *, json: Any = None, params: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """An authenticated API call; returns (status, decoded JSON body)."""
        sent = dict(headers if headers is not None else HEADERS)
        data = None
        if json is not None:  # a stream: aiohttp warns about large raw bodies
            data = io.BytesIO(dumps(json).encode())
            sent["Content-Type"] = "application/json"
        async with self.client.request(
            method, path, data=data, params=params, headers=sent
        ) as answer:
            body = await answer.json(content_type=None)
            return answer.status, body

    async def upload(self, fmt: str = "png", data: bytes | None = None) -> str:
        """Ask for an upload URL, PUT an image there, return its assets_id."""
        status, body = await self.call(
            "POST", "/v3/assets/training_dataset", json={"file_extension": fmt}
        )
        assert status == 200, body
        payload = image_bytes(fmt) if data is None else data
        async with self.session.put(body["upload_url"], data=payload) as answer:
            assert answer.status == 200, await answer.text()
        return str(body["assets_id"])

    async def train(
        self, kind: str = "subject", images: int = 2, base_model: str = "v1-5-pruned-emaonly",
        **overrides: Any,
    ) -> str:
        """Upload ``images`` pictures and create a training; return its task_id."""
        ids = [await self.upload() for _ in range(images)]
        body = training_body(ids, kind=kind, base_model=base_model, **overrides)
        status, answer = await self.call("POST", f"/v3/training/{kind}", json=body)
        assert status == 200, answer
        return str(answer["task_id"])

    async def serving_lora(self, base_model: str = "v1-5-pruned-emaonly") -> str:
        """A trained LoRA already SERVING; returns its model file name."""
        task_id = await self.train(base_model=base_model)
        self.clock.advance(31)
        status, body = await self.call("GET", "/v3/training/subject", params={"task_id": task_id})
        assert status == 200 and body["models"][0]["model_status"] == "SERVING", body
        return str(body["models"][0]["model_name"])

    async def status(self, task_id: str, kind: str = "subject") -> dict[str, Any]:
        status, body = await self.call("GET", f"/v3/training/{kind}", params={"task_id": task_id})
        assert status == 200, body
        return dict(body)

    async def result(self, task_id: str) -> dict[str, Any]:
        status, body = await self.call(
            "GET", "/v3/async/task-result", params={"task_id": task_id}
        )
        assert status == 200, body
        return dict(body)


def training_body(ids: list[str], kind: str = "subject", **overrides: Any) -> dict[str, Any]:
    """A valid training create body over uploaded ``ids``."""
    items: list[dict[str, Any]] = [
        {"assets_id": i, "caption": f"photo {n}"} if kind == "style" else {"assets_id": i}
        for n, i in enumerate(ids)
    ]
    body: dict[str, Any] = {
        "name": "alice-v1",
        "base_model": "v1-5-pruned-emaonly",
        "width": 512,
        "height": 512,
        "image_dataset_items": items,
        "expert_setting": {
            "instance_prompt": "a close photo of ohwx woman",
            "class_prompt": "person",
            "max_train_steps": 500,
            "learning_rate": "1e-4",
            "lr_scheduler": "constant",
        },
        "components": [
            {"name": "face_crop_region", "args": [{"name": "ratio", "value": "1.4"}]},
            {"name": "resize", "args": [{"name": "width", "value": "512"},
                                        {"name": "height", "value": "512"}]},
            {"name": "face_restore", "args": [{"name": "method", "value": "gfpgan_1.4"},
                                              {"name": "upscale", "value": "1.0"}]},
        ],
    }
    body.update(overrides)
    return body


def txt2img_body(loras: list[str] | None = None, **request: Any) -> dict[str, Any]:
    """A valid txt2img body; ``request`` overrides fields of ``request``."""
    fields: dict[str, Any] = {
        "model_name": SD15_CHECKPOINT,
        "prompt": "a close photo of ohwx woman, studio portrait",
        "width": 256,
        "height": 192,
        "image_num": 1,
        "steps": 20,
        "guidance_scale": 7.5,
        "sampler_name": "Euler a",
        "seed": 42,
        "loras": [{"model_name": name, "strength": 0.8} for name in loras or []],
    }
    fields.update(request)
    return {"extra": {"response_image_type": "png"}, "request": fields}


EnvFactory = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env() -> AsyncIterator[EnvFactory]:
    """Build an emulator (config overrides as keyword arguments) on a test server."""
    clients: list[TestClient[Any, Any]] = []

    async def make(**config: Any) -> Env:
        clock = ManualClock()
        emulator = Emulator(EmulatorConfig(**{**FAST, **config}), clock)
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(emulator)))
        await client.start_server()
        clients.append(client)
        return Env(emulator, clock, client)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def env(make_env: EnvFactory) -> Env:
    """An emulator with fast timings and no faults."""
    return await make_env()
