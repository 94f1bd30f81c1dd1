"""The client against a mocked transport (aioresponses)."""

from __future__ import annotations

import hashlib
import logging
import re

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from pipeline.api import ApiClient, PrivateModel, TrainingRequest, Txt2ImgRequest
from pipeline.config import Settings
from pipeline.errors import (
    BadCredentials,
    BadResponse,
    IntegrityError,
    PermanentApiError,
    RateLimited,
    TransientApiError,
    TransportError,
    UrlExpired,
)
from tests.conftest import TEST_KEY, RecordingClock

BASE = "http://api.test"
STATUS_URL = re.compile(r"^http://api\.test/v3/training/subject\?task_id=t1$")
TRAINING = TrainingRequest(
    name="job-alice-1234", base_model="v1-5-pruned-emaonly",
    image_dataset_items=[{"assets_id": "a1"}],
)


def client(settings: Settings, clock: RecordingClock) -> ApiClient:
    return ApiClient(settings, clock=clock, rand=lambda: 0.5)


def calls(mock: aioresponses, method: str, url_prefix: str) -> list:
    return [
        call
        for (verb, url), recorded in mock.requests.items()
        if verb == method and str(url).startswith(url_prefix)
        for call in recorded
    ]


async def test_reads_are_retried_with_backoff(settings, clock, mocked) -> None:
    mocked.get(STATUS_URL, status=503, body="busy")
    mocked.get(STATUS_URL, status=502, body="")
    mocked.get(STATUS_URL, payload={"task_id": "t1", "task_status": "TRAINING"})
    async with client(settings, clock) as api:
        status = await api.training_status("subject", "t1")
    assert status.task_status == "TRAINING"
    assert clock.sleeps == [pytest.approx(0.01), pytest.approx(0.02)]


async def test_reads_give_up_after_max_attempts(settings, clock, mocked) -> None:
    for _ in range(settings.retry_max_attempts):
        mocked.get(STATUS_URL, status=504)
    async with client(settings, clock) as api:
        with pytest.raises(TransientApiError) as caught:
            await api.training_status("subject", "t1")
    assert caught.value.status == 504
    assert len(clock.sleeps) == settings.retry_max_attempts - 1


async def test_rate_limit_honours_retry_after(settings, clock, mocked) -> None:
    mocked.get(STATUS_URL, status=429, headers={"Retry-After": "2"},
               payload={"code": 429, "reason": "RATE_LIMIT_EXCEEDED", "message": "slow down"})
    mocked.get(STATUS_URL, payload={"task_id": "t1", "task_status": "QUEUING"})
    async with client(settings, clock) as api:
        await api.training_status("subject", "t1")
    assert clock.sleeps == [2.0]


async def test_training_create_is_never_retried(settings, clock, mocked) -> None:
    mocked.post(f"{BASE}/v3/training/subject", status=503)
    mocked.post(f"{BASE}/v3/training/subject", payload={"task_id": "second"})
    async with client(settings, clock) as api:
        with pytest.raises(TransientApiError):
            await api.create_training("subject", TRAINING)
    assert len(calls(mocked, "POST", f"{BASE}/v3/training/subject")) == 1
    assert clock.sleeps == []


async def test_txt2img_is_never_retried_and_accepts_old_wrapper(settings, clock, mocked) -> None:
    mocked.post(f"{BASE}/v3/async/txt2img", exception=aiohttp.ServerDisconnectedError())
    wrapped = {"code": 0, "msg": "", "data": {"task_id": "g"}}
    mocked.post(f"{BASE}/v3/async/txt2img", payload=wrapped)
    request = Txt2ImgRequest(model_name="base.safetensors", prompt="p")
    async with client(settings, clock) as api:
        with pytest.raises(TransportError):
            await api.txt2img(request)
        assert await api.txt2img(request) == "g"
    sent = calls(mocked, "POST", f"{BASE}/v3/async/txt2img")[1].kwargs["json"]
    assert sent["request"]["loras"] == [] and sent["extra"] == {"response_image_type": "png"}


async def test_bad_credentials_stop_at_once(settings, clock, mocked) -> None:
    mocked.get(STATUS_URL, status=403,
               payload={"code": 403, "reason": "INVALID_API_KEY", "message": "invalid key"})
    async with client(settings, clock) as api:
        with pytest.raises(BadCredentials):
            await api.training_status("subject", "t1")
    assert clock.sleeps == []


async def test_plain_text_edge_403_is_a_clear_permanent_error(settings, clock, mocked) -> None:
    mocked.get(STATUS_URL, status=403, body="error code: 1010", content_type="text/plain")
    async with client(settings, clock) as api:
        with pytest.raises(PermanentApiError, match="User-Agent"):
            await api.training_status("subject", "t1")


