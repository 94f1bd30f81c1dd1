"""The client's side of the trust boundary, on real loopback servers: which URLs it follows,
where the key goes, how long and how much it reads, and what text it lets through."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr, ValidationError

from pipeline.api import ApiClient
from pipeline.api.errors import translate_transport_errors
from pipeline.api.urls import UrlPolicy
from pipeline.config import Settings
from pipeline.errors import TooSlow, TransportError, UnsafeUrl
from pipeline.redact import Scrubber
from pipeline.store.sqlite import SqliteStore
from tests.conftest import TEST_KEY, RecordingClock

STATUS = {"task_id": "t1", "task_status": "TRAINING"}


class Server:
    """A loopback server whose routes a test sets, recording who asked with which key."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.routes: dict[tuple[str, str], Callable[..., object]] = {}
        self.seen: list[tuple[str, str, str | None]] = []
        self.url = ""

    def route(self, method: str, path: str, handler: Callable[..., object]) -> None:
        self.routes[(method, path)] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, request.headers.get("Authorization")))
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.Response(status=404)
        return await handler(request)  # type: ignore[no-any-return,misc]


@contextlib.asynccontextmanager
async def serving(server: Server) -> AsyncIterator[Server]:
    runner = web.AppRunner(server.app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def api_server() -> AsyncIterator[Server]:
    async with serving(Server()) as server:
        yield server


@pytest.fixture
async def other_server() -> AsyncIterator[Server]:
    async with serving(Server()) as server:
        yield server


def settings_for(base_url: str, **values: object) -> Settings:
    defaults: dict[str, object] = dict(
        api_key=SecretStr(TEST_KEY), base_url=base_url, retry_max_attempts=3,
        retry_base_delay=0.0, retry_max_delay=0.0,
    )
    return Settings(_env_file=None, **(defaults | values))  # type: ignore[call-arg]


def redirect_to(location: Callable[[], str], status: int = 302) -> Callable[..., object]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": location()})

    return handler


async def status_answer(request: web.Request) -> web.Response:
    return web.json_response(STATUS)


# --- where the key goes -------------------------------------------------------------------


async def test_an_api_call_redirected_to_another_origin_is_not_followed(
    api_server: Server, other_server: Server
) -> None:
    other_server.route("GET", "/steal", status_answer)
    api_server.route("GET", "/v3/training/subject",
                     redirect_to(lambda: other_server.url + "/steal"))
    async with ApiClient(settings_for(api_server.url)) as api:
        with pytest.raises(UnsafeUrl, match="only ever sent to"):
            await api.training_status("subject", "t1")
    assert other_server.seen == []
    assert api_server.seen[0][2] == f"Bearer {TEST_KEY}"


async def test_a_redirect_within_the_api_origin_keeps_the_key(api_server: Server) -> None:
    api_server.route("GET", "/v3/training/subject", redirect_to(lambda: "/moved", 307))
    api_server.route("GET", "/moved", status_answer)
    async with ApiClient(settings_for(api_server.url)) as api:
        status = await api.training_status("subject", "t1")
    assert status.task_status == "TRAINING"
    assert [auth for _m, _p, auth in api_server.seen] == [f"Bearer {TEST_KEY}"] * 2


async def test_a_presigned_download_may_move_but_never_gets_the_key(
    api_server: Server, other_server: Server, tmp_path: Path
) -> None:
    async def picture(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"\0" * 100)

    other_server.route("GET", "/bucket/x.png", picture)
    api_server.route("GET", "/signed/x.png", redirect_to(lambda: other_server.url + "/bucket/x.png"))
    async with ApiClient(settings_for(api_server.url)) as api:
        await api.download(api_server.url + "/signed/x.png", tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size == 108
    assert [auth for _m, _p, auth in api_server.seen + other_server.seen] == [None, None]


async def test_redirects_are_bounded(api_server: Server, tmp_path: Path) -> None:
    api_server.route("GET", "/loop", redirect_to(lambda: "/loop"))
    async with ApiClient(settings_for(api_server.url, max_redirects=3)) as api:
        with pytest.raises(UnsafeUrl, match="LORA_MAX_REDIRECTS"):
            await api.download(api_server.url + "/loop", tmp_path / "x.png")
    assert len(api_server.seen) == 4  # the request and three redirects, tried once
    assert list(tmp_path.iterdir()) == []


async def test_an_upload_is_never_redirected(
    api_server: Server, other_server: Server, tmp_path: Path
) -> None:
    api_server.route("PUT", "/upload", redirect_to(lambda: other_server.url + "/upload", 307))
    photo = tmp_path / "a.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n")
    async with ApiClient(settings_for(api_server.url)) as api:
        with pytest.raises(UnsafeUrl, match="redirected"):
            await api.put_file(api_server.url + "/upload", photo, "image/png")
    assert other_server.seen == []


# --- which URLs --------------------------------------------------------------------------


async def test_a_file_url_from_the_service_is_refused_without_retrying(
    api_server: Server, tmp_path: Path
) -> None:
    async def ticket(request: web.Request) -> web.Response:
        return web.json_response({"assets_id": "a1", "upload_url": "file:///etc/passwd"})

    api_server.route("POST", "/v3/assets/training_dataset", ticket)
    photo = tmp_path / "a.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n")
    async with ApiClient(settings_for(api_server.url)) as api:
        with pytest.raises(UnsafeUrl, match="not http"):
            await api.upload_training_image(photo, "png")
    assert len(api_server.seen) == 1


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://bucket.example/x.png", True),
    ("http://bucket.example/x.png", False),  # a downgrade from the https API
    ("http://127.0.0.1:9000/x.png", False),  # plain http, and this machine
    ("https://127.0.0.1:6379/x.png", False),  # a public API never sends us home
    ("https://localhost/x.png", False),
    ("https://[::1]:9000/x.png", False),
    ("https://169.254.169.254/latest/meta-data", False),  # cloud metadata
    ("https://10.0.0.7/x.png", False),
    ("https://[fd00::1]/x.png", False),
    ("https://0.0.0.0/x.png", False),
    ("file:///etc/passwd", False),
    ("ftp://bucket.example/x.png", False),
    ("https://user:pass@bucket.example/x.png", False),
    ("/relative/x.png", False),
    ("https://", False),
])
def test_which_service_urls_are_followed_from_an_https_api(url: str, allowed: bool) -> None:
    policy = UrlPolicy("https://api.example")
    if allowed:
        assert str(policy.service_url(url, what="picture")).startswith(url.split(":")[0])
    else:
        with pytest.raises(UnsafeUrl):
            policy.service_url(url, what="picture")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/x.png", "http://localhost/x.png",
                                 "http://[::1]:9000/x.png", "https://bucket.example/x.png"])
