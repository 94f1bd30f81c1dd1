"""Validation of ``POST /v3/training/subject`` and ``/v3/training/style`` bodies (contract §3)."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any

from pydantic.fields import FieldInfo

from pipeline.api.contract import (
    BASE_MODELS,
    COMPONENT_NAMES,
    MAX_TEXT_LENGTH,
    MAX_TRAINING_IMAGES,
    MIN_TRAINING_IMAGES,
)
from pipeline.api.models import TrainingKnobs

from .errors import invalid
from .store import Asset, TrainingSpec
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
    require_str,
)

#: Arguments each component needs, and how their (string) values must parse.
COMPONENT_ARGS: dict[str, dict[str, str]] = {
    "face_crop_region": {"ratio": "positive"},
    "resize": {"width": "side", "height": "side"},
    "face_restore": {"method": "text", "upscale": "positive"},
}
#: Older names the service still reads, checked like the knob they stand for.
KNOB_ALIASES = {"batch_size": "train_batch_size"}
DEFAULT_LORA_R = 4


def parse_training(kind: str, body: JsonObject, assets: Mapping[str, Asset]) -> TrainingSpec:
    """A :class:`TrainingSpec` from a create body, or a 400 naming the first bad field."""
    name = require_str(body, "name")
    base_model = get_choice(body, "base_model", BASE_MODELS, required=True)
    assert base_model is not None
    width = require_int(body, "width", low=1)
    height = require_int(body, "height", low=1)
    assets_ids, captions = _dataset_items(kind, body, assets)
    for index, component in enumerate(get_list(body, "components") or []):
        _check_component(component, f"components[{index}]")
    expert = get_object(body, "expert_setting") or {}
    instance_prompt, class_prompt = _prompts(kind, expert)
    _check_expert(expert)
    lora_r = get_int(expert, "lora_r") or DEFAULT_LORA_R
    return TrainingSpec(
        kind=kind,
        name=name,
        base_model=base_model,
        width=width,
        height=height,
        assets_ids=assets_ids,
        captions=captions,
        instance_prompt=instance_prompt,
        class_prompt=class_prompt,
        lora_r=lora_r,
        train_seed=get_int(expert, "seed"),
    )


def _dataset_items(
    kind: str, body: JsonObject, assets: Mapping[str, Asset]
) -> tuple[list[str], list[str | None]]:
    items = get_list(body, "image_dataset_items")
    if items is None:
        raise invalid("image_dataset_items is required")
    if not MIN_TRAINING_IMAGES <= len(items) <= MAX_TRAINING_IMAGES:
        raise invalid(
            f"image_dataset_items must hold {MIN_TRAINING_IMAGES}..{MAX_TRAINING_IMAGES} "
            f"items, got {len(items)}"
        )
    ids: list[str] = []
    captions: list[str | None] = []
    for index, item in enumerate(items):
        path = f"image_dataset_items[{index}]"
        if not isinstance(item, dict):
            raise invalid(f"{path} must be an object")
        raw_id = item.get("assets_id")
        if raw_id is None or isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise invalid(f"{path}.assets_id is required (a string)")
        assets_id = str(raw_id)
        asset = assets.get(assets_id)
        if asset is None:
            raise invalid(f"{path}.assets_id {assets_id!r} is unknown")
        if not asset.uploaded:
            raise invalid(f"{path}.assets_id {assets_id!r} has not been uploaded")
        caption = get_str(
            item, "caption", path, required=kind == "style", max_len=MAX_TEXT_LENGTH
        )
        ids.append(assets_id)
        captions.append(caption)
    return ids, captions


def _check_component(component: object, path: str) -> None:
    if not isinstance(component, dict):
        raise invalid(f"{path} must be an object")
    name = get_choice(component, "name", COMPONENT_NAMES, path, required=True)
    assert name is not None
    args: dict[str, object] = {}
    for index, arg in enumerate(get_list(component, "args", path) or []):
        arg_path = f"{path}.args[{index}]"
        if not isinstance(arg, dict):
            raise invalid(f"{arg_path} must be an object")
        arg_name = require_str(arg, "name", arg_path)
        if arg.get("value") is None:
            raise invalid(f"{arg_path}.value is required")
        args[arg_name] = arg["value"]
    for arg_name, kind in COMPONENT_ARGS[name].items():
        where = f"{path} ({name}) arg {arg_name!r}"
        if arg_name not in args:
            raise invalid(f"{where} is required")
        _check_arg(args, arg_name, kind, where)


def _check_arg(args: dict[str, object], arg_name: str, kind: str, where: str) -> None:
    value = args[arg_name]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise invalid(f"{where} must be a string")
    text = str(value).strip()
    if kind == "text":
        if not text:
            raise invalid(f"{where} must not be empty")
        return
    try:
        number = float(text)
    except ValueError as exc:
        raise invalid(f"{where} must be a number, got {text!r}") from exc
    if not math.isfinite(number) or number <= 0:
        raise invalid(f"{where} must be positive, got {text!r}")
    if kind == "side" and not number.is_integer():
        raise invalid(f"{where} must be a whole number of pixels, got {text!r}")


def _prompts(kind: str, expert: JsonObject) -> tuple[str | None, str | None]:
    required = kind == "subject"
    path = "expert_setting"
    instance = get_str(expert, "instance_prompt", path, required=required, max_len=MAX_TEXT_LENGTH)
    klass = get_str(expert, "class_prompt", path, required=required, max_len=MAX_TEXT_LENGTH)
    return instance, klass


@dataclasses.dataclass(frozen=True)
class _Knob:
    """One knob of ``expert_setting`` as the service reads it: its type and limits, taken
    from the API model (:class:`pipeline.api.models.TrainingKnobs`) so that both sides of
    the contract share one list."""

    kind: object
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    allowed: frozenset[Any] | None = None

    @classmethod
    def of(cls, field: FieldInfo) -> _Knob:
        # A knob's field is ``T | None``, T being ``Annotated[int, Field(ge=4, le=128)]``,
        # ``Annotated[str, OneOf(...)]``, ``bool``...: its metadata are small dataclasses.
        (annotated,) = (arg for arg in typing.get_args(field.annotation) if arg is not type(None))
        knob = FieldInfo.from_annotation(annotated)
        limits: dict[str, Any] = {}
        for rule in knob.metadata:
            limits |= dataclasses.asdict(rule)
        assert knob.annotation is not None
        return cls(knob.annotation, **limits)


KNOBS = {key: _Knob.of(field) for key, field in TrainingKnobs.model_fields.items()}


def _check_expert(expert: JsonObject) -> None:
    for key, knob in KNOBS.items():
        _check_knob(expert, key, knob)
    for alias, key in KNOB_ALIASES.items():
        _check_knob(expert, alias, KNOBS[key])


def _check_knob(expert: JsonObject, key: str, knob: _Knob) -> None:
    """A 400 naming ``expert_setting.<key>`` when it is there and not what ``knob`` allows."""
    path = "expert_setting"
    if knob.kind is bool:
        get_bool(expert, key, path)
    elif knob.kind is int:
        get_int(expert, key, path, low=_whole(knob.ge), high=_whole(knob.le))
    elif knob.kind is str:
        assert knob.allowed is not None, f"{key}: a text knob is a choice"
        get_choice(expert, key, knob.allowed, path)
    else:
        low = knob.gt if knob.gt is not None else knob.ge
        number = get_number(expert, key, path, low=low, high=knob.le,
                            exclusive_low=knob.gt is not None)
        # The SDK sends rates as text ("1e-4"): compare as numbers, not digits.
        if number is not None and knob.allowed is not None and not any(
            math.isclose(number, choice, rel_tol=1e-9) for choice in knob.allowed
        ):
            allowed = ", ".join(f"{choice:g}" for choice in sorted(knob.allowed))
            raise invalid(f"{path}.{key} must be one of {allowed}; got {number:g}")


def _whole(limit: float | None) -> int | None:
    return None if limit is None else int(limit)
