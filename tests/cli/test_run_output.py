"""What ``run`` prints as a cron pass does it again and again: what the pass changed and one
line of totals, each refusal once, and messages that name the next step."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.emulator import EmulatorHandle
from pipeline.views.summary import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from tests.cli.test_commands import cli, config_file, served  # noqa: F401 (a fixture)
from tests.conftest import write_job
from tests.engine.folders import write_bad_subjects, write_subjects


def _printed(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], str]:
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err


def test_a_pass_over_a_settled_inbox_prints_one_line_of_totals(
    tmp_path: Path, served: EmulatorHandle, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    job = write_job(tmp_path)
    write_subjects(tmp_path / "inbox", 2, 3)
    config = config_file(tmp_path, served.base_url)
    assert cli(config, "run", str(job)) == EXIT_OK
    first, _ = _printed(capsys)
    assert any(line.startswith("test/alice: done") for line in first)
    assert any(line.startswith("test/bob: done") for line in first)
    assert "job test: 2 subjects: 2 done; 2 changed this pass" in first

    for _ in range(2):
        assert cli(config, "run", str(job)) == EXIT_OK
        again, _ = _printed(capsys)
        assert again[0] == "job test: 2 subjects: 2 done; nothing changed this pass"
        assert [line.split(":")[0] for line in again[1:]] == ["outputs", "report"]

    assert cli(config, "status", str(job)) == EXIT_OK
    status, _ = _printed(capsys)
    assert any(line.startswith("test/alice: done") for line in status)  # status: everything


@pytest.mark.parametrize("quiet", [False, True])
def test_each_refusal_and_warning_is_printed_in_the_pass_that_recorded_it(
    tmp_path: Path, served: EmulatorHandle, capsys: pytest.CaptureFixture[str],  # noqa: F811
    quiet: bool,
) -> None:
    job = write_job(tmp_path, extra="min_images_warning = 5")
    write_subjects(tmp_path / "inbox", 1, 3)
    write_bad_subjects(tmp_path / "inbox")
    config = config_file(tmp_path, served.base_url)
    run = ["--quiet", "run", str(job)] if quiet else ["run", str(job)]
    assert cli(config, *run) == EXIT_REJECTED
    out, err = _printed(capsys)
    first = err if quiet else "\n".join(out)
    assert "51 images" in first and "empty.jpg is empty" in first
    assert "only 3 usable images" in first
    # A folder refused as a whole: its photos counted, its files named in one line.
    assert quiet or any(line.startswith("test/too_many: rejected photos=51 refused")
                        for line in out)
    assert quiet or "and 46 more: not used: too_many/ was refused as a whole" in first

    assert cli(config, *run) == EXIT_OK  # exit codes as before: a refused version gives 3 once
    out, err = _printed(capsys)
    logs = [line for line in err.splitlines() if line.startswith("{")]
    again = "\n".join([*out, *(line for line in err.splitlines() if line not in logs)])
    for said_before in ("51 images", "empty.jpg", "only 3 usable images", "refused:", "warning:"):
        assert said_before not in again
    assert out == ([] if quiet else [
        "job test: 3 subjects: 2 done, 1 rejected; nothing changed this pass",
        f"outputs: {tmp_path / 'outbox' / 'test'}",
        f"report:  {tmp_path / 'outbox' / 'test' / 'report.html'}",
    ])

    assert cli(config, "status", str(job)) == EXIT_OK
    status, _ = _printed(capsys)
    assert "51 images" in "\n".join(status) and "only 3 usable images" in "\n".join(status)


def test_a_failed_subject_names_the_retry_command(
    tmp_path: Path, served: EmulatorHandle, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    job = write_job(tmp_path)
    write_subjects(tmp_path / "inbox", 1, 3)
    config = config_file(tmp_path, served.base_url)
    served.emulator.config.fault_training_failed = 1.0
    assert cli(config, "run", str(job)) == EXIT_FAILED
    retry = f"lora-pipeline --config {config} retry {job} alice"
    out, _ = _printed(capsys)
    [error] = [line for line in out if line.startswith("  error:")]
    assert error.endswith(f"; to try again: {retry}")
    assert "progress=" not in "\n".join(out)  # a failed training shows no progress or ETA

    assert cli(config, "status", str(job)) == EXIT_OK
    status, _ = _printed(capsys)
    assert any(line.startswith("  error:") and line.endswith(retry) for line in status)


@pytest.mark.parametrize("command", ["run", "validate", "plan"])
def test_a_missing_inbox_names_the_job_file_and_its_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str,
) -> None:
    job = write_job(tmp_path)
    inbox = tmp_path / "inbox"
    if inbox.exists():
        inbox.rmdir()
    config = config_file(tmp_path, "http://127.0.0.1:9")
    assert cli(config, command, str(job)) == EXIT_USAGE
    captured = capsys.readouterr()
    [message] = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert message == (
        f"error: {job}: job.inbox = '{inbox}' does not exist or is not a folder: create it "
        f"(mkdir -p {inbox}) or set job.inbox in {job} to the right folder"
    )
    assert "  " not in message
