"""``spend``, ``plan`` and exit code 7 through ``main``, as a user calls them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli.parser import EXIT_CODES as COMMANDS_DOC
from pipeline.emulator import EmulatorHandle
from pipeline.views import summary
from pipeline.views.summary import EXIT_OK, EXIT_SPEND_CEILING
from tests.cli.test_commands import cli, config_file, served  # noqa: F401 (a fixture)
from tests.conftest import write_job
from tests.engine.folders import write_subjects

PROJECT = Path(__file__).resolve().parents[2]
PRICES = """
[prices]
currency = "EUR"
subject_training = 2.5
txt2img_image = 0.01
"""


def _project(tmp_path: Path, base_url: str, tables: str = "", *, prompts: int = 2,
             subjects: int = 2) -> tuple[Path, Path]:
    job = write_job(tmp_path, prompts=prompts, image_num=2)
    if tables:
        job.write_text(job.read_text(encoding="utf-8") + tables, encoding="utf-8")
    write_subjects(tmp_path / "inbox", subjects, 3)
    return job, config_file(tmp_path, base_url, state_dir=False)


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return dict(json.loads(capsys.readouterr().out))


def test_spend_before_anything_was_paid_creates_nothing(
    tmp_path: Path, served: EmulatorHandle, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    job, config = _project(tmp_path, served.base_url)
    assert cli(config, "spend", str(job)) == EXIT_OK
    assert "nothing paid for yet" in capsys.readouterr().out
    assert cli(config, "spend", str(job), "--json") == EXIT_OK
    data = _json(capsys)
    assert data["subjects"] == [] and data["total"]["requests"] == 0
    assert not (tmp_path / "outbox").exists()


def test_spend_per_subject_in_units_and_money(
    tmp_path: Path, served: EmulatorHandle, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    job, config = _project(tmp_path, served.base_url, PRICES)
    assert cli(config, "run", str(job)) == EXIT_OK
    capsys.readouterr()
    assert cli(config, "spend", str(job)) == EXIT_OK
    out = capsys.readouterr().out
    assert "alice: 1 subject training, 4 txt2img images = 2.54 EUR" in out
    assert "total: 2 subject trainings, 8 txt2img images = 5.08 EUR" in out
    assert cli(config, "spend", str(job), "--json") == EXIT_OK
    data = _json(capsys)
    counters = served.emulator.counters_snapshot()
    assert data["currency"] == "EUR"
    assert [(s["name"], s["trainings"], s["images"]) for s in data["subjects"]] == [
        ("alice", {"subject": 1}, {"txt2img": 4}), ("bob", {"subject": 1}, {"txt2img": 4})]
    assert data["total"]["images"]["txt2img"] == counters["images_requested"]
    assert data["total"]["money"] == pytest.approx(5.08)


def test_spend_without_prices_shows_units_only(
    tmp_path: Path, served: EmulatorHandle, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    job, config = _project(tmp_path, served.base_url, "[max_spend]\ntrainings = 5\n",
                           subjects=1)
    cli(config, "run", str(job))
    capsys.readouterr()
    cli(config, "spend", str(job))
    out = capsys.readouterr().out
    assert "EUR" not in out and "units only" in out
    assert "ceiling: trainings 1 of 5" in out


def test_plan_pays_nothing_and_the_run_then_pays_what_it_said(
    tmp_path: Path, served: EmulatorHandle, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    job, config = _project(tmp_path, served.base_url, PRICES)
    assert cli(config, "plan", str(job)) == EXIT_OK
    out = capsys.readouterr().out
    assert "alice (new version): 1 subject training, 4 txt2img images = 2.54 EUR" in out
    assert "01-take-1: 2 txt2img images" in out
    assert "total: 2 subject trainings, 8 txt2img images = 5.08 EUR" in out
    assert cli(config, "plan", str(job), "--json") == EXIT_OK
    planned = _json(capsys)
    assert served.emulator.counters_snapshot()["requests"] == {}
    assert not (tmp_path / "outbox").exists()  # no state, no photo cache, nothing
    assert cli(config, "run", str(job)) == EXIT_OK
    capsys.readouterr()
    cli(config, "spend", str(job), "--json")
    spent = _json(capsys)["total"]
    for key in ("trainings", "images", "money"):
        assert spent[key] == planned["total"][key], key


def test_the_ceiling_exits_7_says_why_in_status_and_a_higher_one_goes_on(
    tmp_path: Path, served: EmulatorHandle, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    job, config = _project(tmp_path, served.base_url, "[max_spend]\nimages = 6\n",
                           prompts=2, subjects=2)
    assert cli(config, "plan", str(job)) == EXIT_OK
    out = capsys.readouterr().out
    assert "stopped by the spend ceiling: 1 request(s), 2 txt2img images" in out
    assert cli(config, "run", str(job)) == EXIT_SPEND_CEILING
    assert "spend ceiling: 1 paid request(s) not sent; spend ceiling reached" in (
        capsys.readouterr().err)
    assert cli(config, "status", str(job)) == EXIT_OK
    out = capsys.readouterr().out
    assert "spend ceiling reached (max_spend.images = 6)" in out
    assert f"raise it in {job.resolve()} and run again" in out.lower()
    job.write_text(job.read_text(encoding="utf-8").replace("images = 6", "images = 8"),
                   encoding="utf-8")
    assert cli(config, "run", str(job)) == EXIT_OK
    assert served.emulator.counters_snapshot()["images_requested"] == 8


def test_exit_code_7_is_documented_everywhere() -> None:
    codes = {value for name, value in vars(summary).items() if name.startswith("EXIT_")}
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    table = {int(code) for code in re.findall(r"^\| (\d+) \|", readme, flags=re.MULTILINE)}
    documented = {int(code) for code in re.findall(r"^    (\d+) ", COMMANDS_DOC or "",
                                                    flags=re.MULTILINE)}
    assert EXIT_SPEND_CEILING == 7
    assert codes - {130, 143} <= table and codes <= documented | {130, 143}
    assert "| 7 |" in readme and "max_spend" in readme
