"""Every validation rule of txt2img and img2img (contract §6)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from .conftest import SD15_CHECKPOINT, SDXL_CHECKPOINT, Env, image_bytes, txt2img_body

INVALID_REQUEST: dict[str, dict[str, Any]] = {
    "model_name missing": {"model_name": None},
    "model_name empty": {"model_name": ""},
    "prompt missing": {"prompt": None},
    "prompt empty": {"prompt": ""},
    "prompt too long": {"prompt": "x" * 1025},
    "negative_prompt empty": {"negative_prompt": ""},
    "negative_prompt too long": {"negative_prompt": "x" * 1025},
    "width missing": {"width": None},
    "width 127": {"width": 127},
    "height 2049": {"height": 2049},
    "image_num 0": {"image_num": 0},
    "image_num 9": {"image_num": 9},
    "image_num missing": {"image_num": None},
    "steps 0": {"steps": 0},
    "steps 101": {"steps": 101},
    "guidance_scale 0.5": {"guidance_scale": 0.5},
    "guidance_scale 31": {"guidance_scale": 31},
    "sampler unknown": {"sampler_name": "Euler b"},
    "sampler missing": {"sampler_name": None},
    "seed -2": {"seed": -2},
    "clip_skip 0": {"clip_skip": 0},
    "clip_skip 13": {"clip_skip": 13},
    "loras not a list": {"loras": {"model_name": "x"}},
    "lora unknown": {"loras": [{"model_name": "model_1_ABCDEF0123.safetensors"}]},
    "six embeddings": {"embeddings": [{"model_name": f"e{n}"} for n in range(6)]},
    "embedding without name": {"embeddings": [{}]},
    "hires_fix not an object": {"hires_fix": "yes"},
}


@pytest.mark.parametrize("fields", INVALID_REQUEST.values(), ids=list(INVALID_REQUEST))
async def test_invalid_txt2img_is_400(env: Env, fields: dict[str, Any]) -> None:
    status, body = await env.call("POST", "/v3/async/txt2img", json=txt2img_body(**fields))
    assert status == 400, body
    assert body["reason"] == "INVALID_REQUEST_BODY"
    assert env.emulator.counters.generations_created["total"] == 0


INVALID_EXTRA: dict[str, dict[str, Any]] = {
    "image type gif": {"response_image_type": "gif"},
    "nsfw level 3": {"nsfw_detection_level": 3},
    "webhook not an object": {"webhook": "http://x"},
    "webhook url not http": {"webhook": {"url": "ftp://x"}},
    "enterprise_plan not an object": {"enterprise_plan": 1},
}


@pytest.mark.parametrize("extra", INVALID_EXTRA.values(), ids=list(INVALID_EXTRA))
async def test_invalid_extra_is_400(env: Env, extra: dict[str, Any]) -> None:
    body = txt2img_body()
    body["extra"] = extra
    status, answer = await env.call("POST", "/v3/async/txt2img", json=body)
    assert status == 400, answer


async def test_request_missing_is_400(env: Env) -> None:
    status, body = await env.call("POST", "/v3/async/txt2img", json={"extra": {}})
    assert status == 400 and "request" in body["message"]


async def test_lenient_forms_are_accepted(env: Env) -> None:
    body = txt2img_body(
        width="512", seed="-1", guidance_scale="7.5", negative_prompt=None, sd_vae=None,
        clip_skip=None, hires_fix={}, refiner=None, restore_faces=False,
        embeddings=[{"model_name": "easynegative"}], unknown_field={"x": 1},
    )
    body["extra"] = {"response_image_type": None, "custom_storage": {}, "enterprise_plan": {},
                     "webhook": None, "enable_nsfw_detection": False}
    status, answer = await env.call("POST", "/v3/async/txt2img", json=body)
    assert status == 200, answer
    status, answer = await env.call("POST", "/v3/async/txt2img", json={
        "request": txt2img_body()["request"]})
    assert status == 200, answer


async def test_lora_not_serving_yet_is_refused(env: Env) -> None:
    task_id = await env.train()
    name = env.emulator.trainings[task_id].model_name
    for advance in (0, 10, 16):  # QUEUING, TRAINING, SUCCESS+DEPLOYING
        env.clock.advance(advance)
        status, body = await env.call("POST", "/v3/async/txt2img", json=txt2img_body([name]))
        assert status == 400 and name in body["message"], body
    env.clock.advance(5)
    status, body = await env.call("POST", "/v3/async/txt2img", json=txt2img_body([name]))
    assert status == 200, body


async def test_failed_training_lora_is_refused(env: Env) -> None:
    task_id = await env.train()
    env.emulator.force_training_status(task_id, "FAILED", "boom")
    name = env.emulator.trainings[task_id].model_name
    status, _ = await env.call("POST", "/v3/async/txt2img", json=txt2img_body([name]))
    assert status == 400


async def test_lora_family_must_match_checkpoint(env: Env) -> None:
    sd15 = await env.serving_lora()
    sdxl = await env.serving_lora(base_model="epicrealismXL_v10_247189")
    ok = [(SD15_CHECKPOINT, sd15), (SDXL_CHECKPOINT, sdxl), ("v1-5-pruned-emaonly", sd15),
          ("stable-diffusion-xl-base-1.0.safetensors", sdxl)]
    for checkpoint, lora in ok:
        body = txt2img_body([lora], model_name=checkpoint)
        status, answer = await env.call("POST", "/v3/async/txt2img", json=body)
        assert status == 200, (checkpoint, answer)
    for checkpoint, lora in ((SD15_CHECKPOINT, sdxl), (SDXL_CHECKPOINT, sd15)):
        body = txt2img_body([lora], model_name=checkpoint)
        status, answer = await env.call("POST", "/v3/async/txt2img", json=body)
        assert status == 400 and "cannot be used" in answer["message"]


async def test_lora_limits(env: Env) -> None:
    name = await env.serving_lora()
    body = txt2img_body([name] * 6)
    status, answer = await env.call("POST", "/v3/async/txt2img", json=body)
    assert status == 400 and "at most 5" in answer["message"]
    for strength in (-0.1, 1.5, "strong"):
        body = txt2img_body()
        body["request"]["loras"] = [{"model_name": name, "strength": strength}]
        status, _ = await env.call("POST", "/v3/async/txt2img", json=body)
        assert status == 400
    body = txt2img_body()
    body["request"]["loras"] = [{"model_name": name.removesuffix(".safetensors")}]
    status, _ = await env.call("POST", "/v3/async/txt2img", json=body)
    assert status == 200


async def test_lora_as_checkpoint_is_refused(env: Env) -> None:
    name = await env.serving_lora()
    status, body = await env.call("POST", "/v3/async/txt2img", json=txt2img_body(model_name=name))
    assert status == 400 and "loras" in body["message"]


def img2img_body(image: bytes | str | None, **fields: Any) -> dict[str, Any]:
    body = txt2img_body(**fields)
    request = body["request"]
    del request["width"], request["height"]
    if image is not None:
        request["image_base64"] = (
            image if isinstance(image, str) else base64.b64encode(image).decode()
        )
    return body


async def test_img2img_accepts_an_image(env: Env) -> None:
    status, body = await env.call(
        "POST", "/v3/async/img2img", json=img2img_body(image_bytes("jpeg", (300, 200)))
    )
    assert status == 200, body
    generation = env.emulator.generations[body["task_id"]]
    assert (generation.spec.width, generation.spec.height) == (300, 200)
    assert generation.spec.strength == 0.5


@pytest.mark.parametrize(
    ("image", "fields", "reason"),
    [
        (None, {}, "INVALID_REQUEST_BODY"),
        ("", {}, "INVALID_REQUEST_BODY"),
        (b"not an image at all", {}, "INVALID_IMAGE_FORMAT"),
        (b"\0" * (10 * 1024 * 1024 + 1), {}, "IMAGE_FILE_EXCEEDS_MAX_SIZE"),
        (image_bytes("png", (4097, 4096)), {}, "IMAGE_EXCEEDS_MAX_RESOLUTION"),
        (image_bytes(), {"strength": 1.5}, "INVALID_REQUEST_BODY"),
    ],
    ids=["missing", "empty", "garbage", "over 10 MB", "over 16 MP", "strength"],
)
async def test_img2img_refusals(
    env: Env, image: bytes | None, fields: dict[str, Any], reason: str
) -> None:
    status, body = await env.call("POST", "/v3/async/img2img", json=img2img_body(image, **fields))
    assert status == 400, body
    assert body["reason"] == reason
