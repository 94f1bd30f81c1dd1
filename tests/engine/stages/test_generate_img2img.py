"""Generate, img2img: the request (the txt2img one with the subject's LoRA, plus the kept
init image and its strength), its own limiter on the injected clock, and the same money
rules as txt2img. The service is a stand-in that records what it is sent and when."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.api import Img2ImgRequest, Txt2ImgRequest
from pipeline.api.retry import RetryPolicy
from pipeline.clock import ManualClock
from pipeline.engine.stages.context import StageContext
from pipeline.engine.stages.generate import MAX_UNCERTAIN_RESENDS, submit_generation
from pipeline.engine.stages.intake import intake
from pipeline.engine.subject_loop import Services, _start_generating
from pipeline.errors import RateLimited
from pipeline.jobfile.loading import load_job
from pipeline.store.protocol import GenerationRow
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import (
    GEN_FAILED,
    GEN_PENDING,
    GEN_SUBMITTED,
    GEN_SUBMITTING,
    GENERATING,
    TRAINED,
)
from tests.conftest import closed_after_test, fast_settings, force_generation_state, force_state
from tests.engine.folders import write_photos
from tests.engine.img2img import HALVES, write_img2img_job

LORA = "model_alice.safetensors"
TWO_MORE_EACH = (
    '{ prompt = "{subject} sketch", init_image = "refs/halves.png" },'
    ' { prompt = "{subject} sketch again", init_image = "refs/halves.png" },'
    ' "{subject} plain", "{subject} plain again"'
)


@dataclass
class Sent:
    endpoint: str
    at: float
    request: Txt2ImgRequest
    state: str  # the generation's state in the store when the POST went out


class Service:
    """Answers every create with a new task id (or with what ``answers`` holds first)."""

    def __init__(self, clock: ManualClock, store: SqliteStore, subject_id: int) -> None:
        self.clock, self.store, self.subject_id = clock, store, subject_id
        self.sent: list[Sent] = []
        self.answers: list[Exception] = []
        self.retry_policy = RetryPolicy(base_delay=1.0, max_delay=4.0, jitter=0.0)

    async def txt2img(self, request: Txt2ImgRequest, extra: Any = None) -> str:
        return self._create("txt2img", request)

    async def img2img(self, request: Img2ImgRequest, extra: Any = None) -> str:
        return self._create("img2img", request)

    def _create(self, endpoint: str, request: Txt2ImgRequest) -> str:
        [row] = [g for g in self.store.generations(self.subject_id) if g.prompt == request.prompt]
        self.sent.append(Sent(endpoint, self.clock.now(), request, row.state))
        if self.answers:
            raise self.answers.pop(0)
        return f"task-{len(self.sent)}"

    def of(self, endpoint: str) -> list[Sent]:
        return [sent for sent in self.sent if sent.endpoint == endpoint]


@dataclass
class Scene:
    ctx: StageContext
    services: Services
    service: Service
    store: SqliteStore
    clock: ManualClock
    subject_id: int

    def generations(self) -> list[GenerationRow]:
        return self.store.generations(self.subject_id)

    def submit(self, generation: GenerationRow) -> asyncio.Task[None]:
        subject = self.store.subject(self.subject_id)
        limiter = self.services.generation_limits.of(generation.endpoint)
        return asyncio.create_task(submit_generation(self.ctx, subject, generation, limiter))


async def scene(tmp_path: Path, *, extra_prompts: str = "", **limits: Any) -> Scene:
    """A subject taken in, trained (its LoRA ``LORA``) and ready to generate."""
    job = load_job(write_img2img_job(tmp_path, extra="fetch_lora = false",
                                     extra_prompts=extra_prompts))
    write_photos(tmp_path / "inbox" / "alice", 3)
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    clock = ManualClock()
    [row] = intake(job, store, clock).new_versions
    force_state(store, row.id, now=clock.now(), state=TRAINED, model_name=LORA, task_id="t1")
    settings = fast_settings("http://127.0.0.1:9", tmp_path / "state", **limits)
    service = Service(clock, store, row.id)
    ctx = StageContext(job, settings, service, store, clock)  # type: ignore[arg-type]
    services = Services.create(ctx)
    subject = await _start_generating(services, store.subject(row.id))
    assert subject.state == GENERATING
    return Scene(ctx, services, service, store, clock, row.id)


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_an_img2img_request_is_the_txt2img_one_with_the_kept_init_image(
    tmp_path: Path,
) -> None:
    s = await scene(tmp_path)
    txt, img = s.generations()
    assert (txt.endpoint, img.endpoint) == ("txt2img", "img2img")
    assert img.init is not None and img.init.image.endswith("refs/halves.png")
    await asyncio.wait_for(asyncio.gather(s.submit(txt), s.submit(img)), 1)

    [plain], [painted] = s.service.of("txt2img"), s.service.of("img2img")
    assert isinstance(painted.request, Img2ImgRequest)
    assert base64.b64decode(painted.request.image_base64) == HALVES
    assert painted.request.strength == 0.6
    assert painted.request.loras == plain.request.loras
    assert painted.request.loras[0].model_name == LORA
    assert painted.request.prompt == "a close photo of ohwx person as an oil painting"
    different = {"prompt", "image_base64", "strength"}
    assert painted.request.model_dump(exclude=different) == plain.request.model_dump(
        exclude={"prompt"})
    assert all(g.state == GEN_SUBMITTED for g in s.generations())


async def test_img2img_waits_on_its_own_limit_and_txt2img_does_not_wait_for_it(
    tmp_path: Path,
) -> None:
    s = await scene(tmp_path, extra_prompts=TWO_MORE_EACH, images_per_minute=20,
                    img2img_images_per_minute=2)
    started = s.clock.now()
    tasks = [s.submit(g) for g in s.generations()]
    await settle()
    assert len(s.service.of("txt2img")) == 3  # its own limit (20) is far away
    assert len(s.service.of("img2img")) == 2  # two a minute
    assert s.clock.sleepers == 1  # the third img2img waits on the clock, not the wall
    s.clock.advance(59.9)
    await settle()
    assert len(s.service.of("img2img")) == 2
    s.clock.advance(0.1)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert [sent.at - started for sent in s.service.of("img2img")] == [0, 0, 60]
    assert [sent.at - started for sent in s.service.of("txt2img")] == [0, 0, 0]


async def test_a_429_on_img2img_pauses_img2img_only(tmp_path: Path) -> None:
    s = await scene(tmp_path, extra_prompts='"{subject} plain"')
    txt, img, later = s.generations()
    s.service.answers = [RateLimited(429, "RATE_LIMIT_EXCEEDED", "slow down",
                                     "/v3/async/img2img", retry_after=30)]
    painting = s.submit(img)
    await settle()
    assert [sent.state for sent in s.service.sent] == [GEN_SUBMITTING]  # intent first
    [back] = [g for g in s.generations() if g.id == img.id]
    assert back.state == GEN_PENDING  # a 429 created nothing: sent again later
    await asyncio.wait_for(asyncio.gather(s.submit(txt), s.submit(later)), 1)  # not paused
    s.clock.advance(30)
    await asyncio.wait_for(painting, 1)
    assert [sent.endpoint for sent in s.service.sent] == ["img2img", "txt2img", "txt2img",
                                                          "img2img"]


async def test_the_intent_is_recorded_before_each_img2img_post(tmp_path: Path) -> None:
    s = await scene(tmp_path)
    await asyncio.wait_for(asyncio.gather(*(s.submit(g) for g in s.generations())), 1)
    assert [(sent.endpoint, sent.state) for sent in s.service.sent] == [
        ("txt2img", GEN_SUBMITTING), ("img2img", GEN_SUBMITTING)]


async def test_an_img2img_left_submitting_by_a_crash_is_sent_again_a_bounded_number_of_times(
    tmp_path: Path,
) -> None:
    """As for txt2img: a generation has no name to look it up by, so an unknown outcome is
    sent again (a duplicate costs one set of pictures), at most MAX_UNCERTAIN_RESENDS."""
    s = await scene(tmp_path)
    _, img = s.generations()
    force_generation_state(s.store, img.id, now=s.clock.now(), state=GEN_SUBMITTING)
    await asyncio.wait_for(s.submit(s.generations()[1]), 1)
    [after] = [g for g in s.generations() if g.id == img.id]
    assert (after.state, after.uncertain, after.task_id) == (GEN_SUBMITTED, 1, "task-1")
    assert [sent.endpoint for sent in s.service.sent] == ["img2img"]

    force_generation_state(s.store, img.id, now=s.clock.now(), state=GEN_SUBMITTING,
                           uncertain=MAX_UNCERTAIN_RESENDS)
    await asyncio.wait_for(s.submit(s.generations()[1]), 1)
    [given_up] = [g for g in s.generations() if g.id == img.id]
    assert given_up.state == GEN_FAILED and "may have made (and billed)" in given_up.error
    assert len(s.service.sent) == 1  # nothing more was paid for


async def test_an_init_image_missing_from_the_state_fails_the_prompt_before_any_post(
    tmp_path: Path,
) -> None:
    s = await scene(tmp_path)
    s.store._db.execute("DELETE FROM init_images")
    _, img = s.generations()
    await asyncio.wait_for(s.submit(img), 1)
    [after] = [g for g in s.generations() if g.id == img.id]
    assert after.state == GEN_FAILED and "nothing was sent" in after.error
    assert s.service.sent == []


@pytest.mark.parametrize("endpoint", ["txt2img", "img2img"])
async def test_the_limiters_follow_the_settings(tmp_path: Path, endpoint: str) -> None:
    s = await scene(tmp_path, images_per_minute=7, img2img_images_per_minute=3)
    limits = s.services.generation_limits
    assert limits.txt2img is not limits.img2img
    wanted = {"txt2img": 7, "img2img": 3}[endpoint]
    for _ in range(wanted):
        await limits.of(endpoint).acquire(1)
    blocked = asyncio.create_task(limits.of(endpoint).acquire(1))
    await settle()
    assert not blocked.done()
    s.clock.advance(60)
    await asyncio.wait_for(blocked, 1)
