"""Faults: the pipeline against an emulator injecting every failure the service can show.

Each test runs whole passes and checks the promise: every subject that can complete does,
with one training each and every picture exactly once; every one that cannot is reported
with the reason.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from pipeline.api.client import ApiClient
from pipeline.errors import TransientApiError, TransportError
from pipeline.store.states import CANCELED, DONE, FAILED, GEN_FAILED, SUBMITTING
from pipeline.views.summary import EXIT_FAILED, EXIT_OK

from .conftest import (
    assert_outbox_exact,
    make_job,
    open_store,
    record,
    run_pass,
    run_until_settled,
)

SUBJECTS = 4
CREATE = "POST /v3/training/subject"


def fault_counts(counters: dict[str, Any]) -> Counter[str]:
    return Counter(counters["faults_injected"])


def assert_all_done(result: Any, counters: dict[str, Any], subjects: int = SUBJECTS) -> None:
    states = {s.name: (s.state, s.error) for s in result.subjects}
    assert all(state == DONE and error is None for state, error in states.values()), states
    assert len(states) == subjects
    assert counters["trainings_created"]["total"] == subjects  # one each, never two


REQUEST_FAULTS = [
    pytest.param({"fault_429": 0.25}, "429", id="429-without-retry-after"),
    pytest.param({"fault_429": 0.1, "fault_429_retry_after": 1.0}, "429", id="429-retry-after"),
    pytest.param({"fault_5xx": 0.2}, "5xx", id="500-502-503-504"),
    pytest.param({"fault_drop": 0.15}, "drop", id="dropped-connections"),
    pytest.param({"fault_slow": 0.12, "slow_seconds": 0.6}, "slow", id="slower-than-timeout"),
]


@pytest.mark.parametrize(("faults", "kind"), REQUEST_FAULTS, indirect=["faults"])
async def test_request_faults_are_ridden_out(tmp_path, faulty, kind, fresh_logs) -> None:
    subjects = 6 if kind == "5xx" else SUBJECTS
    job = make_job(tmp_path, subjects=subjects)
    result = await run_until_settled(job, faulty.base_url, tmp_path, read_timeout=0.3,
                                     total_timeout=2)
    counters = faulty.counters
    assert result.exit_code == EXIT_OK
    assert_all_done(result, counters, subjects)
    pictures = assert_outbox_exact(tmp_path, image_num=2)
    assert pictures == subjects * 2
    assert fault_counts(counters)[kind] >= 3  # the faults really were there
    if kind == "5xx":
        assert {"500", "502", "503", "504"} <= set(counters["responses"])
    retries = [e for e in fresh_logs if e["event"] in ("api.retry", "generate.retry",
                                                       "train.create_uncertain")]
    assert retries
    record("faults injected", fault_counts(counters))
    record("pictures", {"present exactly once after request faults": pictures})


RETRY_AFTER = {"fault_429": 0.5, "fault_429_retry_after": 1.0,
               "fault_routes": ["POST /v3/assets/training_dataset", "POST /v3/async/txt2img"]}


@pytest.mark.parametrize("faults", [RETRY_AFTER], indirect=True)
async def test_retry_after_is_honoured(tmp_path, faulty, fresh_logs) -> None:
    job = make_job(tmp_path, subjects=2)
    await run_pass(job, faulty.base_url, tmp_path, retry_base_delay=0.01, retry_max_delay=0.05)
    waits = [e["delay"] for e in fresh_logs
             if e["event"] in ("api.retry", "generate.retry") and "429" in e["error"]]
    assert waits and all(delay == 1.0 for delay in waits)  # the server's word, not backoff
    assert faulty.counters["faults_injected"]["429"] == len(waits)
    record("faults injected", fault_counts(faulty.counters))


@pytest.mark.parametrize("faults", [{"fault_drop": 1.0, "fault_routes": [CREATE]}],
                         indirect=True)
async def test_lost_answers_to_training_creates_never_pay_twice(
    tmp_path, faulty, fresh_logs
) -> None:
    job = make_job(tmp_path, subjects=SUBJECTS)
    result = await run_pass(job, faulty.base_url, tmp_path)
    counters = faulty.counters
    assert counters["faults_injected"]["drop"] == SUBJECTS  # every create's answer was lost
    assert_all_done(result, counters)
    reconciled = {e["subject"] for e in fresh_logs if e["event"] == "train.create_uncertain"}
    assert len(reconciled) == SUBJECTS
    record("faults injected", fault_counts(counters))
    record("duplicate trainings", {
        "after lost create answers": counters["trainings_created"]["total"] - SUBJECTS})


@pytest.mark.parametrize(
    "faults", [{"fault_slow": 1.0, "slow_seconds": 1.0, "fault_routes": [CREATE]}],
    indirect=True,
)
async def test_timed_out_training_creates_are_found_by_name(tmp_path, faulty) -> None:
    job = make_job(tmp_path, subjects=SUBJECTS)
    result = await run_pass(job, faulty.base_url, tmp_path, read_timeout=0.3)
    assert faulty.counters["faults_injected"]["slow"] == SUBJECTS
    assert_all_done(result, faulty.counters)


async def test_create_answer_lost_on_the_last_try_is_not_a_failure(
    tmp_path, emulator, monkeypatch
) -> None:
    # Three 503s, then a create that lands but whose answer is lost. It used to be marked
    # failed: the paid training was forgotten, and `retry` would have paid a second time.
    calls = 0
    create = ApiClient.create_training

    async def flaky(client, kind, request):
        nonlocal calls
        calls += 1
        if calls < 4:
            raise TransientApiError(503, "SERVICE_UNAVAILABLE", "injected", "/v3/training")
        await create(client, kind, request)
        raise TransportError("ServerDisconnectedError", path="/v3/training/subject")

    monkeypatch.setattr(ApiClient, "create_training", flaky)
    job = make_job(tmp_path, subjects=1)
    result = await run_pass(job, emulator.base_url, tmp_path)
    assert calls == 4
    assert result.subjects[0].state == DONE
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 1


async def test_creates_that_keep_failing_wait_for_the_next_pass(
    tmp_path, emulator, monkeypatch
) -> None:
    async def down(client, kind, request):
        raise TransientApiError(503, "SERVICE_UNAVAILABLE", "injected", "/v3/training")

    job = make_job(tmp_path, subjects=1)
    with monkeypatch.context() as patch:
        patch.setattr(ApiClient, "create_training", down)
        first = await run_pass(job, emulator.base_url, tmp_path)
    subject = first.subjects[0]
    assert subject.state == SUBMITTING and "503" in subject.error  # not failed: reported
    second = await run_pass(job, emulator.base_url, tmp_path)
    assert second.subjects[0].state == DONE and second.subjects[0].error is None
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 1


@pytest.mark.parametrize("faults", [{"upload_url_ttl": 1}], indirect=True)
async def test_upload_urls_expired_before_the_put_are_renewed(tmp_path, faulty, expiring) -> None:
    job = make_job(tmp_path, subjects=2, images=3)
    # One upload at a time: each clock jump then expires exactly the URL about to be used.
    result = await run_pass(job, faulty.base_url, tmp_path, upload_concurrency=1)
    counters = faulty.counters
    assert_all_done(result, counters, subjects=2)
    assert expiring.expired["upload"] == 6
    assert counters["responses"]["403"] >= 6
    assert counters["upload_urls_issued"] == 12 and counters["uploads"] == 6
    record("faults injected", fault_counts(counters) + Counter(upload_url_expired=6))


@pytest.mark.parametrize("faults", [{"image_url_ttl": 1}], indirect=True)
async def test_image_urls_expired_at_download_are_fetched_again(
    tmp_path, faulty, expiring
) -> None:
    # One subject: the clock jumps of its pictures expire only its own URLs.
    job = make_job(tmp_path, subjects=1, image_num=3)
    result = await run_pass(job, faulty.base_url, tmp_path)
    counters = faulty.counters
    assert_all_done(result, counters, subjects=1)
    assert expiring.expired["image"] == 3
    assert counters["responses"]["403"] >= 3
    assert counters["generations_created"]["total"] == 1  # fresh URLs, not new pictures
    assert assert_outbox_exact(tmp_path, image_num=3) == 3
    record("faults injected", fault_counts(counters) + Counter(image_url_expired=3))


@pytest.mark.parametrize("faults", [{"image_url_ttl": 1}], indirect=True)
async def test_pictures_that_can_never_be_fetched_are_reported(
    tmp_path, faulty, expiring
) -> None:
    job = make_job(tmp_path, subjects=2, image_num=1)
    expiring.always = ("/bob/",)
    result = await run_pass(job, faulty.base_url, tmp_path)
    by_name = {s.name: s for s in result.subjects}
    assert by_name["alice"].state == DONE and by_name["alice"].error is None
    assert by_name["bob"].state == DONE
    assert "lost 3 times" in by_name["bob"].error
    assert result.exit_code == EXIT_FAILED
    assert faulty.counters["generations_created"]["total"] == 1 + 3  # bounded re-generation


@pytest.mark.parametrize(
    "faults", [{"fault_training_failed": 0.3, "fault_training_canceled": 0.3}], indirect=True
)
async def test_failed_and_canceled_trainings_carry_the_service_reason(tmp_path, faulty) -> None:
    job = make_job(tmp_path, subjects=8)
    result = await run_pass(job, faulty.base_url, tmp_path)
    fates = {t.spec.name: t for t in faulty.handle.emulator.trainings.values()}
    assert len(fates) == 8
    seen = Counter()
    for subject in result.subjects:
        training = fates[subject.training_name]
        expected = {"success": DONE, "failed": FAILED, "canceled": CANCELED}[training.fate]
        assert subject.state == expected, subject
        if training.fate != "success":
            assert subject.error == training.reason
        seen[training.fate] += 1
    assert seen["failed"] + seen["canceled"]  # (which ones is up to the emulator's dice)
    assert result.exit_code == EXIT_FAILED
    record("faults injected", fault_counts(faulty.counters))


@pytest.mark.parametrize("faults", [{"fault_stuck_deploying": 0.5}], indirect=True)
async def test_models_stuck_deploying_fail_at_the_deadline(tmp_path, faulty) -> None:
    job = make_job(tmp_path, subjects=10)
    result = await run_pass(job, faulty.base_url, tmp_path, deploy_deadline=0.4)
    stuck = {t.spec.name for t in faulty.handle.emulator.trainings.values() if t.stuck_deploying}
    assert stuck
    for subject in result.subjects:
        if subject.training_name in stuck:
            assert subject.state == FAILED
            assert "still DEPLOYING" in subject.error and "retry" in subject.error
        else:
            assert subject.state == DONE and subject.error is None
    record("faults injected", fault_counts(faulty.counters))


@pytest.mark.parametrize("faults", [{"fault_generation_failed": 0.5}], indirect=True)
async def test_failed_generations_are_reported_and_the_rest_kept(tmp_path, faulty) -> None:
    job = make_job(tmp_path, subjects=6, prompts=2)
    result = await run_pass(job, faulty.base_url, tmp_path)
    with open_store(tmp_path) as store:
        failed = [g for s in store.subjects("test") for g in store.generations(s.id)
                  if g.state == GEN_FAILED]
    assert failed
    assert all("emulated generation failure" in g.error for g in failed)
    assert all(s.state == DONE for s in result.subjects)
    assert result.exit_code == EXIT_FAILED
    assert assert_outbox_exact(tmp_path, image_num=2) == (12 - len(failed)) * 2
    record("faults injected", fault_counts(faulty.counters))


ALL_FAULTS = {
    "fault_429": 0.05, "fault_429_retry_after": 0.3, "fault_5xx": 0.06, "fault_drop": 0.04,
    "fault_slow": 0.03, "slow_seconds": 0.5, "fault_training_failed": 0.15,
    "fault_training_canceled": 0.1, "fault_stuck_deploying": 0.1,
    "fault_generation_failed": 0.1,
}


@pytest.mark.parametrize("faults", [ALL_FAULTS], indirect=True)
async def test_every_fault_at_once(tmp_path, faulty) -> None:
    job = make_job(tmp_path, subjects=10, prompts=2, extra="max_training_retries = 1")
    # The deadline leaves room for a status read slowly (timeouts and retries) to be a
    # second old when it is judged; a model stuck DEPLOYING still fails, 3 s in.
    result = await run_until_settled(job, faulty.base_url, tmp_path, read_timeout=0.3,
                                     deploy_deadline=3.0)
    trainings = {t.spec.name: t for t in faulty.handle.emulator.trainings.values()}
    names = Counter(t.spec.name for t in faulty.handle.emulator.trainings.values())
    assert max(names.values()) == 1  # no training name paid twice
    for subject in result.subjects:
        training = trainings[subject.training_name]
        if training.fate == "success" and not training.stuck_deploying:
            assert subject.state == DONE, subject  # it could complete, so it did
            assert subject.error is None or "generation failure" in subject.error, subject
        else:
            assert subject.state in (FAILED, CANCELED) and subject.error, subject
    assert_outbox_exact(tmp_path, image_num=2)
    counters = faulty.counters
    assert {"429", "5xx", "drop"} <= set(counters["faults_injected"])
    record("faults injected", fault_counts(counters))


@pytest.mark.parametrize("faults", [{"txt2img_images_per_minute": 2}], indirect=True)
async def test_an_account_limit_lower_than_configured_is_waited_out(tmp_path, faulty) -> None:
    # The pipeline believes in 1000 images a minute; the account allows 2 (another app
    # shares it). Its 429s used to count as failed tries: after 5, the prompt was failed.
    emulator = faulty.handle.emulator

    async def minute_passes() -> None:  # the emulator's minute passes in a jump
        seen = 0
        while True:
            await asyncio.sleep(0.01)
            if emulator.counters.rate_limited >= seen + 8:
                seen = emulator.counters.rate_limited
                faulty.clock.offset += 61

    ticking = asyncio.create_task(minute_passes())
    try:
        job = make_job(tmp_path, subjects=4, image_num=1)
        result = await run_pass(job, faulty.base_url, tmp_path, images_per_minute=1000)
    finally:
        ticking.cancel()
    assert_all_done(result, faulty.counters)
    assert faulty.counters["rate_limited"] >= 8
    assert faulty.counters["generations_created"]["total"] == 4
    record("faults injected", {"429 (account limit)": faulty.counters["rate_limited"]})