async def test_headers_user_agent_and_auth(settings, clock, mocked) -> None:
    mocked.get(STATUS_URL, payload={"task_status": "QUEUING"})
    async with client(settings, clock) as api:
        await api.training_status("subject", "t1")
    headers = calls(mocked, "GET", f"{BASE}/v3/training/subject")[0].kwargs["headers"]
    assert headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert headers["User-Agent"].startswith("lora-pipeline/")


async def test_connection_errors_and_timeouts_are_translated(settings, clock, mocked) -> None:
    mocked.get(STATUS_URL, exception=aiohttp.ClientConnectionError("refused"))
    mocked.get(STATUS_URL, exception=TimeoutError())
    mocked.get(STATUS_URL, payload={"task_status": "QUEUING"})
    async with client(settings, clock) as api:
        assert (await api.training_status("subject", "t1")).task_status == "QUEUING"
    assert len(clock.sleeps) == 2


async def test_non_json_success_body_is_transient(settings, clock, mocked) -> None:
    for _ in range(settings.retry_max_attempts):
        mocked.get(STATUS_URL, body="<html>oops</html>")
    async with client(settings, clock) as api:
        with pytest.raises(TransientApiError, match="not JSON"):
            await api.training_status("subject", "t1")


async def test_unexpected_shape_names_the_field_and_is_an_unknown_outcome(
    settings, clock, mocked
) -> None:
    # A 200 to a paid create whose body does not parse may still have created the task:
    # it is a bad answer (transient: reconciled by name), never a permanent failure.
    mocked.post(f"{BASE}/v3/training/subject", payload={"id": "no task id here"})
    async with client(settings, clock) as api:
        with pytest.raises(BadResponse, match="task_id") as raised:
            await api.create_training("subject", TRAINING)
    assert raised.value.transient and not isinstance(raised.value, PermanentApiError)


async def test_task_list_follows_every_page(settings, clock, mocked) -> None:
    pages = {"": ("c_1", ["a", "b"]), "c_1": ("c_2", ["c"]), "c_2": ("", ["d"])}
    for cursor, (next_cursor, names) in pages.items():
        url = URL(f"{BASE}/v3/training").with_query(
            {"pagination.limit": "2", "pagination.cursor": cursor})
        mocked.get(url, payload={
            "tasks": [{"task_name": n, "task_id": f"id-{n}", "task_status": "SUCCESS",
                       "created_at": "1699325415"} for n in names],
            "pagination": {"next_cursor": next_cursor}})
    async with client(settings, clock) as api:
        names = [task.task_name async for task in api.iter_training_tasks(page_size=2)]
    assert names == ["a", "b", "c", "d"]


async def test_task_list_stops_on_a_repeated_cursor(settings, clock, mocked) -> None:
    mocked.get(re.compile(r"^http://api\.test/v3/training\?.*"), repeat=True,
               payload={"tasks": [{"task_id": "x"}], "pagination": {"next_cursor": "same"}})
    async with client(settings, clock) as api:
        ids = [task.task_id async for task in api.iter_training_tasks()]
    assert ids == ["x", "x"]


async def test_model_list_filters_to_trained_loras(settings, clock, mocked) -> None:
    mocked.get(re.compile(r"^http://api\.test/v3/model\?.*"),
               payload={"models": [{"id": 1, "sd_name_in_api": "m.safetensors"}]})
    async with client(settings, clock) as api:
        models = [m async for m in api.iter_trained_models()]
    assert [m.api_name for m in models] == ["m.safetensors"]
    (method, url), _ = next(iter(mocked.requests.items()))
    assert url.query["filter.visibility"] == "private"
    assert url.query["filter.source"] == "training"
    assert url.query["filter.types"] == "lora"


async def test_upload_streams_exact_bytes_without_auth(settings, clock, mocked, tmp_path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 5000)
    mocked.post(f"{BASE}/v3/assets/training_dataset",
                payload={"assets_id": "abc", "upload_url": "http://bucket.test/u/abc?sig=1"})
    received: list[bytes] = []

    async def capture(url, **kwargs):
        received.append(kwargs["data"])

    mocked.put("http://bucket.test/u/abc?sig=1", callback=capture)
    async with client(settings, clock) as api:
        assert await api.upload_training_image(image, "png") == "abc"
    assert received == [image.read_bytes()]
    put = calls(mocked, "PUT", "http://bucket.test")[0].kwargs
    assert put["headers"]["Content-Type"] == "image/png"
    assert put["headers"]["Content-Length"] == str(image.stat().st_size)
    assert "Authorization" not in put["headers"]


