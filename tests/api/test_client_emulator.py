"""The client against the emulator on a real loopback port (integration, contract §2-§8).

Time that must pass for a state to change is moved with a ``ManualClock`` shared by the
emulator; the client gets a ``RecordingClock`` so its retry back-offs return at once.
Nothing here sleeps to wait for a state.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from pipeline.api import (
    ApiClient,
    DatasetItem,
    ExpertSetting,
    GenerationExtra,
    LoraRef,
    PrivateModel,
    TrainingComponent,
    TrainingRequest,
    Txt2ImgRequest,
)
from pipeline.api.client import MAX_URL_RENEWALS
from pipeline.api.models import ComponentArg, ImageExtension
from pipeline.clock import ManualClock
from pipeline.config import Settings
from pipeline.emulator import EmulatorConfig, EmulatorHandle, serve_emulator
from pipeline.errors import (
    BadCredentials,
    NotFound,
    PermanentApiError,
    RateLimited,
    TransientApiError,
    UrlExpired,
)
from tests.conftest import EMULATOR_KEY, RecordingClock, fast_settings

SD15_BASE = "v1-5-pruned-emaonly"
SDXL_BASE = "stable-diffusion-xl-base-1.0"
SD15_CHECKPOINT = "realisticVisionV51_v51VAE_94301.safetensors"
SDXL_CHECKPOINT = "epicrealismXL_v10_247189.safetensors"

#: Emulator timings on the ManualClock (whole seconds keep the arithmetic readable):
#: QUEUING [0, 5), TRAINING [5, 25), SUCCESS+DEPLOYING [25, 30), SERVING from 30;
#: a generation is QUEUED [0, 1), PROCESSING [1, 3), SUCCEED from 3.
TIMINGS = dict(
    queue_seconds=5, train_seconds=20, deploy_seconds=5,
    generation_queue_seconds=1, generation_seconds=2,
)
SERVING_AFTER = 31
GENERATED_AFTER = 4

# Route names as the emulator counts them (pipeline/emulator/routes.py).
UPLOAD_URL = "POST /v3/assets/training_dataset"
UPLOAD_PUT = "PUT /_s3/training/{assets_id}.{ext}"
CREATE_SUBJECT = "POST /v3/training/subject"
CREATE_STYLE = "POST /v3/training/style"
SUBJECT_STATUS = "GET /v3/training/subject"
STYLE_STATUS = "GET /v3/training/style"
TASK_LIST = "GET /v3/training"
MODEL_LIST = "GET /v3/model"
TXT2IMG = "POST /v3/async/txt2img"
TASK_RESULT = "GET /v3/async/task-result"
IMAGE_GET = "GET /_s3/images/{task_id}/{index}.{ext}"
MODEL_GET = "GET /_s3/models/{name}"

#: Routes a client may retry: faults are confined to them when creates must go through.
IDEMPOTENT_ROUTES = [
    UPLOAD_URL, UPLOAD_PUT, SUBJECT_STATUS, STYLE_STATUS, TASK_LIST, MODEL_LIST,
    TASK_RESULT, IMAGE_GET, MODEL_GET,
]

_PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


# --- the rig ---------------------------------------------------------------------------------


@dataclass
class Rig:
    """An emulator on a loopback port, its ManualClock, and settings pointing at it."""

    handle: EmulatorHandle
    clock: ManualClock
    settings: Settings
    client_clock: RecordingClock = field(default_factory=RecordingClock)

    @property
    def config(self) -> EmulatorConfig:
        return self.handle.emulator.config

    def counters(self) -> dict[str, Any]:
        return self.handle.emulator.counters_snapshot()

    def requests(self, route: str) -> int:
        return int(self.counters()["requests"].get(route, 0))

    def api(self, settings: Settings | None = None) -> ApiClient:
        return ApiClient(settings or self.settings, clock=self.client_clock, rand=lambda: 0.5)


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    """Serve emulators (config overrides as keyword arguments) until the test ends."""
    async with AsyncExitStack() as stack:

        async def make(settings_overrides: dict[str, Any] | None = None, **config: Any) -> Rig:
            clock = ManualClock()
            emulator_config = EmulatorConfig(
                **{"api_keys": [EMULATOR_KEY], **TIMINGS, **config}
            )
            handle = await stack.enter_async_context(
                serve_emulator(emulator_config, clock=clock)
            )
            settings = fast_settings(
                handle.base_url, tmp_path / "state", **(settings_overrides or {})
            )
            return Rig(handle, clock, settings)

        yield make


@pytest.fixture
async def rig(make_rig: RigFactory) -> Rig:
    """A fault-free emulator on the ManualClock."""
    return await make_rig()


# --- helpers ---------------------------------------------------------------------------------


def make_image(folder: Path, name: str, fmt: ImageExtension, size: tuple[int, int],
               colour: tuple[int, int, int]) -> Path:
    """A small real picture with some structure, written to ``folder/name``."""
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.ellipse((width // 4, height // 5, 3 * width // 4, 4 * height // 5), fill=(240, 200, 170))
    draw.rectangle((0, height - 6, width, height), fill=(20, 20, 20))
    path = folder / name
    image.save(path, format=_PIL_NAMES[fmt])
    return path


def dataset(folder: Path) -> list[tuple[Path, ImageExtension]]:
    """Four pictures in the three accepted formats."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        (make_image(folder, "1.png", "png", (64, 80), (200, 30, 30)), "png"),
        (make_image(folder, "2.jpg", "jpeg", (96, 72), (30, 200, 30)), "jpeg"),
        (make_image(folder, "3.webp", "webp", (72, 72), (30, 30, 200)), "webp"),
        (make_image(folder, "4.png", "png", (50, 60), (120, 120, 20)), "png"),
    ]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def subject_request(assets_ids: list[str], name: str = "job-alice-1") -> TrainingRequest:
    return TrainingRequest(
        name=name,
        base_model=SD15_BASE,
        image_dataset_items=[DatasetItem(assets_id=a) for a in assets_ids],
        components=[
            TrainingComponent(name="face_crop_region", args=[ComponentArg(name="ratio",
                                                                          value="1.4")]),
            TrainingComponent(name="resize", args=[ComponentArg(name="width", value="512"),
                                                   ComponentArg(name="height", value="512")]),
            TrainingComponent(name="face_restore", args=[
                ComponentArg(name="method", value="gfpgan_1.4"),
                ComponentArg(name="upscale", value="1.0"),
            ]),
        ],
        expert_setting=ExpertSetting(
            instance_prompt="a close photo of ohwx woman", class_prompt="person",
            max_train_steps=500, learning_rate=1e-4, lr_scheduler="constant", seed=7,
            lora_r=8,
        ),
    )


