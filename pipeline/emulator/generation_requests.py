"""Validation of ``POST /v3/async/txt2img`` and ``/v3/async/img2img`` bodies (contract §6).

LoRA family rule (a heuristic, as the service's checkpoint catalogue is not known here): a
checkpoint named in ``request.model_name`` is SDXL when its stem is one of the SDXL training
base models, or otherwise when its name contains ``xl`` in any case
(``epicrealismXL_v10_247189.safetensors``, ``sd_xl_base_1.0.safetensors``). A LoRA's family
is that of the base model it was trained on.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.api.contract import (
    BASE_MODELS,
    IMAGE_EXTENSIONS,
    MAX_EMBEDDINGS,
    MAX_IMAGE_NUM,
    MAX_LORAS,
    MAX_SIDE,
    MAX_TEXT_LENGTH,
    MIN_SIDE,
    SAMPLERS,
    SDXL_BASE_MODELS,
)

from .errors import ApiError, invalid
from .store import GenerationSpec, LoraUse, Training, TrainingView
from .validation import (
    JsonObject,
    get_bool,
    get_choice,
    get_int,
    get_list,
    get_number,
    get_object,
    get_str,
    require_int,
    require_number,
    require_str,
)

#: Finds a trained LoRA by file name: its training and its state now, or None.
LoraLookup = Callable[[str], tuple[Training, TrainingView] | None]

MAX_INIT_IMAGE_BYTES = 10 * 1024 * 1024


@dataclass
class ParsedGeneration:
    """A validated generation request; ``init_image`` still needs decoding (img2img)."""

    spec: GenerationSpec
    init_image: bytes | None


def is_sdxl_checkpoint(model_name: str) -> bool:
    """The family of a base checkpoint name (see the module docstring)."""
    stem = model_name.removesuffix(".safetensors").removesuffix(".ckpt")
    if stem in BASE_MODELS:
        return stem in SDXL_BASE_MODELS
    return "xl" in model_name.lower()


def parse_generation(kind: str, body: JsonObject, lookup: LoraLookup) -> ParsedGeneration:
    """A validated request, or a 400 naming the first bad field."""
    request = get_object(body, "request")
    if request is None:
        raise invalid("request is required")
    extra = get_object(body, "extra") or {}
    path = "request"
    model_name = require_str(request, "model_name", path)
    if lookup(model_name) is not None:
        raise invalid(
            f"{path}.model_name {model_name!r} is a LoRA: put the base checkpoint in "
            "request.model_name and the LoRA in request.loras[].model_name"
        )
    prompt = require_str(request, "prompt", path, max_len=MAX_TEXT_LENGTH)
    negative = get_str(request, "negative_prompt", path, max_len=MAX_TEXT_LENGTH)
    sides_required = kind == "txt2img"
    width = get_int(request, "width", path, required=sides_required, low=MIN_SIDE, high=MAX_SIDE)
    height = get_int(
        request, "height", path, required=sides_required, low=MIN_SIDE, high=MAX_SIDE
    )
    image_num = require_int(request, "image_num", path, low=1, high=MAX_IMAGE_NUM)
    steps = require_int(request, "steps", path, low=1, high=100)
    guidance = require_number(request, "guidance_scale", path, low=1, high=30)
    sampler = get_choice(request, "sampler_name", SAMPLERS, path, required=True)
    assert sampler is not None
    seed = get_int(request, "seed", path, low=-1)
    get_int(request, "clip_skip", path, low=1, high=12)
    get_str(request, "sd_vae", path, min_len=0)
    for key in ("restore_faces", "enable_transparent_background"):
        get_bool(request, key, path)
    for key in ("hires_fix", "refiner"):
        get_object(request, key, path)
    loras = _loras(request, model_name, lookup)
    _embeddings(request)
    init_image, strength = _img2img_fields(kind, request)
    image_type, webhook_url = _extra(extra)
    spec = GenerationSpec(
        kind=kind,
        model_name=model_name,
        prompt=prompt,
        negative_prompt=negative,
        width=width or 0,
        height=height or 0,
        image_num=image_num,
        steps=steps,
        guidance_scale=guidance,
        sampler_name=sampler,
        seed=-1 if seed is None else seed,
        loras=loras,
        image_type=image_type,
        strength=strength,
        webhook_url=webhook_url,
    )
    return ParsedGeneration(spec, init_image)


def _loras(request: JsonObject, model_name: str, lookup: LoraLookup) -> list[LoraUse]:
    items = get_list(request, "loras", "request") or []
    if len(items) > MAX_LORAS:
        raise invalid(f"request.loras holds at most {MAX_LORAS} items, got {len(items)}")
    sdxl = is_sdxl_checkpoint(model_name)
    uses: list[LoraUse] = []
    for index, item in enumerate(items):
        path = f"request.loras[{index}]"
        if not isinstance(item, dict):
            raise invalid(f"{path} must be an object")
        name = require_str(item, "model_name", path)
        strength = get_number(item, "strength", path, low=0, high=1)
        found = lookup(name)
        if found is None:
            raise invalid(f"{path}.model_name {name!r} is not a known model")
        training, view = found
        if not view.serving:
            state = view.status if view.model_status is None else view.model_status
            raise invalid(f"{path}.model_name {name!r} is not available yet ({state})")
        if training.is_sdxl != sdxl:
            family = "SDXL" if training.is_sdxl else "SD 1.5"
            raise invalid(
                f"{path}.model_name {name!r} is an {family} LoRA and cannot be used "
                f"with {model_name!r}"
            )
        uses.append(LoraUse(training.model_name, 1.0 if strength is None else strength,
                            training.task_id))
    return uses


def _embeddings(request: JsonObject) -> None:
    items = get_list(request, "embeddings", "request") or []
    if len(items) > MAX_EMBEDDINGS:
        raise invalid(
            f"request.embeddings holds at most {MAX_EMBEDDINGS} items, got {len(items)}"
        )
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise invalid(f"request.embeddings[{index}] must be an object")
        require_str(item, "model_name", f"request.embeddings[{index}]")


def _img2img_fields(kind: str, request: JsonObject) -> tuple[bytes | None, float | None]:
    if kind != "img2img":
        return None, None
    strength = get_number(request, "strength", "request", low=0, high=1)
    encoded = require_str(request, "image_base64", "request")
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    try:
        data = base64.b64decode(encoded, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise invalid("request.image_base64 is not valid base64") from exc
    if len(data) > MAX_INIT_IMAGE_BYTES:
        raise ApiError(
            400, "IMAGE_FILE_EXCEEDS_MAX_SIZE",
            f"request.image_base64 holds {len(data)} bytes; at most {MAX_INIT_IMAGE_BYTES}",
        )
    return data, 0.5 if strength is None else strength


def _extra(extra: JsonObject) -> tuple[str, str | None]:
    image_type = get_choice(extra, "response_image_type", IMAGE_EXTENSIONS, "extra") or "png"
    get_bool(extra, "enable_nsfw_detection", "extra")
    get_int(extra, "nsfw_detection_level", "extra", low=0, high=2)
    for key in ("custom_storage", "enterprise_plan"):
        get_object(extra, key, "extra")
    webhook = get_object(extra, "webhook", "extra")
    url = None
    if webhook is not None:
        url = get_str(webhook, "url", "extra.webhook")
        if url is not None and not url.startswith(("http://", "https://")):
            raise invalid(f"extra.webhook.url must be an http(s) URL, got {url!r}")
    return image_type, url
