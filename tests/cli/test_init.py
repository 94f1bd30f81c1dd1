"""``init [DIR]``: a job file, config.env and inbox/ that ``validate``, ``plan`` and ``run`` take."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pipeline.cli.commands import main
from pipeline.config import Settings
from pipeline.jobfile.loading import load_job
from pipeline.views.summary import EXIT_BAD_CREDENTIALS, EXIT_OK, EXIT_USAGE


def test_init_writes_a_job_a_private_settings_file_and_an_inbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LORA_API_KEY", raising=False)
    folder = tmp_path / "my portraits"
    assert main(["init", str(folder)]) == EXIT_OK
    job, config = folder / "job.toml", folder / "config.env"
    assert (folder / "inbox").is_dir()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert Settings(_env_file=config).api_key is None  # the key is left to fill in
    loaded = load_job(job)
    assert loaded.job.name == "my-portraits" and loaded.job.inbox == folder / "inbox"
    assert str(config) in capsys.readouterr().out

    assert main(["validate", str(job)]) == EXIT_OK
    assert main(["--config", str(config), "plan", str(job), "--json"]) == EXIT_OK
    plan = json.loads(capsys.readouterr().out)
    assert not plan["total"]["trainings"]  # nothing to train yet
    # Ready for `run` but for the key, which it asks for by name.
    assert main(["--config", str(config), "run", str(job)]) == EXIT_BAD_CREDENTIALS
    assert "LORA_API_KEY" in capsys.readouterr().err


def test_init_in_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == EXIT_OK
    assert {p.name for p in tmp_path.iterdir()} == {"job.toml", "config.env", "inbox"}


def test_init_overwrites_nothing_and_says_what_is_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.env").write_text("LORA_API_KEY=sk-mine-0123456789\n")
    assert main(["init", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(tmp_path / "config.env") in err and "job.toml" not in err
    assert (tmp_path / "config.env").read_text() == "LORA_API_KEY=sk-mine-0123456789\n"
    assert not (tmp_path / "job.toml").exists() and not (tmp_path / "inbox").exists()
