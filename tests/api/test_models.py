"""Defensive parsing: every variation the contract lists."""

import pytest
from pydantic import ValidationError

from pipeline.api.errors import error_for_response, parse_error_body, unwrap
from pipeline.api.models import (
    ExpertSetting,
    GenerationResult,
    ModelPage,
    OneOf,
    TaskCreated,
    TaskPage,
    TrainingKnobs,
    TrainingRequest,
    TrainingStatus,
    UploadTicket,
)
from pipeline.errors import (
    BadCredentials,
    NotFound,
    PermanentApiError,
    RateLimited,
    TransientApiError,
    UrlExpired,
)
from pipeline.redact import Scrubber


def test_string_ints_nulls_and_unknown_fields() -> None:
    result = GenerationResult.model_validate(
        {
            "extra": {"seed": "392212448", "debug_info": None, "brand_new": 1},
            "task": {"task_id": "t", "status": "TASK_STATUS_SUCCEED", "reason": None, "eta": None},
            "images": [{"image_url": "http://x/1", "image_url_ttl": "3600", "image_type": "jpeg",
                        "nsfw_detection_result": None}],
            "videos": [],
        }
    )
    assert result.extra.seed == 392212448
    assert result.images[0].image_url_ttl == 3600
    assert result.task.reason == ""
    assert result.succeeded and not result.failed


def test_training_status_without_extra_and_with_empty_model_type() -> None:
    status = TrainingStatus.model_validate(
        {"task_id": "a", "task_status": "TRAINING", "model_type": "", "models": None}
    )
    assert status.extra.progress_percent is None
    assert status.models == []
    assert not status.terminal and status.serving_model is None


def test_serving_gate_needs_success_and_serving() -> None:
    deploying = {"task_status": "SUCCESS", "models": [{"model_name": "m.safetensors",
                                                      "model_status": "DEPLOYING"}]}
    assert TrainingStatus.model_validate(deploying).serving_model is None
    serving = {"task_status": "SUCCESS", "models": [{"model_name": "m.safetensors",
                                                    "model_status": "SERVING"}]}
    assert TrainingStatus.model_validate(serving).serving_model == "m.safetensors"
    failed = {"task_status": "FAILED", "models": [{"model_name": "m", "model_status": "SERVING"}]}
    assert TrainingStatus.model_validate(failed).serving_model is None


def test_assets_id_may_be_an_integer() -> None:
    ticket = UploadTicket.model_validate({"assets_id": 12345, "upload_url": "http://u"})
    assert ticket.assets_id == "12345"


def test_old_wrapper_is_unwrapped_and_new_shape_kept() -> None:
    wrapped = {"code": 0, "msg": "", "data": {"task_id": "abc"}}
    assert TaskCreated.model_validate(unwrap(wrapped)).task_id == "abc"
    assert unwrap({"task_id": "abc"}) == {"task_id": "abc"}
    failed_wrapper = {"code": 1, "msg": "nope", "data": {}}
    assert unwrap(failed_wrapper) is failed_wrapper


def test_pages_with_missing_or_empty_cursor() -> None:
    assert TaskPage.model_validate({"tasks": []}).pagination.next_cursor == ""
    page = ModelPage.model_validate(
        {"models": [{"id": "114600", "sd_name": "a.safetensors", "sd_name_in_api": None}],
         "pagination": {"next_cursor": None}}
    )
    assert page.models[0].id == 114600
    assert page.models[0].api_name == "a.safetensors"


def test_training_request_omits_unset_settings() -> None:
    body = TrainingRequest(
        name="n", base_model="v1-5-pruned-emaonly", image_dataset_items=[{"assets_id": "a"}]
    ).to_json()
    assert body["image_dataset_items"] == [{"assets_id": "a"}]
    assert body["expert_setting"] == {}


def test_one_of_says_what_would_do() -> None:
    names = OneOf(frozenset({"cosine", "linear"}))
    assert names.problem("cosin") == "did you mean 'cosine'? must be one of: 'cosine', 'linear'"
    assert names.problem("step") == "must be one of: 'cosine', 'linear'"
    rates = OneOf(frozenset({1e-4, 2e-4, 1e-6}))
    assert rates.problem(3e-4) == "must be one of: 1e-6, 1e-4, 2e-4"


def test_expert_setting_is_the_knobs_and_the_prompts() -> None:
    prompts = {"instance_prompt", "class_prompt"}
    assert set(ExpertSetting.model_fields) == set(TrainingKnobs.model_fields) | prompts
    assert not prompts & set(TrainingKnobs.model_fields)


@pytest.mark.parametrize(
    ("field", "value"),
    [("learning_rate", 3e-4), ("lr_scheduler", "step"), ("train_batch_size", 5),
     ("max_train_steps", 0), ("seed", 0), ("lr_warmup_steps", -1), ("prior_loss_weight", 0),
     ("lora_r", 3), ("lora_text_encoder_alpha", 129)],
)
def test_expert_setting_keeps_to_the_contract(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        ExpertSetting.model_validate({field: value})


def test_expert_setting_accepts_the_contract_limits() -> None:
    setting = ExpertSetting(train_batch_size=4, learning_rate=2e-4, lr_scheduler="cosine",
                            max_train_steps=1, seed=1, lr_warmup_steps=0, prior_loss_weight=0.1,
                            lora_r=4, lora_alpha=128, instance_prompt="x" * 5000)
    assert setting.model_dump(exclude_none=True)["lora_alpha"] == 128


def test_error_bodies_json_xml_plain_and_edge() -> None:
    assert parse_error_body(400, b'{"code":400,"reason":"INVALID_REQUEST_BODY","message":"m"}') == (
        "INVALID_REQUEST_BODY", "m")
    assert parse_error_body(500, b'{"code":500,"msg":"old style"}') == ("HTTP_500", "old style")
    xml = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>expired</Message></Error>"
    assert parse_error_body(403, xml) == ("AccessDenied", "expired")
    reason, message = parse_error_body(403, b"error code: 1010")
    assert reason == "EDGE_BLOCKED" and "User-Agent" in message
    html = b"<html>Bad Gateway</html>"
    assert parse_error_body(502, html) == ("HTTP_502", html.decode())


def _error(status: int, reason: str = "", *, presigned: bool = False, headers=None):
    body = f'{{"code":{status},"reason":"{reason}","message":"m"}}'.encode() if reason else b""
    return error_for_response(
        status, body, headers or {}, "/v3/x", now=0.0, scrub=Scrubber(), presigned=presigned
    )


def test_status_mapping() -> None:
    assert isinstance(_error(400, "MISSING_API_KEY"), BadCredentials)
    assert isinstance(_error(401), BadCredentials)
    assert isinstance(_error(403, "INVALID_API_KEY"), BadCredentials)
    assert type(_error(403, "FEATURE_NOT_ALLOWED")) is PermanentApiError
    assert type(_error(400, "INVALID_REQUEST_BODY")) is PermanentApiError
    assert isinstance(_error(404, "TASK_NOT_FOUND"), NotFound)
    for status in (500, 502, 503, 504):
        assert type(_error(status)) is TransientApiError
    limited = _error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "9"})
    assert isinstance(limited, RateLimited) and limited.retry_after == 9.0
    assert isinstance(_error(403, presigned=True), UrlExpired)
    error = _error(400, "INVALID_REQUEST_BODY")
    assert (error.status, error.reason, error.message, error.path) == (
        400, "INVALID_REQUEST_BODY", "m", "/v3/x")