def txt2img_request(loras: list[LoraRef], *, prompt: str = "a close photo of ohwx woman",
                    checkpoint: str = SD15_CHECKPOINT, width: int = 256, height: int = 192,
                    image_num: int = 1) -> Txt2ImgRequest:
    return Txt2ImgRequest(
        model_name=checkpoint, prompt=prompt, width=width, height=height,
        image_num=image_num, steps=20, seed=42, loras=loras,
    )


def parse_safetensors(data: bytes) -> dict[str, Any]:
    """The JSON header of a safetensors file, after checking the layout is consistent."""
    assert len(data) > 8
    (header_len,) = struct.unpack("<Q", data[:8])
    assert 0 < header_len <= len(data) - 8
    header = json.loads(data[8 : 8 + header_len])
    assert isinstance(header, dict)
    body_len = len(data) - 8 - header_len
    ends = [
        spec["data_offsets"][1] for key, spec in header.items() if key != "__metadata__"
    ]
    assert ends and max(ends) == body_len
    return header


async def upload_all(api: ApiClient, files: list[tuple[Path, ImageExtension]]) -> list[str]:
    return [await api.upload_training_image(path, fmt) for path, fmt in files]


async def serving_lora(rig: Rig, api: ApiClient, folder: Path, name: str = "job-lora") -> str:
    """Train a subject LoRA and advance the clock until it is SERVING; its model name."""
    files = dataset(folder)[:1]
    ids = await upload_all(api, files)
    task_id = await api.create_training("subject", subject_request(ids, name))
    rig.clock.advance(SERVING_AFTER)
    status = await api.training_status("subject", task_id)
    model_name = status.serving_model
    assert model_name is not None, status
    return model_name


# --- 1. the whole flow ----------------------------------------------------------------------


