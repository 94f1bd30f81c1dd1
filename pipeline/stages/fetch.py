"""Fetch the model: once a training is SERVING, download its LoRA file into the outbox,
checked against the ``hash_sha256`` prefix the model list gives, so the user owns the weights.
"""

from __future__ import annotations

import asyncio

import structlog

from ..api.models import PrivateModel
from ..errors import PermanentApiError
from ..state import SubjectRow
from .context import StageContext

log = structlog.get_logger(__name__)


class ModelIndex:
    """Trained LoRAs of the account by API name, from the private model list (every page)."""

    def __init__(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._by_name: dict[str, PrivateModel] = {}

    async def find(self, model_name: str) -> PrivateModel | None:
        if model_name not in self._by_name:
            async for model in self._ctx.api.iter_trained_models():
                self._by_name[model.api_name] = model
                self._by_name.setdefault(model.sd_name, model)
        return self._by_name.get(model_name)


async def fetch_lora(
    ctx: StageContext, subject: SubjectRow, index: ModelIndex, limit: asyncio.Semaphore
) -> SubjectRow:
    """Download the subject's trained LoRA unless it is already in the outbox.

    ``limit`` is the run's download bound, shared with the pictures: a LoRA file is a
    download like any other, and counts against the files and connections it allows.
    """
    assert subject.model_name is not None
    dest = ctx.outbox_dir(subject) / subject.model_name
    if dest.exists():
        return ctx.store.update_subject(subject.id, now=ctx.clock.now(), lora_path=str(dest))
    model = await index.find(subject.model_name)
    if model is None:
        raise PermanentApiError(
            200, "MODEL_NOT_LISTED",
            f"{subject.model_name} is SERVING but not in the private model list yet", "/v3/model",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    async with limit:
        download = await ctx.api.download_model(model, dest)
    log.info("fetch.lora", subject=subject.name, file=str(dest), bytes=download.size)
    return ctx.store.update_subject(subject.id, now=ctx.clock.now(), lora_path=str(dest))
