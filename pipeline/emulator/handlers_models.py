"""Trained models: the private model list (contract §5a) and its presigned downloads.

Only SERVING trained LoRAs are listed. The list is emulated for
``filter.visibility=private`` (or absent), ``filter.source=training`` (or absent) and
``filter.types`` including ``lora`` (or absent); other filter values select nothing, as
the public catalogue is not emulated. ``filter.query`` matches sd_name, name and tags
(case-insensitive substring); ``filter.is_sdxl`` and ``filter.is_inpainting`` filter too.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .core import EMULATOR_KEY, Emulator
from .errors import S3Error, invalid
from .images import render_cover
from .pagination import opaque_cursor, page, parse_cursor, parse_limit
from .responses import base_url, model_item
from .store import Training

_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _flag(request: web.Request, key: str) -> bool | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise invalid(f"{key} must be true or false, got {raw!r}")


def _selected(request: web.Request) -> bool:
    """Whether the filters can select trained private LoRAs at all."""
    query = request.query
    visibility = query.get("filter.visibility") or "private"
    source = query.get("filter.source") or "training"
    types = [t.strip().lower() for t in (query.get("filter.types") or "lora").split(",")]
    return (
        visibility == "private"
        and source == "training"
        and "lora" in types
        and _flag(request, "filter.is_inpainting") is not True
    )


def _matches(training: Training, text: str, is_sdxl: bool | None) -> bool:
    if is_sdxl is not None and training.is_sdxl != is_sdxl:
        return False
    haystack = (training.model_name.lower(), training.spec.name.lower())
    return not text or any(text in field for field in haystack)


def _serving(emulator: Emulator) -> list[Training]:
    return [
        t for t in emulator.store.newest_trainings() if emulator.training_view(t).serving
    ]


async def list_models(request: web.Request) -> web.Response:
    """``GET /v3/model?filter.*=...&pagination.limit=&pagination.cursor=``, newest first."""
    emulator = request.app[EMULATOR_KEY]
    query = request.query
    limit = parse_limit(query.get("pagination.limit"), emulator.config.page_size_max)
    offset = parse_cursor(query.get("pagination.cursor"))
    is_sdxl = _flag(request, "filter.is_sdxl")
    text = (query.get("filter.query") or "").strip().lower()
    models: list[Training] = []
    if _selected(request):
        models = [t for t in _serving(emulator) if _matches(t, text, is_sdxl)]
    chunk, following = page(models, offset, limit)
    cursor = "" if following is None else opaque_cursor(following, str(chunk[-1].model_id))
    base = base_url(request)
    return web.json_response(
        {
            "models": [model_item(emulator, t, base) for t in chunk],
            "pagination": {"next_cursor": cursor},
        }
    )


def _served_training(emulator: Emulator, model_name: str) -> Training:
    found = emulator.lookup_lora(model_name)
    if found is None or not found[1].serving:
        raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
    return found[0]


async def download_model(request: web.Request) -> web.Response:
    """``GET /_s3/models/{name}`` (presigned): the ``.safetensors`` file."""
    emulator = request.app[EMULATOR_KEY]
    emulator.signer.verify("GET", request.path, request.query, emulator.clock.now())
    name = request.match_info["name"]
    training = _served_training(emulator, name)
    data = await asyncio.to_thread(emulator.lora_file, training)
    emulator.counters.models_downloaded += 1
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def model_cover(request: web.Request) -> web.Response:
    """``GET /_s3/covers/{task_id}.png`` (presigned): a grid of the training thumbnails."""
    emulator = request.app[EMULATOR_KEY]
    emulator.signer.verify("GET", request.path, request.query, emulator.clock.now())
    training = emulator.trainings.get(request.match_info["task_id"])
    if training is None:
        raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
    thumbnails = [
        emulator.assets[a].thumbnail for a in training.spec.assets_ids if a in emulator.assets
    ]
    data = await asyncio.to_thread(render_cover, thumbnails)
    return web.Response(body=data, content_type="image/png")