async def test_expired_upload_url_is_renewed(settings, clock, mocked, tmp_path) -> None:
    image = tmp_path / "a.webp"
    image.write_bytes(b"RIFF....WEBPVP8 ")
    for n in (1, 2):
        mocked.post(f"{BASE}/v3/assets/training_dataset",
                    payload={"assets_id": f"id{n}", "upload_url": f"http://bucket.test/{n}"})
    expired = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    mocked.put("http://bucket.test/1", status=403, body=expired)
    mocked.put("http://bucket.test/2", status=200)
    async with client(settings, clock) as api:
        assert await api.upload_training_image(image, "webp") == "id2"


async def test_upload_gives_up_after_repeated_expiry(settings, clock, mocked, tmp_path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    mocked.post(f"{BASE}/v3/assets/training_dataset", repeat=True,
                payload={"assets_id": "i", "upload_url": "http://bucket.test/x"})
    denied = b"<Error><Code>AccessDenied</Code></Error>"
    mocked.put("http://bucket.test/x", status=403, repeat=True, body=denied)
    async with client(settings, clock) as api:
        with pytest.raises(UrlExpired):
            await api.upload_training_image(image, "png")


async def test_download_model_checks_hash_prefix(settings, clock, mocked, tmp_path) -> None:
    payload = (2).to_bytes(8, "little") + b"{}" + b"safetensors-bytes" * 1000
    good = hashlib.sha256(payload).hexdigest()[:10].upper()
    model = PrivateModel(id=1, hash_sha256=good, download_url="http://cdn.test/m")
    mocked.get("http://cdn.test/m", body=payload)
    async with client(settings, clock) as api:
        result = await api.download_model(model, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == payload
    assert result.size == len(payload)

    bad = model.model_copy(update={"hash_sha256": "0000000000"})
    mocked.get("http://cdn.test/m", body=payload)
    async with client(settings, clock) as api:
        with pytest.raises(IntegrityError, match="does not match"):
            await api.download_model(bad, tmp_path / "other.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


async def test_expired_image_url_is_its_own_error_and_leaves_nothing(
    settings, clock, mocked, tmp_path
) -> None:
    mocked.get("http://cdn.test/img", status=403, body=b"<Error><Code>AccessDenied</Code></Error>")
    async with client(settings, clock) as api:
        with pytest.raises(UrlExpired):
            await api.download("http://cdn.test/img", tmp_path / "1.png")
    assert list(tmp_path.iterdir()) == []


async def test_api_key_never_in_errors_or_logs(settings, clock, mocked, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    mocked.get(STATUS_URL, status=503, body=f"echo {TEST_KEY}"[:0] or "busy")
    mocked.get(STATUS_URL, exception=aiohttp.ClientConnectionError("reset"))
    mocked.get(STATUS_URL, status=403, payload={"reason": "INVALID_API_KEY", "message": "bad"})
    async with client(settings, clock) as api:
        with pytest.raises(BadCredentials) as caught:
            await api.training_status("subject", "t1")
    text = repr(caught.value) + str(caught.value) + caplog.text
    assert TEST_KEY not in text


async def test_client_refuses_reuse_after_close(settings, clock) -> None:
    api = client(settings, clock)
    async with api:
        pass
    with pytest.raises(RuntimeError, match="reopened"):
        async with api:
            pass


async def test_injected_session_is_not_closed(settings, clock, mocked) -> None:
    mocked.get(STATUS_URL, payload={"task_status": "QUEUING"})
    async with aiohttp.ClientSession() as session:
        async with ApiClient(settings, session=session, clock=clock) as api:
            await api.training_status("subject", "t1")
        assert not session.closed


async def test_missing_key_sends_no_authorization(settings, clock, mocked) -> None:
    keyless = settings.model_copy(update={"api_key": None})
    mocked.get(STATUS_URL, status=400, payload={"reason": "MISSING_API_KEY", "message": "no key"})
    async with ApiClient(keyless, clock=clock) as api:
        with pytest.raises(BadCredentials):
            await api.training_status("subject", "t1")
    headers = calls(mocked, "GET", f"{BASE}/v3/training/subject")[0].kwargs["headers"]
    assert "Authorization" not in headers


async def test_rate_limited_error_type(settings, clock, mocked) -> None:
    for _ in range(settings.retry_max_attempts):
        mocked.get(STATUS_URL, status=429, payload={"reason": "RATE_LIMIT_EXCEEDED"})
    async with client(settings, clock) as api:
        with pytest.raises(RateLimited):
            await api.training_status("subject", "t1")


