"""The private model list and its downloads (contract §5a)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from typing import Any

import pytest
from PIL import Image

from .conftest import Env

MODEL_QUERY = {
    "filter.visibility": "private",
    "filter.source": "training",
    "filter.types": "lora",
}


async def _models(env: Env, **params: str) -> tuple[int, Any]:
    return await env.call("GET", "/v3/model", params={**MODEL_QUERY, **params})


def parse_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    return header, data[8 + length :]


async def test_only_serving_models_are_listed(env: Env) -> None:
    task_id = await env.train(name="alice-v1")
    _, body = await _models(env)
    assert body == {"models": [], "pagination": {"next_cursor": ""}}
    env.clock.advance(26)  # SUCCESS but DEPLOYING
    _, body = await _models(env)
    assert body["models"] == []
    env.clock.advance(5)
    status, body = await _models(env)
    assert status == 200
    [model] = body["models"]
    training = env.emulator.trainings[task_id]
    assert model["sd_name"] == model["sd_name_in_api"] == training.model_name
    assert model["name"] == "alice-v1"
    assert isinstance(model["id"], int)
    assert model["type"] == {"name": "lora", "display_name": "LoRA"}
    assert model["status"] == 1 and model["source"] == "training"
    assert model["base_model"] == "SD 1.5" and model["is_sdxl"] is False
    assert model["base_model_type"] == "Standard"
    assert model["download_url_ttl"] == 86400
    assert model["categories"] == [] and model["tags"] == []
    assert len(model["hash_sha256"]) == 10 and set(model["hash_sha256"]) <= set("0123456789ABCDEF")


async def test_download_is_a_valid_safetensors_matching_the_hash(env: Env) -> None:
    await env.serving_lora()
    _, body = await _models(env)
    [model] = body["models"]
    async with env.session.get(model["download_url"], skip_auto_headers=["User-Agent"]) as got:
        assert got.status == 200
        data = await got.read()
    assert hashlib.sha256(data).hexdigest()[:10].upper() == model["hash_sha256"]
    header, payload = parse_safetensors(data)
    assert header["__metadata__"]["ss_base_model_version"] == "sd_v1"
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert len(tensors) >= 6
    end = 0
    for info in tensors.values():
        assert info["dtype"] == "F32"
        start, stop = info["data_offsets"]
        count = 1
        for dim in info["shape"]:
            count *= dim
        assert stop - start == 4 * count
        end = max(end, stop)
    assert end == len(payload)
    assert any(name.endswith("lora_down.weight") for name in tensors)
    again = await env.session.get(model["download_url"])
    assert await again.read() == data  # deterministic
    again.release()
    assert env.emulator.counters.models_downloaded == 2


async def test_download_url_expires(env: Env) -> None:
    await env.serving_lora()
    _, body = await _models(env)
    env.clock.advance(86401)
    async with env.session.get(body["models"][0]["download_url"]) as got:
        assert got.status == 403
        assert "Request has expired" in await got.text()


async def test_cover_is_a_png(env: Env) -> None:
    await env.serving_lora()
    _, body = await _models(env)
    async with env.session.get(body["models"][0]["cover_url"]) as got:
        assert got.status == 200
        image = Image.open(io.BytesIO(await got.read()))
        assert image.format == "PNG"


async def test_model_list_pagination_and_filters(env: Env) -> None:
    for n in range(3):
        await env.train(images=1, name=f"sd-{n}")
    await env.train(images=1, name="xl-0", base_model="stable-diffusion-xl-base-1.0")
    env.clock.advance(31)
    names: list[str] = []
    cursor = ""
    while True:
        status, body = await _models(env, **{"pagination.limit": "3",
                                              "pagination.cursor": cursor})
        assert status == 200
        names += [m["name"] for m in body["models"]]
        cursor = body["pagination"]["next_cursor"]
        if not cursor:
            break
        assert len(cursor) > 6  # the long opaque form
    assert names == ["xl-0", "sd-2", "sd-1", "sd-0"]

    _, body = await _models(env, **{"filter.is_sdxl": "true"})
    assert [(m["name"], m["base_model"], m["is_sdxl"]) for m in body["models"]] == [
        ("xl-0", "SDXL", True)
    ]
    _, body = await _models(env, **{"filter.query": "SD-1"})
    assert [m["name"] for m in body["models"]] == ["sd-1"]
    model_name = env.emulator.trainings[next(iter(env.emulator.trainings))].model_name
    _, body = await _models(env, **{"filter.query": model_name[:20]})
    assert len(body["models"]) >= 1
    _, body = await _models(env, **{"pagination.cursor": "c_3", "pagination.limit": "100"})
    assert [m["name"] for m in body["models"]] == ["sd-0"]


@pytest.mark.parametrize(
    "params",
    [{"filter.visibility": "public"}, {"filter.source": "civitai"},
     {"filter.types": "checkpoint"}, {"filter.is_inpainting": "true"}],
)
async def test_other_catalogues_are_empty(env: Env, params: dict[str, str]) -> None:
    await env.serving_lora()
    status, body = await _models(env, **params)
    assert status == 200 and body["models"] == []


async def test_model_list_bad_parameters(env: Env) -> None:
    status, body = await _models(env, **{"filter.is_sdxl": "maybe"})
    assert status == 400
    status, body = await _models(env, **{"pagination.limit": "1000"})
    assert status == 400
