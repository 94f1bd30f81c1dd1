"""Upload: every accepted image of a subject sent once, streamed from disk, under a bound.

An image's ``assets_id`` is cached by content hash, so a re-run, a second version of a
subject or another job with the same photo never sends the bytes again.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import cast

import structlog

from ...api.models import ImageExtension
from ...errors import DatasetError
from ...inputs.safe_files import RefusedFile, open_inbox_file
from ...store.protocol import ImageRow, SubjectRow
from ...store.states import UPLOADED, UPLOADING, VALIDATED
from ..concurrency import run_all
from .context import StageContext

log = structlog.get_logger(__name__)

HASH_CHUNK = 256 * 1024


def file_sha256(path: Path) -> str:
    """The photo's hash, read the way intake read it: a FIFO swapped in meanwhile is refused,
    never waited on."""
    digest = hashlib.sha256()
    with open_inbox_file(path) as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
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


async def _upload_image(
    ctx: StageContext, subject: SubjectRow, image: ImageRow, limit: asyncio.Semaphore
) -> None:
    cached = ctx.store.cached_asset(image.sha256)
    if cached is not None:
        ctx.store.set_image_asset(subject.id, image.sha256, cached)
        return
    path = image.path
    async with limit:
        try:
            actual = await asyncio.to_thread(file_sha256, path)
        except OSError as exc:
            why = (exc.problem if isinstance(exc, RefusedFile)
                   else f"cannot be read ({exc.strerror})")
            raise DatasetError(
                f"{subject.name}/{image.name} {why}: it will be checked again on the next pass"
            ) from exc
        if actual != image.sha256:
            raise DatasetError(
                f"{subject.name}/{image.name} changed after it was validated: "
                "it will be checked again on the next pass"
            )
        assets_id = await ctx.api.upload_training_image(path, cast(ImageExtension, image.format))
    ctx.store.remember_asset(image.sha256, assets_id, now=ctx.clock.now())
    ctx.store.set_image_asset(subject.id, image.sha256, assets_id)
