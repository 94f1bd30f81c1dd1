"""Generate: each prompt of a trained subject sent through txt2img with its LoRA, under the
account's shared images-per-minute limit.

The intent (``submitting``) is recorded before each POST and the task id right after, so a
crash re-submits at most the one request that was in flight. A 429 means the task was not
created, so it is sent again after a pause, as often as it takes; other transient failures
are sent again a bounded number of times (a duplicate costs one picture, never a training).
``submissions`` counts the tasks the service gave an id for, so only a lost result (never
a crash or an interrupted pass) brings a prompt closer to ``MAX_SUBMISSIONS``.
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from ...api.models import GenerationExtra, LoraRef, Txt2ImgRequest
from ...api.retry import backoff_delay, retry_after_of
from ...errors import ApiError, BadCredentials, RateLimited
from ...store.protocol import GenerationRow, SubjectRow
from ...store.states import GEN_FAILED, GEN_PENDING, GEN_SUBMITTED, GEN_SUBMITTING
from ..ratelimit import ImageRateLimiter
from .context import StageContext

log = structlog.get_logger(__name__)

MAX_SUBMIT_TRIES = 5
#: Backoff stops growing after this many pauses (it is capped at retry_max_delay anyway).
MAX_BACKOFF_STEP = 10
#: How often one prompt may be generated again after its result was lost.
MAX_SUBMISSIONS = 3


def build_request(
    ctx: StageContext, subject: SubjectRow, prompt: str
) -> tuple[Txt2ImgRequest, GenerationExtra]:
    generation = ctx.subject_settings(subject).generation
    assert subject.model_name is not None
    request = Txt2ImgRequest(
        model_name=generation.model_name,
        prompt=prompt,
        negative_prompt=generation.negative_prompt,
        width=generation.width,
        height=generation.height,
        image_num=generation.image_num,
        steps=generation.steps,
        guidance_scale=generation.guidance_scale,
        sampler_name=generation.sampler_name,
        seed=generation.seed,
        clip_skip=generation.clip_skip,
        loras=[LoraRef(model_name=subject.model_name, strength=generation.lora_strength)],
    )
    return request, GenerationExtra(response_image_type=generation.response_image_type)


async def submit_generation(
    ctx: StageContext, subject: SubjectRow, generation: GenerationRow, limiter: ImageRateLimiter
) -> None:
    """Take one generation from ``pending`` (or a leftover ``submitting``) to ``submitted``."""
    if generation.submissions >= MAX_SUBMISSIONS:
        ctx.store.transition_generation(
            generation.id, expected=generation.state, to=GEN_FAILED, now=ctx.clock.now(),
            error=f"its pictures were lost {MAX_SUBMISSIONS} times; giving up on this prompt",
        )
        return
    request, extra = build_request(ctx, subject, generation.prompt)
    policy = ctx.api.retry_policy
    tries = waits = 0
    while True:
        await limiter.acquire(request.image_num)
        if generation.state == GEN_PENDING:
            ctx.store.transition_generation(
                generation.id, expected=GEN_PENDING, to=GEN_SUBMITTING, now=ctx.clock.now()
            )
            generation = replace(generation, state=GEN_SUBMITTING)
        try:
            task_id = await ctx.api.txt2img(request, extra)
        except BadCredentials:
            raise
        except ApiError as exc:
            if isinstance(exc, RateLimited):
                waits += 1  # certainly not created: waiting out the limit costs no try
            else:
                tries += 1
            if not exc.transient or tries == MAX_SUBMIT_TRIES:
                ctx.store.transition_generation(
                    generation.id, expected=GEN_SUBMITTING, to=GEN_FAILED, now=ctx.clock.now(),
                    error=f"txt2img refused: {exc}",
                )
                return
            step = min(tries + waits, MAX_BACKOFF_STEP)
            delay = backoff_delay(step, policy, retry_after=retry_after_of(exc))
            if isinstance(exc, RateLimited):
                limiter.penalise(delay)
            log.info("generate.retry", subject=subject.name, prompt=generation.slug,
                     error=str(exc), delay=round(delay, 2))
            await ctx.clock.sleep(delay)
            continue
        ctx.store.transition_generation(
            generation.id, expected=GEN_SUBMITTING, to=GEN_SUBMITTED, now=ctx.clock.now(),
            task_id=task_id,
            submissions=generation.submissions + 1, error=None,
        )
        log.info("generate.submitted", subject=subject.name, prompt=generation.slug,
                 task_id=task_id)
        return
