"""A pass's log lines and exit code, as an operator running it from cron sees them."""

from __future__ import annotations

import socket
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from structlog.testing import capture_logs

from pipeline.engine.runner import Runner
from pipeline.errors import BadCredentials, ConfigError, LockHeld, PipelineError, StoreError
from pipeline.jobfile.loading import load_job
from pipeline.store.states import DONE, REJECTED, TRAINING
from pipeline.views.summary import (
    EXIT_BAD_CREDENTIALS,
    EXIT_FAILED,
    EXIT_LOCK_HELD,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_SIGINT,
    EXIT_SPEND_CEILING,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    SubjectSummary,
    exit_code_for,
    exit_code_for_error,
)
from tests.conftest import RecordingClock, fast_settings, write_job
from tests.engine.folders import write_photos, write_subjects

SINCE = 1000.0


def closed_port() -> int:
    """A local port that nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def captured() -> AbstractContextManager[list[dict[str, Any]]]:
    """The events logged, each with the job and pass id the runner binds."""
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


async def test_an_unreachable_service_exits_8_with_one_error_line(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path))
    write_subjects(tmp_path / "inbox", 2, 3)
    settings = fast_settings(f"http://127.0.0.1:{closed_port()}", tmp_path / "state")
    clock = RecordingClock()  # the retries' waits pass at once
    with captured() as logs:
        result = await Runner(job, settings, clock=clock).run_once(max_wait=5)
    assert result.exit_code == EXIT_UNREACHABLE
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["pass.unreachable"]
    assert "LORA_BASE_URL" in errors[0]["hint"] and errors[0]["failed_requests"] > 0
    assert clock.sleeps  # it did try again, on the injected clock
    assert not [e for e in logs if e["event"] == "api.retry" and e["log_level"] != "debug"]
    [finished] = [e for e in logs if e["event"] == "pass.finished"]
    assert finished["exit_code"] == EXIT_UNREACHABLE
    # Every line of the pass carries the job and the pass id.
    assert {(e.get("job"), e.get("pass_id")) for e in logs} == {("test", finished["pass_id"])}


async def test_a_pass_logs_its_start_its_end_and_each_file_saved(tmp_path, emulator) -> None:
    job = load_job(write_job(tmp_path, prompts=2, image_num=2))
    write_subjects(tmp_path / "inbox", 1, 3)
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    with captured() as logs:
        result = await Runner(job, settings).run_once(max_wait=20)
    assert result.exit_code == EXIT_OK
    events = [e["event"] for e in logs]
    assert events[0] == "pass.started" and events[-1] == "pass.finished"
    finished = logs[-1]
    assert finished["subjects"] == {DONE: 1}
    assert (finished["pictures_saved"], finished["loras_saved"],
            finished["trainings_submitted"]) == (4, 1, 1)
    assert finished["duration"] >= 0
    assert len([e for e in logs if e["event"] == "picture.saved"]) == 4
    [lora] = [e for e in logs if e["event"] == "lora.saved"]
    assert lora["subject"] == "alice" and lora["file"].endswith(".safetensors")
    assert len({e["pass_id"] for e in logs}) == 1 and {e["job"] for e in logs} == {"test"}

    with captured() as again:
        second = await Runner(job, settings).run_once(max_wait=20)
    assert second.exit_code == EXIT_OK
    assert again[-1]["pass_id"] != finished["pass_id"]
    assert again[-1]["pictures_saved"] == 0 and again[-1]["trainings_submitted"] == 0


async def test_a_refusal_is_logged_and_exits_3_in_its_own_pass_only(tmp_path, emulator) -> None:
    job = load_job(write_job(tmp_path))
    bag = tmp_path / "inbox" / "bag"
    write_photos(bag, 3, first_seed=5000)
    (bag / "empty.jpg").write_bytes(b"")  # refused; the good photos still train
    (tmp_path / "inbox" / "nothing").mkdir()  # refused whole: no usable image
    (tmp_path / "inbox" / "nothing" / "empty.png").write_bytes(b"")
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    with captured() as logs:
        first = await Runner(job, settings).run_once(max_wait=20)
    assert first.exit_code == EXIT_REJECTED
    versions = {e["subject"]: e for e in logs if e["event"] == "intake.version"}
    assert versions["bag"]["rejected"] == 1 and versions["nothing"]["state"] == REJECTED
    with captured() as again:
        second = await Runner(job, settings).run_once(max_wait=20)
    assert second.exit_code == EXIT_OK  # nothing new was refused
    assert not [e for e in again if e["event"].startswith("intake.")]


def summary(*, state: str, discovered: float, updated: float, refused: int = 0,
            error: str | None = None) -> SubjectSummary:
    return SubjectSummary(
        name="s", version=1, state=state, images=3,
        rejected_files=[{"file": f"{n}.jpg", "reason": "empty"} for n in range(refused)],
        warnings=[], training_name=None, task_id=None, task_status=None, progress=None,
        eta=None, model_name=None, lora_path=None, prompts_done=0, prompts_total=0,
        outputs=[], error=error, timings={"discovered": discovered}, updated_at=updated,
    )


def test_exit_3_means_input_refused_in_this_pass_whole_or_in_part() -> None:
    def code(*subjects: SubjectSummary, **flags: bool) -> int:
        return exit_code_for(list(subjects), since=SINCE, **flags)

    assert code(summary(state=REJECTED, discovered=SINCE, updated=SINCE)) == EXIT_REJECTED
    # Some files refused, the rest training: still refused input in this pass.
    assert code(summary(state=TRAINING, discovered=SINCE + 1, updated=SINCE + 1,
                        refused=2)) == EXIT_REJECTED
    # The same version moving on in a later pass is no new refusal.
    assert code(summary(state=TRAINING, discovered=SINCE - 50, updated=SINCE + 1,
                        refused=2)) == EXIT_OK
    assert code(summary(state=REJECTED, discovered=SINCE - 50, updated=SINCE - 50)) == EXIT_OK
    # Failures outrank refusals; an unreachable service outranks both; the ceiling all.
    failed = summary(state="failed", discovered=SINCE, updated=SINCE, refused=1)
    assert code(failed) == EXIT_FAILED
    assert code(failed, unreachable=True) == EXIT_UNREACHABLE
    assert code(failed, unreachable=True, ceiling_reached=True) == EXIT_SPEND_CEILING


async def test_a_settling_folder_is_logged_when_it_starts_waiting_only(tmp_path) -> None:
    job_file = write_job(tmp_path)
    job_file.write_text(job_file.read_text().replace("settle_seconds = 0", "settle_seconds = 3600"))
    job = load_job(job_file)
    write_subjects(tmp_path / "inbox", 1, 3)
    settings = fast_settings(f"http://127.0.0.1:{closed_port()}", tmp_path / "state")
    runner = Runner(job, settings)
    with captured() as logs:
        for _ in range(3):  # as watch's rounds look again while the folder settles
            result = await runner.run_once(max_wait=0)
    assert result.exit_code == EXIT_OK  # nothing was asked of the service
    waiting = [e for e in logs if e["event"] == "inbox.waiting"]
    assert [e["subject"] for e in waiting] == ["alice"]
    assert waiting[0]["reason"].startswith("settling")


async def test_a_pass_that_raises_still_logs_its_end_with_the_exit_code(
    tmp_path: Path, emulator: Any
) -> None:
    job = load_job(write_job(tmp_path))
    write_subjects(tmp_path / "inbox", 1, 3)
    settings = fast_settings(emulator.base_url, tmp_path / "state",
                             api_key=SecretStr("sk-wrong-key-0123456789"))
    with captured() as logs, pytest.raises(BadCredentials):
        await Runner(job, settings).run_once(max_wait=20)
    events = [e["event"] for e in logs]
    assert events[0] == "pass.started" and events[-1] == "pass.finished"
    finished = logs[-1]
    assert (finished["exit_code"], finished["error"]) == (EXIT_BAD_CREDENTIALS, "BadCredentials")
    assert finished["log_level"] == "error" and finished["job"] == "test"


@pytest.mark.parametrize(("error", "code"), [
    (BadCredentials(401, "Unauthorized", "refused", "/v3"), EXIT_BAD_CREDENTIALS), (LockHeld("held"), EXIT_LOCK_HELD),
    (StoreError("bad"), EXIT_USAGE), (ConfigError("bad"), EXIT_USAGE),
    (PipelineError("other"), EXIT_FAILED), (KeyboardInterrupt(), EXIT_SIGINT),
    (RuntimeError("a bug"), 1),
])
def test_each_error_has_the_exit_code_the_readme_gives(error: BaseException, code: int) -> None:
    assert exit_code_for_error(error) == code
