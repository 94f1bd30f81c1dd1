"""The async client of the hosted training API.

    async with ApiClient(settings) as api:
        assets_id = await api.upload_training_image(Path("alice/1.png"), "png")
        task_id = await api.create_training("subject", request)
        status = await api.training_status("subject", task_id)

One ``aiohttp.ClientSession`` per client, owned by ``async with`` unless a session is
injected. Reads, the upload-URL call and presigned transfers are retried with backoff;
creating a training or a generation is sent exactly once (see :mod:`.retry`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import aiofiles.os
import aiohttp
import structlog
from pydantic import BaseModel, ValidationError

from ..clock import Clock, SystemClock
from ..config import Settings
from ..errors import IntegrityError, PermanentApiError, TransientApiError, UrlExpired
from ..files import PART_SUFFIX, open_reader, open_writer
from .contract import CONTENT_TYPES, MAX_TASK_PAGE
from .errors import error_for_response, translate_transport_errors, unwrap
from .models import (
    GenerationExtra,
    GenerationResult,
    ImageExtension,
    Img2ImgRequest,
    ModelPage,
    Page,
    PrivateModel,
    TaskCreated,
    TaskPage,
    TrainingKind,
    TrainingRequest,
    TrainingStatus,
    TrainingTask,
    Txt2ImgRequest,
    UploadTicket,
)
from .retry import RetryPolicy, backoff_delay, retry_after_of, should_retry

log = structlog.get_logger(__name__)

CHUNK_SIZE = 256 * 1024
#: How many fresh upload URLs one image may use before its upload fails.
MAX_URL_RENEWALS = 3


T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=Page)


@dataclass(frozen=True)
class Download:
    """What a streamed download wrote."""

    path: Path
    size: int
    sha256: str


class ApiClient:
    """Typed calls of the hosted API. Use as ``async with``; not reusable once closed."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._clock = clock or SystemClock()
        self._rand = rand
        self._policy = RetryPolicy(
            max_attempts=settings.retry_max_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
        )

    async def __aenter__(self) -> Self:
        if self._closed:
            raise RuntimeError("an ApiClient cannot be reopened once closed; make a new one")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._settings.client_timeout(),
                connector=aiohttp.TCPConnector(limit=self._settings.max_connections),
                headers={"User-Agent": self._settings.user_agent},
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()

    @property
    def retry_policy(self) -> RetryPolicy:
        """The policy built from the settings; callers that retry on their own use it too."""
        return self._policy

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._closed:
            raise RuntimeError("use the ApiClient inside `async with`")
        return self._session

    # --- plumbing -------------------------------------------------------------------------

    def _api_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self._settings.user_agent}
        if self._settings.api_key is not None:
            headers["Authorization"] = f"Bearer {self._settings.api_key.get_secret_value()}"
        return headers

    def _without_key(self, body: bytes) -> bytes:
        """An error body with our key blanked out: some services and proxies quote the
        request's Authorization header back, and error messages end up in the state store,
        the summary and the logs."""
        key = self._settings.api_key.get_secret_value() if self._settings.api_key else ""
        return body.replace(key.encode(), b"***") if key else body

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except Exception as exc:
                if not should_retry(exc, attempt, self._policy):
                    raise
                delay = backoff_delay(
                    attempt, self._policy, retry_after=retry_after_of(exc), rand=self._rand
                )
                log.info(
                    "api.retry", call=what, attempt=attempt, delay=round(delay, 2), error=str(exc)
                )
                await self._clock.sleep(delay)

    async def _send(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> Any:
        with translate_transport_errors(path):
            async with self.session.request(
                method, self._base_url + path, params=params, json=body, headers=self._api_headers()
            ) as response:
                raw = await response.read()
                if response.status != 200:
                    raise error_for_response(
                        response.status, self._without_key(raw), response.headers, path,
                        now=self._clock.now(),
                    )
        try:
            return unwrap(json.loads(raw))
        except ValueError as exc:
            raise TransientApiError(200, "BAD_RESPONSE", "answer is not JSON", path) from exc

    async def _call(
        self,
        model: type[M],
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        retry: bool = True,
    ) -> M:
        async def once() -> Any:
            return await self._send(method, path, params=params, body=body)

        data = await (self._retrying(once, f"{method} {path}") if retry else once())
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
            raise PermanentApiError(
                200, "UNEXPECTED_RESPONSE", f"unexpected answer shape ({fields})", path
            ) from exc

    # --- training images ------------------------------------------------------------------

    async def request_upload_url(self, extension: ImageExtension) -> UploadTicket:
        """Ask for a presigned URL for one training image (valid for minutes: use it now)."""
        return await self._call(
            UploadTicket, "POST", "/v3/assets/training_dataset", body={"file_extension": extension}
        )

    async def put_file(self, url: str, path: Path, content_type: str) -> int:
        """PUT the file's exact bytes, streamed from disk, to a presigned URL (no auth)."""
        size = (await aiofiles.os.stat(path)).st_size
        url_path = urlsplit(url).path

        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        async with open_reader(path) as handle:

            async def chunks() -> AsyncGenerator[bytes, None]:
                while chunk := await handle.read(CHUNK_SIZE):
                    yield chunk

            body = chunks()
            try:
                with translate_transport_errors(url_path):
                    async with self.session.put(url, data=body, headers=headers) as response:
                        raw = await response.read()
                        if response.status not in (200, 204):
                            raise error_for_response(
                                response.status, raw, response.headers, url_path,
                                now=self._clock.now(), presigned=True,
                            )
            finally:
                await body.aclose()
        return size

    async def upload_training_image(self, path: Path, extension: ImageExtension) -> str:
        """Upload one image and return its ``assets_id``.

        The URL is requested right before the PUT; an expired URL is replaced by a new one
        (at most ``MAX_URL_RENEWALS`` times).
        """
        for renewal in range(1, MAX_URL_RENEWALS + 1):
            ticket = await self.request_upload_url(extension)

            async def put(url: str = ticket.upload_url) -> int:
                return await self.put_file(url, path, CONTENT_TYPES[extension])

            try:
                await self._retrying(put, "PUT upload")
                return ticket.assets_id
            except UrlExpired:
                if renewal == MAX_URL_RENEWALS:
                    raise
                log.info("api.upload_url_expired", file=path.name, renewal=renewal)
        raise AssertionError("unreachable")

    # --- training -------------------------------------------------------------------------

    async def create_training(self, kind: TrainingKind, request: TrainingRequest) -> str:
        """Start a paid training; sent once, never retried here. Returns its task id."""
        created = await self._call(
            TaskCreated, "POST", f"/v3/training/{kind}", body=request.to_json(), retry=False
        )
        return created.task_id

    async def training_status(self, kind: TrainingKind, task_id: str) -> TrainingStatus:
        return await self._call(
            TrainingStatus, "GET", f"/v3/training/{kind}", params={"task_id": task_id}
        )

    async def iter_training_tasks(
        self, *, page_size: int = MAX_TASK_PAGE, task_type: TrainingKind | None = None
    ) -> AsyncIterator[TrainingTask]:
        """Every training task of the account, following the cursor through every page."""
        params = {"pagination.limit": str(page_size)}
        if task_type:
            params["task_type"] = task_type
        async for page in self._pages(TaskPage, "/v3/training", params):
            for task in page.tasks:
                yield task

    async def iter_trained_models(
        self, *, page_size: int = MAX_TASK_PAGE, query: str | None = None
    ) -> AsyncIterator[PrivateModel]:
        """Every trained LoRA in the private model list, every page."""
        params = {
            "filter.visibility": "private",
            "filter.source": "training",
            "filter.types": "lora",
            "pagination.limit": str(page_size),
        }
        if query:
            params["filter.query"] = query
        async for page in self._pages(ModelPage, "/v3/model", params):
            for model in page.models:
                yield model

    async def _pages(
        self, model: type[P], path: str, params: dict[str, str]
    ) -> AsyncIterator[P]:
        cursor, seen = "", set()
        while True:
            query = {**params, "pagination.cursor": cursor}
            page = await self._call(model, "GET", path, params=query)
            yield page
            cursor = page.pagination.next_cursor
            if not cursor or cursor in seen:
                return
            seen.add(cursor)

    async def download_model(self, model: PrivateModel, dest: Path) -> Download:
        """Download a trained LoRA file and check it against its ``hash_sha256`` prefix."""
        if not model.download_url:
            raise PermanentApiError(
                200, "NO_DOWNLOAD_URL", f"model {model.id} has no download_url", "/v3/model"
            )
        return await self.download(model.download_url, dest, sha256_prefix=model.hash_sha256)

    # --- generation -----------------------------------------------------------------------

    async def txt2img(self, request: Txt2ImgRequest, extra: GenerationExtra | None = None) -> str:
        """Start a txt2img task; sent once, never retried here. Returns its task id."""
        return await self._generate("/v3/async/txt2img", request, extra)

    async def img2img(self, request: Img2ImgRequest, extra: GenerationExtra | None = None) -> str:
        """Start an img2img task; sent once, never retried here. Returns its task id."""
        return await self._generate("/v3/async/img2img", request, extra)

    async def _generate(
        self, path: str, request: Txt2ImgRequest, extra: GenerationExtra | None
    ) -> str:
        body = {
            "extra": (extra or GenerationExtra()).model_dump(exclude_none=True),
            "request": request.model_dump(exclude_none=True),
        }
        created = await self._call(TaskCreated, "POST", path, body=body, retry=False)
        return created.task_id

    async def task_result(self, task_id: str) -> GenerationResult:
        return await self._call(
            GenerationResult, "GET", "/v3/async/task-result", params={"task_id": task_id}
        )

    # --- downloads ------------------------------------------------------------------------

    async def download(self, url: str, dest: Path, *, sha256_prefix: str = "") -> Download:
        """Stream a presigned URL into ``dest`` atomically (temp file, then rename)."""

        async def once() -> Download:
            return await self._download_once(url, dest, sha256_prefix)

        return await self._retrying(once, "GET download")

    async def _download_once(self, url: str, dest: Path, sha256_prefix: str) -> Download:
        url_path = urlsplit(url).path
        temp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
        digest, size = hashlib.sha256(), 0
        try:
            with translate_transport_errors(url_path):
                async with self.session.get(url) as response:
                    if response.status != 200:
                        raise error_for_response(
                            response.status, await response.read(), response.headers, url_path,
                            now=self._clock.now(), presigned=True,
                        )
                    async with open_writer(temp) as handle:
                        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                            digest.update(chunk)
                            size += len(chunk)
                            await handle.write(chunk)
            sha = digest.hexdigest()
            if sha256_prefix and not sha.upper().startswith(sha256_prefix.upper()):
                raise IntegrityError(
                    f"{dest.name}: sha256 {sha[:10].upper()} does not match {sha256_prefix}"
                )
            await aiofiles.os.replace(temp, dest)
        finally:
            if temp.exists():
                os.unlink(temp)
        return Download(dest, size, sha)
