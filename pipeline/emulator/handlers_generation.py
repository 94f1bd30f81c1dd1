"""Generation: txt2img/img2img creation (contract §6), task results (§7), image downloads.

Rate limits are per API key: ``txt2img_images_per_minute`` and ``img2img_images_per_minute``
images (``image_num`` counts) in a sliding 60 s window of the clock; over it, 429
``RATE_LIMIT_EXCEEDED``, with ``Retry-After`` only if ``rate_limit_retry_after`` is set.
Pictures are drawn when downloaded (see :mod:`.images`).
"""

from __future__ import annotations

import asyncio
import math

from aiohttp import web

from pipeline.api.contract import CONTENT_TYPES, MAX_SIDE, MIN_SIDE, TASK_SUCCEED

from .core import EMULATOR_KEY, Emulator
from .errors import ApiError, S3Error
from .generation_requests import parse_generation
from .handlers_training import required_task_id
from .images import (
    MAX_INIT_PIXELS,
    ImageRejected,
    LoraPicture,
    RenderRequest,
    inspect_image,
    render_generation,
)
from .middleware import ACCOUNT_KEY
from .responses import base_url, task_result_body
from .store import Generation, GenerationSpec
from .validation import read_json_object

THUMBNAILS_PER_LORA = 6


def _fit_side(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_SIDE / max(width, height))
    return (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))


async def _attach_init_image(spec: GenerationSpec, data: bytes) -> None:
    try:
        info = await asyncio.to_thread(inspect_image, data, MAX_INIT_PIXELS, backdrop=True)
    except ImageRejected as rejected:
        raise ApiError(
            400, rejected.reason, f"request.image_base64: {rejected.message}"
        ) from rejected
    spec.init_thumbnail = info.thumbnail
    spec.init_backdrop = info.backdrop
    if not spec.width or not spec.height:
        fitted = _fit_side(info.width, info.height)
        spec.width, spec.height = spec.width or fitted[0], spec.height or fitted[1]


def _rate_limit(request: web.Request, emulator: Emulator, spec: GenerationSpec) -> None:
    config = emulator.config
    limit = (
        config.txt2img_images_per_minute
        if spec.kind == "txt2img"
        else config.img2img_images_per_minute
    )
    wait = emulator.limiter.acquire(
        request[ACCOUNT_KEY], spec.kind, spec.image_num, limit, emulator.clock.now()
    )
    if wait > 0:
        emulator.counters.rate_limited += 1
        headers = {"Retry-After": str(math.ceil(wait))} if config.rate_limit_retry_after else None
        raise ApiError(
            429, "RATE_LIMIT_EXCEEDED",
            f"{spec.kind} is limited to {limit} images per minute", headers,
        )


async def _create(request: web.Request, kind: str) -> web.Response:
    emulator = request.app[EMULATOR_KEY]
    body = await read_json_object(request)
    parsed = parse_generation(kind, body, emulator.lookup_lora)
    spec = parsed.spec
    if parsed.init_image is not None:
        await _attach_init_image(spec, parsed.init_image)
    _rate_limit(request, emulator, spec)
    generation = emulator.create_generation(spec, base_url(request))
    return web.json_response({"task_id": generation.task_id})


async def create_txt2img(request: web.Request) -> web.Response:
    """``POST /v3/async/txt2img``."""
    return await _create(request, "txt2img")


async def create_img2img(request: web.Request) -> web.Response:
    """``POST /v3/async/img2img``."""
    return await _create(request, "img2img")


async def task_result(request: web.Request) -> web.Response:
    """``GET /v3/async/task-result?task_id=``."""
    emulator = request.app[EMULATOR_KEY]
    task_id = required_task_id(request)
    generation = emulator.generations.get(task_id)
    if generation is None:
        raise ApiError(404, "TASK_NOT_FOUND", f"task {task_id} not found")
    view = emulator.observe_generation(generation)
    if view.terminal:
        emulator.webhooks.trigger(generation)
    return web.json_response(task_result_body(emulator, generation, view, base_url(request)))


def _render_request(emulator: Emulator, generation: Generation, index: int) -> RenderRequest:
    spec = generation.spec
    loras = []
    for use in spec.loras:
        training = emulator.trainings.get(use.task_id)
        ids = training.spec.assets_ids[:THUMBNAILS_PER_LORA] if training else []
        thumbs = [emulator.assets[a].thumbnail for a in ids if a in emulator.assets]
        loras.append(LoraPicture(use.model_name, use.strength, thumbs))
    return RenderRequest(
        width=spec.width,
        height=spec.height,
        image_type=spec.image_type,
        task_type=generation.task_type,
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        model_name=spec.model_name,
        seed=generation.seed + index,
        index=index,
        count=spec.image_num,
        loras=loras,
        init_thumbnail=spec.init_thumbnail,
        init_backdrop=spec.init_backdrop,
        strength=0.5 if spec.strength is None else spec.strength,
    )


async def generated_image(request: web.Request) -> web.Response:
    """``GET /_s3/images/{task_id}/{index}.{ext}`` (presigned): one rendered picture."""
    emulator = request.app[EMULATOR_KEY]
    emulator.signer.verify("GET", request.path, request.query, emulator.clock.now())
    missing = S3Error(404, "NoSuchKey", "The specified key does not exist.")
    generation = emulator.generations.get(request.match_info["task_id"])
    index = int(request.match_info["index"])
    if generation is None or request.match_info["ext"] != generation.spec.image_type:
        raise missing
    if index >= generation.spec.image_num:
        raise missing
    if emulator.observe_generation(generation).status != TASK_SUCCEED:
        raise missing
    picture = _render_request(emulator, generation, index)
    data = await asyncio.to_thread(render_generation, picture)
    emulator.counters.images_downloaded += 1
    return web.Response(body=data, content_type=CONTENT_TYPES[generation.spec.image_type])