async def test_subject_flow_from_upload_to_generated_images(rig: Rig, tmp_path: Path) -> None:
    files = dataset(tmp_path / "alice")
    async with rig.api() as api:
        ids = await upload_all(api, files)
        assert len(set(ids)) == len(files)

        task_id = await api.create_training("subject", subject_request(ids))
        training = rig.handle.emulator.trainings[task_id]
        assert training.spec.assets_ids == ids
        assert training.spec.instance_prompt == "a close photo of ohwx woman"
        assert training.spec.lora_r == 8 and training.spec.train_seed == 7

        status = await api.training_status("subject", task_id)
        assert status.task_id == task_id
        assert status.task_status == "QUEUING" and not status.terminal
        assert status.models == [] and status.serving_model is None

        rig.clock.advance(15)  # 10 s into 20 s of training
        status = await api.training_status("subject", task_id)
        assert status.task_status == "TRAINING"
        assert status.extra.progress_percent == 50
        assert status.extra.eta_relative == 10

        rig.clock.advance(11)  # t = 26: trained, deploying
        status = await api.training_status("subject", task_id)
        assert status.task_status == "SUCCESS" and status.terminal
        assert [m.model_status for m in status.models] == ["DEPLOYING"]
        assert status.serving_model is None
        model_name = status.models[0].model_name
        assert model_name.startswith("model_") and model_name.endswith(".safetensors")

        rig.clock.advance(5)  # t = 31: serving
        status = await api.training_status("subject", task_id)
        assert status.serving_model == model_name

        found = [m async for m in api.iter_trained_models() if m.api_name == model_name]
        assert len(found) == 1
        model = found[0]
        assert model.name == "job-alice-1" and not model.is_sdxl
        assert len(model.hash_sha256) == 10

        lora_path = tmp_path / "out" / model_name
        lora_path.parent.mkdir()
        download = await api.download_model(model, lora_path)
        data = lora_path.read_bytes()
        assert download.path == lora_path and download.size == len(data)
        assert download.sha256 == hashlib.sha256(data).hexdigest()
        assert download.sha256.upper().startswith(model.hash_sha256.upper())
        header = parse_safetensors(data)
        assert header["__metadata__"]["ss_output_name"] == model_name
        assert header["__metadata__"]["ss_network_dim"] == "8"
        assert sorted(p.name for p in lora_path.parent.iterdir()) == [model_name]

        request = txt2img_request([LoraRef(model_name=model.api_name, strength=0.8)],
                                  width=256, height=192, image_num=2)
        gen_id = await api.txt2img(request, GenerationExtra(response_image_type="webp"))
        generation = rig.handle.emulator.generations[gen_id]
        assert [(u.model_name, u.strength) for u in generation.spec.loras] == [(model_name, 0.8)]
        assert generation.spec.model_name == SD15_CHECKPOINT

        result = await api.task_result(gen_id)
        assert result.task.status == "TASK_STATUS_QUEUED" and result.images == []
        rig.clock.advance(2)
        result = await api.task_result(gen_id)
        assert result.task.status == "TASK_STATUS_PROCESSING" and not result.succeeded
        rig.clock.advance(2)
        result = await api.task_result(gen_id)
        assert result.succeeded and not result.failed
        assert result.task.task_type == "TXT_TO_IMG"
        assert result.extra.seed == 42
        assert len(result.images) == 2

        for index, image in enumerate(result.images):
            assert image.image_type == "webp" and image.image_url_ttl == 3600
            dest = tmp_path / "out" / f"{index}.webp"
            got = await api.download(image.image_url, dest)
            assert got.size == dest.stat().st_size > 0
            assert got.sha256 == sha256_of(dest)
            with Image.open(dest) as picture:
                assert picture.format == "WEBP"
                assert picture.size == (256, 192)
                picture.load()

    counters = rig.counters()
    assert counters["images_downloaded"] == 2 and counters["models_downloaded"] == 1
    assert counters["trainings_created"] == {"total": 1, "subject": 1}
    assert counters["generations_created"] == {"total": 1, "txt2img": 1}
    assert counters["requests"][CREATE_SUBJECT] == 1
    assert counters["requests"][TXT2IMG] == 1
    assert counters["faults_injected"] == {}


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
async def test_generated_image_has_the_requested_format_and_size(
    rig: Rig, tmp_path: Path, fmt: ImageExtension
) -> None:
    async with rig.api() as api:
        model_name = await serving_lora(rig, api, tmp_path / "data")
        request = txt2img_request([LoraRef(model_name=model_name, strength=0.8)],
                                  width=320, height=128)
        gen_id = await api.txt2img(request, GenerationExtra(response_image_type=fmt))
        rig.clock.advance(GENERATED_AFTER)
        result = await api.task_result(gen_id)
        assert result.succeeded and len(result.images) == 1
        dest = tmp_path / f"picture.{fmt}"
        await api.download(result.images[0].image_url, dest)
    with Image.open(dest) as picture:
        assert picture.format == _PIL_NAMES[fmt]
        assert picture.size == (320, 128)


