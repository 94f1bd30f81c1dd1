"""``status --json``: one JSON document on stdout, with the documented fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.emulator import EmulatorHandle
from pipeline.views.summary import EXIT_OK, EXIT_REJECTED
from tests.cli.test_commands import cli, config_file, served  # noqa: F401 (a fixture)
from tests.conftest import write_job
from tests.engine.folders import write_bad_subjects, write_subjects

PROJECT = Path(__file__).resolve().parents[2]
SUBJECT_FIELDS = {"name", "version", "state", "images", "photos", "refused_files", "warnings",
                  "task", "progress", "eta", "outputs", "error"}


def test_status_json_after_a_run(
    tmp_path: Path, served: EmulatorHandle, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    job = write_job(tmp_path, prompts=2, image_num=2)
    write_subjects(tmp_path / "inbox", 1, 3)
    write_bad_subjects(tmp_path / "inbox")
    config = config_file(tmp_path, served.base_url)
    assert cli(config, "run", str(job)) == EXIT_REJECTED
    capsys.readouterr()
    assert cli(config, "status", str(job), "--json") == EXIT_OK
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # the whole of stdout is one document
    assert data["schema"] == 1 and data["job"] == "test"
    subjects = {s["name"]: s for s in data["subjects"]}
    for subject in subjects.values():
        assert set(subject) - {"spend"} == SUBJECT_FIELDS
    alice = subjects["alice"]
    assert alice["state"] == "done" and alice["version"] == 1 and alice["images"] == 3
    assert alice["outputs"] == {"prompts_done": 2, "prompts_total": 2, "files": 4}
    assert alice["task"]["id"] and alice["progress"] == 100 and alice["error"] is None
    assert alice["eta"] is None and alice["photos"] == 3
    refused = [s for s in subjects.values() if s["refused_files"]]
    assert refused and all(set(r) == {"file", "reason"} for r in refused[0]["refused_files"])
    # A folder refused as a whole: none taken for training, every photo counted.
    too_many = subjects["too_many"]
    assert too_many["state"] == "rejected" and too_many["images"] == 0
    assert too_many["photos"] == len(too_many["refused_files"]) == 51


def test_status_json_of_a_job_never_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path)
    config = config_file(tmp_path, "http://127.0.0.1:9")
    assert cli(config, "status", str(job), "--json") == EXIT_OK
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"schema": 1, "job": "test", "subjects": []}
    assert "no subjects yet" in captured.err


def test_every_field_is_documented_in_the_readme() -> None:
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    for field in SUBJECT_FIELDS | {"schema", "job", "subjects", "spend"}:
        assert f"`{field}`" in readme, field
    for inner in ("file", "reason", "id", "status", "prompts_done", "prompts_total", "files"):
        assert f'"{inner}"' in readme, inner
