"""Generation tasks by the clock, their pictures and the rate limits (contract §6-§8)."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image, ImageStat

from .conftest import Env, EnvFactory, image_bytes, txt2img_body

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


async def _create(env: Env, body: dict[str, Any], kind: str = "txt2img") -> str:
    status, answer = await env.call("POST", f"/v3/async/{kind}", json=body)
    assert status == 200, answer
    assert set(answer) == {"task_id"}
    return str(answer["task_id"])


async def test_queued_processing_succeed(env: Env) -> None:
    lora = await env.serving_lora()
    task_id = await _create(env, txt2img_body([lora], image_num=2))
    body = await env.result(task_id)
    assert body["task"] == {"task_id": task_id, "task_type": "TXT_TO_IMG",
                            "status": "TASK_STATUS_QUEUED", "reason": "", "eta": 3,
                            "progress_percent": 0}
    assert body["images"] == [] and body["videos"] == [] and body["audios"] == []
    assert body["extra"]["seed"] == "42"
    debug = body["extra"]["debug_info"]
    assert set(debug) == {"request_info", "submit_time_ms", "execute_time_ms",
                          "complete_time_ms"}
    assert all(isinstance(v, str) for v in debug.values())

    env.clock.advance(2)
    body = await env.result(task_id)
    assert body["task"]["status"] == "TASK_STATUS_PROCESSING"
    assert body["task"]["progress_percent"] == 50 and body["images"] == []

    env.clock.advance(1)
    body = await env.result(task_id)
    assert body["task"]["status"] == "TASK_STATUS_SUCCEED"
    assert len(body["images"]) == 2
    for image in body["images"]:
        assert image["image_type"] == "png" and image["image_url_ttl"] == "3600"
        assert image["nsfw_detection_result"] is None
    debug = body["extra"]["debug_info"]
    assert int(debug["submit_time_ms"]) < int(debug["execute_time_ms"]) < int(
        debug["complete_time_ms"])
    assert env.emulator.counters.images_generated == 2
    await env.result(task_id)
    assert env.emulator.counters.images_generated == 2  # counted once


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
async def test_images_decode_in_the_requested_format_and_size(env: Env, fmt: str) -> None:
    lora = await env.serving_lora()
    body = txt2img_body([lora], width=320, height=200, image_num=2)
    body["extra"]["response_image_type"] = fmt
    task_id = await _create(env, body)
    env.clock.advance(3)
    result = await env.result(task_id)
    pictures = []
    for image in result["images"]:
        async with env.session.get(image["image_url"], skip_auto_headers=["User-Agent"]) as got:
            assert got.status == 200
            assert got.content_type == f"image/{fmt}"
            pictures.append(await got.read())
    for data in pictures:
        picture = Image.open(io.BytesIO(data))
        picture.load()
        assert picture.format == PIL_FORMATS[fmt]
        assert picture.size == (320, 200)
    assert pictures[0] != pictures[1]
    assert env.emulator.counters.images_downloaded == 2


async def test_image_url_expires(env: Env) -> None:
    task_id = await _create(env, txt2img_body())
    env.clock.advance(3)
    [image] = (await env.result(task_id))["images"]
    env.clock.advance(3601)
    async with env.session.get(image["image_url"]) as got:
        assert got.status == 403
        assert got.content_type == "application/xml"
        assert "<Code>AccessDenied</Code>" in await got.text()
    [fresh] = (await env.result(task_id))["images"]  # a new poll presigns anew
    async with env.session.get(fresh["image_url"]) as got:
        assert got.status == 200


async def test_random_seed_is_chosen_and_reported(env: Env) -> None:
    task_id = await _create(env, txt2img_body(seed=-1))
    seed = (await env.result(task_id))["extra"]["seed"]
    assert seed.isdigit()
    second = await _create(env, txt2img_body(seed=-1))
    assert (await env.result(second))["extra"]["seed"] != seed


async def test_generation_failure_fault(make_env: EnvFactory) -> None:
    env = await make_env(fault_generation_failed=1.0)
    task_id = await _create(env, txt2img_body())
    env.clock.advance(3)
    body = await env.result(task_id)
    assert body["task"]["status"] == "TASK_STATUS_FAILED"
    assert body["task"]["reason"] and body["images"] == []
    assert env.emulator.counters.faults_injected["generation_failed"] == 1
    assert env.emulator.counters.images_generated == 0


async def test_img2img_lifecycle(env: Env) -> None:
    body = txt2img_body(width=256, height=256)
    body["request"]["image_base64"] = base64.b64encode(image_bytes("png", (64, 64))).decode()
    body["extra"]["response_image_type"] = "jpeg"
    task_id = await _create(env, body, "img2img")
    env.clock.advance(3)
    result = await env.result(task_id)
    assert result["task"]["task_type"] == "IMG_TO_IMG"
    async with env.session.get(result["images"][0]["image_url"]) as got:
        picture = Image.open(io.BytesIO(await got.read()))
    assert picture.format == "JPEG" and picture.size == (256, 256)
    assert env.emulator.counters.generations_created == {"total": 1, "img2img": 1}


def _halves(size: tuple[int, int]) -> bytes:
    """A picture blue on the left, yellow on the right."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 255, 0), (size[0] // 2, 0, size[0], size[1]))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _mean(picture: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(picture.convert("RGB").crop(box)).mean)


