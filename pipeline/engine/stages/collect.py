"""Collect: poll a generation until it settles, then download every picture before its URL
expires, each written atomically with a JSON sidecar, under a name the pipeline makes (see
:mod:`pipeline.engine.outbox`). A picture already there is skipped only when its sidecar names the
same generation task, so a re-run never downloads twice and never keeps a stranger's file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from ...api.models import GenerationResult
from ...errors import (
    BadResponse,
    IntegrityError,
    NotFound,
    PermanentApiError,
    UnsafePath,
    UrlExpired,
)
from ...files import write_json_atomic
from ...inputs.image_formats import ACCEPTED_FORMATS, detect_format
from ...store.protocol import GenerationRow, SubjectRow
from ...store.states import GEN_DONE, GEN_FAILED, GEN_PENDING, GEN_SUBMITTED
from ..concurrency import run_all
from ..outbox import already_saved, picture_extension, sidecar_of
from .context import StageContext

log = structlog.get_logger(__name__)


def is_picture(head: bytes) -> bool:
    """True when a download's first bytes are a png, jpeg or webp picture."""
    return detect_format(head) in ACCEPTED_FORMATS


class Overdue(Exception):
    """A generation still not settled ``generation_deadline`` seconds after it was sent."""


async def await_result(ctx: StageContext, generation: GenerationRow) -> GenerationResult | None:
    """Poll task-result until it succeeds or fails; None when the service lost the task;
    :class:`Overdue` past the generation deadline (counted from when it was submitted)."""
    assert generation.task_id is not None
    deadline = generation.updated_at + ctx.settings.generation_deadline
    while True:
        try:
            result = await ctx.api.task_result(generation.task_id)
        except NotFound:
            return None
        if result.succeeded or result.failed:
            return result
        if ctx.clock.now() > deadline:
            raise Overdue(
                f"no result {ctx.settings.generation_deadline:.0f} s after it was sent (still "
                f"{result.task.status}); `retry` asks again"
            )
        await ctx.clock.sleep(ctx.settings.generation_poll_interval)


async def collect_generation(
    ctx: StageContext, subject: SubjectRow, generation: GenerationRow, limit: asyncio.Semaphore
) -> None:
    """Take one ``submitted`` generation to ``done`` (pictures on disk), ``failed``, or back
    to ``pending`` when its pictures can no longer be fetched."""
    try:
        result = await await_result(ctx, generation)
    except Overdue as exc:
        ctx.store.transition_generation(
            generation.id, expected=GEN_SUBMITTED, to=GEN_FAILED, now=ctx.clock.now(),
            error=str(exc),
        )
        return
    if result is None:
        _lost(ctx, generation, "the service no longer knows the task")
        return
    if result.failed:
        ctx.store.transition_generation(
            generation.id, expected=GEN_SUBMITTED, to=GEN_FAILED, now=ctx.clock.now(),
            error=f"generation failed on the service: {result.task.reason or 'no reason given'}",
        )
        return
    try:
        await _save_fresh_if_expired(ctx, subject, generation, result, limit)
    except UrlExpired:
        _lost(ctx, generation, "its picture URLs expired before they could be downloaded")
        return
    except (BadResponse, IntegrityError, PermanentApiError, UnsafePath) as exc:
        if isinstance(exc, BadResponse) and exc.transient:
            raise  # a slow or odd transfer: the next pass tries again
        ctx.store.transition_generation(
            generation.id, expected=GEN_SUBMITTED, to=GEN_FAILED, now=ctx.clock.now(),
            error=f"its pictures could not be saved: {exc}",
        )
        return
    ctx.store.transition_generation(
        generation.id, expected=GEN_SUBMITTED, to=GEN_DONE, now=ctx.clock.now(),
        seed=result.extra.seed,
        image_count=len(result.images), error=None,
    )


async def _save_fresh_if_expired(
    ctx: StageContext,
    subject: SubjectRow,
    generation: GenerationRow,
    result: GenerationResult,
    limit: asyncio.Semaphore,
) -> None:
    try:
        await _save_all(ctx, subject, generation, result, limit)
    except UrlExpired:
        # The URLs expired before we got there; a fresh result may carry fresh ones.
        fresh = await await_result(ctx, generation)
        if fresh is None or not fresh.succeeded:
            raise
        await _save_all(ctx, subject, generation, fresh, limit)


def _lost(ctx: StageContext, generation: GenerationRow, why: str) -> None:
    log.warning("collect.lost", generation=generation.slug, why=why)
    ctx.store.transition_generation(
        generation.id, expected=GEN_SUBMITTED, to=GEN_PENDING, now=ctx.clock.now(),
        task_id=None, error=why,
    )


async def _save_all(
    ctx: StageContext,
    subject: SubjectRow,
    generation: GenerationRow,
    result: GenerationResult,
    limit: asyncio.Semaphore,
) -> None:
    settings = ctx.subject_settings(subject).generation
    if len(result.images) > settings.image_num:
        raise BadResponse(
            f"the service returned {len(result.images)} pictures for image_num = "
            f"{settings.image_num}: none were downloaded", "/v3/async/task-result",
        )
    place = ctx.outbox(subject)
    await run_all(
        _save_one(ctx, subject, generation, result, number, place.path(
            generation.slug, place.picture_name(
                generation.slug, number,
                picture_extension(image.image_type, settings.response_image_type),
            ),
        ), limit)
        for number, image in enumerate(result.images, start=1)
    )


async def _save_one(
    ctx: StageContext,
    subject: SubjectRow,
    generation: GenerationRow,
    result: GenerationResult,
    number: int,
    dest: Path,
    limit: asyncio.Semaphore,
) -> None:
    if not already_saved(dest, "generation_task_id", generation.task_id):
        async with limit:
            download = await ctx.api.download(
                result.images[number - 1].image_url, dest, accept=is_picture
            )
        write_json_atomic(sidecar_of(dest), sidecar_data(ctx, subject, generation, result, dest))
        log.info("picture.saved", subject=subject.name, version=subject.version,
                 prompt=generation.slug, number=number, file=str(dest), bytes=download.size)
        ctx.counts["pictures_saved"] += 1
    ctx.store.record_output(generation.id, number, str(dest))


def sidecar_data(
    ctx: StageContext,
    subject: SubjectRow,
    generation: GenerationRow,
    result: GenerationResult,
    dest: Path,
) -> dict[str, Any]:
    """What a person (or a script) needs to know about one picture."""
    settings = ctx.subject_settings(subject).generation
    return {
        "file": dest.name,
        "job": ctx.job_name,
        "subject": subject.name,
        "subject_version": subject.version,
        "prompt": generation.prompt,
        "negative_prompt": settings.negative_prompt,
        "seed": result.extra.seed,
        "base_model": settings.model_name,
        "lora": {"model_name": subject.model_name, "strength": settings.lora_strength},
        "size": [settings.width, settings.height],
        "steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
        "sampler_name": settings.sampler_name,
        "training_task_id": subject.task_id,
        "generation_task_id": generation.task_id,
        "endpoint": generation.endpoint,
        "init_image": _init_image(generation),
    }


def _init_image(generation: GenerationRow) -> dict[str, Any] | None:
    """What an img2img picture started from: the init image's file name (its path is the
    operator's business), how much it was changed, and the sha256 of the bytes sent."""
    init = generation.init
    if init is None:
        return None
    return {"file": Path(init.image).name, "strength": init.strength, "sha256": init.sha256}
