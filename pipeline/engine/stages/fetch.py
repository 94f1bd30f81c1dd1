"""Fetch the model: once a training is SERVING, download its LoRA file into the outbox,
checked against the ``hash_sha256`` prefix the model list gives, so the user owns the weights.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import structlog

from ...api.models import PrivateModel
from ...errors import PermanentApiError
from ...files import write_json_atomic
from ...store.protocol import SubjectRow
from ..outbox import already_saved, sidecar_of
from .context import StageContext

log = structlog.get_logger(__name__)


class ModelIndex:
    """Trained LoRAs of the account by API name, from the private model list (every page)."""

    def __init__(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._by_name: dict[str, PrivateModel] = {}

    async def find(self, model_name: str) -> PrivateModel | None:
        if model_name not in self._by_name:
            async with aclosing(self._ctx.api.iter_trained_models()) as models:
                async for model in models:
                    self._by_name[model.api_name] = model
                    self._by_name.setdefault(model.sd_name, model)
                    if model_name in self._by_name:
                        break  # the rest of the list is read only when it is needed
        return self._by_name.get(model_name)


async def fetch_lora(
    ctx: StageContext, subject: SubjectRow, index: ModelIndex, limit: asyncio.Semaphore
) -> SubjectRow:
    """Download the subject's trained LoRA unless the same model is already in the outbox.

    The file is named for the subject (``alice.safetensors``), never by the service's model
    name; its sidecar says how to use it (the trigger phrase, the class word, the base model,
    the training settings), which model of the service it is, and the photos it was trained
    on with what the upload changed in each. ``limit`` is the run's download bound,
    shared with the pictures.
    """
    assert subject.model_name is not None
    dest = ctx.outbox(subject).path(ctx.outbox(subject).lora_name())
    if not already_saved(dest, "model_name", subject.model_name):
        model = await index.find(subject.model_name)
        if model is None:
            raise PermanentApiError(
                200, "MODEL_NOT_LISTED",
                "the trained model is SERVING but not in the private model list yet",
                "/v3/model",
            )
        async with limit:
            download = await ctx.api.download_model(model, dest)
        settings = ctx.subject_settings(subject)
        training = settings.training
        write_json_atomic(sidecar_of(dest), {
            "file": dest.name, "job": ctx.job_name, "subject": subject.name,
            "subject_version": subject.version,
            "trigger_phrase": settings.instance_prompt, "class_word": training.class_word,
            "kind": training.kind, "base_model": training.base_model,
            "training": {"width": training.width, "height": training.height,
                         **settings.expert_setting()},
            "model_name": subject.model_name,
            "sha256": download.sha256, "bytes": download.size,
            "training_task_id": subject.task_id,
            "photos": [
                {"file": image.name, "sha256": image.sha256, "sent_as": image.format,
                 "changes": image.change_list}
                for image in ctx.store.images(subject.id)
            ],
        })
        log.info("lora.saved", subject=subject.name, version=subject.version, file=str(dest),
                 bytes=download.size)
        ctx.counts["loras_saved"] += 1
    return ctx.store.update_subject(subject.id, now=ctx.clock.now(), lora_path=str(dest))