def test_a_local_api_may_hand_out_local_urls(url: str) -> None:
    """The emulator on this machine serves its own presigned URLs."""
    assert UrlPolicy("http://127.0.0.1:8000").service_url(url, what="picture").host


@pytest.mark.parametrize("base", ["file:///tmp/api", "api.novita.ai", "https://", "https://h/?k=1"])
def test_a_base_url_that_is_not_http_is_refused_at_start(base: str) -> None:
    with pytest.raises(ValidationError, match="LORA_BASE_URL"):
        Settings(_env_file=None, base_url=base)  # type: ignore[call-arg]


# --- how long and how much ---------------------------------------------------------------


class SteppingClock(RecordingClock):
    """Each look at the time moves it one second on: a trickle looks as slow as it is."""

    def now(self) -> float:
        self._now += 1.0
        return self._now


async def test_a_trickling_download_is_cut_below_the_minimum_rate(
    api_server: Server, tmp_path: Path
) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(200):
                await response.write(b"x")
                await asyncio.sleep(0.005)
        return response

    api_server.route("GET", "/slow.png", trickle)
    settings = settings_for(api_server.url, transfer_stall_seconds=5,
                            transfer_min_bytes_per_second=100, retry_max_attempts=1)
    async with ApiClient(settings, clock=SteppingClock()) as api:
        with pytest.raises(TooSlow, match="LORA_TRANSFER_MIN_BYTES_PER_SECOND"):
            await api.download(api_server.url + "/slow.png", tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


async def test_a_stalled_download_ends_with_an_error(api_server: Server, tmp_path: Path) -> None:
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"\x89PNG")
        await release.wait()
        return response

    api_server.route("GET", "/stalled.png", stall)
    settings = settings_for(api_server.url, transfer_stall_seconds=0.1, retry_max_attempts=1)
    try:
        async with ApiClient(settings) as api:
            with pytest.raises(TransportError, match="timed out"):
                await api.download(api_server.url + "/stalled.png", tmp_path / "x.png")
    finally:
        release.set()


# --- what text gets through -----------------------------------------------------------


def test_library_messages_lose_the_key_and_url_queries() -> None:
    scrub = Scrubber([TEST_KEY])
    message = f"Cannot connect to https://bucket/{TEST_KEY}/x.png?X-Amz-Signature=abc&k={TEST_KEY}"
    with pytest.raises(TransportError) as raised, translate_transport_errors("/x", scrub):
        raise aiohttp.ClientConnectionError(message)
    text = str(raised.value)
    assert TEST_KEY not in text and "X-Amz-Signature" not in text
    assert "https://bucket/***/x.png?…" in text


def test_short_keys_are_refused_and_long_ones_never_garble_text() -> None:
    with pytest.raises(ValidationError, match="too short") as raised:
        Settings(_env_file=None, api_key="k2")  # type: ignore[call-arg]
    assert "'k2'" not in str(raised.value)
    assert Settings(_env_file=None, api_key="").api_key is None  # type: ignore[call-arg]
    scrub = Scrubber([TEST_KEY])
    assert scrub("/work/outbox/k2.png") == "/work/outbox/k2.png"
    encoded = "".join(f"%{b:02x}" for b in TEST_KEY.encode())
    assert scrub(f"a {TEST_KEY} b {TEST_KEY.replace('-', '%2D')} c {encoded}") == "a *** b *** c ***"
    assert scrub(TEST_KEY.upper()) == TEST_KEY.upper()  # only the key's own spellings
    assert scrub("caf\udce9") == "caf\\udce9"


def test_the_store_never_keeps_the_key_or_a_lone_surrogate(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "state.db", scrub=Scrubber([TEST_KEY])) as store:
        row = store.add_version("job", "alice", "f", "subject", state="validated", now=0,
                                error=f"echo {TEST_KEY}")
        row = store.update_subject(row.id, now=1, error=f"Bearer {TEST_KEY} \ud800",
                                   model_name="m\ud800")
        assert row.error == "Bearer *** \\ud800" and row.model_name == "m\\ud800"
    assert TEST_KEY.encode() not in (tmp_path / "state.db").read_bytes()
