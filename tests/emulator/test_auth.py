"""The edge and the gateway: User-Agent, API keys, unknown paths, unauthenticated zones."""

from __future__ import annotations

import pytest

from .conftest import HEADERS, KEY, Env, EnvFactory


@pytest.mark.parametrize(
    ("authorization", "status", "reason"),
    [
        (None, 400, "MISSING_API_KEY"),
        ("", 400, "MISSING_API_KEY"),
        ("Bearer ", 400, "MISSING_API_KEY"),
        ("Bearer wrong-key", 403, "INVALID_API_KEY"),
        (f"Basic {KEY}", 403, "INVALID_API_KEY"),
        (f"Bearer {KEY}", 200, None),
    ],
)
async def test_api_key_table(
    make_env: EnvFactory, authorization: str | None, status: int, reason: str | None
) -> None:
    env = await make_env(api_keys=[KEY])
    headers = {"User-Agent": "tests"}
    if authorization is not None:
        headers["Authorization"] = authorization
    code, body = await env.call("GET", "/v3/training", headers=headers)
    assert code == status
    if reason:
        assert body == {"code": status, "reason": reason, "message": body["message"],
                        "metadata": {}}


async def test_any_non_empty_key_accepted_when_no_keys_configured(env: Env) -> None:
    code, _ = await env.call(
        "GET", "/v3/training", headers={"Authorization": "Bearer anything", "User-Agent": "t"}
    )
    assert code == 200


async def test_missing_user_agent_is_plain_text_403(env: Env) -> None:
    async with env.client.get(
        "/v3/training", headers={"Authorization": HEADERS["Authorization"]},
        skip_auto_headers=["User-Agent"],
    ) as answer:
        assert answer.status == 403
        assert answer.content_type == "text/plain"
        assert await answer.text() == "error code: 1010"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v3/nope"), ("GET", "/v2/progress"), ("DELETE", "/v3/training"),
     ("GET", "/v3/async/txt2img"), ("GET", "/")],
)
async def test_unknown_api_path_is_404_api_not_found(env: Env, method: str, path: str) -> None:
    code, body = await env.call(method, path)
    assert code == 404
    assert body["reason"] == "API_NOT_FOUND"
    assert env.emulator.counters.requests["unknown"] >= 1


async def test_internal_endpoints_need_no_auth(env: Env) -> None:
    async with env.client.get("/_emulator/counters", skip_auto_headers=["User-Agent"]) as answer:
        assert answer.status == 200
        assert "requests" in await answer.json()


async def test_unknown_presigned_path_is_xml_404(env: Env) -> None:
    async with env.client.get("/_s3/nothing/here") as answer:
        assert answer.status == 404
        assert answer.content_type == "application/xml"
        assert "<Code>NoSuchKey</Code>" in await answer.text()


async def test_invalid_json_body_is_400(env: Env) -> None:
    async with env.client.post(
        "/v3/training/subject", data=b"{not json", headers=HEADERS
    ) as answer:
        assert answer.status == 400
        assert (await answer.json())["reason"] == "INVALID_REQUEST_BODY"
    code, body = await env.call("POST", "/v3/training/subject", json=[1, 2])
    assert code == 400 and body["reason"] == "INVALID_REQUEST_BODY"