async def test_style_training_with_captions_and_the_style_status_call(
    rig: Rig, tmp_path: Path
) -> None:
    files = dataset(tmp_path / "style")[:3]
    captions = ["watercolour city at dusk", "café terrace, ink wash ✓", "x" * 1024]
    async with rig.api() as api:
        ids = await upload_all(api, files)
        request = TrainingRequest(
            name="style-watercolour",
            base_model=SDXL_BASE,
            width=1024,
            height=1024,
            image_dataset_items=[
                DatasetItem(assets_id=a, caption=c) for a, c in zip(ids, captions, strict=True)
            ],
            expert_setting=ExpertSetting(learning_rate=1e-4, max_train_steps=300),
        )
        task_id = await api.create_training("style", request)
        spec = rig.handle.emulator.trainings[task_id].spec
        assert spec.kind == "style" and spec.captions == captions
        assert spec.width == spec.height == 1024

        status = await api.training_status("style", task_id)
        assert status.task_status == "QUEUING"
        rig.clock.advance(10)
        status = await api.training_status("style", task_id)
        assert status.task_status == "TRAINING" and status.extra.progress_percent == 25
        rig.clock.advance(SERVING_AFTER - 10)
        status = await api.training_status("style", task_id)
        assert status.task_status == "SUCCESS" and status.model_type == "lora"
        model_name = status.serving_model
        assert model_name is not None

        models = [m async for m in api.iter_trained_models(query="watercolour")]
        assert [m.api_name for m in models] == [model_name]
        assert models[0].is_sdxl

        tasks = [t async for t in api.iter_training_tasks(task_type="style")]
        assert [(t.task_id, t.task_type, t.task_name) for t in tasks] == [
            (task_id, "style", "style-watercolour")
        ]

        # An SDXL LoRA on an SDXL checkpoint is accepted.
        gen_id = await api.txt2img(
            txt2img_request([LoraRef(model_name=model_name, strength=0.6)],
                            checkpoint=SDXL_CHECKPOINT)
        )
        assert gen_id in rig.handle.emulator.generations

    assert rig.requests(STYLE_STATUS) == 3
    assert rig.requests(SUBJECT_STATUS) == 0
    assert rig.requests(CREATE_STYLE) == 1


async def test_unknown_task_is_not_found_and_not_retried(rig: Rig) -> None:
    async with rig.api() as api:
        with pytest.raises(NotFound) as caught:
            await api.training_status("subject", "no-such-task")
    assert caught.value.status == 404 and caught.value.reason == "TASK_NOT_FOUND"
    assert rig.requests(SUBJECT_STATUS) == 1


# --- 2. the bytes that arrived --------------------------------------------------------------


async def test_emulator_received_exactly_the_bytes_on_disk(rig: Rig, tmp_path: Path) -> None:
    files = dataset(tmp_path / "bytes")
    # One bigger picture, so the body spans several of the client's read chunks.
    big = tmp_path / "bytes" / "big.png"
    noise = Image.effect_noise((640, 480), 80).convert("RGB")
    noise.save(big, format="PNG", compress_level=0)
    files.append((big, "png"))
    assert big.stat().st_size > 3 * 256 * 1024

    async with rig.api() as api:
        ids = await upload_all(api, files)

    emulator = rig.handle.emulator
    for assets_id, (path, fmt) in zip(ids, files, strict=True):
        asset = emulator.assets[assets_id]
        assert asset.uploaded and asset.extension == fmt
        assert asset.size == path.stat().st_size
        assert asset.sha256 == sha256_of(path)
        with Image.open(path) as picture:
            assert (asset.width, asset.height) == picture.size
    counters = rig.counters()
    assert counters["bytes_received"] == sum(p.stat().st_size for p, _ in files)
    assert counters["uploads"] == counters["upload_urls_issued"] == len(files)
    assert counters["requests"][UPLOAD_PUT] == len(files)


# --- 3. validation errors -------------------------------------------------------------------


def assert_invalid(error: PermanentApiError, fragment: str) -> None:
    assert type(error) is PermanentApiError
    assert error.status == 400 and error.reason == "INVALID_REQUEST_BODY"
    assert fragment in error.message


