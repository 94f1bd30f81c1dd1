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
from .context import StageContext

log = structlog.get_logger(__name__)

HASH_CHUNK = 256 * 1024


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
    await run_all(_upload_image(ctx, subject, image, limit) for image in missing)
    log.info("upload.done", subject=subject.name, images=subject.image_count)
    return ctx.store.transition(subject.id, expected=UPLOADING, to=UPLOADED, now=ctx.clock.now())


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
    ctx: StageContext, subject: SubjectRow, image: ImageRow, limit: asyncio.Semaphore
) -> None:
    changes = image.change_list
    key = asset_key(image.sha256, changes)
    cached = ctx.store.cached_asset(key)
    if cached is not None:
        ctx.store.set_image_asset(subject.id, image.sha256, cached)
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
                assets_id = await ctx.api.upload_training_image(
                    handle, cast(ImageExtension, image.format)
                )
            else:  # from memory: nothing is written anywhere but the inbox, outbox and state
                assets_id = await ctx.api.upload_training_image(photo.data, photo.format)
    ctx.store.remember_asset(key, assets_id, now=ctx.clock.now())
    ctx.store.set_image_asset(subject.id, image.sha256, assets_id)
