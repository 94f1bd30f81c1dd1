"""Every validation rule of the training create calls (contract §3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipeline.api.contract import LEARNING_RATES, LR_SCHEDULERS
from pipeline.api.models import TrainingKnobs
from pipeline.emulator.training_requests import KNOB_ALIASES, KNOBS

from .conftest import Env, training_body

Body = dict[str, Any]


def _expert(**fields: Any) -> Callable[[Body], None]:
    def change(body: Body) -> None:
        body["expert_setting"].update(fields)

    return change


def _drop_expert(key: str) -> Callable[[Body], None]:
    def change(body: Body) -> None:
        del body["expert_setting"][key]

    return change


def _set(**fields: Any) -> Callable[[Body], None]:
    def change(body: Body) -> None:
        body.update(fields)

    return change


def _drop(key: str) -> Callable[[Body], None]:
    def change(body: Body) -> None:
        del body[key]

    return change


def _item(**fields: Any) -> Callable[[Body], None]:
    def change(body: Body) -> None:
        body["image_dataset_items"][0].update(fields)

    return change


def _component(index: int, value: Any) -> Callable[[Body], None]:
    def change(body: Body) -> None:
        body["components"][index] = value

    return change


INVALID_SUBJECT = {
    "name missing": _drop("name"),
    "name empty": _set(name=""),
    "name not a string": _set(name=12),
    "base_model missing": _drop("base_model"),
    "base_model unknown": _set(base_model="sd-3-medium"),
    "width missing": _drop("width"),
    "width zero": _set(width=0),
    "height negative": _set(height=-5),
    "height not int": _set(height="tall"),
    "width bool": _set(width=True),
    "items missing": _drop("image_dataset_items"),
    "items empty": _set(image_dataset_items=[]),
    "items not a list": _set(image_dataset_items={"assets_id": "x"}),
    "item not an object": _set(image_dataset_items=["abc"]),
    "assets_id missing": _item(assets_id=None),
    "assets_id unknown": _item(assets_id="f" * 32),
    "caption empty": _item(caption=""),
    "caption too long": _item(caption="x" * 1025),
    "caption not a string": _item(caption=5),
    "components not a list": _set(components={"name": "resize"}),
    "component unknown": _component(0, {"name": "sharpen", "args": []}),
    "component missing name": _component(0, {"args": []}),
    "component missing arg": _component(1, {"name": "resize", "args": [
        {"name": "width", "value": "512"}]}),
    "component arg not numeric": _component(0, {"name": "face_crop_region", "args": [
        {"name": "ratio", "value": "wide"}]}),
    "component arg not positive": _component(0, {"name": "face_crop_region", "args": [
        {"name": "ratio", "value": "0"}]}),
    "resize fractional": _component(1, {"name": "resize", "args": [
        {"name": "width", "value": "512.5"}, {"name": "height", "value": "512"}]}),
    "face_restore empty method": _component(2, {"name": "face_restore", "args": [
        {"name": "method", "value": ""}, {"name": "upscale", "value": "1.0"}]}),
    "component arg missing value": _component(0, {"name": "face_crop_region", "args": [
        {"name": "ratio"}]}),
    "expert not an object": _set(expert_setting="fast"),
    "instance_prompt missing": _drop_expert("instance_prompt"),
    "class_prompt missing": _drop_expert("class_prompt"),
    "instance_prompt too long": _expert(instance_prompt="x" * 1025),
    "train_batch_size 0": _expert(train_batch_size=0),
    "train_batch_size 5": _expert(train_batch_size=5),
    "batch_size alias 5": _expert(batch_size=5),
    "learning_rate not allowed": _expert(learning_rate=0.01),
    "learning_rate string not allowed": _expert(learning_rate="3e-4"),
    "learning_rate garbage": _expert(learning_rate="fast"),
    "max_train_steps 0": _expert(max_train_steps=0),
    "seed 0": _expert(seed=0),
    "lr_scheduler unknown": _expert(lr_scheduler="exponential"),
    "lr_warmup_steps negative": _expert(lr_warmup_steps=-1),
    "with_prior_preservation not bool": _expert(with_prior_preservation=1),
    "train_text_encoder not bool": _expert(train_text_encoder="yes"),
    "prior_loss_weight zero": _expert(prior_loss_weight=0),
    "lora_r 3": _expert(lora_r=3),
    "lora_alpha 129": _expert(lora_alpha=129),
    "lora_text_encoder_r 2": _expert(lora_text_encoder_r=2),
    "lora_text_encoder_alpha 200": _expert(lora_text_encoder_alpha=200),
}


@pytest.mark.parametrize("change", INVALID_SUBJECT.values(), ids=list(INVALID_SUBJECT))
async def test_invalid_subject_bodies_are_400(env: Env, change: Callable[[Body], None]) -> None:
    body = training_body([await env.upload()])
    change(body)
    status, answer = await env.call("POST", "/v3/training/subject", json=body)
    assert status == 400, answer
    assert answer["reason"] == "INVALID_REQUEST_BODY"
    assert answer["code"] == 400 and answer["metadata"] == {}
    assert env.emulator.counters.trainings_created["total"] == 0


VALID_VARIANTS = {
    "sdk style: strings and nulls": _expert(
        learning_rate="1e-4", max_train_steps="500", seed=None, lora_r=None, lr_scheduler=None
    ),
    "numeric learning rate": _expert(learning_rate=5e-05),
    "batch_size alias": _expert(batch_size=2),
    "all expert fields": _expert(
        train_batch_size=4, learning_rate="0.0002", max_train_steps=1, seed=1,
        lr_scheduler="cosine_with_restarts", lr_warmup_steps=0, with_prior_preservation=True,
        prior_loss_weight=0.5, train_text_encoder=False, lora_r=4, lora_alpha=128,
        lora_text_encoder_r=64, lora_text_encoder_alpha=8,
    ),
    "no components": _drop("components"),
    "null components": _set(components=None),
    "unknown fields ignored": _set(webhook={"url": "x"}, priority="high"),
    "caption on subject": _item(caption="a photo of ohwx"),
    "sdxl base model": _set(base_model="animagineXLV31_v31_325600"),
    "numeric component value": _component(0, {"name": "face_crop_region", "args": [
        {"name": "ratio", "value": 1.4}]}),
    "caption null": _item(caption=None),
}


@pytest.mark.parametrize("change", VALID_VARIANTS.values(), ids=list(VALID_VARIANTS))
async def test_valid_subject_variants(env: Env, change: Callable[[Body], None]) -> None:
    body = training_body([await env.upload()])
    change(body)
    status, answer = await env.call("POST", "/v3/training/subject", json=body)
    assert status == 200, answer
    assert set(answer) == {"task_id"}


async def test_not_yet_uploaded_asset_is_named(env: Env) -> None:
    _, slot = await env.call("POST", "/v3/assets/training_dataset", json={"file_extension": "png"})
    body = training_body([await env.upload(), slot["assets_id"]])
    status, answer = await env.call("POST", "/v3/training/subject", json=body)
    assert status == 400
    assert slot["assets_id"] in answer["message"]
    assert "image_dataset_items[1]" in answer["message"]


async def test_fifty_items_allowed_fifty_one_refused(env: Env) -> None:
    one = await env.upload()
    status, _ = await env.call("POST", "/v3/training/subject", json=training_body([one] * 50))
    assert status == 200
    status, answer = await env.call("POST", "/v3/training/subject", json=training_body([one] * 51))
    assert status == 400 and "1..50" in answer["message"]


async def test_style_requires_captions_but_not_prompts(env: Env) -> None:
    ids = [await env.upload()]
    body = training_body(ids, kind="style")
    del body["expert_setting"]["instance_prompt"], body["expert_setting"]["class_prompt"]
    status, _ = await env.call("POST", "/v3/training/style", json=body)
    assert status == 200
    body["image_dataset_items"][0].pop("caption")
    status, answer = await env.call("POST", "/v3/training/style", json=body)
    assert status == 400 and "caption" in answer["message"]


async def test_subject_without_expert_setting_is_400(env: Env) -> None:
    body = training_body([await env.upload()])
    del body["expert_setting"]
    status, answer = await env.call("POST", "/v3/training/subject", json=body)
    assert status == 400 and "instance_prompt" in answer["message"]


async def test_assets_id_as_integer_is_read_as_string(env: Env) -> None:
    body = training_body([await env.upload()])
    body["image_dataset_items"][0]["assets_id"] = 12345
    status, answer = await env.call("POST", "/v3/training/subject", json=body)
    assert status == 400 and "'12345'" in answer["message"]


def test_the_knobs_checked_are_the_api_models_with_their_limits() -> None:
    assert list(KNOBS) == list(TrainingKnobs.model_fields)
    assert set(KNOB_ALIASES.values()) <= set(KNOBS)
    assert (KNOBS["train_batch_size"].kind, KNOBS["train_batch_size"].ge,
            KNOBS["train_batch_size"].le) == (int, 1, 4)
    assert (KNOBS["lora_text_encoder_alpha"].ge, KNOBS["lora_text_encoder_alpha"].le) == (4, 128)
    assert (KNOBS["prior_loss_weight"].kind, KNOBS["prior_loss_weight"].gt) == (float, 0)
    assert KNOBS["learning_rate"].allowed == LEARNING_RATES
    assert KNOBS["lr_scheduler"].allowed == LR_SCHEDULERS
    assert KNOBS["train_text_encoder"].kind is bool
