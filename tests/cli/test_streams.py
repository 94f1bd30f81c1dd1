"""Where the command writes: results on stdout, errors and warnings on stderr, ``--quiet``
for cron, and a reader that stops reading early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.emulator import EmulatorHandle
from pipeline.views.summary import EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from tests.cli.test_commands import cli, config_file, served  # noqa: F401 (a fixture)
from tests.conftest import write_job
from tests.engine.folders import write_bad_subjects, write_subjects


def _log_levels(err: str) -> set[str]:
    return {json.loads(text)["level"] for text in err.splitlines() if text.startswith("{")}


@pytest.mark.parametrize("where", ["global", "on run"])
def test_quiet_run_prints_only_problems_on_stderr(
    tmp_path: Path, served: EmulatorHandle, capsys: pytest.CaptureFixture[str],  # noqa: F811
    where: str,
) -> None:
    job = write_job(tmp_path, extra="min_images_warning = 1")
    write_subjects(tmp_path / "inbox", 1, 3)
    write_bad_subjects(tmp_path / "inbox")
    config = config_file(tmp_path, served.base_url)
    args = ["--quiet", "run", str(job)] if where == "global" else ["run", str(job), "-q"]
    assert cli(config, *args) == EXIT_REJECTED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "refused:" in captured.err and "51 images" in captured.err
    assert "alice" not in captured.err  # a subject without problems says nothing
    assert _log_levels(captured.err) <= {"warning", "error", "critical"}


def test_an_error_goes_to_stderr_and_nothing_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, "http://127.0.0.1:9")
    assert cli(config, "run", str(tmp_path / "missing.toml")) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == "" and "error:" in captured.err and "missing.toml" in captured.err


def test_a_reader_that_closes_the_pipe_early_is_not_an_error(tmp_path: Path) -> None:
    job = write_job(tmp_path)
    config = tmp_path / "config.env"
    config.write_text(f"LORA_STATE_DIR={tmp_path / 'state'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_")}
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written (`| head -0`)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "--config", str(config), "status", str(job)],
            stdout=write, stderr=subprocess.PIPE, env=env, text=True, timeout=60,
        )
    finally:
        os.close(write)
    assert done.returncode == EXIT_OK
    assert done.stderr == ""


def test_status_piped_into_head_exits_0_quietly(tmp_path: Path) -> None:
    job = write_job(tmp_path)
    config = tmp_path / "config.env"
    config.write_text(f"LORA_STATE_DIR={tmp_path / 'state'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_")}
    command = (f"{sys.executable} -m pipeline --config {config} status {job} | head -1; "
               "exit ${PIPESTATUS[0]}")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stderr == "" and "no subjects yet" in done.stdout