def _distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5)


@pytest.mark.parametrize("strength", [0.2, 0.9])
async def test_an_img2img_picture_is_drawn_over_its_init_image(
    env: Env, strength: float
) -> None:
    """Beside the prompt panel, the portrait and the strip, the picture is the init image:
    its left side blue, its right side yellow, tinted more as the strength grows."""
    lora = await env.serving_lora()
    body = txt2img_body([lora], width=256, height=256, strength=strength)
    body["request"]["image_base64"] = base64.b64encode(_halves((300, 300))).decode()
    task_id = await _create(env, body, "img2img")
    env.clock.advance(3)
    async with env.session.get((await env.result(task_id))["images"][0]["image_url"]) as got:
        picture = Image.open(io.BytesIO(await got.read()))
    left, right = _mean(picture, (4, 130, 60, 200)), _mean(picture, (200, 130, 252, 200))
    tint = 0.4 * strength * 255 * 3 ** 0.5  # at most this far from the init image
    assert _distance(left, (0, 0, 255)) <= tint + 8, left
    assert _distance(right, (255, 255, 0)) <= tint + 8, right

    plain = await _create(env, txt2img_body([lora], width=256, height=256))
    env.clock.advance(3)
    async with env.session.get((await env.result(plain))["images"][0]["image_url"]) as got:
        txt2img = Image.open(io.BytesIO(await got.read()))
    assert _distance(_mean(txt2img, (200, 130, 252, 200)), (255, 255, 0)) > 100


async def test_unknown_generation_and_unfinished_image(env: Env) -> None:
    status, body = await env.call("GET", "/v3/async/task-result", params={"task_id": "x"})
    assert status == 404 and body["reason"] == "TASK_NOT_FOUND"
    status, body = await env.call("GET", "/v3/async/task-result")
    assert status == 400
    task_id = await _create(env, txt2img_body())
    url = env.emulator.signer.sign(
        str(env.client.make_url("")).rstrip("/"), "GET", f"/_s3/images/{task_id}/0.png",
        env.clock.now(), 60,
    )
    async with env.session.get(url) as got:
        assert got.status == 404  # not rendered before SUCCEED


async def test_txt2img_rate_limit_and_recovery(env: Env) -> None:
    for _ in range(2):
        await _create(env, txt2img_body(image_num=8))
    status, body = await env.call("POST", "/v3/async/txt2img", json=txt2img_body(image_num=5))
    assert status == 429 and body["reason"] == "RATE_LIMIT_EXCEEDED"
    await _create(env, txt2img_body(image_num=4))  # exactly 20
    env.clock.advance(30)
    async with env.client.post(
        "/v3/async/txt2img", json=txt2img_body(), headers=dict(
            Authorization="Bearer sk-emulator-test", **{"User-Agent": "t"})
    ) as answer:
        assert answer.status == 429
        assert "Retry-After" not in answer.headers
    # another account has its own budget
    status, _ = await env.call("POST", "/v3/async/txt2img", json=txt2img_body(), headers={
        "Authorization": "Bearer other-account", "User-Agent": "t"})
    assert status == 200
    env.clock.advance(30.1)  # the first grants leave the window
    await _create(env, txt2img_body(image_num=8))
    assert env.emulator.counters.rate_limited == 2


async def test_img2img_has_its_own_lower_limit(make_env: EnvFactory) -> None:
    env = await make_env(rate_limit_retry_after=True)
    body = txt2img_body(image_num=8)
    body["request"]["image_base64"] = base64.b64encode(image_bytes()).decode()
    await _create(env, body, "img2img")
    body["request"]["image_num"] = 3
    async with env.client.post("/v3/async/img2img", json=body, headers={
        "Authorization": "Bearer k", "User-Agent": "t"}) as answer:
        assert answer.status == 200  # different account
    async with env.client.post("/v3/async/img2img", json=body, headers={
        "Authorization": "Bearer sk-emulator-test", "User-Agent": "t"}) as answer:
        assert answer.status == 429
        assert answer.headers["Retry-After"] == "60"
    await _create(env, txt2img_body(image_num=8))  # txt2img budget untouched
