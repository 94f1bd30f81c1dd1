"""The route table and :func:`create_app`.

Route names, as counted in ``counters.requests`` and matched by ``fault_routes``:

    POST /v3/assets/training_dataset        PUT  /_s3/training/{assets_id}.{ext}
    POST /v3/training/subject               GET  /v3/training/subject
    POST /v3/training/style                 GET  /v3/training/style
    GET  /v3/training                       GET  /v3/model
    POST /v3/async/txt2img                  POST /v3/async/img2img
    GET  /v3/async/task-result              GET  /_s3/images/{task_id}/{index}.{ext}
    GET  /_s3/models/{name}                 GET  /_s3/covers/{task_id}.png
    GET  /_emulator/counters                POST /_emulator/reset
    GET  /_emulator/trainings

Requests that match nothing are counted under ``unknown``.
"""

from __future__ import annotations

from aiohttp import web

from .core import EMULATOR_KEY, Emulator
from .handlers_assets import create_upload_url, put_upload
from .handlers_generation import create_img2img, create_txt2img, generated_image, task_result
from .handlers_models import download_model, list_models, model_cover
from .handlers_training import (
    create_style,
    create_subject,
    list_trainings,
    training_status,
)
from .middleware import errors_middleware, gate_middleware, traffic_middleware

#: img2img bodies carry up to 10 MB of image as base64.
CLIENT_MAX_SIZE = 32 * 1024 * 1024


async def counters(request: web.Request) -> web.Response:
    """``GET /_emulator/counters``: the counters as JSON."""
    return web.json_response(request.app[EMULATOR_KEY].counters_snapshot())


async def reset(request: web.Request) -> web.Response:
    """``POST /_emulator/reset``: forget all state and counters."""
    request.app[EMULATOR_KEY].reset()
    return web.json_response({"reset": True})


async def trainings(request: web.Request) -> web.Response:
    """``GET /_emulator/trainings``: every training's name, status and model, for humans."""
    emulator = request.app[EMULATOR_KEY]
    items = []
    for training in emulator.store.newest_trainings():
        view = emulator.training_view(training)
        items.append(
            {
                "task_id": training.task_id,
                "name": training.spec.name,
                "kind": training.spec.kind,
                "status": view.status,
                "model_name": training.model_name,
                "model_status": view.model_status,
                "progress_percent": view.progress_percent,
                "reason": view.reason,
            }
        )
    return web.json_response({"trainings": items})


def create_app(emulator: Emulator) -> web.Application:
    """An aiohttp application serving ``emulator``; closing it stops its background work."""
    app = web.Application(
        middlewares=[traffic_middleware, errors_middleware, gate_middleware],
        client_max_size=CLIENT_MAX_SIZE,
    )
    app[EMULATOR_KEY] = emulator
    router = app.router
    router.add_post("/v3/assets/training_dataset", create_upload_url)
    router.add_post("/v3/training/subject", create_subject)
    router.add_post("/v3/training/style", create_style)
    router.add_get("/v3/training/subject", training_status)
    router.add_get("/v3/training/style", training_status)
    router.add_get("/v3/training", list_trainings)
    router.add_get("/v3/model", list_models)
    router.add_post("/v3/async/txt2img", create_txt2img)
    router.add_post("/v3/async/img2img", create_img2img)
    router.add_get("/v3/async/task-result", task_result)
    router.add_put("/_s3/training/{assets_id:[0-9a-f]+}.{ext}", put_upload)
    router.add_get(r"/_s3/images/{task_id}/{index:\d+}.{ext}", generated_image)
    router.add_get("/_s3/models/{name}", download_model)
    router.add_get("/_s3/covers/{task_id}.png", model_cover)
    router.add_get("/_emulator/counters", counters)
    router.add_post("/_emulator/reset", reset)
    router.add_get("/_emulator/trainings", trainings)

    async def close_emulator(_: web.Application) -> None:
        await emulator.close()

    app.on_cleanup.append(close_emulator)
    return app
