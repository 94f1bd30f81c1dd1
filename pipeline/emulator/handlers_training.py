"""Training tasks: create (contract §3), status (§4) and the task list (§5).

Either status path answers for any task, subject or style (the official SDK has no style
status call, so clients may ask the subject path about a style task).
"""

from __future__ import annotations

from aiohttp import web

from .core import EMULATOR_KEY
from .errors import ApiError, invalid
from .pagination import offset_cursor, page, parse_cursor, parse_limit
from .responses import task_item, training_status_body
from .training_requests import parse_training
from .validation import read_json_object

TASK_TYPES = ("subject", "style")


async def _create(request: web.Request, kind: str) -> web.Response:
    emulator = request.app[EMULATOR_KEY]
    body = await read_json_object(request)
    spec = parse_training(kind, body, emulator.assets)
    training = emulator.create_training(spec)
    return web.json_response({"task_id": training.task_id})


async def create_subject(request: web.Request) -> web.Response:
    """``POST /v3/training/subject``."""
    return await _create(request, "subject")


async def create_style(request: web.Request) -> web.Response:
    """``POST /v3/training/style``."""
    return await _create(request, "style")


def required_task_id(request: web.Request) -> str:
    """The ``task_id`` query parameter, or 400."""
    task_id = request.query.get("task_id", "").strip()
    if not task_id:
        raise invalid("task_id is required (query parameter)")
    return task_id


async def training_status(request: web.Request) -> web.Response:
    """``GET /v3/training/subject?task_id=`` and ``GET /v3/training/style?task_id=``."""
    emulator = request.app[EMULATOR_KEY]
    task_id = required_task_id(request)
    training = emulator.trainings.get(task_id)
    if training is None:
        raise ApiError(404, "TASK_NOT_FOUND", f"task {task_id} not found")
    return web.json_response(training_status_body(emulator, training))


async def list_trainings(request: web.Request) -> web.Response:
    """``GET /v3/training?pagination.limit=&pagination.cursor=[&task_type=]``, newest first."""
    emulator = request.app[EMULATOR_KEY]
    query = request.query
    limit = parse_limit(query.get("pagination.limit"), emulator.config.page_size_max)
    offset = parse_cursor(query.get("pagination.cursor"))
    task_type = query.get("task_type") or None
    if task_type is not None and task_type not in TASK_TYPES:
        raise invalid(f"task_type must be subject or style, got {task_type!r}")
    trainings = [
        t for t in emulator.store.newest_trainings()
        if task_type is None or t.spec.kind == task_type
    ]
    chunk, following = page(trainings, offset, limit)
    return web.json_response(
        {
            "tasks": [task_item(emulator, t) for t in chunk],
            "pagination": {"next_cursor": "" if following is None else offset_cursor(following)},
        }
    )
