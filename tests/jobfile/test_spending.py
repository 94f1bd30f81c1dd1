"""``[prices]`` and ``[max_spend]``: loaded, checked, documented, never per subject."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.jobfile.loading import load_job
from pipeline.jobfile.spending import MaxSpendSection, PricesSection, SpendLimits

PROJECT = Path(__file__).resolve().parents[2]
BASE = '[job]\nname = "j"\n[generation]\nprompts = ["{instance_prompt}"]\n'


def _job(tmp_path: Path, tables: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(BASE + tables, encoding="utf-8")
    return path


def test_no_tables_means_no_prices_and_no_ceiling(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, ""))
    assert job.prices is None and job.max_spend is None


def test_prices_and_ceilings_are_read(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, """
[prices]
currency = "EUR"
subject_training = 2.5
txt2img_image = 0.002
[max_spend]
trainings = 3
money = 10
[max_spend.per_pass]
images = 0
"""))
    assert job.prices == PricesSection(currency="EUR", subject_training=2.5,
                                       txt2img_image=0.002)
    assert job.prices.training("style") is None and job.prices.image("txt2img") == 0.002
    assert job.max_spend == MaxSpendSection(trainings=3, money=10,
                                            per_pass=SpendLimits(images=0))


@pytest.mark.parametrize(("tables", "message"), [
    ("[max_spend]\nmoney = 5\n", "a money ceiling needs a [prices] table"),
    ("[max_spend.per_pass]\nmoney = 5\n", "a money ceiling needs a [prices] table"),
    ("[max_spend]\n", "max_spend sets no ceiling"),
    ("[max_spend]\nimages = -1\n", "max_spend.images = -1"),
    ("[max_spend]\ntrainings = 1\nday = 3\n", "max_spend.day = 3: unknown field"),
    ("[prices]\nsubject_training = 1\n", "prices.currency"),
    ("[prices]\ncurrency = \"USD\"\ntxt2img_image = -0.1\n", "prices.txt2img_image = -0.1"),
])
def test_mistakes_stop_the_job_before_anything_is_paid(
    tmp_path: Path, tables: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_job(_job(tmp_path, tables))


def test_a_subject_cannot_change_prices_or_ceilings(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, "[max_spend]\ntrainings = 1\n"))
    folder = tmp_path / "inbox" / "alice"
    folder.mkdir(parents=True)
    (folder / "subject.toml").write_text("[max_spend]\ntrainings = 9\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="max_spend"):
        job.subject_settings(folder)


@pytest.mark.parametrize(("heading", "model"), [
    ("## [prices]", PricesSection), ("## [max_spend]", MaxSpendSection)])
def test_every_field_is_documented_with_an_example_that_loads(
    tmp_path: Path, heading: str, model: type
) -> None:
    readme = (PROJECT / "jobs" / "README.md").read_text(encoding="utf-8")
    section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
    for field in model.model_fields:
        assert f"`{field}`" in section, field
    example = "\n".join(line[4:] for line in section.splitlines() if line.startswith("    "))
    prices = "" if heading == "## [prices]" else '[prices]\ncurrency = "USD"\n'
    job = load_job(_job(tmp_path, prices + example))
    assert job.prices is not None
    if heading == "## [max_spend]":
        assert job.max_spend is not None and job.max_spend.per_pass.images == 60
