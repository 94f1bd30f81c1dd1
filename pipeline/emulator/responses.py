"""JSON bodies of the API's answers (contract §4, §5, §5a, §7), built from the state.

Presigned URLs in them point back at the emulator itself, under the base URL the client
used (``http://127.0.0.1:<port>``), so they work on any port and through any host name.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .core import Emulator
from .store import Generation, GenerationView, Training, generation_times

JsonObject = dict[str, Any]


def base_url(request: web.Request) -> str:
    """``scheme://host[:port]`` as the client addressed this server."""
    return f"{request.scheme}://{request.host}"


def training_models(training: Training, model_status: str | None) -> list[JsonObject]:
    """``models[]`` of a training: empty until SUCCESS."""
    if model_status is None:
        return []
    return [{"model_name": training.model_name, "model_status": model_status}]


def training_status_body(emulator: Emulator, training: Training) -> JsonObject:
    """``GET /v3/training/{subject,style}``. FAILED/CANCELED add a ``reason`` field."""
    view = emulator.training_view(training)
    body: JsonObject = {
        "task_id": training.task_id,
        "task_status": view.status,
        "model_type": "lora",
        "models": training_models(training, view.model_status),
        "extra": {"eta_relative": view.eta_relative, "progress_percent": view.progress_percent},
    }
    if view.reason:
        body["reason"] = view.reason
    return body


def task_item(emulator: Emulator, training: Training) -> JsonObject:
    """One item of ``GET /v3/training``. FAILED/CANCELED add a ``reason`` field."""
    view = emulator.training_view(training)
    item: JsonObject = {
        "task_name": training.spec.name,
        "task_id": training.task_id,
        "task_type": training.spec.kind,
        "task_status": view.status,
        "created_at": int(training.created_at),
        "models": training_models(training, view.model_status),
    }
    if view.reason:
        item["reason"] = view.reason
    return item


def model_item(emulator: Emulator, training: Training, base: str) -> JsonObject:
    """One item of ``GET /v3/model`` for a SERVING trained LoRA."""
    now, ttl = emulator.clock.now(), emulator.config.download_url_ttl
    name = training.model_name
    sign = emulator.signer.sign
    return {
        "id": training.model_id,
        "name": training.spec.name,
        "hash_sha256": emulator.model_hash(training),
        "sd_name": name,
        "type": {"name": "lora", "display_name": "LoRA"},
        "categories": [],
        "status": 1,
        "download_url": sign(base, "GET", f"/_s3/models/{name}", now, ttl),
        "download_url_ttl": ttl,
        "tags": [],
        "cover_url": sign(base, "GET", f"/_s3/covers/{training.task_id}.png", now, ttl),
        "source": "training",
        "base_model": "SDXL" if training.is_sdxl else "SD 1.5",
        "base_model_type": "Standard",
        "sd_name_in_api": name,
        "is_sdxl": training.is_sdxl,
    }


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


def task_result_body(
    emulator: Emulator, generation: Generation, view: GenerationView, base: str
) -> JsonObject:
    """``GET /v3/async/task-result`` (also the webhook ``payload``)."""
    now = emulator.clock.now()
    start, end = generation_times(generation, emulator.config)
    spec = generation.spec
    images: list[JsonObject] = []
    if view.status == "TASK_STATUS_SUCCEED":
        ttl = emulator.config.image_url_ttl
        for index in range(spec.image_num):
            path = f"/_s3/images/{generation.task_id}/{index}.{spec.image_type}"
            images.append(
                {
                    "image_url": emulator.signer.sign(base, "GET", path, now, ttl),
                    "image_url_ttl": str(ttl),
                    "image_type": spec.image_type,
                    "nsfw_detection_result": None,
                }
            )
    debug_info = {
        "request_info": f"emulator {spec.kind} {spec.model_name}",
        "submit_time_ms": _ms(generation.created_at),
        "execute_time_ms": _ms(start) if now >= start else "0",
        "complete_time_ms": _ms(end) if view.terminal else "0",
    }
    return {
        "extra": {"seed": str(generation.seed), "debug_info": debug_info},
        "task": {
            "task_id": generation.task_id,
            "task_type": generation.task_type,
            "status": view.status,
            "reason": view.reason,
            "eta": view.eta,
            "progress_percent": view.progress_percent,
        },
        "images": images,
        "videos": [],
        "audios": [],
    }
