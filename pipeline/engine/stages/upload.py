"""Upload: every accepted image of a subject sent once, streamed from disk, under a bound.

An image's ``assets_id`` is cached by content hash, so a re-run, a second version of a
subject or another job with the same photo never sends the bytes again.

A photo the gate found needs no change is sent exactly as it is on disk. One that needs one
(turned upright, converted from HEIC, its EXIF and GPS removed: the ``changes`` intake
recorded) is sent as the bytes :func:`~pipeline.inputs.photo_formats.upload_bytes` derives
from the checked file, cached under its hash and the changes (:func:`asset_key`).

A photo is opened once, from the inbox down with no link followed on the way
(:func:`~pipeline.inputs.safe_files.open_beneath`); its hash is checked on that descriptor
and the same descriptor is sent, on every attempt. A subject folder swapped for a link
after intake, or between the check and the send, can never make another file go out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import BinaryIO, cast

import structlog

from ...api.models import ImageExtension
from ...errors import DatasetError
from ...inputs.dataset import MAX_PHOTO_BYTES
from ...inputs.photo_formats import UploadPhoto, upload_bytes
from ...inputs.safe_files import RefusedFile, open_beneath, open_inbox_file, size_text
from ...store.protocol import ImageRow, SubjectRow
from ...store.states import UPLOADED, UPLOADING, VALIDATED
from ..concurrency import run_all
from ..live import UploadProgress
from .context import StageContext

log = structlog.get_logger(__name__)

HASH_CHUNK = 256 * 1024
#: At most one ``upload.progress`` line per subject in this many seconds: a slow upload is
#: seen going on in a log, a fast one says only ``upload.done``.
PROGRESS_LOG_SECONDS = 10.0


def file_sha256(path: Path) -> str:
    """The photo's hash, read the way intake read it: a FIFO swapped in meanwhile is refused,
    never waited on."""
    with open_inbox_file(path) as handle:
        return opened_sha256(handle, path)


def opened_sha256(handle: BinaryIO, path: Path) -> str:
    """The hash of an open photo from its first byte; one over the photo cap
    (:data:`~pipeline.inputs.dataset.MAX_PHOTO_BYTES`) is refused from its size, unread."""
    size = os.fstat(handle.fileno()).st_size
    if size > MAX_PHOTO_BYTES:
        raise RefusedFile(path, f"is larger than {size_text(MAX_PHOTO_BYTES)}")
    handle.seek(0)
    digest = hashlib.sha256()
    left = size  # a file grown since the look above is not read further: its hash differs
    while left > 0 and (chunk := handle.read(min(HASH_CHUNK, left))):
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


async def upload_subject(
    ctx: StageContext, subject: SubjectRow, limit: asyncio.Semaphore
) -> SubjectRow:
    """Give every image of ``subject`` an assets_id; the subject ends ``uploaded``."""
    if subject.state == VALIDATED:
        subject = ctx.store.transition(
            subject.id, expected=VALIDATED, to=UPLOADING, now=ctx.clock.now()
        )
    missing = [image for image in ctx.store.images(subject.id) if image.assets_id is None]
    sizes = await asyncio.to_thread(_sizes_on_disk, missing)
    now = ctx.clock.now()
    progress = UploadProgress(
        photos_done=subject.image_count - len(missing), photos_total=subject.image_count,
        bytes_total=sum(sizes.values()), started=now, updated=now,
    )
    meter = ctx.meter
    if meter is not None:
        meter.track_upload(subject.name, subject.version, progress)
    told = _ProgressLog(subject, progress, now)
    try:
        await run_all(_upload_image(ctx, subject, image, limit, sizes.get(image.sha256, 0),
                                    progress, told) for image in missing)
    finally:
        if meter is not None:
            meter.upload_finished(subject.name, subject.version)
    log.info("upload.done", subject=subject.name, images=subject.image_count,
             bytes=progress.bytes_done, duration=round(ctx.clock.now() - progress.started, 3))
    return ctx.store.transition(subject.id, expected=UPLOADING, to=UPLOADED, now=ctx.clock.now())


def _sizes_on_disk(images: list[ImageRow]) -> dict[str, int]:
    """Each photo's size on disk, by hash: what its upload is counted as until it is sent
    (0 when it cannot be looked at now; its upload says why)."""
    sizes = {}
    for image in images:
        try:
            sizes[image.sha256] = os.lstat(image.path).st_size
        except OSError:
            sizes[image.sha256] = 0
    return sizes


class _ProgressLog:
    """``upload.progress`` for a subject: after a photo is sent, once ``PROGRESS_LOG_SECONDS``
    have passed since the upload began or since the last line, never for the last photo
    (``upload.done`` says that)."""

    def __init__(self, subject: SubjectRow, progress: UploadProgress, now: float) -> None:
        self._subject = subject
        self._progress = progress
        self._last = now

    def photo_sent(self, now: float) -> None:
        progress = self._progress
        if now - self._last < PROGRESS_LOG_SECONDS or progress.photos_done >= progress.photos_total:
            return
        self._last = now
        rate = progress.rate
        log.info("upload.progress", subject=self._subject.name, version=self._subject.version,
                 photos_done=progress.photos_done, photos_total=progress.photos_total,
                 bytes_done=progress.bytes_done, bytes_total=progress.bytes_total,
                 rate=None if rate is None else round(rate))


def _unreadable(subject: SubjectRow, image: ImageRow, exc: OSError) -> DatasetError:
    why = exc.problem if isinstance(exc, RefusedFile) else f"cannot be read ({exc.strerror})"
    return DatasetError(
        f"{subject.name}/{image.name} {why}: it will be checked again on the next pass"
    )


def asset_key(sha256: str, changes: list[str]) -> str:
    """The asset cache's key for a photo sent with ``changes``: its own hash when it is sent
    as it is, else a hash of both (the same file sent converted is another asset)."""
    if not changes:
        return sha256
    return hashlib.sha256(json.dumps([sha256, changes]).encode()).hexdigest()


def derived_upload(handle: BinaryIO, image: ImageRow, keep_metadata: bool) -> UploadPhoto:
    """The bytes to send for a photo with changes, made from the checked descriptor.
    Raises :class:`DatasetError` when it changed since it was validated, or when the bytes
    made are not of the format intake recorded (the service is told that one)."""
    size = os.fstat(handle.fileno()).st_size
    if size > MAX_PHOTO_BYTES:
        raise RefusedFile(image.path, f"is larger than {size_text(MAX_PHOTO_BYTES)}")
    handle.seek(0)
    data = handle.read(size)
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise _changed(image)
    photo = upload_bytes(data, keep_metadata=keep_metadata)
    if photo.format != image.format:
        raise DatasetError(
            f"{image.name} was recorded as a {image.format} but converts to a "
            f"{photo.format}: it will be checked again on the next pass"
        )
    return photo


def _changed(image: ImageRow) -> DatasetError:
    return DatasetError(
        f"{image.name} changed after it was validated: it will be checked again on the next "
        "pass"
    )


async def _upload_image(
    ctx: StageContext, subject: SubjectRow, image: ImageRow, limit: asyncio.Semaphore,
    estimate: int, progress: UploadProgress, told: _ProgressLog,
) -> None:
    changes = image.change_list
    key = asset_key(image.sha256, changes)
    cached = ctx.store.cached_asset(key)
    if cached is not None:
        ctx.store.set_image_asset(subject.id, image.sha256, cached)
        progress.cached(estimate)
        return
    keep_metadata = ctx.subject_settings(subject).photos.keep_metadata
    async with limit:
        try:
            # Opened here, not in a thread: a cancelled await would leak the descriptor.
            handle = open_beneath(ctx.job.job.inbox, image.path)
        except OSError as exc:
            raise _unreadable(subject, image, exc) from exc
        with handle:
            try:
                if changes:
                    photo = await asyncio.to_thread(derived_upload, handle, image, keep_metadata)
                else:
                    actual = await asyncio.to_thread(opened_sha256, handle, image.path)
                    if actual != image.sha256:
                        raise _changed(image)
            except OSError as exc:
                raise _unreadable(subject, image, exc) from exc
            except DatasetError as exc:
                raise DatasetError(f"{subject.name}/{exc}") from None
            except Exception as exc:  # Pillow's errors: the file is no longer what was checked
                raise DatasetError(
                    f"{subject.name}/{image.name} cannot be converted for the upload "
                    f"({exc or type(exc).__name__}): it will be checked again on the next pass"
                ) from exc
            if not changes:
                sent = os.fstat(handle.fileno()).st_size
                assets_id = await ctx.api.upload_training_image(
                    handle, cast(ImageExtension, image.format)
                )
            else:  # from memory: nothing is written anywhere but the inbox, outbox and state
                sent = len(photo.data)
                assets_id = await ctx.api.upload_training_image(photo.data, photo.format)
    ctx.store.remember_asset(key, assets_id, now=ctx.clock.now())
    ctx.store.set_image_asset(subject.id, image.sha256, assets_id)
    now = ctx.clock.now()
    progress.sent(sent, estimate, now)
    told.photo_sent(now)
