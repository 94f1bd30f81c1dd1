"""Upload URLs and the presigned PUT (contract §2)."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from .conftest import Env, EnvFactory, image_bytes


async def _upload_url(env: Env, fmt: str = "png") -> dict[str, object]:
    status, body = await env.call(
        "POST", "/v3/assets/training_dataset", json={"file_extension": fmt}
    )
    assert status == 200, body
    return dict(body)


async def test_upload_url_shape(env: Env) -> None:
    body = await _upload_url(env)
    assert re.fullmatch(r"[0-9a-f]{32}", str(body["assets_id"]))
    assert body["method"] == "PUT"
    url = urlsplit(str(body["upload_url"]))
    host = f"{env.client.host}:{env.client.port}"
    assert url.netloc == host
    assert body["headers"] == {"Host": {"values": [host]}}
    query = parse_qs(url.query)
    assert query["X-Amz-Expires"] == ["120"]
    assert "X-Amz-Signature" in query and "X-Amz-Date" in query


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
async def test_put_each_format(env: Env, fmt: str) -> None:
    data = image_bytes(fmt)
    assets_id = await env.upload(fmt, data)
    asset = env.emulator.assets[assets_id]
    assert asset.uploaded and asset.size == len(data)
    assert asset.width == 48 and asset.height == 40
    assert 0 < len(asset.thumbnail) < 4096
    counters = env.emulator.counters
    assert counters.uploads == 1 and counters.bytes_received == len(data)


@pytest.mark.parametrize("fmt", [None, "jpg", "gif", "PNG", 3])
async def test_bad_file_extension(env: Env, fmt: object) -> None:
    status, body = await env.call(
        "POST", "/v3/assets/training_dataset", json={"file_extension": fmt}
    )
    assert status == 400 and body["reason"] == "INVALID_REQUEST_BODY"


async def test_put_needs_no_auth_and_answers_empty_200(env: Env) -> None:
    body = await _upload_url(env)
    async with env.session.put(
        str(body["upload_url"]), data=image_bytes(), headers={"Content-Type": "image/png"},
        skip_auto_headers=["User-Agent"],
    ) as answer:
        assert answer.status == 200
        assert await answer.read() == b""


async def test_expired_upload_url_is_403_xml(env: Env) -> None:
    body = await _upload_url(env)
    env.clock.advance(121)
    async with env.session.put(str(body["upload_url"]), data=image_bytes()) as answer:
        assert answer.status == 403
        assert answer.content_type == "application/xml"
        text = await answer.text()
    assert text.startswith("<?xml")
    assert "<Code>AccessDenied</Code>" in text and "Request has expired" in text
    assert not env.emulator.assets[str(body["assets_id"])].uploaded


async def test_upload_url_valid_until_its_ttl(env: Env) -> None:
    body = await _upload_url(env)
    env.clock.advance(119)
    async with env.session.put(str(body["upload_url"]), data=image_bytes()) as answer:
        assert answer.status == 200


@pytest.mark.parametrize("field", ["X-Amz-Expires", "X-Amz-Signature", "X-Amz-Date"])
async def test_tampered_upload_url_is_403(env: Env, field: str) -> None:
    body = await _upload_url(env)
    url = urlsplit(str(body["upload_url"]))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    query[field] = {"X-Amz-Expires": "999999", "X-Amz-Signature": "0" * 64,
                    "X-Amz-Date": "20990101T000000Z"}[field]
    tampered = url._replace(query=urlencode(query)).geturl()
    async with env.session.put(tampered, data=image_bytes()) as answer:
        assert answer.status == 403
        assert "<Code>AccessDenied</Code>" in await answer.text()


async def test_upload_url_for_another_asset_is_403(env: Env) -> None:
    first, second = await _upload_url(env), await _upload_url(env)
    swapped = str(first["upload_url"]).replace(str(first["assets_id"]), str(second["assets_id"]))
    async with env.session.put(swapped, data=image_bytes()) as answer:
        assert answer.status == 403


@pytest.mark.parametrize(
    ("declared", "data"),
    [
        ("png", b"this is not an image"),
        ("png", b""),
        ("png", image_bytes("png")[:60]),  # truncated
        ("png", image_bytes("jpeg")),  # a jpeg declared as png
        ("jpeg", image_bytes("webp")),
        ("webp", image_bytes("png")),
    ],
)
async def test_non_images_and_wrong_format_are_400(env: Env, declared: str, data: bytes) -> None:
    body = await _upload_url(env, declared)
    async with env.session.put(str(body["upload_url"]), data=data) as answer:
        assert answer.status == 400
        error = await answer.json()
    assert error["reason"] == "INVALID_IMAGE_FORMAT"
    assert not env.emulator.assets[str(body["assets_id"])].uploaded


async def test_gif_is_refused(env: Env) -> None:
    body = await _upload_url(env)
    async with env.session.put(str(body["upload_url"]), data=image_bytes("gif")) as answer:
        assert answer.status == 400


async def test_second_put_overwrites(env: Env) -> None:
    body = await _upload_url(env)
    for colour, size in (("red", (48, 40)), ("blue", (30, 30))):
        data = image_bytes("png", size, colour)
        async with env.session.put(str(body["upload_url"]), data=data) as answer:
            assert answer.status == 200
    asset = env.emulator.assets[str(body["assets_id"])]
    assert (asset.width, asset.height) == (30, 30)
    assert env.emulator.counters.uploads == 2


async def test_oversized_upload_is_400(make_env: EnvFactory) -> None:
    env = await make_env(max_upload_bytes=1000)
    body = await _upload_url(env)
    async with env.session.put(str(body["upload_url"]), data=b"\0" * 5000) as answer:
        assert answer.status == 400
        assert (await answer.json())["reason"] == "IMAGE_FILE_EXCEEDS_MAX_SIZE"


async def test_upload_bandwidth_throttles_the_body(make_env: EnvFactory) -> None:
    env = await make_env(upload_bandwidth=50_000)
    data = image_bytes("jpeg", (400, 300))
    body = await _upload_url(env, "jpeg")
    started = time.monotonic()
    async with env.session.put(str(body["upload_url"]), data=data) as answer:
        assert answer.status == 200
    assert time.monotonic() - started >= 0.8 * len(data) / 50_000
