"""The async client of the hosted training API.

    async with ApiClient(settings) as api:
        assets_id = await api.upload_training_image(Path("alice/1.png"), "png")
        task_id = await api.create_training("subject", request)
        status = await api.training_status("subject", task_id)

One ``aiohttp.ClientSession`` per client, owned by ``async with`` unless a session is
injected. Reads, the upload-URL call and presigned transfers are retried with backoff;
creating a training or a generation is sent exactly once (see :mod:`.retry`). Until the
service has once accepted the key, requests carrying it go one at a time, so a refused
key costs one request (see :mod:`.keycheck`). ``api.stats`` counts retries and
rate-limit waits (see :mod:`.stats`).

Nothing the service sends is trusted: every URL it hands out is checked (:mod:`.urls`),
every answer and transfer is bounded (:mod:`.bounds`), and every text that becomes an
error's message is scrubbed (:mod:`pipeline.redact`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, TypeVar

import aiofiles.os
import aiohttp
import structlog
from pydantic import BaseModel, ValidationError
from yarl import URL

from ..clock import Clock, SystemClock
from ..config import Settings
from ..errors import (
    BadResponse,
    IntegrityError,
    PermanentApiError,
    TooLarge,
    TransportError,
    UnsafeUrl,
    UrlExpired,
)
from ..files import open_writer, part_path
from ..inputs.safe_files import open_inbox_file
from ..redact import Scrubber
from .bounds import CHUNK_SIZE, Throughput, parse_json, read_capped, read_error_body
from .contract import CONTENT_TYPES, MAX_TASK_PAGE
from .errors import error_for_response, translate_transport_errors, unwrap
from .keycheck import KeyCheck
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
from .stats import ApiStats
from .urls import REDIRECT_STATUSES, UrlPolicy

log = structlog.get_logger(__name__)

#: How many first bytes of a download are kept for ``accept`` to judge.
HEAD_BYTES = 64
#: How many fresh upload URLs one image may use before its upload fails.
MAX_URL_RENEWALS = 3


T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=Page)


def is_safetensors(head: bytes) -> bool:
    """True when a file starts as a ``.safetensors`` does: an 8-byte little-endian header
    length, then the header's JSON object."""
    return len(head) >= 9 and 0 < int.from_bytes(head[:8], "little") < 1 << 27 and head[8] == 0x7B


@dataclass(frozen=True)
class Download:
    """What a streamed download wrote."""

    path: Path
    size: int
    sha256: str


