"""Generate and the ledger: a row before each POST (txt2img and img2img alike, with the
endpoint and picture count), a row of its own for each re-send after a lost answer (both
counted), none counted for what the service certainly did not take, and the ceiling
stopping the request that would pass it with nothing written."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline.engine.spend_guard import SpendGuard
from pipeline.errors import PermanentApiError, RateLimited, SpendCeilingReached, TransientApiError
from pipeline.jobfile.spending import MaxSpendSection
from pipeline.store.ledger import CREATED, NOT_CREATED, Tally
from pipeline.store.states import GEN_FAILED, GEN_PENDING, GEN_SUBMITTED, GEN_SUBMITTING
from tests.conftest import force_generation_state
from tests.engine.stages.test_generate_img2img import Scene, scene, settle


def _rows(s: Scene) -> list[tuple[str, int, str | None, int]]:
    return [(e.endpoint, e.units, e.outcome, e.resend) for e in s.store.ledger("test")]


def _ceiling(s: Scene, **limits: int) -> None:
    job = s.ctx.job.model_copy(update={"max_spend": MaxSpendSection(**limits)})
    s.ctx.spend_guard = SpendGuard(job, "this-pass")


async def test_each_post_has_its_row_first_with_its_endpoint_and_pictures(
    tmp_path: Path,
) -> None:
    s = await scene(tmp_path)
    await asyncio.wait_for(asyncio.gather(*(s.submit(g) for g in s.generations())), 1)
    assert sorted(_rows(s)) == [("img2img", 1, CREATED, 0), ("txt2img", 1, CREATED, 0)]
    assert s.store.spent("test") == Tally(images={"txt2img": 1, "img2img": 1})


async def test_a_lost_answer_is_sent_again_as_a_new_row_and_both_count(tmp_path: Path) -> None:
    s = await scene(tmp_path)
    txt, _ = s.generations()
    s.service.answers = [TransientApiError(504, "GATEWAY_TIMEOUT", "lost", "/v3/async/txt2img")]
    sending = s.submit(txt)
    await settle()
    s.clock.advance(60)  # the pause before it is sent again, on the test's clock
    await asyncio.wait_for(sending, 1)
    [after] = [g for g in s.generations() if g.id == txt.id]
    assert (after.state, after.uncertain) == (GEN_SUBMITTED, 1)
    assert _rows(s) == [("txt2img", 1, None, 0), ("txt2img", 1, CREATED, 1)]
    assert s.store.spent("test").images == {"txt2img": 2}


async def test_what_the_service_did_not_take_stops_counting(tmp_path: Path) -> None:
    s = await scene(tmp_path)
    txt, img = s.generations()
    s.service.answers = [RateLimited(429, "RATE_LIMIT_EXCEEDED", "slow", "/v3/async/txt2img"),
                         PermanentApiError(400, "INVALID", "no", "/v3/async/img2img")]
    first = s.submit(txt)
    await settle()
    await asyncio.wait_for(s.submit(img), 1)
    s.clock.advance(60)
    await asyncio.wait_for(first, 1)
    assert [g.state for g in s.generations()] == [GEN_SUBMITTED, GEN_FAILED]
    assert _rows(s) == [("txt2img", 1, NOT_CREATED, 0), ("img2img", 1, NOT_CREATED, 0),
                        ("txt2img", 1, CREATED, 0)]
    assert s.store.spent("test") == Tally(images={"txt2img": 1})


async def test_the_ceiling_stops_the_request_that_would_pass_it_and_writes_nothing(
    tmp_path: Path,
) -> None:
    s = await scene(tmp_path)
    _ceiling(s, images=1)
    txt, img = s.generations()
    await asyncio.wait_for(s.submit(txt), 1)
    with pytest.raises(SpendCeilingReached, match=r"max_spend\.images = 1"):
        await asyncio.wait_for(s.submit(img), 1)
    assert [sent.endpoint for sent in s.service.sent] == ["txt2img"]
    assert [g.state for g in s.generations()] == [GEN_SUBMITTED, GEN_PENDING]
    assert len(s.store.ledger("test")) == 1 and s.ctx.spend.stopped


async def test_a_resend_the_ceiling_stops_is_not_counted_as_one(tmp_path: Path) -> None:
    """Left ``submitting`` by a crash, its re-send would pass the ceiling: nothing is sent,
    and its count of re-sends stays, so raising the ceiling later re-sends it as usual."""
    s = await scene(tmp_path)
    txt, _ = s.generations()
    _ceiling(s, images=0)
    force_generation_state(s.store, txt.id, now=s.clock.now(), state=GEN_SUBMITTING)
    with pytest.raises(SpendCeilingReached):
        await asyncio.wait_for(s.submit(s.generations()[0]), 1)
    [after] = [g for g in s.generations() if g.id == txt.id]
    assert (after.state, after.uncertain) == (GEN_SUBMITTING, 0)
    assert s.service.sent == [] and s.store.ledger("test") == []