async def test_training_validation_errors_are_permanent_and_sent_once(
    rig: Rig, tmp_path: Path
) -> None:
    files = dataset(tmp_path / "v")[:1]
    async with rig.api() as api:
        (uploaded,) = await upload_all(api, files)
        never_put = (await api.request_upload_url("png")).assets_id
        cases = [
            (subject_request(["0123456789abcdef0123456789abcdef"]), "is unknown"),
            (subject_request([uploaded, never_put]), "has not been uploaded"),
            (subject_request([uploaded] * 51), "got 51"),
        ]
        long_caption = subject_request([uploaded])
        long_caption.image_dataset_items[0].caption = "c" * 1025
        cases.append((long_caption, "caption"))
        sent = 0
        for request, fragment in cases:
            with pytest.raises(PermanentApiError) as caught:
                await api.create_training("subject", request)
            sent += 1
            assert_invalid(caught.value, fragment)
            assert rig.requests(CREATE_SUBJECT) == sent

    assert rig.counters()["trainings_created"] == {"total": 0}
    assert rig.client_clock.sleeps == []


async def test_generation_validation_errors_are_permanent_and_sent_once(
    rig: Rig, tmp_path: Path
) -> None:
    async with rig.api() as api:
        serving = await serving_lora(rig, api, tmp_path / "a", name="serving")

        # A second LoRA, caught while training and then while deploying.
        ids = await upload_all(api, dataset(tmp_path / "b")[:1])
        task_id = await api.create_training("subject", subject_request(ids, "later"))
        pending = rig.handle.emulator.trainings[task_id].model_name
        rig.clock.advance(10)
        assert (await api.training_status("subject", task_id)).task_status == "TRAINING"

        cases = [
            (txt2img_request([LoraRef(model_name="model_1_0000000000.safetensors")]),
             "is not a known model"),
            (txt2img_request([LoraRef(model_name=pending, strength=0.8)]),
             "not available yet (TRAINING)"),
            (txt2img_request([LoraRef(model_name=serving)], prompt="p" * 1025), "prompt"),
            (txt2img_request([LoraRef(model_name=serving)], checkpoint=SDXL_CHECKPOINT),
             "SD 1.5 LoRA"),
        ]
        sent = 0
        for request, fragment in cases:
            with pytest.raises(PermanentApiError) as caught:
                await api.txt2img(request)
            sent += 1
            assert_invalid(caught.value, fragment)
            assert rig.requests(TXT2IMG) == sent

        rig.clock.advance(17)  # t = 27 for the second training: SUCCESS, DEPLOYING
        status = await api.training_status("subject", task_id)
        assert status.task_status == "SUCCESS" and status.serving_model is None
        with pytest.raises(PermanentApiError) as caught:
            await api.txt2img(txt2img_request([LoraRef(model_name=pending, strength=0.8)]))
        assert_invalid(caught.value, "not available yet (DEPLOYING)")
        assert rig.requests(TXT2IMG) == sent + 1

        # A prompt of exactly 1024 characters is fine.
        await api.txt2img(txt2img_request([LoraRef(model_name=serving)], prompt="p" * 1024))

    counters = rig.counters()
    assert counters["generations_created"] == {"total": 1, "txt2img": 1}
    assert counters["requests"][TXT2IMG] == sent + 2
    assert rig.client_clock.sleeps == []


# --- 4. credentials -------------------------------------------------------------------------


async def test_wrong_key_is_bad_credentials_once_and_never_echoed(
    rig: Rig, tmp_path: Path
) -> None:
    wrong = "sk-wrong-secret-9f8e7d6c5b4a"
    settings = fast_settings(rig.handle.base_url, tmp_path, api_key=wrong)
    async with rig.api(settings) as api:
        with pytest.raises(BadCredentials) as caught:
            await api.training_status("subject", "any-task")
        with pytest.raises(BadCredentials) as upload_caught:
            await api.request_upload_url("png")
    for error in (caught.value, upload_caught.value):
        assert error.status == 403 and error.reason == "INVALID_API_KEY"
        assert wrong not in str(error) and wrong not in repr(error)
        assert EMULATOR_KEY not in str(error)
    assert rig.requests(SUBJECT_STATUS) == 1
    assert rig.requests(UPLOAD_URL) == 0  # the key is known refused: nothing more is sent
    assert rig.client_clock.sleeps == []


async def test_missing_key_is_bad_credentials_once(rig: Rig, tmp_path: Path) -> None:
    settings = fast_settings(rig.handle.base_url, tmp_path, api_key=None)
    async with rig.api(settings) as api:
        with pytest.raises(BadCredentials) as caught:
            await api.training_status("subject", "any-task")
        with pytest.raises(BadCredentials) as list_caught:
            [t async for t in api.iter_training_tasks()]
    for error in (caught.value, list_caught.value):
        assert error.status == 400 and error.reason == "MISSING_API_KEY"
        assert EMULATOR_KEY not in str(error)
    assert rig.requests(SUBJECT_STATUS) == 1
    assert rig.requests(TASK_LIST) == 0
    assert rig.client_clock.sleeps == []


