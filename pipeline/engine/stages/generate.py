"""Generate: each prompt of a trained subject sent through txt2img with its LoRA, or through
img2img when it starts from an init image, under that endpoint's images-per-minute limit
(shared by the whole pass). An img2img request is the txt2img one (same LoRA, same fields)
plus the init image, base64, as it was kept in the state when the subject was taken in, and
its strength; the picture is loaded only once the limiter lets the request go, so prompts
waiting their turn hold no image.

Both endpoints follow the same money policy. The intent (``submitting``) is recorded before
each POST with its ledger row (``image_num`` pictures of that endpoint) in the same
transaction, where the job's spend ceiling is checked: a request that would pass it is not
sent and the prompt stays ``pending`` with the ceiling's message. The POST with the
recording of its answer lands even when the pass stops
(:class:`~pipeline.engine.concurrency.InFlight`). What an answer means for the money:

- certainly not created (a 429, a connection never made, a 500 saying the task was not
  created): back to ``pending``, sent again after a pause; a 429 costs no try;
- refused (another 4xx): ``failed`` with the service's reason;
- unknown (a timeout or a connection lost after sending, a 502/503/504, a 200 that does
  not parse, or a ``submitting`` found after a crash): a generation has no name to look it
  up by, so it is **sent again**, at most ``MAX_UNCERTAIN_RESENDS`` times: a duplicate
  costs one set of pictures, never a training. Each re-send is a ledger row of its own,
  marked as one, and the unanswered one still counts (both may be billed). One more
  unknown answer fails the prompt with a message; ``retry`` asks again.

``submissions`` counts the tasks the service gave an id for: a result lost after the task
finished (its URLs expired, the service forgot it) is generated again, at most
``MAX_SUBMISSIONS`` times in all.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

import structlog

from ...api.models import GenerationExtra, Img2ImgRequest, LoraRef, Txt2ImgRequest
from ...api.retry import backoff_delay, retry_after_of
from ...errors import ApiError, BadCredentials, BadResponse, RateLimited, TransportError
from ...jobfile.loading import RenderedPrompt
from ...store.ledger import CREATED, NOT_CREATED
from ...store.protocol import GenerationRow, InitImageUse, SubjectRow
from ...store.states import GEN_FAILED, GEN_PENDING, GEN_SUBMITTED, GEN_SUBMITTING
from ..ratelimit import Limiter
from .context import StageContext

log = structlog.get_logger(__name__)

#: Tries of a prompt whose creates certainly failed (429s not counted).
MAX_SUBMIT_TRIES = 5
#: How often one prompt may be generated again after its result was lost.
MAX_SUBMISSIONS = 3
#: How often a create whose answer was lost is sent again (each may be a duplicate).
MAX_UNCERTAIN_RESENDS = 3
#: 500 reasons of the contract that say the task was not created.
NOT_CREATED_REASONS = frozenset({"CREATE_TASK_FAILED", "BILLING_FAILED"})


def not_created(exc: ApiError) -> bool:
    """True when the answer proves the service created no task (so nothing was paid)."""
    if isinstance(exc, RateLimited):
        return True
    if isinstance(exc, TransportError):
        return not exc.sent
    return getattr(exc, "status", 0) == 500 and getattr(exc, "reason", "") in NOT_CREATED_REASONS


def uncertain(exc: ApiError) -> bool:
    """True when the service may or may not have created the task."""
    return not not_created(exc) and (exc.transient or isinstance(exc, BadResponse))


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


def init_uses(prompts: Iterable[RenderedPrompt]) -> dict[int, InitImageUse]:
    """The init image of each img2img prompt, by prompt index, as the store records it."""
    return {
        p.index: InitImageUse(p.init_image or "", p.init_sha256, p.strength)
        for p in prompts
        if p.init_sha256 is not None and p.strength is not None
    }


def _to_send(
    ctx: StageContext, generation: GenerationRow, request: Txt2ImgRequest
) -> Txt2ImgRequest | str:
    """The request to POST for ``generation``, or why nothing can be sent."""
    init = generation.init
    if init is not None:
        return with_init_image(ctx, request, init)
    if generation.endpoint == "img2img":  # never sent as a txt2img instead
        return ("its init image is recorded without a name or a strength (the state was "
                "changed by hand?): nothing was sent")
    return request


def with_init_image(
    ctx: StageContext, request: Txt2ImgRequest, init: InitImageUse
) -> Img2ImgRequest | str:
    """``request`` as an img2img request from the kept init image, or why it cannot be."""
    data = ctx.store.init_image(init.sha256)
    if data is None or hashlib.sha256(data).hexdigest() != init.sha256:
        return (f"its init image ({init.image}) is not in the job's state as it was taken in "
                "(the state was changed by hand?): nothing was sent; drop the subject's folder "
                "in again to take it in anew")
    return Img2ImgRequest(
        **request.model_dump(), image_base64=base64.b64encode(data).decode("ascii"),
        strength=init.strength,
    )


async def submit_generation(
    ctx: StageContext, subject: SubjectRow, generation: GenerationRow, limiter: Limiter
) -> None:
    """Take one generation from ``pending`` (or a leftover ``submitting``) to ``submitted``,
    ``failed``, or (when the pass stops first) leave it where it is."""
    if generation.state == GEN_PENDING and generation.submissions >= MAX_SUBMISSIONS:
        _fail(ctx, generation, f"its pictures were lost {MAX_SUBMISSIONS} times; giving up "
                               "on this prompt (`retry` asks again)")
        return
    if generation.state == GEN_SUBMITTING:
        if not _may_resend(ctx, subject, generation):
            return
    request, extra = build_request(ctx, subject, generation.prompt)
    tries = waits = 0
    while not ctx.stopping.is_set():
        await limiter.acquire(request.image_num)
        if ctx.stopping.is_set():
            return
        sent = _to_send(ctx, generation, request)
        if isinstance(sent, str):
            _fail(ctx, generation, sent)
            return
        generation = _intent(ctx, subject, generation, request.image_num)
        error = await ctx.inflight.land(_send(ctx, subject, generation, sent, extra))
        del sent  # an init image is not held while the retry waits
        generation = _row(ctx, generation)
        if error is None:
            return
        if isinstance(error, RateLimited):
            waits += 1  # certainly not created: waiting out the limit costs no try
        else:
            tries += 1
        if tries >= MAX_SUBMIT_TRIES and generation.state == GEN_PENDING:
            _fail(ctx, generation,
                  f"{generation.endpoint} kept failing ({error}); `retry` asks again")
            return
        delay = backoff_delay(tries + waits, ctx.api.retry_policy,
                              retry_after=retry_after_of(error))
        if isinstance(error, RateLimited):
            limiter.penalise(delay)
        log.info("generate.retry", subject=subject.name, prompt=generation.slug,
                 error=str(error), delay=round(delay, 2))
        await ctx.clock.sleep(delay)


def _intent(
    ctx: StageContext, subject: SubjectRow, generation: GenerationRow, images: int
) -> GenerationRow:
    """Record the intent to POST, with its ledger row (and the ceiling's check) in the same
    transaction: ``pending`` becomes ``submitting``; a ``submitting`` one is sent again
    after an unknown answer, which ``uncertain`` counts. Raises
    :class:`~pipeline.errors.SpendCeilingReached`, with nothing written, when the
    request would pass the job's ceiling."""
    again = generation.state == GEN_SUBMITTING
    charge = ctx.spend.images(subject, generation, images, resend=again)
    if again:
        ctx.store.update_generation(generation.id, now=ctx.clock.now(), charge=charge,
                                    uncertain=generation.uncertain + 1)
    else:
        ctx.store.transition_generation(generation.id, expected=GEN_PENDING,
                                        to=GEN_SUBMITTING, now=ctx.clock.now(), charge=charge)
    return _row(ctx, generation)


def _may_resend(ctx: StageContext, subject: SubjectRow, generation: GenerationRow) -> bool:
    """A ``submitting`` found at the start: its POST was cut by a crash or its answer lost.
    It is sent again (and counted in ``uncertain``) unless it was sent again enough."""
    if generation.uncertain >= MAX_UNCERTAIN_RESENDS:
        _fail(ctx, generation, "its create requests got no clear answer "
                               f"{generation.uncertain + 1} times; the service may have made "
                               "(and billed) the pictures: `retry` asks again")
        return False
    log.warning("generate.resend_unknown", subject=subject.name, prompt=generation.slug)
    return True


async def _send(
    ctx: StageContext, subject: SubjectRow, generation: GenerationRow,
    request: Txt2ImgRequest, extra: GenerationExtra,
) -> ApiError | None:
    """The paid POST and the recording of what it told; the error to wait on, if any."""
    endpoint = generation.endpoint
    try:
        if isinstance(request, Img2ImgRequest):
            task_id = await ctx.api.img2img(request, extra)
        else:
            task_id = await ctx.api.txt2img(request, extra)
    except BadCredentials:
        _settle(ctx, generation, NOT_CREATED)
        raise
    except ApiError as exc:
        now = ctx.clock.now()
        if not_created(exc):
            _settle(ctx, generation, NOT_CREATED)
            ctx.store.transition_generation(
                generation.id, expected=GEN_SUBMITTING, to=GEN_PENDING, now=now
            )
            return exc
        if not uncertain(exc):
            _settle(ctx, generation, NOT_CREATED)
            _fail(ctx, generation, f"{endpoint} refused: {exc}")
            return None
        if generation.uncertain >= MAX_UNCERTAIN_RESENDS:
            _fail(ctx, generation, f"{endpoint} gave no clear answer {generation.uncertain + 1} "
                                   f"times ({exc}); the service may have made (and billed) the "
                                   "pictures: `retry` asks again")
            return None
        log.warning("generate.create_uncertain", subject=subject.name, prompt=generation.slug,
                    error=str(exc))
        return exc  # sent again by the caller (:func:`_intent` counts it)
    _settle(ctx, generation, CREATED)
    ctx.store.transition_generation(
        generation.id, expected=GEN_SUBMITTING, to=GEN_SUBMITTED, now=ctx.clock.now(),
        task_id=task_id, submissions=generation.submissions + 1, error=None,
    )
    log.info("generate.submitted", subject=subject.name, prompt=generation.slug,
             endpoint=endpoint, task_id=task_id)
    return None


def _settle(ctx: StageContext, generation: GenerationRow, outcome: str) -> None:
    """What became of the generation's newest request in the ledger (an unanswered one
    before it stays open: it counts as spent)."""
    ctx.store.settle_charge(generation.subject_id, generation_id=generation.id,
                            outcome=outcome, now=ctx.clock.now())


def _row(ctx: StageContext, generation: GenerationRow) -> GenerationRow:
    return next(g for g in ctx.store.generations(generation.subject_id) if g.id == generation.id)


def _fail(ctx: StageContext, generation: GenerationRow, why: str) -> None:
    current = _row(ctx, generation)
    ctx.store.transition_generation(
        current.id, expected=current.state, to=GEN_FAILED, now=ctx.clock.now(), error=why
    )
