"""The sections' fields come from one place: the API's knobs, and the overrides from the
sections, each keeping its checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.api.models import ExpertSetting, TrainingKnobs
from pipeline.jobfile.schema import (
    GenerationOverrides,
    GenerationSection,
    SubjectOverrides,
    TrainingOverrides,
    TrainingSection,
)

KNOBS = list(TrainingKnobs.model_fields)


def test_training_fields_are_the_basics_then_the_api_knobs_then_the_preprocessing() -> None:
    fields = list(TrainingSection.model_fields)
    assert fields[7:-2] == KNOBS
    assert fields[:7] == ["kind", "base_model", "width", "height", "instance_prompt",
                          "class_prompt", "class_word"]
    assert fields[-2:] == ["components", "captions"]


def test_every_knob_set_in_a_job_file_reaches_the_request() -> None:
    knobs: dict[str, Any] = {
        "max_train_steps": 800, "learning_rate": 5e-5, "lr_scheduler": "linear",
        "lr_warmup_steps": 20, "train_batch_size": 2, "seed": 3,
        "with_prior_preservation": True, "prior_loss_weight": 0.7, "train_text_encoder": True,
        "lora_r": 16, "lora_alpha": 32, "lora_text_encoder_r": 8, "lora_text_encoder_alpha": 8,
    }
    assert set(knobs) == set(KNOBS)
    setting = TrainingSection(**knobs).expert_setting("bob")
    assert setting == {**knobs, "instance_prompt": "a close photo of ohwx person",
                       "class_prompt": "person"}
    assert ExpertSetting.model_validate(setting).model_dump(exclude_none=True) == setting


@pytest.mark.parametrize("overrides", [TrainingOverrides, GenerationOverrides])
def test_override_fields_are_the_sections_in_order_all_unset(overrides: Any) -> None:
    section = TrainingSection if overrides is TrainingOverrides else GenerationSection
    assert list(overrides.model_fields) == list(section.model_fields)
    assert overrides().model_dump(exclude_unset=True) == {}
    assert all(value is None for value in overrides().model_dump().values())


@pytest.mark.parametrize(
    ("table", "values", "field"),
    [
        ("training", {"lora_r": 500}, "lora_r"),
        ("training", {"learning_rate": 3e-4}, "learning_rate"),
        ("training", {"lr_scheduler": "cosin"}, "did you mean 'cosine'"),
        ("training", {"instance_prompt": "{name}"}, "unknown placeholder"),
        ("training", {"components": [{"name": "resize", "args": {}}]}, "missing: height"),
        ("training", {"captions": {"a/b.png": "x"}}, "bare image file names"),
        ("training", {"lora_rr": 4}, "lora_rr"),
        ("generation", {"steps": 0}, "steps"),
        ("generation", {"sampler_name": "euler a"}, "did you mean 'Euler a'"),
        ("generation", {"prompts": []}, "prompts"),
    ],
)
def test_overrides_keep_each_fields_checks(
    table: str, values: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError, match=field):
        SubjectOverrides.model_validate({table: values})


def test_overrides_give_only_what_is_set() -> None:
    overrides = SubjectOverrides.model_validate({
        "captions": {"a.png": "top"},
        "extra_prompts": ["top {subject}"],
        "training": {"lora_r": 8, "class_word": "dog", "captions": {"a.png": "t", "b.png": "b"}},
        "generation": {"steps": 30, "extra_prompts": ["gen {subject}"]},
    })
    assert overrides.training_updates() == {"lora_r": 8, "class_word": "dog"}
    assert overrides.generation_updates() == {"steps": 30}
    assert overrides.all_captions() == {"a.png": "top", "b.png": "b"}
    assert overrides.all_extra_prompts() == ["gen {subject}", "top {subject}"]
    with pytest.raises(ValidationError, match="class_word is set twice"):
        SubjectOverrides.model_validate({"class_word": "cat", "training": {"class_word": "dog"}})
