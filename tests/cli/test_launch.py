"""SIGTERM outside a pass: while the command starts, or after a pass ended."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import launch
from pipeline.cli import commands


@pytest.fixture(autouse=True)
def _restore_sigterm() -> Any:
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def test_a_sigterm_before_any_pass_is_an_orderly_exit_143(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def starting(*args: Any) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives long before this ends
        return 0

    monkeypatch.setattr(commands, "_dispatch", starting)
    config = tmp_path / "config.env"
    config.write_text("")
    assert launch.main(["--config", str(config), "status", "job.toml"]) == 143
    assert "stopped by SIGTERM outside a pass" in capsys.readouterr().err


def test_the_launcher_runs_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        launch.main(["--version"])
    assert done.value.code == 0
    assert "lora-pipeline" in capsys.readouterr().out