# --- 5. presigned URL expiry ----------------------------------------------------------------


async def test_put_to_an_expired_upload_url_is_url_expired(rig: Rig, tmp_path: Path) -> None:
    path, fmt = dataset(tmp_path / "e")[0]
    async with rig.api() as api:
        ticket = await api.request_upload_url(fmt)
        rig.clock.advance(rig.config.upload_url_ttl + 1)
        with pytest.raises(UrlExpired) as caught:
            await api.put_file(ticket.upload_url, path, "image/png")
    assert caught.value.status == 403 and caught.value.reason == "AccessDenied"
    assert not rig.handle.emulator.assets[ticket.assets_id].uploaded
    counters = rig.counters()
    assert counters["uploads"] == 0 and counters["requests"][UPLOAD_PUT] == 1


async def test_put_just_inside_the_ttl_still_works(rig: Rig, tmp_path: Path) -> None:
    path, fmt = dataset(tmp_path / "e")[0]
    async with rig.api() as api:
        ticket = await api.request_upload_url(fmt)
        rig.clock.advance(rig.config.upload_url_ttl)
        assert await api.put_file(ticket.upload_url, path, "image/png") == path.stat().st_size
    assert rig.handle.emulator.assets[ticket.assets_id].uploaded


async def test_upload_renews_a_url_that_expired_before_the_put(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, fmt = dataset(tmp_path / "r")[1]
    async with rig.api() as api:
        original = api.request_upload_url
        tickets = []

        async def first_one_expires(extension: ImageExtension) -> Any:
            ticket = await original(extension)
            tickets.append(ticket)
            if len(tickets) == 1:
                rig.clock.advance(rig.config.upload_url_ttl + 1)
            return ticket

        monkeypatch.setattr(api, "request_upload_url", first_one_expires)
        assets_id = await api.upload_training_image(path, fmt)

    assert len(tickets) == 2
    assert tickets[1].assets_id == assets_id != tickets[0].assets_id
    assets = rig.handle.emulator.assets
    assert not assets[tickets[0].assets_id].uploaded
    assert assets[assets_id].uploaded and assets[assets_id].sha256 == sha256_of(path)
    counters = rig.counters()
    assert counters["upload_urls_issued"] == 2 and counters["uploads"] == 1
    assert counters["requests"][UPLOAD_PUT] == 2
    assert counters["bytes_received"] == path.stat().st_size


async def test_upload_gives_up_when_every_renewed_url_expires(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, fmt = dataset(tmp_path / "r")[0]
    async with rig.api() as api:
        original = api.request_upload_url

        async def always_expires(extension: ImageExtension) -> Any:
            ticket = await original(extension)
            rig.clock.advance(rig.config.upload_url_ttl + 1)
            return ticket

        monkeypatch.setattr(api, "request_upload_url", always_expires)
        with pytest.raises(UrlExpired):
            await api.upload_training_image(path, fmt)
    counters = rig.counters()
    assert counters["upload_urls_issued"] == MAX_URL_RENEWALS
    assert counters["requests"][UPLOAD_PUT] == MAX_URL_RENEWALS
    assert counters["uploads"] == 0


async def test_expired_image_url_is_url_expired_and_leaves_no_file(
    rig: Rig, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    async with rig.api() as api:
        model_name = await serving_lora(rig, api, tmp_path / "d")
        gen_id = await api.txt2img(txt2img_request([LoraRef(model_name=model_name)]))
        rig.clock.advance(GENERATED_AFTER)
        result = await api.task_result(gen_id)
        assert result.succeeded
        image = result.images[0]
        rig.clock.advance(image.image_url_ttl + 1)
        with pytest.raises(UrlExpired) as caught:
            await api.download(image.image_url, out / "0.png")
        assert caught.value.status == 403

        # A fresh poll hands out a fresh URL that works.
        fresh = (await api.task_result(gen_id)).images[0].image_url
        assert fresh != image.image_url
        await api.download(fresh, out / "0.png")
    assert [p.name for p in out.iterdir()] == ["0.png"]
    assert rig.requests(IMAGE_GET) == 2
    assert rig.counters()["images_downloaded"] == 1


async def test_expired_model_url_is_url_expired(rig: Rig, tmp_path: Path) -> None:
    async with rig.api() as api:
        model_name = await serving_lora(rig, api, tmp_path / "m")
        (model,) = [m async for m in api.iter_trained_models() if m.api_name == model_name]
        rig.clock.advance(model.download_url_ttl + 1)
        with pytest.raises(UrlExpired):
            await api.download_model(model, tmp_path / "lora.safetensors")
    assert not (tmp_path / "lora.safetensors").exists()
    assert rig.requests(MODEL_GET) == 1


# --- 6. pagination --------------------------------------------------------------------------


async def test_every_task_and_model_across_pages_exactly_once(rig: Rig, tmp_path: Path) -> None:
    async with rig.api() as api:
        ids = await upload_all(api, dataset(tmp_path / "p")[:2])
        created = []
        for n in range(7):
            created.append(await api.create_training("subject", subject_request(ids, f"job-{n}")))
            rig.clock.advance(1)

        tasks = [t async for t in api.iter_training_tasks(page_size=3)]
        assert sorted(t.task_id for t in tasks) == sorted(created)
        assert [t.task_id for t in tasks] == created[::-1]  # newest first
        assert rig.requests(TASK_LIST) == 3

        rig.clock.advance(SERVING_AFTER)
        model_names = {
            (await api.training_status("subject", task_id)).serving_model for task_id in created
        }
        assert None not in model_names and len(model_names) == 7

        models: list[PrivateModel] = [m async for m in api.iter_trained_models(page_size=2)]
        assert len(models) == 7
        assert {m.api_name for m in models} == model_names
        assert len({m.id for m in models}) == 7
        assert rig.requests(MODEL_LIST) == 4

        # A page size that divides the list exactly ends on an empty cursor, not an extra page.
        tasks = [t async for t in api.iter_training_tasks(page_size=7)]
        assert len(tasks) == 7
        assert rig.requests(TASK_LIST) == 4


# --- 7. retries against injected faults -----------------------------------------------------


async def test_whole_flow_survives_5xx_and_429_on_retryable_routes(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    rig = await make_rig(
        {"retry_max_attempts": 12},
        fault_5xx=0.3, fault_429=0.2, fault_429_retry_after=0.5, seed=20240611,
        fault_routes=IDEMPOTENT_ROUTES,
    )
    files = dataset(tmp_path / "f")
    async with rig.api() as api:
        ids = await upload_all(api, files)
        task_id = await api.create_training("subject", subject_request(ids))
        rig.clock.advance(SERVING_AFTER)
        status = await api.training_status("subject", task_id)
        model_name = status.serving_model
        assert model_name is not None
        tasks = [t async for t in api.iter_training_tasks(page_size=1)]
        assert [t.task_id for t in tasks] == [task_id]
        (model,) = [m async for m in api.iter_trained_models(page_size=1)]
        assert model.api_name == model_name
        await api.download_model(model, tmp_path / model_name)
        gen_id = await api.txt2img(txt2img_request([LoraRef(model_name=model_name)]))
        rig.clock.advance(GENERATED_AFTER)
        result = await api.task_result(gen_id)
        assert result.succeeded
        await api.download(result.images[0].image_url, tmp_path / "out.png")

    emulator = rig.handle.emulator
    for assets_id, (path, _) in zip(ids, files, strict=True):
        assert emulator.assets[assets_id].sha256 == sha256_of(path)
    counters = rig.counters()
    injected = counters["faults_injected"]
    assert injected.get("5xx", 0) > 0 and injected.get("429", 0) > 0
    retries = len(rig.client_clock.sleeps)
    assert retries == injected["5xx"] + injected["429"]
    assert 1.0 in rig.client_clock.sleeps or injected["429"] == 0
    assert counters["requests"][CREATE_SUBJECT] == 1
    assert counters["requests"][TXT2IMG] == 1
    assert counters["trainings_created"]["total"] == 1


@pytest.mark.parametrize("route", [UPLOAD_URL, UPLOAD_PUT, SUBJECT_STATUS, MODEL_GET])
async def test_each_retryable_route_recovers_from_a_burst_of_503s(
    make_rig: RigFactory, tmp_path: Path, route: str
) -> None:
    rig = await make_rig(fault_5xx=0.5, seed=3, fault_routes=[route])
    async with rig.api() as api:
        model_name = await serving_lora(rig, api, tmp_path / "x")
        (model,) = [m async for m in api.iter_trained_models() if m.api_name == model_name]
        await api.download_model(model, tmp_path / "lora.safetensors")
    injected = rig.counters()["faults_injected"].get("5xx", 0)
    assert injected > 0
    assert len(rig.client_clock.sleeps) == injected
    assert rig.requests(route) > injected


async def test_training_create_is_sent_once_on_5xx(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    rig = await make_rig(fault_5xx=1.0, seed=11, fault_routes=[CREATE_SUBJECT, CREATE_STYLE])
    async with rig.api() as api:
        ids = await upload_all(api, dataset(tmp_path / "c")[:1])
        with pytest.raises(TransientApiError) as caught:
            await api.create_training("subject", subject_request(ids))
        assert caught.value.status in (500, 502, 503, 504)
        style = TrainingRequest(
            name="style", base_model=SD15_BASE,
            image_dataset_items=[DatasetItem(assets_id=ids[0], caption="a caption")],
        )
        with pytest.raises(TransientApiError):
            await api.create_training("style", style)
    counters = rig.counters()
    assert counters["requests"][CREATE_SUBJECT] == 1
    assert counters["requests"][CREATE_STYLE] == 1
    assert counters["trainings_created"] == {"total": 0}
    assert counters["faults_injected"] == {"5xx": 2}
    assert rig.client_clock.sleeps == []


async def test_txt2img_is_sent_once_on_429_and_5xx(make_rig: RigFactory, tmp_path: Path) -> None:
    rig = await make_rig(fault_429=1.0, fault_429_retry_after=1.0, seed=5,
                         fault_routes=[TXT2IMG])
    async with rig.api() as api:
        model_name = await serving_lora(rig, api, tmp_path / "g")
        request = txt2img_request([LoraRef(model_name=model_name)])
        with pytest.raises(RateLimited) as caught:
            await api.txt2img(request)
        assert caught.value.status == 429 and caught.value.retry_after == 1.0
        rig.config.fault_429 = 0.0
        rig.config.fault_5xx = 1.0
        with pytest.raises(TransientApiError):
            await api.txt2img(request)
    counters = rig.counters()
    assert counters["requests"][TXT2IMG] == 2
    assert counters["generations_created"] == {"total": 0}
    assert rig.client_clock.sleeps == []


async def test_rate_limited_reads_honour_retry_after(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    rig = await make_rig({"retry_max_attempts": 12}, seed=9, fault_routes=[SUBJECT_STATUS])
    async with rig.api() as api:
        ids = await upload_all(api, dataset(tmp_path / "h")[:1])
        task_id = await api.create_training("subject", subject_request(ids))
        # Faults switched on at run time through the mutable config.
        rig.config.fault_429 = 0.5
        rig.config.fault_429_retry_after = 1.0
        for _ in range(5):
            status = await api.training_status("subject", task_id)
            assert status.task_status == "QUEUING"
    injected = rig.counters()["faults_injected"].get("429", 0)
    assert injected > 0
    assert rig.client_clock.sleeps == [1.0] * injected
    assert rig.requests(SUBJECT_STATUS) == 5 + injected


async def test_reads_give_up_after_max_attempts_under_constant_5xx(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig({"retry_max_attempts": 3}, fault_5xx=1.0, seed=1,
                         fault_routes=[TASK_LIST])
    async with rig.api() as api:
        with pytest.raises(TransientApiError):
            [t async for t in api.iter_training_tasks()]
    assert rig.requests(TASK_LIST) == 3
    assert len(rig.client_clock.sleeps) == 2


async def test_reads_survive_dropped_connections(make_rig: RigFactory, tmp_path: Path) -> None:
    rig = await make_rig({"retry_max_attempts": 12}, fault_drop=0.5, seed=17,
                         fault_routes=[SUBJECT_STATUS, TASK_LIST, TASK_RESULT])
    async with rig.api() as api:
        ids = await upload_all(api, dataset(tmp_path / "k")[:1])
        task_id = await api.create_training("subject", subject_request(ids))
        for _ in range(4):
            assert (await api.training_status("subject", task_id)).task_status == "QUEUING"
        tasks = [t async for t in api.iter_training_tasks(page_size=1)]
        assert [t.task_id for t in tasks] == [task_id]
    injected = rig.counters()["faults_injected"].get("drop", 0)
    assert injected > 0
    # Each drop costs one more request: sent again by our retry, or by aiohttp itself
    # (it re-sends an idempotent request once when a reused keep-alive connection closes).
    assert rig.requests(SUBJECT_STATUS) + rig.requests(TASK_LIST) == 5 + injected
    assert 0 < len(rig.client_clock.sleeps) <= injected
    assert rig.counters()["trainings_created"]["total"] == 1