@dataclass
class Reachability:
    """How the service answered the API requests of one client (not presigned transfers).

    A request is *answered* when the service sent anything but a server error (5xx) or a
    429; it is *unanswered* when it could not be connected to, timed out, or sent one of
    those. Every try counts, retries included.

    ``stats`` counts the client's retries and rate-limit waits (the metrics view reads them
    through the object the runner hands it at each round).
    """

    answered: int = 0
    unanswered: int = 0
    last_error: str | None = None
    stats: ApiStats = field(default_factory=ApiStats)

    @property
    def unreachable(self) -> bool:
        """True when requests were made and not one of them was answered."""
        return self.unanswered > 0 and self.answered == 0


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
        self._urls = UrlPolicy(self._base_url)
        #: Scrubs the key and URL queries from every text that becomes an error message.
        self.scrub = Scrubber.for_key(settings.api_key)
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
        #: How the service answered: the runner tells an unreachable service by it.
        self.reachability = Reachability()
        #: Until the service has once accepted the key, requests carrying it go one at a
        #: time, and once it refused the key none is sent (see :mod:`.keycheck`).
        self.key_check = KeyCheck()

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
    def stats(self) -> ApiStats:
        """Retries and rate-limit waits so far (the same object as ``reachability.stats``)."""
        return self.reachability.stats

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

    def _transfer_timeout(self, size: int = 0) -> aiohttp.ClientTimeout:
        """Presigned transfers: no overall limit on a large file, but a stall limit between
        reads, and (for a body we send) time for ``size`` bytes at the minimum rate."""
        settings = self._settings
        rate = settings.transfer_min_bytes_per_second
        total = settings.total_timeout + size / rate if size and rate else None
        return aiohttp.ClientTimeout(
            total=total, connect=settings.connect_timeout,
            sock_read=settings.transfer_stall_seconds,
        )

    @asynccontextmanager
    async def _exchange(
        self, method: str, url: URL, *, api: bool, what: str, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request, following at most ``max_redirects`` checked redirects (GET only).

        ``api`` requests carry the key and may only be redirected within the base URL's
        origin; presigned ones never carry it. Errors are the project's, scrubbed.
        """
        headers: dict[str, str] = kwargs.pop("headers", {})
        for _hop in range(self._settings.max_redirects + 1):
            sent = dict(headers)
            if api and self._urls.may_authorize(url):
                sent.update(self._api_headers())
            with self._tallied(api), translate_transport_errors(what, self.scrub):
                async with self.session.request(
                    method, url, headers=sent, allow_redirects=False, **kwargs
                ) as response:
                    if response.status == 429:
                        self.stats.rate_limited += 1
                    if api:
                        self._note_status(response.status, what)
                    if response.status not in REDIRECT_STATUSES:
                        yield response
                        return
                    if method != "GET":
                        raise UnsafeUrl(f"{method} {what} was redirected: not followed", what)
                    url = self._urls.redirect(
                        url, response.headers.get("Location"), api=api, what=what
                    )
                    kwargs.pop("params", None)  # the Location carries its own query
        raise UnsafeUrl(
            f"{what}: more than {self._settings.max_redirects} redirects (LORA_MAX_REDIRECTS)",
            what,
        )

    @contextmanager
    def _tallied(self, api: bool) -> Iterator[None]:
        """Count a request that never got an answer (refused, reset, timed out)."""
        try:
            yield
        except TransportError as exc:
            if api:
                self.reachability.unanswered += 1
                self.reachability.last_error = str(exc)
            raise

    def _note_status(self, status: int, what: str) -> None:
        if status >= 500 or status == 429:
            self.reachability.unanswered += 1
            self.reachability.last_error = f"HTTP {status} ({self.scrub(what)})"
        else:
            self.reachability.answered += 1

    def _error(
        self, response: aiohttp.ClientResponse, body: bytes, what: str, *, presigned: bool
    ) -> Exception:
        return error_for_response(
            response.status, body, response.headers, self.scrub(what), now=self._clock.now(),
            scrub=self.scrub, presigned=presigned,
        )

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """``call()``, tried again while its failure is transient. Each retry is logged at
        debug; a call that needed retries ends with one ``api.retried`` at info (how many
        tries, and whether it finally succeeded)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await call()
            except Exception as exc:
                if not should_retry(exc, attempt, self._policy):
                    if attempt > 1:
                        log.info("api.retried", call=what, attempts=attempt, outcome="failed",
                                 error=str(exc))
                    raise
                delay = backoff_delay(
                    attempt, self._policy, retry_after=retry_after_of(exc), rand=self._rand
                )
                log.debug(
                    "api.retry", call=what, attempt=attempt, delay=round(delay, 2), error=str(exc)
                )
                self.stats.retried(exc, delay)
                await self._clock.sleep(delay)
            else:
                if attempt > 1:
                    log.info("api.retried", call=what, attempts=attempt, outcome="succeeded")
                return result

    async def _send(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> Any:
        url = URL(self._base_url + path)
        async with self.key_check.admitted(), self._exchange(
            method, url, api=True, what=path, params=params, json=body
        ) as response:
            if response.status != 200:
                error = self._error(response, await read_error_body(response), path,
                                    presigned=False)
                self.key_check.answered(response.status, error)
                raise error
            self.key_check.answered(response.status)
            raw = await read_capped(response, self._settings.max_json_bytes, path,
                                    setting="max_json_bytes")
        return unwrap(parse_json(raw, path))

    async def _call(
        self,
        model: type[M],
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        retry: bool = True,
        max_items: tuple[str, int] | None = None,
    ) -> M:
        """``max_items`` (a list field, its bound) refuses a page with more entries than
        were asked for before any of them is turned into an object."""

        async def once() -> Any:
            return await self._send(method, path, params=params, body=body)

        data = await (self._retrying(once, f"{method} {path}") if retry else once())
        if max_items is not None and isinstance(data, dict):
            field, bound = max_items
            entries = data.get(field)
            if isinstance(entries, list) and len(entries) > bound:
                raise BadResponse(
                    f"a page of {len(entries)} {field}, more than the {bound} asked for", path
                )
        try:
            return model.model_validate(data)
        except (ValidationError, RecursionError) as exc:
            fields = (", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:5])
                      if isinstance(exc, ValidationError) else "nested too deeply")
            raise BadResponse(
                self.scrub(f"unexpected answer shape ({fields})"), path,
                reason="UNEXPECTED_RESPONSE",
            ) from exc

    # --- training images ------------------------------------------------------------------

    async def request_upload_url(self, extension: ImageExtension) -> UploadTicket:
        """Ask for a presigned URL for one training image (valid for minutes: use it now)."""
        return await self._call(
            UploadTicket, "POST", "/v3/assets/training_dataset", body={"file_extension": extension}
        )

    async def put_file(
        self, url: str, source: Path | BinaryIO | bytes, content_type: str
    ) -> int:
        """PUT a file's exact bytes, streamed, to a presigned URL (no auth); return the size.

        ``source`` is an open binary file, sent whole from its first byte (so a retry sends
        the same descriptor again, never whatever the name leads to by then), a path,
        opened for this request as :func:`~pipeline.inputs.safe_files.open_inbox_file` does,
        or bytes already in memory (a photo converted for the upload).
        """
        if isinstance(source, Path):
            with open_inbox_file(source) as handle:
                return await self.put_file(url, handle, content_type)
        target = self._urls.service_url(url, what="upload")
        if isinstance(source, bytes):
            size = len(source)
        else:
            source.seek(0)
            size = os.fstat(source.fileno()).st_size
        headers = {"Content-Type": content_type, "Content-Length": str(size)}

        async def chunks() -> AsyncGenerator[bytes, None]:
            if isinstance(source, bytes):
                for start in range(0, size, CHUNK_SIZE):
                    yield source[start : start + CHUNK_SIZE]
                return
            left = size  # exactly what Content-Length promised, however the file grows
            while left > 0 and (chunk := await asyncio.to_thread(
                source.read, min(CHUNK_SIZE, left)
            )):
                left -= len(chunk)
                yield chunk

        body = chunks()
        try:
            async with self._exchange(
                "PUT", target, api=False, what="upload", data=body, headers=headers,
                timeout=self._transfer_timeout(size),
            ) as response:
                if response.status not in (200, 204):
                    raise self._error(response, await read_error_body(response),
                                      target.path, presigned=True)
        finally:
            await body.aclose()
        return size

    async def upload_training_image(
        self, source: Path | BinaryIO | bytes, extension: ImageExtension
    ) -> str:
        """Upload one image (an open binary file, a path, or bytes) and return its
        ``assets_id``.

        The URL is requested right before the PUT; an expired URL is replaced by a new one
        (at most ``MAX_URL_RENEWALS`` times). Every attempt sends an open file from its start.
        """
        if isinstance(source, Path):
            with open_inbox_file(source) as handle:
                return await self.upload_training_image(handle, extension)
        for renewal in range(1, MAX_URL_RENEWALS + 1):
            ticket = await self.request_upload_url(extension)

            async def put(url: str = ticket.upload_url) -> int:
                return await self.put_file(url, source, CONTENT_TYPES[extension])

            try:
                await self._retrying(put, "PUT upload")
                return ticket.assets_id
            except UrlExpired:
                if renewal == MAX_URL_RENEWALS:
                    raise
                log.info("api.upload_url_expired", renewal=renewal)
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
    ) -> AsyncGenerator[TrainingTask, None]:
        """Every training task of the account, following the cursor through every page."""
        params = {"pagination.limit": str(page_size)}
        if task_type:
            params["task_type"] = task_type
        async for page in self._pages(TaskPage, "/v3/training", params, ("tasks", page_size)):
            for task in page.tasks:
                yield task

    async def iter_trained_models(
        self, *, page_size: int = MAX_TASK_PAGE, query: str | None = None
    ) -> AsyncGenerator[PrivateModel, None]:
        """Every trained LoRA in the private model list, every page."""
        params = {
            "filter.visibility": "private",
            "filter.source": "training",
            "filter.types": "lora",
            "pagination.limit": str(page_size),
        }
        if query:
            params["filter.query"] = query
        async for page in self._pages(ModelPage, "/v3/model", params, ("models", page_size)):
            for model in page.models:
                yield model

    async def _pages(
        self, model: type[P], path: str, params: dict[str, str], items: tuple[str, int]
    ) -> AsyncIterator[P]:
        cursor, seen = "", set()
        for _page in range(self._settings.max_pages):
            query = {**params, "pagination.cursor": cursor}
            page = await self._call(model, "GET", path, params=query, max_items=items)
            yield page
            cursor = page.pagination.next_cursor
            if not cursor or cursor in seen:
                return
            seen.add(cursor)
        raise TooLarge(
            f"the listing did not end after {self._settings.max_pages} pages (LORA_MAX_PAGES)",
            path,
        )

    async def download_model(self, model: PrivateModel, dest: Path) -> Download:
        """Download a trained LoRA file and check it against its ``hash_sha256`` prefix."""
        if not model.download_url:
            raise PermanentApiError(
                200, "NO_DOWNLOAD_URL", f"model {model.id} has no download_url", "/v3/model"
            )
        return await self.download(
            model.download_url, dest, sha256_prefix=model.hash_sha256,
            max_bytes=self._settings.max_lora_bytes, accept=is_safetensors, what="LoRA file",
        )

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

    async def download(
        self,
        url: str,
        dest: Path,
        *,
        sha256_prefix: str = "",
        max_bytes: int | None = None,
        accept: Callable[[bytes], bool] | None = None,
        what: str = "picture",
    ) -> Download:
        """Stream a presigned URL into ``dest`` atomically (temp file, then rename).

        At most ``max_bytes`` (default: ``max_picture_bytes``) are written; ``accept``, when
        given, judges the first bytes (is this a picture at all?) before ``dest`` appears.
        """
        target = self._urls.service_url(url, what=what)
        limit = self._settings.max_picture_bytes if max_bytes is None else max_bytes

        async def once() -> Download:
            return await self._download_once(target, dest, sha256_prefix, limit, accept, what)

        return await self._retrying(once, f"GET {what}")

    async def _download_once(
        self,
        url: URL,
        dest: Path,
        sha256_prefix: str,
        limit: int,
        accept: Callable[[bytes], bool] | None,
        what: str,
    ) -> Download:
        temp = part_path(dest)
        digest, size, head = hashlib.sha256(), 0, b""
        settings = self._settings
        pace = Throughput(
            self._clock.now, min_rate=settings.transfer_min_bytes_per_second,
            window=settings.transfer_stall_seconds, path=url.path,
        )
        too_large = TooLarge(f"the {what} is over {limit} bytes (LORA_MAX_"
                             f"{'LORA' if what == 'LoRA file' else 'PICTURE'}_BYTES)", url.path)
        try:
            async with self._exchange(
                "GET", url, api=False, what=what, timeout=self._transfer_timeout()
            ) as response:
                if response.status != 200:
                    raise self._error(response, await read_error_body(response), url.path,
                                      presigned=True)
                if response.content_length is not None and response.content_length > limit:
                    raise too_large
                with translate_transport_errors(url.path, self.scrub):
                    async with open_writer(temp) as handle:
                        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                            size += len(chunk)
                            if size > limit:
                                raise too_large
                            pace.add(len(chunk))
                            if len(head) < HEAD_BYTES:
                                head += chunk[: HEAD_BYTES - len(head)]
                            digest.update(chunk)
                            await handle.write(chunk)
                        await handle.flush()
                        await asyncio.to_thread(os.fsync, handle.fileno())  # then the rename
            if accept is not None and not accept(head):
                raise BadResponse(f"the {what} downloaded is not what was expected "
                                  "(its first bytes are of another kind of file)", url.path,
                                  reason="UNEXPECTED_CONTENT")
            sha = digest.hexdigest()
            if sha256_prefix and not sha.upper().startswith(sha256_prefix.upper()):
                raise IntegrityError(self.scrub(
                    f"{dest.name}: sha256 {sha[:10].upper()} does not match {sha256_prefix}"
                ))
            await aiofiles.os.replace(temp, dest)
        finally:
            if temp.exists():
                os.unlink(temp)
        return Download(dest, size, sha)
